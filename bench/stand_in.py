"""A light stand-in for the Datadog intake, in its own process: it answers 202 (after ``STAND_IN_DELAY`` seconds)
and remembers when it first received each (unique_id, level, status), which ``GET /_received`` returns.

The strict stand-in of the test suite checks every body against Datadog's models; that costs more CPU than the
bridge itself, so the benchmarks use this one to keep the two cores for the processes being measured.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

received: dict[str, float] = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = float(os.environ.get("STAND_IN_DELAY", "0"))

    def log_message(self, *_: Any) -> None:
        return

    def do_GET(self) -> None:
        with lock:
            payload = json.dumps(received).encode() if self.path == "/_received" else b'{"status":"ok"}'
        self._answer(200, payload)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        if self.delay:
            time.sleep(self.delay)
        now = time.time()
        data = json.loads(raw).get("data")
        with lock:
            for event in data if isinstance(data, list) else [data]:
                resource = event.get("attributes", {}).get("resource", {})
                unique_id = resource.get("unique_id") or resource.get("id")
                received.setdefault(f"{unique_id}/{resource.get('level')}/{resource.get('status')}", now)
        self._answer(202, b"{}")

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
