"""Scale: the per-event cost of accepting and of delivering, on an empty store and on a store with a long history.

    .venv/bin/python bench/bench_scale.py [--history 1000000] [--backlog 100000] [--seconds 10]

Two SQLite stores are measured one after the other. The empty one holds nothing but a small backlog to deliver;
the full one holds ``--history`` events already delivered plus ``--backlog`` pending outbox rows. Both are filled
with bulk SQL copies of rows the bridge itself wrote (one real build), so the rows are real and the fill takes
seconds. Accept cost: wall time per request of ``serve --no-worker`` under the closed-loop load (best of three
runs). Delivery cost: wall time per event of one ``pipeline-bridge worker`` draining the backlog to the stand-in
intake. Target: the full store within 1.2x of the empty one. Then every statement of one accept, update, list
and delivery pass is shown with SQLite's EXPLAIN QUERY PLAN, and any full scan of a big table is flagged.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from common import (
    APP,
    CREATE_PATH,
    TOKEN,
    USER,
    BridgeProcess,
    bridge,
    bridge_env,
    free_port,
    header,
    running_body,
    sqlite_url,
    stand_in,
    table,
    throughput,
    verdict,
    workdir,
)
from sqlalchemy import event

from bridge.config import Config, load_config
from bridge.delivery.intake import FileSink
from bridge.delivery.sender import Sender
from bridge.operations.logs import configure_logging
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app

TARGET_RATIO = 1.2
EMPTY_BACKLOG = 20_000
ACCEPT_ROUNDS = 3
BIG_TABLES = ("events", "outbox")


def in_process_config(database_url: str) -> Config:
    config = load_config({"DATABASE_URL": database_url, "BRIDGE_TOKENS": f"{USER}:{TOKEN}", "LOG_LEVEL": "ERROR"})
    configure_logging(config)
    return config


def seed(database_url: str) -> Store:
    """A migrated store holding one real build (Running, then Success), the template of every bulk row."""
    config = in_process_config(database_url)
    store = Store(database_url)
    migrate.upgrade(store)
    client = create_app(config, store).test_client()
    event_id = client.put(CREATE_PATH, json=running_body(1)).get_json()["event_id"]
    client.post(f"/{USER}/apps/{APP}/events/{event_id}?apiToken={TOKEN}", json={"build_status": "Success"})
    return store


def copy_rows(db: sqlite3.Connection, table_name: str, count: int, overrides: dict[str, str]) -> None:
    """Insert ``count`` copies of the table's first row, with SQL expressions of ``i`` (1..count) for some columns."""
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({table_name})") if row[1] != "id"]
    selected = ", ".join(overrides.get(column, column) for column in columns)
    db.execute(
        f"INSERT INTO {table_name} ({', '.join(columns)}) "
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
        f"SELECT {selected} FROM n, (SELECT * FROM {table_name} ORDER BY id LIMIT 1)"
    )


def fill(path: Path, history: int, backlog: int) -> None:
    """``history`` delivered events (one delivered outbox row each) and ``backlog`` pending rows, in bulk."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    first_event = db.execute("SELECT max(id) FROM events").fetchone()[0] + 1
    if history:
        copy_rows(db, "events", history, {"app_name": "'app-' || (i % 1000)", "raw_body": "'[]'"})
        copy_rows(
            db,
            "outbox",
            history,
            {
                "event_id": f"{first_event - 1} + i",
                "unique_id": "'history-' || i",
                "final": "i % 2",  # half of them final, as a finished build's rows are
                "state": "'delivered'",
                "body": "'{}'",
                "delivered_at": "created_at",
            },
        )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    copy_rows(
        db,
        "outbox",
        backlog,
        {
            "event_id": f"1 + (i % {max(1, history)})" if history else "1",
            "unique_id": "'backlog-' || i",
            "state": "'pending'",
            "final": "0",
            "next_attempt_at": f"'{now}'",
            "lease_owner": "NULL",
            "lease_until": "NULL",
            "delivered_at": "NULL",
        },
    )
    db.execute("COMMIT")  # no ANALYZE: the bridge never runs one, so its plans are those of a store without statistics
    db.close()


def pending(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0])


def delivery_seconds_per_event(directory: Path, database_url: str, path: Path, intake_url: str) -> float:
    """Time one worker takes per event, from its first delivered row until the backlog is gone."""
    before = pending(path)
    env = bridge_env(database_url, intake_url, free_port())
    with BridgeProcess("worker", env, directory / "worker.log") as worker:
        worker.start()
        deadline = time.monotonic() + 600
        while (count := pending(path)) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        started, start_count = time.monotonic(), count
        while count and time.monotonic() < deadline:
            time.sleep(0.05)
            count = pending(path)
        elapsed = time.monotonic() - started
    return elapsed / max(1, start_count - count)


def statements(store: Store, database_url: str, directory: Path) -> list[tuple[str, Any]]:
    """Every SQL statement one accept, one update and one delivery pass execute, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    client = create_app(in_process_config(database_url), store).test_client()
    event_id = client.put(CREATE_PATH, json=running_body(2)).get_json()["event_id"]
    client.post(f"/{USER}/apps/{APP}/events/{event_id}?apiToken={TOKEN}", json={"build_status": "Success"})
    client.get(f"/{USER}/apps/{APP}/events?apiToken={TOKEN}")
    Sender(store, FileSink(str(directory / "explain-sink.jsonl"))).run_once()
    event.remove(store.engine, "before_cursor_execute", record)
    return seen


def explain(path: Path, recorded: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    """(flag, statement, plan) for each distinct statement; flag "FULL SCAN" when a big table is read whole."""
    rows = []
    done: set[str] = set()
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement, parameters in recorded:
            if statement in done or not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
                continue
            done.add(statement)
            values = parameters if isinstance(parameters, tuple | dict) else tuple(parameters or ())
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement, values)]
            full = any(line.startswith(f"SCAN {name}") and "USING" not in line for line in plan for name in BIG_TABLES)
            rows.append(("FULL SCAN" if full else "ok", " ".join(statement.split()), "; ".join(plan)))
    return rows


def measure(directory: Path, history: int, backlog: int, seconds: float, intake_url: str) -> tuple[float, float, Any]:
    """(accept ms/event, delivery ms/event, EXPLAIN rows) for one store."""
    directory.mkdir(parents=True, exist_ok=True)
    database_url = sqlite_url(directory)
    path = directory / "bridge.db"
    store = seed(database_url)
    fill(path, history, backlog)
    plans = explain(path, statements(store, database_url, directory))
    store.dispose()
    with bridge(directory, database_url, worker=False) as server:
        # Best of three: other work on a small machine only ever makes a run slower.
        accept = max(throughput(server.base_url, seconds).requests_per_second for _ in range(ACCEPT_ROUNDS))
    delivery = delivery_seconds_per_event(directory, database_url, path, intake_url)
    return 1000 / accept, delivery * 1000, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    header(f"per-event cost, empty store vs {args.history:,} events of history and a {args.backlog:,}-row backlog")
    directory = workdir("scale")
    with stand_in(directory) as intake_url:
        empty = measure(directory / "empty", 0, EMPTY_BACKLOG, args.seconds, intake_url)
        full = measure(directory / "full", args.history, args.backlog, args.seconds, intake_url)
    rows = [("cost per event", "empty store", "full store", "full / empty")]
    ratios = []
    for name, index in (("accept (ms of wall time)", 0), ("delivery (ms of wall time)", 1)):
        ratios.append(full[index] / empty[index])
        rows.append((name, f"{empty[index]:.3f}", f"{full[index]:.3f}", f"{ratios[-1]:.2f}"))
    table(rows)
    print(f"worst ratio {max(ratios):.2f} (target <= {TARGET_RATIO}): {verdict(max(ratios) <= TARGET_RATIO)}")
    print("\n# query plans on the full store (one accept, one update, one list, one delivery pass)")
    for flag, statement, plan in full[2]:
        print(json.dumps({"flag": flag, "statement": statement[:300], "plan": plan}))


if __name__ == "__main__":
    main()
