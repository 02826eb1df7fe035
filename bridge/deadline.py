"""A deadline for reading a request body, so clients that trickle bytes cannot hold every server thread.

gunicorn's gthread worker hands a request to a pool thread once its headers are in and then reads the body with
no deadline: a handful of slow (or hostile) clients can hold every thread for as long as they trickle. This
middleware reads the body up front under a watchdog; when the deadline passes, it shuts the socket's read side,
which ends the blocked read at once, and answers 408 in the shared error shape. It only acts under gunicorn,
which puts the client socket in the environ.

One watchdog thread per process checks every reader's deadline a few times a second: a timer thread per request
cost a thread start on every accepted event, and a deadline of 10 s needs no finer clock than that.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

BODY_READ_SECONDS = 10.0
WATCHDOG_TICK_SECONDS = 0.25

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
        watch = _WATCHDOG.watch(client, self.seconds)
        try:
            body = _read(environ["wsgi.input"], length if not chunked else self.limit + 1)
        except OSError:
            body = b""
            watch.expired = True
        finally:
            _WATCHDOG.forget(watch)
        if watch.expired or (not chunked and len(body) < length):
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


class _Watch:
    """One body being read: its socket, when to give up on it, and whether the watchdog did."""

    __slots__ = ("client", "due", "expired", "key")

    def __init__(self, key: int, client: socket.socket, due: float) -> None:
        self.key, self.client, self.due, self.expired = key, client, due, False


class _Watchdog:
    """Cuts the read side of every socket whose body deadline passed; one daemon thread per process.

    The thread starts on first use in each process, so a gunicorn worker forked from a master that imported
    this module gets its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._keys = itertools.count()
        self._pid = 0

    def watch(self, client: socket.socket, seconds: float) -> _Watch:
        watch = _Watch(next(self._keys), client, time.monotonic() + seconds)
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._watches.clear()  # a forked child inherits its parent's entries, not its reads
                threading.Thread(target=self._run, name="body-deadline", daemon=True).start()
            self._watches[watch.key] = watch
        return watch

    def forget(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.pop(watch.key, None)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                overdue = [watch for watch in self._watches.values() if watch.due <= now]
                for watch in overdue:
                    del self._watches[watch.key]
            for watch in overdue:
                watch.expired = True
                with contextlib.suppress(OSError):
                    watch.client.shutdown(socket.SHUT_RD)


_WATCHDOG = _Watchdog()
