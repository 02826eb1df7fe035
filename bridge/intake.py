"""Where bodies go: the Datadog intake over HTTP, or a local JSON-lines file when no API key is set.

Both answer with an :class:`IntakeReply` so the sender's policy (retry, split, dead-letter, pause) does not care
which one it talks to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import requests

from adapters.base import CI_PIPELINE, DORA_DEPLOYMENT

PATHS = {CI_PIPELINE: "/api/v2/ci/pipeline", DORA_DEPLOYMENT: "/api/v2/dora/deployment"}
# DORA's endpoint takes one deployment per request; the pipeline endpoint takes up to 1000 events.
BATCH_LIMITS = {CI_PIPELINE: 1000, DORA_DEPLOYMENT: 1}


@dataclasses.dataclass(frozen=True)
class IntakeReply:
    """The intake's answer: an HTTP status (0 when the connection failed), a wait hint, and its error text."""

    status: int
    retry_after: float | None = None
    error: str | None = None
    remote_ids: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class Intake(Protocol):
    def send(self, kind: str, bodies: Sequence[dict[str, Any]]) -> IntakeReply:
        """Send one batch of bodies of one kind."""


def batch_body(kind: str, bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The request body for a batch: pipeline events go as one ``data`` array, a deployment alone."""
    if kind == CI_PIPELINE and len(bodies) > 1:
        return {"data": [body["data"] for body in bodies]}
    return bodies[0]


class HttpIntake:
    """The real intake, over one keep-alive session; redirects are refused so the API key never leaves."""

    def __init__(self, base_url: str, api_key: str, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(
            {"DD-API-KEY": api_key, "Content-Type": "application/json", "User-Agent": "pipeline-bridge"}
        )

    def send(self, kind: str, bodies: Sequence[dict[str, Any]]) -> IntakeReply:
        data = json.dumps(batch_body(kind, bodies), separators=(",", ":")).encode()
        try:
            response = self.session.post(
                self.base_url + PATHS[kind], data=data, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return IntakeReply(0, error=f"connection failed: {type(exc).__name__}")
        if 300 <= response.status_code < 400:
            return IntakeReply(response.status_code, error="the intake answered with a redirect; not followed")
        return IntakeReply(
            response.status_code,
            retry_after=_wait_hint(response),
            error=None if response.ok else response.text[:2000],
            remote_ids=_remote_ids(response) if response.ok else (),
        )


class FileSink:
    """Appends what would be sent to a JSON-lines file, so a new user sees the bridge work without a key."""

    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, kind: str, bodies: Sequence[dict[str, Any]]) -> IntakeReply:
        sent_at = dt.datetime.now(dt.UTC).isoformat()
        lines = "".join(
            json.dumps({"sent_at": sent_at, "endpoint": PATHS[kind], "body": body}, separators=(",", ":")) + "\n"
            for body in bodies
        )
        with self._lock, self.path.open("a", encoding="utf-8") as sink:
            sink.write(lines)
            sink.flush()
        return IntakeReply(202)


def _wait_hint(response: requests.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` or Datadog's ``X-RateLimit-Reset``, whichever says longer."""
    hints = []
    for header in ("Retry-After", "X-RateLimit-Reset"):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            hints.append(max(0.0, float(value)))
        except ValueError:
            continue
    return max(hints) if hints else None


def _remote_ids(response: requests.Response) -> tuple[str, ...]:
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return ()
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return (data["id"],)
    return ()
