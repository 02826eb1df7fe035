"""Structured JSON logs with secrets redacted, for the web and worker processes and gunicorn's own logs alike.

Every line on stdout or stderr is one JSON object: structlog events, standard-library records (SQLAlchemy,
Alembic, gunicorn's error log) and gunicorn's access log all pass through the same redacting renderer, because a
Distelli client sends its apiToken in the query string and a leaked token is a leaked deploy credential.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import traceback
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import structlog
from gunicorn.glogging import Logger as _GunicornBaseLogger
from structlog.typing import EventDict

from bridge.config import SECRET_FIELDS, Config

if TYPE_CHECKING:
    from flask import Flask, Response

REDACTED = "[REDACTED]"
REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_FIELDS = (
    "method",
    "path",
    "query",
    "status",
    "bytes",
    "duration_ms",
    "remote_addr",
    "user_agent",
    "request_id",
)

# A query-string or form pair as it appears in a log string, name and value still percent-encoded.
_PAIR = re.compile(r"([^\s&?=\"'<>;,]+)=([^&\s\"'<>;,]*)")
_SECRET_HEADER = re.compile(r"((?:authorization|dd-api-key|dd-application-key)[\"']?\s*[:=]\s*[\"']?)[^,\"'\n]+", re.I)
# Words that make a parameter name or dict key secret, whatever else it says (apiToken, private_token, hook secret).
_SECRET_NAME_WORDS = ("token", "secret", "password", "api_key", "apikey", "api-key", "authorization", "signature")
_SECRET_KEYS = frozenset(
    {"apitoken", "api_token", "dd-api-key", "dd_api_key", "authorization", "token", "secret", "password"}
)
_SECRET_HEADER_WORDS = ("authorization", "dd-api-key", "dd-application-key")
# Each word list as one pattern: redact() runs on every value of every log line, and one regex search over a short
# string costs a fraction of testing each word in turn.
_SECRET_NAME_WORD = re.compile("|".join(map(re.escape, _SECRET_NAME_WORDS)))
_SECRET_HEADER_WORD = re.compile("|".join(map(re.escape, _SECRET_HEADER_WORDS)))
_WORD = re.compile(r"[^\s&?=/\"'<>;,]+")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Secret values from the configuration, replaced wherever they appear; set by configure_logging.
_known_secrets: list[str] = []
# What every line logged while serving a request carries (its id, client, user, app): one mapping, replaced whole.
# structlog's contextvars keep a ContextVar per key, and merging them walks the whole context on every line; with
# binding and clearing that cost 68,000 instructions a request (1.6 % of a create, counted by callgrind).
_NO_CONTEXT: Mapping[str, Any] = {}
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("bridge_log_context", default=_NO_CONTEXT)
# Values up to this length have their redacted form remembered: most recur on every line (event and logger names,
# levels, methods, paths, users, apps, client addresses), and a look-up costs a fraction of redacting again.
_REMEMBERED_LENGTH = 256


def is_secret_name(name: str) -> bool:
    """Whether a parameter or key named ``name`` (percent-decoded, any case) holds a secret."""
    return _SECRET_NAME_WORD.search(unquote_plus(name).lower()) is not None


def _is_known_secret(text: str) -> bool:
    return any(secret in text for secret in _known_secrets)


def _redact_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if is_secret_name(name) or (_known_secrets and _is_known_secret(unquote_plus(value))):
        return f"{name}={REDACTED}"
    return match.group(0)


def _redact_encoded_secrets(text: str) -> str:
    """Replace each word that, percent-decoded, holds a configured secret (``%61bcd...`` in a path, say)."""
    if not _is_known_secret(unquote_plus(text)):
        return text
    return _WORD.sub(_redact_word, text)


def _redact_word(word: re.Match[str]) -> str:
    return REDACTED if _is_known_secret(unquote_plus(word[0])) else word[0]


def redact(text: str) -> str:
    """Replace secret parameter values, secret header values and every configured secret in a log string.

    Names and values are compared after percent-decoding, because the bridge authenticates after decoding:
    ``?api%54oken=%61bcd...`` is the apiToken ``abcd...`` to it, so it must be to the redaction as well.
    """
    return _redact_remembered(text) if len(text) <= _REMEMBERED_LENGTH else _redact(text)


@functools.lru_cache(maxsize=4096)
def _redact_remembered(text: str) -> str:
    """:func:`_redact`, remembered; configure_logging forgets every answer when it sets the secrets."""
    return _redact(text)


def _redact(text: str) -> str:
    lowered = text.lower()
    # Percent- or form-encoding: without it a line can only hold secrets as they are.
    encoded = "%" in text or "+" in text
    if "=" in text and (encoded or _known_secrets or _SECRET_NAME_WORD.search(lowered)):
        text = _PAIR.sub(_redact_pair, text)
    if _SECRET_HEADER_WORD.search(lowered):
        text = _SECRET_HEADER.sub(rf"\1{REDACTED}", text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if encoded and _known_secrets:
        text = _redact_encoded_secrets(text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: REDACTED if _secret_key(key) else _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _is_plain_key(key):
            if isinstance(value, str):  # nearly every value: redacted without the detour through _scrub
                event_dict[key] = redact(value)
            elif isinstance(value, dict | list | tuple):
                event_dict[key] = _scrub(value)
        elif not key.startswith("_"):
            event_dict[key] = REDACTED
    return event_dict


@functools.lru_cache(maxsize=1024)
def _is_plain_key(key: str) -> bool:
    """Whether an event's value under ``key`` is logged (redacted): not a secret's key, nor ``_``-prefixed
    structlog bookkeeping. Remembered: a line has a dozen keys, nearly all of them the same on every line."""
    return not key.startswith("_") and not _secret_key(key)


def _secret_key(key: Any) -> bool:
    return str(key).lower() in _SECRET_KEYS


def exception_text(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """A traceback with every frame and each exception's type, but no exception's message.

    A message can quote anything the failing code held: SQLAlchemy quotes the statement's bound values (a whole
    webhook body), a parser quotes the text it choked on, a driver quotes the row that broke a unique index. The
    frames and the types say where and what failed; the request id ties the line to the request.
    """
    parts: list[str] = []
    seen: set[int] = set()
    error: BaseException | None = exc_info[1]
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
        kind = type(error)
        parts.append(f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}")
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return "\n\nwhile handling that, from:\n".join(parts)


def _exception_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        event_dict["exception"] = exception_text(exc_info)
    return event_dict


def bind_context(**values: Any) -> None:
    """Add ``values`` to every line this request (this thread's current context) logs from now on."""
    _CONTEXT.set({**_CONTEXT.get(), **values})


def clear_context() -> None:
    """Forget what :func:`bind_context` bound: the next request on this thread starts with none of it."""
    _CONTEXT.set(_NO_CONTEXT)


def _merge_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """The bound context in each line, under the line's own values (structlog's ``merge_contextvars`` rule)."""
    for key, value in _CONTEXT.get().items():
        event_dict.setdefault(key, value)
    return event_dict


def json_formatter() -> logging.Formatter:
    """The one formatter of every handler: a JSON object per record, secrets redacted, request context merged."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _merge_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(allow=ACCESS_FIELDS),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render_processor],
    )


def _as_logged(value: Any) -> Any:
    """What a value JSON cannot encode is logged as (structlog's rule: its ``__structlog__()``, else its repr),
    redacted: the repr of an object that holds a secret (a config, a request) is text only now, after the
    redaction of the event's strings."""
    as_structlog = getattr(value, "__structlog__", None)
    shown = as_structlog() if callable(as_structlog) else repr(value)
    return redact(shown) if isinstance(shown, str) else _scrub(shown)


# The encoder structlog.processors.JSONRenderer() would build per line, built once.
_ENCODE = json.JSONEncoder(default=_as_logged).encode


def _rendered(event_dict: EventDict) -> str:
    """An event's JSON line as every line is rendered: its exception as text, its secrets redacted."""
    return _ENCODE(_redact_processor(None, "", _exception_processor(None, "", event_dict)))


def _render_processor(_logger: Any, _method: str, event_dict: EventDict) -> str:
    return _rendered(event_dict)


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time, so captured output in tests is followed."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return


def secret_values(config: Config) -> set[str]:
    """Every secret of ``config``: the values of the fields ``SECRET_FIELDS`` names (tokens, DD_API_KEY, hook
    secrets, and whichever secret a new setting adds there), so a new secret is redacted by being declared one."""
    found: set[str] = set()
    for name in SECRET_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, Mapping):
            found.update(item for item in value.values() if isinstance(item, str))
    return {value for value in found if value}


def configure_logging(config: Config) -> None:
    """One JSON object per line on stderr, with the context bound to the request or worker."""
    _known_secrets[:] = sorted(secret_values(config), key=len, reverse=True)
    _redact_remembered.cache_clear()
    level = getattr(logging, config.log_level)
    handler = _StderrHandler()
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            _merge_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _LineLogger.wrap,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_LineLoggerFactory(handler),
        cache_logger_on_first_use=False,
    )


class _LineLogger:
    """What structlog's loggers write to: each event rendered as the root handler's formatter renders it
    (:func:`_rendered`), and written under that handler's lock to its stream, with no ``LogRecord`` in between.

    Going through the standard library cost a caller-frame walk, two ``LogRecord`` objects (the record and the
    formatter's copy of it) and the formatter's bookkeeping for each line, a third of the line's instructions,
    for the line the same processors render in the end. What the standard library decided on the way is decided
    here too: the logger's level (and ``logging.disable``); an error while writing is reported by the handler and
    swallowed. Not consulted: filters on a bridge logger or on the handler (none is set) and handlers added to the
    root logger after configure_logging (pytest's caplog sees only the other libraries' records).
    """

    __slots__ = ("_handler", "_logger", "name")

    def __init__(self, logger: logging.Logger, handler: logging.StreamHandler[Any]) -> None:
        self.name = logger.name
        self._logger = logger
        self._handler = handler

    @staticmethod
    def wrap(_logger: Any, _method: str, event_dict: EventDict) -> tuple[tuple[EventDict], dict[str, Any]]:
        """The last processor: hands the event dict itself to the logger method (structlog would pass a dict as
        keyword arguments)."""
        return (event_dict,), {}

    def _write(self, level: int, event_dict: EventDict) -> None:
        if not self._logger.isEnabledFor(level):
            return
        handler = self._handler
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(f"{_rendered(event_dict)}{handler.terminator}")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 (as StreamHandler.emit: reported by the handler, failing no request)
            handler.handleError(logging.LogRecord(self.name, level, "", 0, event_dict, (), None))
        finally:
            handler.release()

    def debug(self, event_dict: EventDict) -> None:
        self._write(logging.DEBUG, event_dict)

    def info(self, event_dict: EventDict) -> None:
        self._write(logging.INFO, event_dict)

    def warning(self, event_dict: EventDict) -> None:
        self._write(logging.WARNING, event_dict)

    def error(self, event_dict: EventDict) -> None:
        self._write(logging.ERROR, event_dict)

    def critical(self, event_dict: EventDict) -> None:
        self._write(logging.CRITICAL, event_dict)


class _LineLoggerFactory:
    """structlog's logger factory: one :class:`_LineLogger` per name, for the handler configure_logging made.

    The names are the standard library's (structlog's ``LoggerFactory`` picks the caller's module when none is
    given), so levels set on ``logging.getLogger(name)`` still apply.
    """

    def __init__(self, handler: logging.StreamHandler[Any]) -> None:
        self._handler = handler
        self._stdlib = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])
        self._named: dict[str, _LineLogger] = {}

    def __call__(self, *args: Any) -> _LineLogger:
        if args and isinstance(args[0], str):
            known = self._named.get(args[0])
            if known is None:
                known = self._named.setdefault(args[0], _LineLogger(self._stdlib(*args), self._handler))
            return known
        return _LineLogger(self._stdlib(*args), self._handler)


def init_app(app: Flask) -> None:
    """Give every request an id (the client's X-Request-ID when it is sane) bound to its logs and echoed back."""
    # Imported here, not at the top: the delivery worker configures its logging from this module too and has no
    # use for Flask.
    from flask import g, request

    @app.before_request
    def _bind_request() -> None:
        given = request.headers.get(REQUEST_ID_HEADER)
        g.request_id = request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        # No clear here: the teardown below runs after every request, so the thread arrives with no context.
        bind_context(request_id=request_id, client=request.remote_addr)

    @app.teardown_request
    def _unbind_request(_error: BaseException | None) -> None:
        # A worker thread serves many requests; what it logs between them must not carry this one's context.
        clear_context()

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response


class GunicornLogger(_GunicornBaseLogger):
    """gunicorn's logger with JSON output: the access log is one ``http.access`` object per request.

    The query string is logged through the same redaction as everything else, so filters stay visible and the
    apiToken does not.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(json_formatter())
        for handler in self.access_log.handlers:
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(_RenderedFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        # Handed straight to the handlers: Logger.info would look up the caller's frame (structlog's logger class
        # walks the stack for it) for a record whose line is already rendered.
        line = access_line(resp, environ, request_time)
        self.access_log.handle(logging.LogRecord("gunicorn.access", logging.INFO, "", 0, line, None, None))


class _RenderedFormatter(logging.Formatter):
    """The access log's formatter: its records arrive as finished JSON lines (:func:`access_line`)."""

    def format(self, record: logging.LogRecord) -> str:
        return str(record.msg)


def access_line(resp: Any, environ: Mapping[str, Any], request_time: timedelta) -> str:
    """One request's ``http.access`` JSON object, with the fields and redaction every other line gets.

    Rendered here rather than through structlog's formatter chain: that chain (context merge, level, logger name,
    extras, redaction of every key and value, JSON) cost a third of a millisecond per request on the accept path,
    where these fixed fields need only the strings a client chose redacted and one encoder call.
    """
    status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
    query = environ.get("QUERY_STRING")
    fields = {
        "event": "http.access",
        "level": "info",
        "logger": "gunicorn.access",
        "timestamp": _timestamp(),
        "method": _redacted(environ.get("REQUEST_METHOD")),
        "path": _redacted(environ.get("PATH_INFO")),
        "query": _redacted(query) if query else None,
        "status": int(status) if str(status).isdigit() else status,
        "bytes": getattr(resp, "sent", None),
        "duration_ms": round(request_time.total_seconds() * 1000, 1),
        "remote_addr": _redacted(environ.get("REMOTE_ADDR")),
        "user_agent": _redacted(environ.get("HTTP_USER_AGENT")),
        "request_id": _redacted(_header(resp.headers, REQUEST_ID_HEADER)),
    }
    return _ACCESS_ENCODER.encode(fields)


_ACCESS_ENCODER = json.JSONEncoder()
_STAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True)


def _timestamp() -> Any:
    return _STAMPER(None, "info", {})["timestamp"]


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _header(headers: Iterable[tuple[str, str]] | Any, name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    return next((value for key, value in items if key.lower() == wanted), None)
