"""Delivery throughput: the sender draining a filled outbox versus a bare loop posting pre-built batches.

Both post to the same local intake stand-in (a separate process answering 202 as soon as it has read the body),
so the ratio is what the outbox costs: claiming, encoding, compressing, recording. Also measures the
accepted-to-delivered latency of a worker while events arrive at a steady rate.

Run by hand (not a test):

    .venv/bin/python bench/bench_delivery.py                       # SQLite, 20,000 rows
    .venv/bin/python bench/bench_delivery.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import structlog
from sqlalchemy import create_engine, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.delivery.intake import HttpIntake, batch_payload
from bridge.delivery.sender import Sender
from bridge.delivery.worker import Worker
from bridge.storage import migrate, outbox
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.sender_support import add_event, pipeline_outbound

API_KEY = "bench-key"
SCHEMA = "bench_delivery"


class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def serve_stand_in(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Accept).serve_forever()


def start_stand_in() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import bench_delivery as b; b.serve_stand_in({port})"
    process = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.post(url + "/api/v2/ci/pipeline", data=b"{}", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("the intake stand-in did not start")


def fresh_store(database_url: str | None, workdir: Path) -> Store:
    """A migrated, empty store: a SQLite file in ``workdir``, or the schema ``bench_delivery`` made afresh."""
    if database_url is None:
        store = Store(f"sqlite:///{workdir / 'bench.db'}")
    else:
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        admin.dispose()
        separator = "&" if "?" in database_url else "?"
        store = Store(f"{database_url}{separator}options=-csearch_path%3D{SCHEMA}")
    migrate.upgrade(store)
    return store


def drop_schema(database_url: str | None) -> None:
    if database_url is not None:
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        admin.dispose()


def fill(store: Store, rows: int) -> list[bytes]:
    """``rows`` finished pipeline events in the outbox, 1000 per event transaction; returns them encoded."""
    encoded: list[bytes] = []
    for start in range(0, rows, 1000):
        outbounds = [pipeline_outbound() for _ in range(min(1000, rows - start))]
        add_event(store, outbounds)
        encoded.extend(json.dumps(o.body["data"], separators=(",", ":")).encode() for o in outbounds)
    if not store.is_sqlite:
        # A running bridge's outbox has statistics (autovacuum analyzes it as it fills); a table filled in a second
        # and drained at once still has an empty table's, and PostgreSQL then plans the claim as a sort of every
        # pending row (128 ms a pass here) instead of an index scan in id order that stops at 1000 rows (7 ms).
        with store.transaction() as session:
            session.execute(text("ANALYZE outbox"))
    return encoded


def bench_sender(store: Store, url: str, rows: int, compress: bool) -> float:
    sender = Sender(store, HttpIntake(url, API_KEY, compress_above=2048 if compress else None))
    started = time.perf_counter()
    while sender.run_once().claimed:
        pass
    elapsed = time.perf_counter() - started
    with store.transaction() as session:
        counts = outbox.counts_by_state(session)
    assert counts == {outbox.DELIVERED: rows}, counts
    return rows / elapsed


def bench_bare(url: str, encoded: list[bytes]) -> float:
    payloads = [batch_payload("ci_pipeline", encoded[i : i + 1000]) for i in range(0, len(encoded), 1000)]
    session = requests.Session()
    headers = {"DD-API-KEY": API_KEY, "Content-Type": "application/json"}
    started = time.perf_counter()
    for payload in payloads:
        response = session.post(url + "/api/v2/ci/pipeline", data=payload, headers=headers, timeout=30)
        assert response.status_code == 202
    return len(encoded) / (time.perf_counter() - started)


def bench_latency(store: Store, url: str, rate: float, seconds: float) -> tuple[float, float]:
    """A worker running while events are committed at ``rate`` per second; p50 and p99 of commit-to-delivered."""
    worker = Worker(Sender(store, HttpIntake(url, API_KEY)), idle_poll=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    begin = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for sent in range(int(rate * seconds)):
        delay = started + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        add_event(store, [pipeline_outbound()])
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        with store.transaction() as session:
            if outbox.counts_by_state(session).get(outbox.PENDING, 0) == 0:
                break
        time.sleep(0.05)
    worker.stop()
    thread.join(10)
    with store.transaction() as session:
        pairs = session.execute(
            select(OutboxItem.created_at, OutboxItem.delivered_at).where(OutboxItem.created_at >= begin)
        ).all()
    latencies = sorted((delivered - created).total_seconds() for created, delivered in pairs)
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--database-url", help="PostgreSQL URL (the bench works in its own schema); default SQLite")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each throughput run; the best is shown")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    stand_in, url = start_stand_in()
    gzip_rates, plain_rates, bare_rates = [], [], []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for round_ in range(args.rounds):  # alternated, best of each: other load on the machine varies
                for compress, rates in ((True, gzip_rates), (False, plain_rates)):
                    store = fresh_store(args.database_url, Path(workdir) / f"{round_}-{compress}")
                    encoded = fill(store, args.rows)
                    rates.append(bench_sender(store, url, args.rows, compress))
                    store.dispose()
                bare_rates.append(bench_bare(url, encoded))
            store = fresh_store(args.database_url, Path(workdir) / "latency")
            p50, p99 = bench_latency(store, url, args.rate, args.seconds)
            store.dispose()
    finally:
        drop_schema(args.database_url)
        stand_in.terminate()
        stand_in.wait()
    sender_rate, plain_rate, bare_rate = max(gzip_rates), max(plain_rates), max(bare_rates)
    database = "postgresql" if args.database_url else "sqlite"
    lines = [
        f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cpus, {cpu_model()}",
        f"database: {database}; rows: {args.rows}; best of {args.rounds} rounds"
        + ("; outbox analyzed after each fill" if args.database_url else ""),
        f"sender (gzip):        {sender_rate:10.0f} events/s",
        f"sender (no gzip):     {plain_rate:10.0f} events/s",
        f"bare loop:            {bare_rate:10.0f} events/s (pre-built 1000-event batches)",
        f"ratio sender/bare:    {sender_rate / bare_rate:10.2f} (gzip), {plain_rate / bare_rate:.2f} (no gzip)",
        f"accepted->delivered:  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms at {args.rate:.0f} events/s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
