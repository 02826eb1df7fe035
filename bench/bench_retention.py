"""Retention soak: with a short retention the store stays bounded, and accepting does not slow while pruning runs.

    .venv/bin/python bench/bench_retention.py           # 3 minutes at 30 req/s, 30 s retention, prune every 10 s
    .venv/bin/python bench/bench_retention.py --minutes 5 --rate 100 --retention 60 --upkeep 15

``pipeline-bridge serve`` on SQLite delivers to the stand-in intake while the open-loop generator creates
finished builds (two outbox rows each) at a steady rate. The worker prunes every ``--upkeep`` seconds whatever is
older than ``--retention`` seconds, so after retention + one upkeep interval the row counts and the database file
should stop growing: events stay under rate x (retention + upkeep). Every 10 s the script prints the file sizes
(database and WAL) and row counts, read through a separate read-only connection. Accept latency is split by
whether the request was sent while a prune was running (the worker logs each prune's end and duration), so the two
sets are compared side by side in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
import time
from pathlib import Path

from common import bridge, header, open_loop, percentile, sqlite_url, stand_in, table, verdict, workdir

SAMPLE_SECONDS = 10
FLAT_GROWTH = 0.10


def success_body(number: int) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return json.dumps(
        {
            "build_status": "Success",
            "build_start": (now - dt.timedelta(minutes=2)).isoformat(),
            "build_end": now.isoformat(),
            "build_id": f"R{number}",
            "build_provider": "jenkins",
            "repo_url": "https://github.com/jdoe/example-node",
            "commit_id": "1234567890123456789012345678901234567890",
            "branch": "master",
        }
    ).encode()


def sizes(directory: Path) -> tuple[float, float, int, int]:
    """MB of the database file and its WAL, and the events and outbox row counts."""
    database = directory / "bridge.db"
    wal = directory / "bridge.db-wal"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as reader:
        events = reader.execute("SELECT count(*) FROM events").fetchone()[0]
        rows = reader.execute("SELECT count(*) FROM outbox").fetchone()[0]
    megabytes = [path.stat().st_size / 1e6 if path.exists() else 0.0 for path in (database, wal)]
    return megabytes[0], megabytes[1], events, rows


def prune_windows(log: Path) -> list[tuple[float, float]]:
    """(start, end) in Unix seconds of every prune the worker logged."""
    windows = []
    for line in log.read_text().splitlines():
        if '"retention.pruned"' not in line:
            continue
        entry = json.loads(line)
        end = dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        windows.append((end - float(entry["seconds"]), end))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--rate", type=float, default=30)
    parser.add_argument("--retention", type=float, default=30, help="seconds")
    parser.add_argument("--upkeep", type=float, default=10, help="seconds between prunes")
    args = parser.parse_args()
    header(
        f"retention soak: {args.minutes:g} min at {args.rate:.0f} req/s, SQLite, retention {args.retention:g} s, "
        f"prune every {args.upkeep:g} s"
    )
    directory = workdir("retention")
    env = {
        "BRIDGE_RETENTION_DAYS": f"{args.retention / 86400:.8f}",
        "BRIDGE_UPKEEP_MINUTES": f"{args.upkeep / 60:.6f}",
        "LOG_LEVEL": "INFO",  # the prune lines; every request's line costs the same in both sets
    }
    rows = [("elapsed s", "db MB", "wal MB", "events", "outbox rows", "p50 ms", "p99 ms", "failed")]
    sent_all = []
    series: list[tuple[float, int, int]] = []
    with stand_in(directory) as intake_url, bridge(directory, sqlite_url(directory), intake_url, **env) as server:
        began = time.monotonic()
        for sample in range(1, round(args.minutes * 60 / SAMPLE_SECONDS) + 1):
            sent = open_loop(server.base_url, args.rate, SAMPLE_SECONDS, make_body=success_body)
            sent_all += sent
            db_mb, wal_mb, events, outbox_rows = sizes(directory)
            series.append((db_mb, events, outbox_rows))
            latencies = [item.latency * 1000 for item in sent if item.status == 200]
            failed = sum(1 for item in sent if item.status != 200)
            rows.append(
                (
                    f"{time.monotonic() - began:.0f}",
                    f"{db_mb:.2f}",
                    f"{wal_mb:.2f}",
                    str(events),
                    str(outbox_rows),
                    f"{percentile(latencies, 0.5):.1f}",
                    f"{percentile(latencies, 0.99):.1f}",
                    str(failed),
                )
            )
            print(f"{sample * SAMPLE_SECONDS} s: {db_mb:.2f} MB, {events} events", file=sys.stderr, flush=True)
    table(rows)

    windows = prune_windows(directory / "bridge.log")
    during, outside = [], []
    for item in sent_all:
        if item.status != 200:
            continue
        sent_at = item.answered_at - item.latency  # when it was sent, Unix seconds
        busy = any(start - 0.005 <= sent_at <= end for start, end in windows)
        (during if busy else outside).append(item.latency * 1000)
    durations = sorted((end - start) * 1000 for start, end in windows)
    print(
        f"prunes: {len(windows)}, each {percentile(durations, 0.5):.1f} ms median, {max(durations, default=0):.1f} max"
    )
    latency_rows = [("requests sent", "count", "p50 ms", "p90 ms", "p99 ms", "max ms")]
    for name, values in (("while a prune ran", during), ("otherwise", outside)):
        cells = [f"{percentile(values, q):.1f}" for q in (0.5, 0.9, 0.99)] + [f"{max(values, default=0):.1f}"]
        latency_rows.append((name, str(len(values)), *cells))
    table(latency_rows)

    bound = args.rate * (args.retention + args.upkeep)
    print(f"events at most rate x (retention + upkeep) = {bound:.0f}: max seen {max(p[1] for p in series)}: ", end="")
    print(verdict(max(point[1] for point in series) <= bound * (1 + FLAT_GROWTH)))
    warm = max(1, round((args.retention + args.upkeep) / SAMPLE_SECONDS) + 1)
    settled = series[min(warm, len(series) - 1) :]
    for index, name in ((0, "database MB"), (1, "events"), (2, "outbox rows")):
        values = [point[index] for point in settled]
        growth = values[-1] / values[0] - 1 if values and values[0] else float("nan")
        ok = bool(values) and max(values) <= values[0] * (1 + FLAT_GROWTH)
        print(
            f"{name} after warm-up: first {values[0]}, last {values[-1]}, max {max(values)} ({growth:+.1%}): ", end=""
        )
        print(verdict(ok))


if __name__ == "__main__":
    main()
