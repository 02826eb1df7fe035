"""Where bodies go: the Datadog intake over HTTP, or a local JSON-lines file when no API key is set.

Both take events already encoded (the outbox hands them out as JSON bytes) and answer with an
:class:`IntakeReply`, so the sender's policy (retry, split, dead-letter, pause) does not care which one it talks
to. The encoded size is also what the sender measures against the size limit before anything is sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import gzip
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from adapters.target import CI_PIPELINE, DORA_DEPLOYMENT

PATHS = {CI_PIPELINE: "/api/v2/ci/pipeline", DORA_DEPLOYMENT: "/api/v2/dora/deployment"}
# DORA's endpoint takes one deployment per request; the pipeline endpoint takes up to 1000 events.
BATCH_LIMITS = {CI_PIPELINE: 1000, DORA_DEPLOYMENT: 1}
# Uncompressed bytes per request: safely under the intake's 5 MiB limit, envelope included.
MAX_BATCH_BYTES = 5_000_000
# Below this a request goes as is: gzip would cost more time than it saves bytes.
COMPRESS_ABOVE_BYTES = 2048
# How much of the intake's answer an attempt keeps.
ANSWER_CHARS = 500


@dataclasses.dataclass(frozen=True)
class IntakeReply:
    """The intake's answer: an HTTP status (0 when the connection failed), a wait hint, and its error text.

    ``endpoint`` (a URL without credentials) and ``answer`` (the first characters of the body, or why there was
    none) are what the delivery attempts table keeps; neither ever holds the API key.
    """

    status: int
    retry_after: float | None = None
    error: str | None = None
    remote_ids: tuple[str, ...] = ()
    endpoint: str = ""
    answer: str = ""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class Intake(Protocol):
    def send(self, kind: str, events: Sequence[bytes]) -> IntakeReply:
        """Send one batch of events of one kind, each the JSON of one event as it goes inside a batch."""


def batch_payload(kind: str, events: Sequence[bytes]) -> bytes:
    """The request body for a batch: pipeline events as one ``data`` array, a deployment alone."""
    if kind == CI_PIPELINE:
        if len(events) == 1:
            return b'{"data":' + events[0] + b"}"
        return b'{"data":[' + b",".join(events) + b"]}"
    if len(events) != 1:
        raise ValueError("the DORA deployment endpoint takes one deployment per request")
    return events[0]


class HttpIntake:
    """The real intake over one keep-alive session; redirects are refused so the API key never leaves."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: tuple[float, float] = (5.0, 20.0),
        compress_above: int | None = COMPRESS_ABOVE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.shown_base_url = _without_credentials(self.base_url)
        self.timeout = timeout
        self.compress_above = compress_above
        self.session = requests.Session()
        self.session.headers.update(
            {
                "DD-API-KEY": api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "pipeline-bridge",
            }
        )

    def send(self, kind: str, events: Sequence[bytes]) -> IntakeReply:
        data = batch_payload(kind, events)
        headers = {}
        if self.compress_above is not None and len(data) > self.compress_above:
            data = gzip.compress(data, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        endpoint = self.shown_base_url + PATHS[kind]
        try:
            response = self.session.post(
                self.base_url + PATHS[kind], data=data, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            error = f"no answer from the intake ({type(exc).__name__})"
            return IntakeReply(0, error=error, endpoint=endpoint, answer=error)
        answer = response.text[:ANSWER_CHARS].replace(self.api_key, "[REDACTED]") if self.api_key else ""
        if response.is_redirect:
            target = urlsplit(response.headers.get("Location", "")).netloc or "elsewhere"
            error = f"the intake redirected to {target}; not followed, so the API key stays here"
            return IntakeReply(response.status_code, error=error, endpoint=endpoint, answer=answer or error)
        return IntakeReply(
            response.status_code,
            retry_after=wait_hint(response.headers),
            error=None if response.ok else error_text(response),
            remote_ids=_remote_ids(response) if response.ok else (),
            endpoint=endpoint,
            answer=answer,
        )

    def close(self) -> None:
        self.session.close()


class FileSink:
    """Appends what would be sent to a JSON-lines file, so a new user sees the bridge work without a key."""

    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, kind: str, events: Sequence[bytes]) -> IntakeReply:
        sent_at = json.dumps(dt.datetime.now(dt.UTC).isoformat())
        endpoint = json.dumps(PATHS[kind])
        body_prefix, body_suffix = (b'{"data":', b"}") if kind == CI_PIPELINE else (b"", b"")
        lines = b"".join(
            b'{"sent_at":%s,"endpoint":%s,"body":%s%s%s}\n'
            % (sent_at.encode(), endpoint.encode(), body_prefix, event, body_suffix)
            for event in events
        )
        with self._lock, self.path.open("ab") as sink:
            sink.write(lines)
            sink.flush()
        return IntakeReply(202, endpoint=f"file:{self.path.name}", answer="appended to the local sink")


def wait_hint(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or a date) or ``X-RateLimit-Reset``, whichever is longer."""
    hints = []
    for header in ("Retry-After", "X-RateLimit-Reset"):
        value = headers.get(header)
        if not value:
            continue
        try:
            hints.append(max(0.0, float(value)))
            continue
        except ValueError:
            pass
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if moment.tzinfo is not None:
            hints.append(max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds()))
    return max(hints) if hints else None


def error_text(response: requests.Response) -> str:
    """The intake's own words: the ``detail`` of each of its errors, else the start of its body."""
    try:
        errors = response.json().get("errors")
        details = [str(error.get("detail") or error.get("title")) for error in errors if isinstance(error, dict)]
    except (ValueError, AttributeError, TypeError):
        details = []
    text = "; ".join(details) if details else response.text.strip() or response.reason or ""
    return f"{response.status_code}: {text[:2000]}"


def _without_credentials(url: str) -> str:
    """The URL as shown in attempts: a user or password in it (an egress proxy's) is left out."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")).geturl()


def _remote_ids(response: requests.Response) -> tuple[str, ...]:
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return ()
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return (data["id"],)
    return ()
