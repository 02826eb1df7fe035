"""Liveness and readiness for platform health checkers."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bridge import migrate
from bridge.store import Store

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process is up; touches nothing, so a platform can call it as often as it likes."""
    return jsonify({"status": "ok"}), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready only when the database answers and its schema is current."""
    store: Store = current_app.extensions["bridge.store"]
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        behind = migrate.pending_revision(store)
    except SQLAlchemyError as exc:
        reason = f"database unavailable: {type(getattr(exc, 'orig', None) or exc).__name__}"
        return jsonify({"status": "unavailable", "reason": reason}), 503
    if behind:
        return jsonify({"status": "unavailable", "reason": f"migrations pending (head is {behind})"}), 503
    return jsonify({"status": "ready"}), 200
