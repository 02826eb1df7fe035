"""``POST /hooks/<adapter>``: one route for every webhook source in the registry.

The route is a thin shell: it finds the adapter and its secret, lets the adapter verify and parse the request,
and stores the record through :mod:`bridge.ingest.hooks` before answering 2xx. It has no source-specific code, so a new
source is a new adapter module and nothing here.
"""

from __future__ import annotations

import datetime as dt

import structlog
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from adapters.base import Rejected, RequestHeaders, WebhookAdapter
from adapters.registry import load_adapters
from bridge.config import Config
from bridge.ingest import hooks
from bridge.operations import metrics
from bridge.storage.models import storable_record
from bridge.storage.store import Store
from bridge.web.errors import InvalidInput, NotFound, Unauthorized
from bridge.web.routes.ingest_errors import answer_ingest_errors

log = structlog.get_logger(__name__)
blueprint = Blueprint("hooks", __name__)
answer_ingest_errors(blueprint)
ADAPTERS = "bridge.adapters"


@blueprint.record_once
def _load_registry(state: BlueprintSetupState) -> None:
    """Find the adapters once per app, when the app is built, so a request never scans entry points."""
    state.app.extensions.setdefault(ADAPTERS, load_adapters())


def _enabled(name: str) -> tuple[WebhookAdapter, str]:
    """The adapter and its secret; an unknown source and one without a secret look the same: 404."""
    config: Config = current_app.extensions["bridge.config"]
    adapter = current_app.extensions[ADAPTERS].get(name)
    secret = config.hook_secrets.get(name)
    if adapter is None or not secret:
        raise NotFound(f"No webhook source named {name!r} is enabled on this bridge.", code="unknown_source")
    return adapter, secret


@blueprint.post("/hooks/<name>")
def receive_hook(name: str) -> tuple[Response, int]:
    adapter, secret = _enabled(name)
    body = request.get_data(cache=True)
    headers = RequestHeaders(request.headers.items(), query=request.args.to_dict())
    reason = adapter.verify(headers, body, secret)
    if reason is not None:
        log.warning("hook.refused", source=name, reason=reason)
        raise Unauthorized(f"Webhook verification failed: {reason.replace(secret, '****')}", code="bad_signature")
    try:
        record = adapter.parse(headers, body)
    except Rejected as exc:
        raise InvalidInput(exc.message, fields=exc.fields, status=exc.status, code="invalid_payload") from None
    if record is None:
        log.info("hook.ignored", source=name)
        return jsonify({"ignored": True}), 202
    record = storable_record(record, body)
    received_at = dt.datetime.now(dt.UTC)
    store: Store = current_app.extensions["bridge.storage.store"]
    config: Config = current_app.extensions["bridge.config"]
    raw_body = hooks.stored_text(body)
    accepted = store.write(lambda session: hooks.receive(session, config, adapter, record, raw_body, received_at))
    log.info(
        "hook.accepted",
        source=name,
        event_id=accepted.event_id,
        event_type=record.event_type,
        duplicate=accepted.duplicate,
        enqueued=accepted.enqueued,
    )
    if not accepted.duplicate:
        metrics.count_accepted(name, record.event_type)
    return jsonify(hooks.summary(accepted)), 200 if accepted.duplicate else 202
