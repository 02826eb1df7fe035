"""A deadline for reading a request body, so clients that trickle bytes cannot hold every server thread.

gunicorn's gthread worker hands a request to a pool thread once its headers are in and then reads the body with
no deadline: a handful of slow (or hostile) clients can hold every thread for as long as they trickle. This
middleware reads the body up front under a watchdog; when the deadline passes, it shuts the socket's read side,
which ends the blocked read at once, and answers 408 in the shared error shape. It only acts under gunicorn,
which puts the client socket in the environ.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

BODY_READ_SECONDS = 10.0

_TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "code": "request_timeout",
            "message": f"The request body did not arrive within {BODY_READ_SECONDS:g} s.",
        }
    }
).encode()


class BodyDeadline:
    """WSGI middleware: buffer the body within ``seconds`` or answer 408."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int, seconds: float = BODY_READ_SECONDS) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        client = environ.get("gunicorn.socket")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        declared = environ.get("CONTENT_LENGTH") or ""
        length = int(declared) if declared.isdigit() else 0
        # Nothing to wait for, or a body Flask refuses with 413 before reading it.
        if client is None or (not chunked and (length == 0 or length > self.limit)):
            return self.app(environ, start_response)
        expired = threading.Event()
        watchdog = threading.Timer(self.seconds, _cut, (client, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            body = _read(environ["wsgi.input"], length if not chunked else self.limit + 1)
        except OSError:
            body = b""
            expired.set()
        finally:
            watchdog.cancel()
        if expired.is_set() or (not chunked and len(body) < length):
            start_response("408 Request Timeout", [("Content-Type", "application/json"), ("Connection", "close")])
            return [_TIMEOUT_BODY]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def _read(stream: Any, most: int) -> bytes:
    chunks, size = [], 0
    while size < most:
        chunk = stream.read(min(65536, most - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _cut(client: socket.socket, expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_RD)
