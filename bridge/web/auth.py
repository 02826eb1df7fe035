"""Distelli-style authentication: the ``apiToken`` query value must be the token configured for the path's user."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from bridge.web.errors import Unauthorized

# Compared against when the user is unknown, so a wrong user name takes as long to refuse as a wrong token.
_NO_TOKEN = "\x00" * 32


def check_token(tokens: Mapping[str, str], username: str, given: str | None) -> None:
    """Raise 401 unless ``given`` is ``username``'s token; the comparison takes the same time either way."""
    expected = tokens.get(username)
    matches = hmac.compare_digest((given or "").encode(), (expected or _NO_TOKEN).encode())
    if not given or expected is None or not matches:
        raise Unauthorized("Missing or invalid apiToken for this user.")
