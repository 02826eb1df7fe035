"""A real HTTP server standing in for the Datadog intake, as strict as the spec.

It checks the API key, the content type, the size and every body (official client models plus time rules) and
answers 202, 400, 403 or 413 as Datadog would. Tests can script the next answers (503, 429 with
``X-RateLimit-Reset``, a redirect...), hold requests on the wire (to kill a worker mid-batch) and read back what
was accepted. A held request whose client went away meanwhile is recorded as 499 and never accepted.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import select
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ddschema import dora_problems, pipeline_problems

MAX_BYTES = 5 * 1024 * 1024
PIPELINE_PATH = "/api/v2/ci/pipeline"
DORA_PATH = "/api/v2/dora/deployment"


@dataclasses.dataclass
class Scripted:
    """One forced answer for the next request, whatever it carries."""

    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: str = ""


@dataclasses.dataclass
class Received:
    path: str
    status: int
    body: Any
    at: float
    headers: dict[str, str]
    size: int = 0  # bytes of the body as received (compressed or not)


class IntakeServer:
    """Start with ``with IntakeServer(api_key) as intake:``; ``intake.url`` is the base URL to configure."""

    def __init__(self, api_key: str = "test-dd-api-key", delay: float = 0.0, port: int = 0) -> None:
        self.api_key = api_key
        self.delay = delay
        self.script: deque[Scripted] = deque()
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.reject: set[str] = set()  # unique_ids to refuse with 400, to play a poison event
        self.held = 0  # requests waiting at the gate now
        self._gate = threading.Event()
        self._gate.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> IntakeServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def then(self, status: int, headers: dict[str, str] | None = None, body: str = "") -> IntakeServer:
        self.script.append(Scripted(status, headers or {}, body))
        return self

    def hold(self) -> IntakeServer:
        """Keep every request from now on waiting, unanswered, until :meth:`release`."""
        self._gate.clear()
        return self

    def release(self) -> IntakeServer:
        self._gate.set()
        return self

    def accepted_events(self, path: str = PIPELINE_PATH) -> list[dict[str, Any]]:
        """Every event the intake accepted on ``path``, one entry per event, batches unrolled."""
        events: list[dict[str, Any]] = []
        with self.lock:
            for request in self.requests:
                if request.path != path or request.status != 202:
                    continue
                data = request.body["data"]
                events.extend(data if isinstance(data, list) else [data])
        return events

    def accepted_resources(self) -> list[dict[str, Any]]:
        return [event["attributes"]["resource"] for event in self.accepted_events()]

    def statuses(self) -> list[int]:
        with self.lock:
            return [request.status for request in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        intake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if intake.delay:
                    time.sleep(intake.delay)
                if not intake._gate.is_set():
                    with intake.lock:
                        intake.held += 1
                    intake._gate.wait(60)
                    with intake.lock:
                        intake.held -= 1
                    if _client_gone(self.connection):
                        with intake.lock:
                            intake.requests.append(Received(self.path, 499, None, time.time(), dict(self.headers)))
                        self.close_connection = True
                        return
                status, headers, reply, body = intake._answer(self.path, dict(self.headers), raw)
                with intake.lock:
                    intake.requests.append(Received(self.path, status, body, time.time(), dict(self.headers), len(raw)))
                payload = reply.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], str, Any]:
        with self.lock:
            scripted = self.script.popleft() if self.script else None
        body: Any = None
        if scripted is not None:
            return scripted.status, scripted.headers, scripted.body or "{}", body
        if path not in (PIPELINE_PATH, DORA_PATH):
            return 404, {}, _errors(404, "Not Found", "no such endpoint"), body
        lowered = {name.lower(): value for name, value in headers.items()}
        if lowered.get("dd-api-key") != self.api_key:
            return 403, {}, _errors(403, "Forbidden", "API key is invalid"), body
        if not lowered.get("content-type", "").startswith("application/json"):
            return 400, {}, _errors(400, "Bad Request", "Content-Type must be application/json"), body
        if len(raw) > MAX_BYTES:
            return 413, {}, _errors(413, "Payload Too Large", "request too large"), body
        try:
            encoding = lowered.get("content-encoding", "")
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            if len(raw) > MAX_BYTES:
                return 413, {}, _errors(413, "Payload Too Large", "request too large"), body
            body = json.loads(raw)
        except (ValueError, OSError, zlib.error):
            return 400, {}, _errors(400, "Bad Request", "Malformed payload"), body
        problems = pipeline_problems(body) if path == PIPELINE_PATH else dora_problems(body)
        if not problems and path == PIPELINE_PATH and self.reject:
            data = body["data"]
            for item in data if isinstance(data, list) else [data]:
                resource = item["attributes"]["resource"]
                if resource.get("unique_id", resource.get("pipeline_unique_id")) in self.reject:
                    problems.append("poison event refused")
        if problems:
            return 400, {}, _errors(400, "Bad Request", "; ".join(problems)), body
        if path == DORA_PATH:
            reply = json.dumps({"data": {"id": uuid.uuid4().hex, "type": "dora_deployment"}})
            return 202, {}, reply, body
        return 202, {}, "{}", body


def _client_gone(connection: socket.socket) -> bool:
    """True when the client closed its end while its request waited (a killed process closes its sockets)."""
    readable, _, _ = select.select([connection], [], [], 0.2)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _errors(status: int, title: str, detail: str) -> str:
    return json.dumps({"errors": [{"status": str(status), "title": title, "detail": detail}]})
