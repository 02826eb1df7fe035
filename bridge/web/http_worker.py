"""A gunicorn worker that hands its threads only complete requests, so no client, however slow, can hold one.

gunicorn's gthread worker gives a connection to a pool thread as soon as it is readable; the thread then reads
the request head and body with blocking reads and no deadline. Eight clients trickling a header line every 2 s
held every thread of the bridge (``GET /healthz`` waited over 90 s), and a hundred connections that opened and
said nothing held them for 5 s each. :class:`BufferingWorker` keeps gthread's thread pool (the SQLite group commit
and the writer lock need real threads) and its graceful shutdown, but its main thread reads every connection
without blocking, buffers the bytes, parses the head with gunicorn's own parser once it is complete, and buffers
the body up to the app's size limit (by Content-Length, or to the end of a chunked body). Only then does a pool
thread get the request, which it serves from memory. A connection that does not finish its head within
``HEAD_SECONDS``, or its body within ``BODY_SECONDS`` after that, gets a 408 and is closed; one that sent nothing
is closed after the keep-alive timeout. Malformed requests get the bridge's JSON error shape, not gunicorn's HTML.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import select
import selectors
import socket
import time
from concurrent.futures import Future
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader, Unreader
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import TConn, ThreadWorker

from bridge.web import http_response
from bridge.web.balance import AcceptGate
from bridge.web.errors import BridgeError

HEAD_SECONDS = 10.0
BODY_SECONDS = 10.0
SEND_SECONDS = 10.0  # a client that stops reading its answer frees the thread after this
LINGER_SECONDS = 2.0  # how long a closing connection's unread input is drained, so the answer is not reset
DEFAULT_BODY_LIMIT = 1024 * 1024
SPARE_FILE_DESCRIPTORS = 256  # database, log, metrics and listening files beside the connections
SWEEP_SECONDS = 0.25
RECV_BYTES = 65536
CHUNK_LINE_LIMIT = 8192

IDLE, HEAD, BODY, SERVING, CLOSING = "idle", "head", "body", "serving", "closing"


class RequestTooLarge(Exception):
    """A chunked body went past the app's limit before it ended."""


class RequestTimeout(Exception):
    """The head or the body did not arrive within its deadline."""


# gunicorn's parse errors, each with the status, code and message the client gets. The messages are fixed: the
# exception's own text quotes the request line or a header, which can hold an apiToken.
_PARSE_ERRORS: list[tuple[type[BaseException], int, str, str, str]] = [
    (http_errors.LimitRequestLine, 414, "URI Too Long", "uri_too_long", "The request line is too long."),
    (
        http_errors.LimitRequestHeaders,
        431,
        "Request Header Fields Too Large",
        "header_fields_too_large",
        "Too many header fields, or a header field too large.",
    ),
    (
        http_errors.UnsupportedTransferCoding,
        501,
        "Not Implemented",
        "unsupported_transfer_coding",
        "Only the chunked transfer coding is supported.",
    ),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "expectation_failed", "Only 100-continue is supported."),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden", "Request forbidden."),
    (
        http_errors.InvalidRequestLine,
        400,
        "Bad Request",
        "invalid_request_line",
        "The request line is not METHOD TARGET HTTP/1.x.",
    ),
    (http_errors.InvalidRequestMethod, 400, "Bad Request", "invalid_method", "The request method is not valid."),
    (http_errors.InvalidHTTPVersion, 400, "Bad Request", "invalid_http_version", "Only HTTP/1.0 and 1.1 are served."),
    (
        http_errors.ObsoleteFolding,
        400,
        "Bad Request",
        "invalid_header",
        "A header field is folded over lines, which HTTP/1.1 forbids.",
    ),
    (
        http_errors.InvalidHeaderName,
        400,
        "Bad Request",
        "invalid_header",
        "A header field name is not valid (underscores are refused).",
    ),
    (
        http_errors.InvalidHeader,
        400,
        "Bad Request",
        "invalid_header",
        "A header field is malformed, or repeated where it may appear once (Content-Length, Host).",
    ),
    (
        http_errors.InvalidSchemeHeaders,
        400,
        "Bad Request",
        "invalid_header",
        "The scheme headers contradict each other.",
    ),
    (
        (http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension),  # type: ignore[list-item]
        400,
        "Bad Request",
        "invalid_chunked_body",
        "The chunked request body is malformed.",
    ),
    (http_errors.NoMoreData, 400, "Bad Request", "incomplete_request", "The request ended before its body did."),
    (http_errors.ParseException, 400, "Bad Request", "bad_request", "The request is not valid HTTP/1.1."),
]


def error_answer(exc: BaseException, body_limit: int = DEFAULT_BODY_LIMIT) -> tuple[str, bytes]:
    """The status line's ``code reason`` and the whole HTTP answer (JSON, ``Connection: close``) for an error."""
    if isinstance(exc, RequestTooLarge):
        status, reason, code = 413, "Payload Too Large", "payload_too_large"
        message = f"The request body is larger than {body_limit // 1024} KiB."
    elif isinstance(exc, RequestTimeout):
        status, reason, code, message = 408, "Request Timeout", "request_timeout", str(exc)
    else:
        status, reason, code, message = 500, "Internal Server Error", "internal", "The bridge could not answer."
        for kinds, status_, reason_, code_, message_ in _PARSE_ERRORS:
            if isinstance(exc, kinds):
                status, reason, code, message = status_, reason_, code_, message_
                break
    body = json.dumps(BridgeError(message, code=code, status=status).to_body()).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return f"{status} {reason}", head.encode("latin-1") + body


class _Buffered(Unreader):
    """What the main thread received for one request; never reads the socket, so a pool thread cannot block."""

    def chunk(self, size_hint: int | None = None) -> bytes:
        return b""

    def append(self, data: bytes) -> None:
        self.buf.seek(0, 2)
        self.buf.write(data)


class ChunkedEnd:
    """Finds where a chunked body ends without decoding it: gunicorn's ChunkedReader decodes and checks it later.

    Anything that is not a chunk-size line of hex digits ends the scan at once, so the parser refuses it (400)
    rather than the client waiting for a deadline.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._skip = 0
        self._in_trailer = False
        self.size = 0
        self.done = False

    def feed(self, data: bytes) -> bool:
        """Scan the next bytes of the body; True once its end (or something malformed) was seen."""
        at, end = 0, len(data)
        while at < end and not self.done:
            if self._skip:
                taken = min(self._skip, end - at)
                self._skip -= taken
                at += taken
                continue
            newline = data.find(b"\n", at)
            if newline < 0:
                self._line += data[at:]
                self.done = len(self._line) > CHUNK_LINE_LIMIT
                break
            self._line += data[at:newline]
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            at = newline + 1
            if self._in_trailer:
                self.done = not line
                continue
            digits = line.split(b";", 1)[0].strip(b" \t")
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                self.done = True
            elif (size := int(digits, 16)) == 0:
                self._in_trailer = True
            else:
                self.size += size
                self._skip = size + 2
        return self.done


class BufferedConn(TConn):
    """One client connection: the bytes of its next request and the deadline it must meet."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.initialized = True  # gthread's lazy TLS/HTTP-2 set-up is not used: this worker speaks HTTP/1.x
        self.state = HEAD
        self.deadline = time.monotonic() + HEAD_SECONDS
        self.received = False  # any byte of the current request yet
        self.unreader = _Buffered()
        self.req: Any = None
        self.body_needed = 0
        self.chunked: ChunkedEnd | None = None
        self.failure: BaseException | None = None
        self.requests = 0


class BufferingWorker(ThreadWorker):
    """gthread with reading in the main thread's selector, deadlines, and JSON errors (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conns: set[BufferedConn] = set()
        self.body_limit = DEFAULT_BODY_LIMIT
        self._next_sweep = 0.0
        self.accept_gate = AcceptGate(None, None)

    def init_process(self) -> None:
        self._raise_file_limit()
        # The master's pre_fork hook (bridge.web.server) gave this worker its share of the connection counts.
        self.accept_gate = AcceptGate(getattr(self, "connection_counts", None), getattr(self, "balance_slot", None))
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app as gthread does, and take the body limit it enforces (Flask's MAX_CONTENT_LENGTH)."""
        super().load_wsgi()
        self.body_limit = getattr(self.wsgi, "config", {}).get("MAX_CONTENT_LENGTH") or DEFAULT_BODY_LIMIT

    def _raise_file_limit(self) -> None:
        """Every open connection is a file descriptor: lift the soft limit to what worker_connections needs."""
        wanted = int(self.cfg.worker_connections) + SPARE_FILE_DESCRIPTORS
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and soft < wanted:
            self.worker_connections = max(soft - SPARE_FILE_DESCRIPTORS, self.cfg.threads + 1)
            self.log.warning("open-file limit %s allows only %s connections per worker", soft, self.worker_connections)

    # -- the main thread: accept, read, time out -------------------------------------------------------------

    def run(self) -> None:
        self.accept_gate.held(self.nr_conns)
        try:
            super().run()
        finally:
            self.accept_gate.closed()

    def set_accept_enabled(self, enabled: bool) -> None:
        """gthread's, but a worker holding more connections than another leaves new ones to it for a moment."""
        yielding = enabled and self.accept_gate.leave_to_others(self.nr_conns, self._client_waiting)
        super().set_accept_enabled(enabled and not yielding)

    def _client_waiting(self) -> bool:
        """Whether a client waits in a listener's accept queue (gthread does not poll the listeners while yielding)."""
        poller = select.poll()
        for listener in self.sockets:
            poller.register(listener, select.POLLIN)
        return bool(poller.poll(0))

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gthread's wait, with the accept gate asked again before each (gthread's loop asks only on a change)."""
        if self.alive:
            self.set_accept_enabled(self.nr_conns < self.worker_connections)
        else:
            self.accept_gate.closed()  # stopping: it accepts no more, so nobody should leave connections to it
        left = self.accept_gate.seconds_left()
        super().wait_for_and_dispatch_events(timeout if left is None else min(timeout, left))

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors: accept no more than are open now (gthread's loop stops polling the
                # listener at worker_connections), rather than spin on a listener that stays readable.
                self.worker_connections = max(self.nr_conns, 1)
                self.log.warning("out of file descriptors: at most %s connections now", self.worker_connections)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.accept_gate.held(self.nr_conns)
        conn = BufferedConn(self.cfg, sock, client, listener.getsockname())
        self.conns.add(conn)
        self._watch(conn)

    def _watch(self, conn: BufferedConn) -> None:
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: BufferedConn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if conn.state == CLOSING:
            if not data:
                self._close(conn)
            return
        if not data:
            self._close(conn)  # the client went away; a partial request has no one to answer
            return
        self._received(conn, data)

    def _received(self, conn: BufferedConn, data: bytes) -> None:
        if not conn.received:
            conn.received = True
            if conn.state == IDLE:
                conn.state, conn.deadline = HEAD, time.monotonic() + HEAD_SECONDS
        conn.unreader.append(data)
        if conn.state == HEAD:
            self._try_head(conn, data)
        elif conn.state == BODY:
            self._count_body(conn, data)

    def _try_head(self, conn: BufferedConn, data: bytes) -> None:
        buffered = conn.unreader.buf.getvalue()
        if b"\r\n\r\n" not in buffered and not self._head_over_limit(buffered):
            return
        conn.requests += 1
        try:
            req = Request(self.cfg, conn.unreader, conn.client, conn.requests)
        except Exception as exc:  # noqa: BLE001 (any parse error is the client's: answered, never raised)
            self._answer_and_close(conn, exc)
            return
        conn.req = req
        # Whether to send "100 Continue" is decided here, never again by the pool thread (gunicorn's wsgi.create
        # reads this private flag; setup.cfg pins gunicorn 27.x, whose gthread internals this module relies on).
        expects_continue, req._expected_100_continue = req._expected_100_continue, False
        reader = req.body.reader
        if isinstance(reader, ChunkedReader):
            conn.chunked = ChunkedEnd()
            if conn.chunked.feed(conn.unreader.buf.getvalue()) or conn.chunked.size > self.body_limit:
                self._count_body(conn, b"")
                return
        elif isinstance(reader, LengthReader):
            if reader.length > self.body_limit:
                req.force_close()  # the app answers 413 without reading; the unread rest ends the connection
                self._ready(conn)
                return
            conn.body_needed = reader.length - len(conn.unreader.buf.getvalue())
            if conn.body_needed <= 0:
                self._ready(conn)
                return
        else:  # no Content-Length and not chunked: a request has no body (RFC 9112 section 6.3)
            req.body = Body(LengthReader(conn.unreader, 0))
            self._ready(conn)
            return
        conn.state, conn.deadline = BODY, time.monotonic() + BODY_SECONDS
        if expects_continue:
            with contextlib.suppress(OSError):
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _head_over_limit(self, buffered: bytes) -> bool:
        """Whether gunicorn's parser would refuse this head already, so it need not wait for the rest."""
        line_end = buffered.find(b"\r\n")
        line_limit = self.cfg.limit_request_line or 8190
        if line_end < 0:
            return len(buffered) > line_limit + 2
        limit = line_limit + 2 + (self.cfg.limit_request_fields or 100) * (self.cfg.limit_request_field_size + 2) + 4
        return len(buffered) > limit

    def _count_body(self, conn: BufferedConn, data: bytes) -> None:
        if conn.chunked is not None:
            if conn.chunked.feed(data) or conn.chunked.size > self.body_limit:
                if conn.chunked.size > self.body_limit:
                    conn.failure = RequestTooLarge()
                self._ready(conn)
            return
        conn.body_needed -= len(data)
        if conn.body_needed <= 0:
            self._ready(conn)

    def _ready(self, conn: BufferedConn) -> None:
        """The request is complete (or cannot be): a pool thread answers it."""
        self.poller.unregister(conn.sock)
        conn.state = SERVING
        self.enqueue_req(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        """Called by gthread's loop after each wake-up: close what missed its deadline (every one, if forced)."""
        now = time.monotonic()
        if not force and now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for conn in [c for c in self.conns if c.state != SERVING and (force or c.deadline <= now)]:
            if conn.state in (HEAD, BODY) and conn.received:
                message = f"The request {'head' if conn.state == HEAD else 'body'} did not arrive within "
                seconds = HEAD_SECONDS if conn.state == HEAD else BODY_SECONDS
                self._answer_and_close(conn, RequestTimeout(f"{message}{seconds:g} s."))
            else:
                self._close(conn)

    def murder_pending(self) -> None:
        """gthread's deferred connections do not exist here: every waiting connection is swept above."""

    def _cap_keepalive(self, deadline: float) -> None:
        """On shutdown: idle connections close now; a request on its way keeps at most until ``deadline``."""
        for conn in list(self.conns):
            if conn.state == IDLE or (conn.state == HEAD and not conn.received):
                self._close(conn)
            elif conn.state != SERVING:
                conn.deadline = min(conn.deadline, deadline)

    def _answer_and_close(self, conn: BufferedConn, exc: BaseException) -> None:
        _status, answer = error_answer(exc, self.body_limit)
        self.log.info("Invalid request from ip=%s: %s", _peer(conn.client), type(exc).__name__)
        with contextlib.suppress(OSError):
            conn.sock.send(answer)
        self._linger(conn)

    def _linger(self, conn: BufferedConn) -> None:
        """Half-close and drain what the client still sends for a while, so it reads the answer, not a reset."""
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        if conn.state == SERVING:
            conn.sock.setblocking(False)
            self._watch(conn)
        conn.state, conn.deadline = CLOSING, time.monotonic() + LINGER_SECONDS

    def _close(self, conn: BufferedConn) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        self.nr_conns -= 1
        self.accept_gate.held(self.nr_conns)
        if conn.state != SERVING:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        util.close(conn.sock)

    def finish_request(self, conn: BufferedConn, fs: Future[Any]) -> None:
        """Back on the main thread after a pool thread answered: wait for the next request, or close."""
        keepalive = not fs.cancelled() and fs.exception() is None and fs.result()
        if not keepalive or not self.alive:
            self._linger(conn)
            return
        leftover = conn.unreader.take_buffered()  # a pipelined next request, already received
        conn.unreader = _Buffered()
        conn.req, conn.chunked, conn.failure, conn.received = None, None, None, False
        conn.state, conn.deadline = IDLE, time.monotonic() + self.cfg.keepalive
        conn.sock.setblocking(False)
        self._watch(conn)
        if leftover:
            self._received(conn, leftover)

    # -- a pool thread: answer one complete request from memory ----------------------------------------------

    def handle(self, conn: BufferedConn) -> bool:
        req = conn.req
        try:
            conn.sock.settimeout(SEND_SECONDS)
            if req is None or conn.failure is not None:
                raise conn.failure or http_errors.NoMoreData(b"")
            body = req.body.read()  # from memory; a malformed chunked body raises here, before the app runs
            req.body = Body(LengthReader(IterUnreader([body]), len(body)))
            keepalive = self.handle_request(req, conn)
            return bool(keepalive) and not req.should_close()
        except StopIteration:
            return False
        except (TimeoutError, ConnectionError) as exc:
            self.log.debug("client gone while answering: %s", type(exc).__name__)
            return False
        except Exception as exc:  # noqa: BLE001 (answered as a JSON error, the exception logged by handle_error)
            self.handle_error(req, conn.sock, conn.client, exc)
            return False

    def handle_request(self, req: Any, conn: BufferedConn) -> bool:
        """gthread's ``handle_request`` line for line, but answering with :class:`http_response.Response`, which
        sends the head with the body in one write."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(
                req, conn.sock, conn.client, conn.server, self.cfg, response_class=http_response.Response
            )
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:  # type: ignore[has-type]
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                request_time = datetime.now() - request_start
                self.log.access(resp, req, environ, request_time)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            raise
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                # A timeout's SystemExit after the answer started: a 500 on the same socket would corrupt it.
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:  # gthread's: a failing hook is logged, the answer stands
                self.log.exception("Exception in post_request hook")
        return True

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """gunicorn's error answer, in the bridge's JSON error shape and without the request's text."""
        status, answer = error_answer(exc, self.body_limit)
        if status.startswith("5"):
            self.log.exception("Error handling request")
        else:
            self.log.info("Invalid request from ip=%s: %s", _peer(addr), type(exc).__name__)
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["PATH_INFO"] = _peer(addr), req.path or ""
            resp = Response(req, client, self.cfg)
            resp.status = status
            resp.response_length = len(answer)
            self.log.access(resp, req, environ, timedelta(0))
        with contextlib.suppress(Exception):
            util.write_nonblock(client, answer)


def _peer(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""
