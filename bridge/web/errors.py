"""One base exception and one JSON error shape for every failure a client can see.

Every 4xx and 5xx the bridge answers is ``{"error": {"code", "message", "fields"?}}``: legacy CI scripts log the
body, so it must say what was wrong without a stack trace and without echoing a secret.
"""

from __future__ import annotations

from typing import Any

import structlog
from flask import Flask, Response, current_app, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from bridge.storage import migrate
from bridge.storage.store import StorageUnavailable, write_refusal

log = structlog.get_logger(__name__)


class BridgeError(Exception):
    """An error with the HTTP status and machine-readable code a client receives."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


class InvalidInput(BridgeError):
    status = 400
    code = "invalid_field"


class Unauthorized(BridgeError):
    status = 401
    code = "unauthorized"


class NotFound(BridgeError):
    status = 404
    code = "not_found"


class Conflict(BridgeError):
    status = 409
    code = "immutable_event"


class Unavailable(BridgeError):
    """The database cannot be reached or stayed locked; the transaction did not commit, so the client should retry."""

    status = 503
    code = "unavailable"
    retry_after_seconds = 5


def error_response(error: BridgeError) -> tuple[Response, int]:
    return jsonify(error.to_body()), error.status


_HTTP_CODES = {
    404: ("not_found", "No such route."),
    405: ("method_not_allowed", "That method is not allowed on this route."),
    413: ("payload_too_large", "The request body is larger than 1 MiB."),
}


def register_error_handlers(app: Flask) -> None:
    """Route every exception through the one JSON shape; unexpected ones are logged, never shown."""

    @app.errorhandler(BridgeError)
    def _bridge_error(error: BridgeError) -> tuple[Response, int]:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code, message = _HTTP_CODES.get(status, (error.name.lower().replace(" ", "_"), error.name + "."))
        response, status = error_response(BridgeError(message, code=code, status=status))
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response, status

    @app.errorhandler(StorageUnavailable)
    def _storage_unavailable(error: StorageUnavailable) -> tuple[Response, int]:
        log.warning("request.storage_unavailable", reason=error.reason)
        return _unavailable(f"The database takes no writes: {error.reason}.", "storage_unavailable")

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError) -> tuple[Response, int]:
        # The driver's message can quote SQL and parameters, so only the error's type is logged.
        error_type = type(error.orig or error).__name__
        if migrate.migrations_pending(current_app.extensions["bridge.storage.store"]):
            log.error("request.migrations_pending", error_type=error_type, reason=migrate.MIGRATIONS_PENDING)
            return _unavailable(migrate.MIGRATIONS_PENDING, "migrations_pending")
        if not isinstance(error, OperationalError):
            return _unexpected(error)
        refusal = write_refusal(error)
        log.warning("request.database_unavailable", error_type=error_type, reason=refusal)
        if refusal:
            return _unavailable(f"The database takes no writes: {refusal}.", "storage_unavailable")
        return _unavailable("The database is unavailable; retry shortly.", Unavailable.code)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        # The traceback is logged without the exception's message (bridge.operations.logs.exception_text): a message can
        # quote the request body or a secret.
        log.exception("request.failed", error_type=type(error).__name__)
        body = BridgeError("The bridge could not handle this request; it was not stored.", code="internal")
        return jsonify(body.to_body()), 500


def _unavailable(message: str, code: str) -> tuple[Response, int]:
    """A 503 the client should retry after a while: nothing was stored."""
    unavailable = Unavailable(message, code=code)
    response, status = error_response(unavailable)
    response.headers["Retry-After"] = str(unavailable.retry_after_seconds)
    return response, status
