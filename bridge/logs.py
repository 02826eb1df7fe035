"""Structured JSON logs with secrets redacted, for the web and worker processes and gunicorn's own logs alike.

Every line on stdout or stderr is one JSON object: structlog events, standard-library records (SQLAlchemy,
Alembic, gunicorn's error log) and gunicorn's access log all pass through the same redacting renderer, because a
Distelli client sends its apiToken in the query string and a leaked token is a leaked deploy credential.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterable, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from gunicorn.glogging import Logger as _GunicornBaseLogger

from bridge.config import Config

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

_SECRET_QUERY = re.compile(r"((?:apiToken|api_key|apikey|token|secret)=)[^&\s\"']+", re.IGNORECASE)
_SECRET_HEADER = re.compile(r"((?:authorization|dd-api-key|dd-application-key)[\"']?\s*[:=]\s*[\"']?)[^,\"'\n]+", re.I)
_SECRET_KEYS = frozenset(
    {"apitoken", "api_token", "dd-api-key", "dd_api_key", "authorization", "token", "secret", "password"}
)
# Words one of the two patterns above needs; a line with none of them (most lines) skips both substitutions.
_SECRET_WORDS = ("token", "secret", "api_key", "apikey", "authorization", "dd-api-key", "dd-application-key")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Secret values from the configuration, replaced wherever they appear; set by configure_logging.
_known_secrets: list[str] = []


def redact(text: str) -> str:
    """Replace secret query values, secret header values and every configured secret in a log string."""
    lowered = text.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        text = _SECRET_HEADER.sub(rf"\1{REDACTED}", _SECRET_QUERY.sub(rf"\1{REDACTED}", text))
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: REDACTED if str(key).lower() in _SECRET_KEYS else _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue
        event_dict[key] = REDACTED if key.lower() in _SECRET_KEYS else _scrub(value)
    return event_dict


def json_formatter() -> logging.Formatter:
    """The one formatter of every handler: a JSON object per record, secrets redacted, request context merged."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(allow=ACCESS_FIELDS),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
    )


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time, so captured output in tests is followed."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return


def configure_logging(config: Config) -> None:
    """One JSON object per line on stderr, with the context bound to the request or worker."""
    _known_secrets[:] = sorted(
        {
            *config.tokens.values(),
            *config.hook_secrets.values(),
            *(secret for secret in (config.dd_api_key, config.admin_token) if secret),
        },
        key=len,
        reverse=True,
    )
    level = getattr(logging, config.log_level)
    handler = _StderrHandler()
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def init_app(app: Flask) -> None:
    """Give every request an id (the client's X-Request-ID when it is sane) bound to its logs and echoed back."""
    # Imported here, not at the top: the delivery worker configures its logging from this module too and has no
    # use for Flask.
    from flask import g, request

    @app.before_request
    def _bind_request() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id, client=request.remote_addr)

    @app.teardown_request
    def _unbind_request(_error: BaseException | None) -> None:
        # A worker thread serves many requests; what it logs between them must not carry this one's context.
        structlog.contextvars.clear_contextvars()

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
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(json_formatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": redact(environ.get("QUERY_STRING", "")) or None,
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "request_id": _header(resp.headers, REQUEST_ID_HEADER),
        }
        self.access_log.info("http.access", extra=fields)


def _header(headers: Iterable[tuple[str, str]] | Any, name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    return next((value for key, value in items if key.lower() == wanted), None)
