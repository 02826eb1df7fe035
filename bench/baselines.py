"""The baselines the bridge is measured against, served by gunicorn with exactly the bridge's settings.

``bare``: a Flask app that answers every PUT with 200 and does nothing else, the ceiling of Flask + gunicorn here.
``naive``: a Flask handler that posts each event to the intake (``DD_INTAKE_URL``) and answers only afterwards,
the design the bridge replaces.

Run as ``python bench/baselines.py bare|naive`` with the bridge's environment (PORT, WEB_CONCURRENCY...).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import requests
from flask import Flask, jsonify, request

from bridge.config import load_config
from bridge.web.server import BridgeGunicorn


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.put("/<path:_path>")
    def accept(_path: str) -> Any:
        request.get_data()
        return jsonify({"event_id": "1"}), 200

    return app


def naive_app(intake_url: str, api_key: str) -> Flask:
    app = Flask("naive")
    sessions = threading.local()

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.put("/<path:_path>")
    def forward(_path: str) -> Any:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()  # keep-alive per thread: the naive forwarder at its best
        event = {"data": {"type": "cipipeline_resource_request", "attributes": {"resource": request.get_json()}}}
        reply = sessions.session.post(
            intake_url + "/api/v2/ci/pipeline", json=event, headers={"DD-API-KEY": api_key}, timeout=30
        )
        if not reply.ok:
            return jsonify({"error": {"code": "intake", "message": str(reply.status_code)}}), 502
        return jsonify({"event_id": "1"}), 200

    return app


class Baseline(BridgeGunicorn):
    def __init__(self, app: Flask) -> None:
        self.app = app
        super().__init__(load_config(os.environ))

    def load(self) -> Any:
        return self.app


if __name__ == "__main__":
    config = load_config(os.environ)
    if sys.argv[1:] == ["bare"]:
        Baseline(bare_app()).run()
    elif sys.argv[1:] == ["naive"]:
        Baseline(naive_app(config.intake_base_url, config.dd_api_key or "")).run()
    else:
        sys.exit("usage: baselines.py bare|naive")
