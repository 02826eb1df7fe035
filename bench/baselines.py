"""The baselines the bridge is measured against, served by gunicorn with exactly the bridge's settings.

``bare``: a Flask app that answers every PUT with 200 and does nothing else, the ceiling of Flask + gunicorn here.
``naive``: a Flask handler that posts each event to the intake (``DD_INTAKE_URL``) and answers only afterwards,
the design the bridge replaces.
``lean``: the durable part of a create with the cheapest honest means, issue 17's "lean prototype" rebuilt: the
floor of this stack for the same job, measured beside the bridge (``bench_accept.py --lean``). On a PostgreSQL
``DATABASE_URL`` the same job runs on psycopg directly (:func:`lean_postgres_app`): the floor the bridge's
PostgreSQL figure is held against.

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
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import psycopg
import requests
from flask import Flask, abort, jsonify, make_response, request

from adapters import distelli
from bridge.config import Config, load_config
from bridge.ingest.ingest import mapping_context
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.server import BridgeGunicorn

T = TypeVar("T")


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
    app = _lean_flask("lean")
    schema = distelli.BuildEventSchema()
    tokens = config.tokens
    commit = _LeanGroupCommit(path)
    reader = _per_thread(lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False))

    @app.put("/<username>/apps/<app_name>/events/buildEvent")
    def create(username: str, app_name: str) -> Any:
        body, now, fields, state, index = _LeanBuild.read(tokens, schema, username)
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
            values: tuple[Any, ...] = (distelli.SOURCE, username, app_name, distelli.BUILD, index.status, index.branch)
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


def _per_thread(open_connection: Callable[[], T]) -> Callable[[], T]:
    """A function giving the calling thread its own connection, opened on its first call."""
    local = threading.local()

    def connection() -> T:
        if not hasattr(local, "connection"):
            local.connection = open_connection()
        opened: T = local.connection
        return opened

    return connection


def _lean_flask(name: str) -> Flask:
    app = Flask(name)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


class _LeanBuild(NamedTuple):
    """What both lean creates read from a request: the body, when it came, the build's fields and index columns."""

    body: Any
    now: dt.datetime
    fields: dict[str, Any]
    state: dict[str, Any]
    index: Any

    @classmethod
    def read(cls, tokens: Mapping[str, str], schema: Any, username: str) -> _LeanBuild:
        """The build of this request; a 401 when its token is not ``username``'s."""
        expected = tokens.get(username, "")
        if not hmac.compare_digest((request.args.get("apiToken") or "").encode(), expected.encode()) or not expected:
            abort(make_response(jsonify({"error": {"code": "unauthorized"}}), 401))
        body = json.loads(request.get_data())
        now = dt.datetime.now(dt.UTC)
        fields, state = distelli.advance_build(None, None, schema.load(body), now)
        return cls(body, now, fields, state, distelli.index_columns(fields))


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


def lean_postgres_app(config: Config) -> Flask:
    """:func:`lean_app` on PostgreSQL through psycopg alone, with the fewest round trips found: on the thread's own
    autocommit connection one SELECT draws the event's id from its sequence and reads the related push; the mapping
    runs on that id outside any lock; then one statement per create (the event row and its outbox rows, a
    data-modifying WITH) in a group commit of the process's threads (one transaction, one COMMIT, on one
    connection), the answer after COMMIT. PostgreSQL takes concurrent writers itself, so no lock across processes.

    Measured against the plainer form (the lookup alone, then INSERT ... RETURNING id and the outbox rows inside the
    group): 951, 994, 955 req/s against 890, 862, 857 in alternating pairs (bench/RESULTS.md, 2026-12-03).
    """
    store = Store(config.database_url)
    migrate.upgrade(store)
    store.dispose()
    url = config.database_url.replace("postgresql+psycopg://", "postgresql://")
    app = _lean_flask("lean-postgres")
    schema = distelli.BuildEventSchema()
    tokens = config.tokens
    commit = _LeanPostgresGroupCommit(url)
    reader = _per_thread(lambda: _lean_postgres_connection(url, autocommit=True))

    @app.put("/<username>/apps/<app_name>/events/buildEvent")
    def create(username: str, app_name: str) -> Any:
        body, now, fields, state, index = _LeanBuild.read(tokens, schema, username)
        lookup = (username, app_name, distelli.SOURCE, distelli.PUSH, index.commit_id)
        row = reader().execute(_LEAN_PG_ID_AND_PUSH, lookup).fetchone()
        assert row is not None  # a SELECT without FROM gives one row
        event_id, push = int(row[0]), row[1]
        record = distelli.DistelliRecord(
            event_id, username, app_name, distelli.BUILD, fields, state, None, {}, [push] if push else []
        )
        outbounds = distelli.translate(record, mapping_context(config, now))
        stamp = now.replace(tzinfo=None)
        parameters = [event_id, distelli.SOURCE, username, app_name, distelli.BUILD, index.status, index.branch]
        parameters += [index.env_name, index.commit_id, json.dumps(fields), json.dumps(state), json.dumps([body])]
        parameters += [stamp, stamp]
        for outbound in outbounds:
            parameters += [event_id, outbound.kind, outbound.unique_id, outbound.level, outbound.final]
            parameters += [json.dumps(outbound.body), stamp, stamp]
        statement = _LEAN_PG_WRITE + ", ".join([_LEAN_PG_OUTBOX_ROW] * len(outbounds))

        def write(connection: psycopg.Connection[Any]) -> int:
            connection.execute(statement, parameters)
            return event_id

        commit.run(write)
        sys.stderr.write(json.dumps({"event": "event.accepted", "event_id": event_id, "user": username}) + "\n")
        return jsonify({"event_id": str(event_id)}), 200

    return app


_LEAN_PG_ID_AND_PUSH = (
    "SELECT nextval(pg_get_serial_sequence('events', 'id')), (SELECT fields FROM events WHERE username = %s"
    " AND app_name = %s AND source = %s AND event_type = %s AND commit_id = %s ORDER BY id DESC LIMIT 1)"
)
_LEAN_PG_WRITE = (
    "WITH event AS (INSERT INTO events (id, source, username, app_name, event_type, status, branch, env_name,"
    " commit_id, fields, state, raw_body, event_time, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s, %s, %s))"
    " INSERT INTO outbox (event_id, kind, unique_id, level, final, body, state, attempts, next_attempt_at,"
    " created_at) VALUES "
)
_LEAN_PG_OUTBOX_ROW = "(%s, %s, %s, %s, %s, %s::json, 'pending', 0, %s, %s)"


def _lean_postgres_connection(url: str, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection that plans each statement for its values, as the bridge's do (bridge/storage/store.py): on a
    generic plan the push lookup scans the events table backwards, a cost that grows with the table."""
    connection = psycopg.connect(url, autocommit=True)
    connection.execute("SET plan_cache_mode = force_custom_plan")
    connection.autocommit = autocommit
    return connection


class _LeanGroupCommit:
    """Leader/follower group commit: the first waiting thread commits every queued write in one transaction."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._queue: list[list[Any]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._lock_file: Any = None

    def run(self, write: Callable[[Any], int]) -> int:
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


class _LeanPostgresGroupCommit(_LeanGroupCommit):
    """:class:`_LeanGroupCommit` on one psycopg connection of the process, without the lock across processes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._postgres: psycopg.Connection[Any] | None = None

    def _commit(self, group: list[list[Any]]) -> None:
        if self._postgres is None:
            self._postgres = _lean_postgres_connection(self._path, autocommit=False)
        connection = self._postgres
        try:
            for entry in group:
                entry[1] = entry[0](connection)
            connection.commit()
        except BaseException as exc:
            connection.rollback()
            for entry in group:
                entry[2] = exc
        finally:
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
    elif sys.argv[1:] == ["lean"] and config.database_url.startswith("sqlite"):
        Baseline(lean_app(config)).run()
    elif sys.argv[1:] == ["lean"]:
        Baseline(lean_postgres_app(config)).run()
    else:
        sys.exit("usage: baselines.py bare|naive|lean")
