"""gunicorn's HTTP/1.x response, with the same bytes on the wire in fewer system calls and less formatting.

gunicorn writes a response's head and then each piece of its body with a ``sendall`` of its own, and formats the
``Date`` header (``email.utils.formatdate``) for every response. Every JSON answer of the bridge is one piece of
known length, so here the head and the first piece go out in one write, and the ``Date`` text is made once a
second. On loopback TCP a second ``sendall`` of a small answer costs the sender a
system call and the client a second read. Chunked answers, files and empty bodies take gunicorn's own path.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

# The second a Date text was made for, and that text: one tuple, so the worker's threads read a consistent pair.
_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header's value for now (RFC 9110 IMF-fixdate), formatted at most once a second."""
    global _date
    now = int(time.time())
    second, text = _date
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date = (now, text)
    return text


class Response(wsgi.Response):
    """A gunicorn response that sends its head with the first piece of a body of known length."""

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [
            f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def head(self) -> bytes:
        """The status line and headers, as gunicorn's ``send_headers`` writes them."""
        lines = self.default_headers()
        lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send_headers(self) -> None:
        if self.headers_sent:  # type: ignore[has-type]
            return
        util.write(self.sock, self.head())
        self.headers_sent = True

    def write(self, arg: Any) -> None:
        if (
            self.headers_sent
            or self.chunked
            or self.response_length is None
            or self._omits_body
            or not isinstance(arg, bytes)
            or not arg
        ):
            super().write(arg)
            return
        body = arg[: self.response_length]  # as gunicorn does: never more than Content-Length said
        self.sent += len(body)
        util.write(self.sock, self.head() + body)
        self.headers_sent = True
