"""The operator console's pages on a store of 1,000,000 events: each must answer in under 100 ms.

    .venv/bin/python bench/bench_console.py [--history 1000000] [--requests 30]

One SQLite store is filled the way bench_scale.py fills it (bulk SQL copies of one real build, its four outbox
rows and their delivery attempts), with the history spread over 30 days, 1,000 apps of one Distelli user plus a
webhook source, a 10,000-row pending backlog and 1,000 dead letters. Then ``pipeline-bridge serve --no-worker``
with BRIDGE_ADMIN_TOKEN set answers every page (and a deep page of each list) ``--requests`` times over a
Bearer GET, one at a time: wall time per page (p50, p95, max) and the server's CPU ms per request. Last, every
statement the pages run is shown with EXPLAIN QUERY PLAN and any full scan of a big table is flagged.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import requests
from bench_scale import BIG_TABLES, copy_rows, explain, in_process_config
from common import (
    bridge,
    cpu_seconds,
    header,
    percentile,
    sqlite_url,
    table,
    verdict,
    workdir,
)
from sqlalchemy import event

from bridge.delivery.intake import FileSink
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from bridge.web.app import create_app

ADMIN_TOKEN = "bench-console-admin-token-0001"
TARGET_MS = 100.0
SPAN_SECONDS = 30 * 86400
BACKLOG, DEAD = 10_000, 1_000
BIG = (*BIG_TABLES, "delivery_attempts")


def seed(database_url: str, directory: Path) -> Store:
    """A migrated store with one real build (Running, then Success), delivered once to the file sink."""
    from bench_scale import seed as seed_build

    store = seed_build(database_url)
    Sender(store, FileSink(str(directory / "seed-sink.jsonl"))).run_once()
    return store


def fill(path: Path, history: int) -> None:
    """``history`` events over the last 30 days, one delivered outbox row and one attempt each, plus a backlog
    and dead letters; ids grow with time as they do in a running bridge."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    first_event = db.execute("SELECT max(id) FROM events").fetchone()[0] + 1
    first_outbox = db.execute("SELECT max(id) FROM outbox").fetchone()[0] + 1
    age = f"(({history} - i) * {SPAN_SECONDS} / {history})"
    moment = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || {age} || ' seconds')"
    webhook = "i % 10 = 0"
    copy_rows(
        db,
        "events",
        history,
        {
            "source": f"CASE WHEN {webhook} THEN 'github' ELSE source END",
            "username": f"CASE WHEN {webhook} THEN 'github' ELSE username END",
            "app_name": "'app-' || (i % 1000)",
            "commit_id": "printf('%040x', i * 2654435761)",
            "raw_body": "'[]'",
            "event_time": moment,
            "updated_at": moment,
        },
    )
    copy_rows(
        db,
        "outbox",
        history,
        {
            "event_id": f"{first_event - 1} + i",
            "unique_id": "'history-' || i",
            "state": "'delivered'",
            "created_at": moment,
            "delivered_at": moment,
        },
    )
    copy_rows(db, "delivery_attempts", history, {"outbox_id": f"{first_outbox - 1} + i", "attempted_at": moment})
    for state, count in (("pending", BACKLOG), ("dead", DEAD)):
        copy_rows(
            db,
            "outbox",
            count,
            {
                "event_id": f"{first_event + history - 1} - (i % 5000)",
                "unique_id": f"'{state}-' || i",
                "state": f"'{state}'",
                "reason": "'the intake refused it: 400: bench'" if state == "dead" else "NULL",
                "next_attempt_at": "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 day')",
                "created_at": "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (i % 3600) || ' seconds')",
                "delivered_at": "NULL",
                "lease_owner": "NULL",
                "lease_until": "NULL",
            },
        )
    db.execute("COMMIT")  # no ANALYZE: the bridge never runs one, so its plans are those of a store without statistics
    db.close()


def pages(path: Path, history: int) -> list[tuple[str, str]]:
    """(name, path) of every page, with a deep page of each list, for ids that exist in this store."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        newest = db.execute("SELECT max(id) FROM events WHERE source = 'distelli'").fetchone()[0]
        middle = db.execute("SELECT min(id) FROM events WHERE id > ?", (history // 2,)).fetchone()[0]
        commit = db.execute("SELECT commit_id FROM events WHERE id = ?", (middle,)).fetchone()[0]
        dead = db.execute("SELECT id FROM outbox WHERE state = 'dead' ORDER BY id LIMIT 1 OFFSET 500").fetchone()[0]
    return [
        ("overview", "/console/"),
        ("apps and sources", "/console/apps"),
        ("apps, page 20", "/console/apps?after_user=jdoe&after_app=app-5"),
        ("an app's events", "/console/apps/jdoe/app-7"),
        ("an app's events, deep page", f"/console/apps/jdoe/app-7?before={middle}"),
        ("build timeline", f"/console/builds/{newest}"),
        ("event detail", f"/console/events/{newest}"),
        ("dead letters", "/console/dead-letters"),
        ("dead letters, deep page", f"/console/dead-letters?before={dead}"),
        ("search: commit prefix", f"/console/search?q={commit[:10]}"),
        ("search: build id", f"/console/search?q={middle}"),
        ("search: app name", "/console/search?q=app-42"),
    ]


def time_pages(base_url: str, listed: list[tuple[str, str]], count: int, pids: list[int]) -> list[tuple[str, ...]]:
    rows = [("page", "p50 ms", "p95 ms", "max ms", "server CPU ms/request", "under 100 ms (p95)")]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    for name, path in listed:
        answer = session.get(base_url + path, timeout=30)  # warm: the first request of a worker pays its imports
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        walls = []
        cpu_before = cpu_seconds(pids)
        for _ in range(count):
            started = time.perf_counter()
            answer = session.get(base_url + path, timeout=30)
            walls.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200
        cpu_ms = (cpu_seconds(pids) - cpu_before) * 1000 / count
        p95 = percentile(walls, 0.95)
        rows.append(
            (
                name,
                f"{percentile(walls, 0.5):.1f}",
                f"{p95:.1f}",
                f"{max(walls):.1f}",
                f"{cpu_ms:.1f}",
                verdict(p95 < TARGET_MS),
            )
        )
    return rows


def statements(store: Store, database_url: str, listed: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """Every SQL statement the pages execute, with its parameters, from the app in this process."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    config = dataclasses.replace(in_process_config(database_url), admin_token=ADMIN_TOKEN)
    app = create_app(config, store)
    reader = app.extensions["bridge.web.console.reader"]
    event.listen(reader.engine, "before_cursor_execute", record)
    client = app.test_client()
    for _name, path in listed:
        client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    event.remove(reader.engine, "before_cursor_execute", record)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--reuse", type=Path, help="a directory of an earlier run whose filled store to measure again")
    args = parser.parse_args()
    header(f"console pages on {args.history:,} events ({BACKLOG:,} pending, {DEAD:,} dead), SQLite")
    directory = args.reuse or workdir("console")
    database_url = sqlite_url(directory)
    path = directory / "bridge.db"
    if args.reuse:
        store = Store(database_url)
    else:
        store = seed(database_url, directory)
        started = time.monotonic()
        fill(path, args.history)
        print(f"filled in {time.monotonic() - started:.0f} s")
    listed = pages(path, args.history)
    plans = explain(path, statements(store, database_url, listed))
    store.dispose()
    with bridge(directory, database_url, worker=False, BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN) as server:
        rows = time_pages(server.base_url, listed, args.requests, server.pids())
    table(rows)
    worst = max(float(row[2]) for row in rows[1:])
    print(f"slowest page p95 {worst:.1f} ms (target < {TARGET_MS:.0f} ms): {verdict(worst < TARGET_MS)}")
    print("\n# query plans of every statement the pages ran")
    for flag, statement, plan in plans:
        if any(f" {name}" in statement for name in BIG) or flag != "ok":
            print(json.dumps({"flag": flag, "statement": statement[:240], "plan": plan}))


if __name__ == "__main__":
    main()
