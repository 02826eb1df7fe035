"""Event ids from text, and ListEvents' ``marker``: the opaque token that names where the next page starts."""

from __future__ import annotations

import base64
import binascii
import re

# Ids are BIGINT; anything larger names no event (and would overflow SQLite's INTEGER in a query).
MAX_EVENT_ID = 2**63 - 1
_ASCII_NUMBER = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """An event id or marker position from text: ASCII digits only (``str.isdigit`` also accepts "²")."""
    if not _ASCII_NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_EVENT_ID else None


def encode_marker(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{event_id}".encode()).decode().rstrip("=")


def decode_marker(marker: str) -> int | None:
    """The event id a marker carries, or None for text this bridge never handed out."""
    try:
        text = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return parse_id(text[2:]) if text.startswith("e:") else None
