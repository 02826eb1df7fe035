"""What the bridge says about itself: Prometheus metrics and the OpenAPI document of its API.

``bridge.web.openapi`` (and apispec with it) is imported on the first request for the document, not at start:
most processes never serve it, and each would otherwise carry apispec for nothing.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.config import Config
from bridge.operations import metrics
from bridge.storage.store import Store

blueprint = Blueprint("meta", __name__)


@blueprint.get("/metrics")
def prometheus_metrics() -> Response:
    """Every process's counters (under gunicorn) plus the outbox as it is now."""
    config: Config = current_app.extensions["bridge.config"]
    store: Store = current_app.extensions["bridge.storage.store"]
    return Response(metrics.render(store, config.metrics_dir), mimetype=None, content_type=CONTENT_TYPE_LATEST)


@blueprint.get("/openapi.json")
def openapi_document() -> tuple[Response, int]:
    """The Distelli-compatible API, generated from the same marshmallow schemas the routes validate with."""
    from bridge.web import openapi

    return jsonify(openapi.document()), 200
