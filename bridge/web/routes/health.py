"""Liveness and readiness for platform health checkers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bridge.operations import backlog
from bridge.operations.metrics import delivery_paused
from bridge.storage import migrate
from bridge.storage.store import StorageUnavailable, Store, write_refusal

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process is up; touches nothing, so a platform can call it as often as it likes."""
    return jsonify({"status": "ok"}), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready only when some user has an apiToken, and the database answers and its schema is current.

    A paused delivery (the intake refused the API key) is shown but does not fail readiness: the bridge still
    accepts and stores events, and taking it out of the router would lose them instead.
    """
    if not current_app.extensions["bridge.config"].tokens:
        return _unavailable("BRIDGE_TOKENS is empty: every Distelli API request is refused", tokens="none")
    store: Store = current_app.extensions["bridge.storage.store"]
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        behind = migrate.pending_revision(store)
        if behind:
            reason = f"{migrate.MIGRATIONS_PENDING} (head is {behind})"
            return _unavailable(reason, database="ok", migrations="pending")
        refused = store.writes_refused()
        if refused:
            return _unavailable(f"the database takes no writes: {refused}", database="refuses writes")
        with store.read() as session:
            delivery = delivery_paused(session)
            warnings = backlog.warnings(session, current_app.extensions["bridge.config"])
    except StorageUnavailable as exc:
        return _unavailable(f"the database takes no writes: {exc.reason}", database="refuses writes")
    except DBAPIError as exc:
        refusal = write_refusal(exc)
        if refusal:
            return _unavailable(f"the database takes no writes: {refusal}", database="refuses writes")
        return _unavailable(f"database unavailable: {type(exc.orig or exc).__name__}")
    except SQLAlchemyError as exc:
        return _unavailable(f"database unavailable: {type(exc).__name__}")
    # Still 200 when degraded: the bridge accepts and stores events; the reason tells the operator what to fix.
    status = {"status": "degraded", "reason": "; ".join(warnings)} if warnings else {"status": "ready"}
    return jsonify({**status, "database": "ok", "migrations": "current", "delivery": delivery}), 200


def _unavailable(reason: str, **detail: Any) -> tuple[Response, int]:
    return jsonify({"status": "unavailable", "reason": reason, **detail}), 503
