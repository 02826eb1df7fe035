"""The baselines the bridge is measured against, served by gunicorn with exactly the bridge's settings.

``bare``: a Flask app that answers every PUT with 200 and does nothing else, the ceiling of Flask + gunicorn here.
``naive``: a Flask handler that posts each event to the intake (``DD_INTAKE_URL``) and answers only afterwards,
the design the bridge replaces.
``lean``: the durable part of a create with the cheapest honest means, issue 17's "lean prototype" rebuilt: the
floor of this stack for the same job, measured beside the bridge (``bench_accept.py --lean``).

Run as ``python bench/baselines.py bare|naive|lean`` with the bridge's environment (PORT, WEB_CONCURRENCY...).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hmac
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, jsonify, request

from adapters import distelli
from bridge.config import Config, load_config
from bridge.ingest.ingest import mapping_context
from bridge.storage import migrate
from bridge.storage.store import Store
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


def lean_app(config: Config) -> Flask:
    """A create done the cheapest honest way: the token check, the JSON, the bridge's own ``BuildEventSchema``,
    ``advance_build`` and ``translate``, the related-push lookup, the event row and its outbox rows in the bridge's
    own schema (WAL, ``synchronous=FULL``: the fsync inside COMMIT), a leader/follower group commit across threads
    and an flock across processes, one log line, and the answer after COMMIT. No SQLAlchemy on the path, no
    request hooks, no metrics, no request id, no redaction, no storage checks: what the bridge adds over this is
    the price of its machinery, what this costs over ``bare`` the price of the job."""
    path = config.database_url.removeprefix("sqlite:///")
    store = Store(config.database_url)
    migrate.upgrade(store)
    store.dispose()
    app = Flask("lean")
    schema = distelli.BuildEventSchema()
    tokens = config.tokens
    local = threading.local()
    commit = _LeanGroupCommit(path)

    def reader() -> sqlite3.Connection:
        if not hasattr(local, "connection"):
            local.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection: sqlite3.Connection = local.connection
        return connection

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.put("/<username>/apps/<app_name>/events/buildEvent")
    def create(username: str, app_name: str) -> Any:
        expected = tokens.get(username, "")
        if not hmac.compare_digest((request.args.get("apiToken") or "").encode(), expected.encode()) or not expected:
            return jsonify({"error": {"code": "unauthorized"}}), 401
        body = json.loads(request.get_data())
        now = dt.datetime.now(dt.UTC)
        fields, state = distelli.advance_build(None, None, schema.load(body), now)
        index = distelli.index_columns(fields)
        related = []
        if index.commit_id:
            row = (
                reader()
                .execute(_LEAN_PUSH, (username, app_name, distelli.SOURCE, distelli.PUSH, index.commit_id))
                .fetchone()
            )
            if row:
                related.append(json.loads(row[0]))
        context = mapping_context(config, now)
        stamp = now.isoformat()

        def write(connection: sqlite3.Connection) -> int:
            values = (distelli.SOURCE, username, app_name, distelli.BUILD, index.status, index.branch)
            values += (index.env_name, index.commit_id, json.dumps(fields), json.dumps(state), json.dumps([body]))
            event_id: int = connection.execute(_LEAN_EVENT, (*values, stamp, stamp)).fetchone()[0]
            identity = (event_id, username, app_name, distelli.BUILD)
            record = distelli.DistelliRecord(*identity, fields, state, None, {}, related)
            outbounds = distelli.translate(record, context)
            rows = [
                (event_id, o.kind, o.unique_id, o.level, o.final, json.dumps(o.body), "pending", stamp, stamp)
                for o in outbounds
            ]
            connection.executemany(_LEAN_OUTBOX, rows)
            return event_id

        event_id = commit.run(write)
        sys.stderr.write(json.dumps({"event": "event.accepted", "event_id": event_id, "user": username}) + "\n")
        return jsonify({"event_id": str(event_id)}), 200

    return app


_LEAN_PUSH = (
    "SELECT fields FROM events WHERE username = ? AND app_name = ? AND source = ? AND event_type = ?"
    " AND commit_id = ? ORDER BY id DESC LIMIT 1"
)
_LEAN_EVENT = (
    "INSERT INTO events (source, username, app_name, event_type, status, branch, env_name, commit_id, fields, state,"
    " raw_body, event_time, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_LEAN_OUTBOX = (
    "INSERT INTO outbox (event_id, kind, unique_id, level, final, body, state, attempts, next_attempt_at, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)


class _LeanGroupCommit:
    """Leader/follower group commit: the first waiting thread commits every queued write in one transaction."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._queue: list[list[Any]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._lock_file: Any = None

    def run(self, write: Callable[[sqlite3.Connection], int]) -> int:
        entry: list[Any] = [write, None, None, threading.Event()]  # write, result, error, done
        with self._queue_lock:
            self._queue.append(entry)
        with self._leader:
            if not entry[3].is_set():
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit(group)
        if entry[2] is not None:
            raise entry[2]
        return int(entry[1])

    def _commit(self, group: list[list[Any]]) -> None:
        if self._connection is None:
            self._connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA busy_timeout=5000")
            self._lock_file = open(self._path + ".lean-lock", "a")  # noqa: SIM115
        connection = self._connection
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for entry in group:
                    entry[1] = entry[0](connection)
                connection.execute("COMMIT")
            except BaseException as exc:
                connection.execute("ROLLBACK")
                for entry in group:
                    entry[2] = exc
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            for entry in group:
                entry[3].set()


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
    elif sys.argv[1:] == ["lean"]:
        Baseline(lean_app(config)).run()
    else:
        sys.exit("usage: baselines.py bare|naive|lean")
