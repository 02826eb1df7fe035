"""Structured JSON logs with secrets redacted, for the web and worker processes alike."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from bridge.config import Config

_SECRET_QUERY = re.compile(r"((?:apiToken|api_key|token)=)[^&\s\"']+", re.IGNORECASE)
_SECRET_KEYS = frozenset({"apitoken", "dd-api-key", "dd_api_key", "authorization", "token", "secret"})


def redact(text: str) -> str:
    """Replace the value of every secret query parameter in a URL or log line."""
    return _SECRET_QUERY.sub(r"\1[REDACTED]", text)


def _redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[REDACTED]"
        elif isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(config: Config) -> None:
    """One JSON object per line on stderr, with the context bound to the request or worker."""
    level = getattr(logging, config.log_level)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
