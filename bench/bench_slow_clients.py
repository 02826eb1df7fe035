"""Normal requests while 1,200 slow and idle clients hold connections open; and accept throughput, before and after.

    .venv/bin/python bench/bench_slow_clients.py [--head 500] [--body 200] [--idle 500] [--seconds 30]
        [--base /work/wt-slow-base] [--pairs 3] [--accept-seconds 10]

Against ``pipeline-bridge serve`` on SQLite (2 web processes, the delivery worker): ``--head`` connections trickle
a header line every 2 s, ``--body`` trickle a body byte every 2 s, ``--idle`` sit on a kept-alive connection (each
reopened when the server closes it, so the counts hold for the whole run). Meanwhile one client sends a PUT
buildEvent on a fresh connection 5 times a second for ``--seconds``: its p50/p99 latency, the bridge's memory
(summed RSS and PSS of every process) before and with the connections open, and how the server ended the slow
connections. Target: p99 <= 1 s, every slow connection closed within its 10 s deadline (plus the sweep).

With ``--base`` (a checkout of the version to compare with, e.g. ``git worktree add /work/wt-slow-base main``),
the same is run against it, and then ``--pairs`` alternating before/after pairs of closed-loop accept throughput
(wrk, 16 connections) with the server CPU per request, since the machine's speed drifts within minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from common import (
    CREATE_PATH,
    BridgeProcess,
    bridge_env,
    build_body,
    cpu_seconds,
    free_port,
    header,
    percentile,
    sqlite_url,
    table,
    throughput,
    verdict,
    workdir,
)

from tests.reliability.slow_load import Ending, slow_clients


@contextlib.contextmanager
def serve(directory: Path, name: str, checkout: Path | None, app: str = "bridge") -> Iterator[BridgeProcess]:
    """``pipeline-bridge serve`` (or, with ``app="bare"``, the bare Flask baseline under the same gunicorn settings)
    of this checkout, or of ``checkout`` with its ``bridge`` package first on the path."""
    run_dir = directory / re.sub(r"[^\w-]+", "-", name).strip("-")
    run_dir.mkdir(exist_ok=True)
    settings = bridge_env(sqlite_url(run_dir), None, free_port(), BRIDGE_SINK_PATH=str(run_dir / "sink.jsonl"))
    root = checkout or Path(__file__).resolve().parents[1]
    argv = None
    if checkout is not None:
        settings["PYTHONPATH"] = str(checkout)
        argv = [sys.executable, "-P", "-m", "bridge", "serve"]  # -P: not the current directory's bridge
    if app == "bare":
        argv = [sys.executable, "-P", str(root / "bench" / "baselines.py"), "bare"]
    with BridgeProcess("serve" if app == "bridge" else app, settings, run_dir / "server.log", argv=argv) as process:
        process.start(ready_timeout=60)
        yield process


def memory_mb(server: BridgeProcess) -> tuple[float, float]:
    """Summed RSS and PSS (MB) of every process of the server."""
    rss = pss = 0
    for pid in server.pids():
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def probe(
    base_url: str, seconds: float, rate: float = 5.0, load: _Held | None = None
) -> tuple[list[float], list[float], int]:
    """A PUT buildEvent and a GET /healthz, each on a fresh connection, ``rate`` times a second.

    Returns the latencies of the PUTs and of the GETs that answered 200, and how many did not (30 s timeout).
    """
    puts, gets, failures, number = [], [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        due = time.monotonic() + 1 / rate
        number += 1
        if load is not None:
            load.samples.append(load.open_now.value)
        for latencies, method, url, body in (
            (puts, "PUT", base_url + CREATE_PATH, build_body(number)),
            (gets, "GET", base_url + "/healthz", None),
        ):
            started = time.monotonic()
            try:
                ok = requests.request(method, url, data=body, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                latencies.append(time.monotonic() - started)
            else:
                failures += 1
        time.sleep(max(0.0, due - time.monotonic()))
    return puts, gets, failures


@contextlib.contextmanager
def held_elsewhere(port: int, head: int, body: int, idle: int) -> Iterator[_Held]:
    """The slow clients in a child process, so that their event loop does not take the GIL from the probe."""
    context = multiprocessing.get_context("fork")
    held = _Held(context.Value("i", 0), context.Event(), context.Queue())
    child = context.Process(target=_hold, args=(port, head, body, idle, held), daemon=True)
    child.start()
    try:
        yield held
    finally:
        held.stop.set()
        held.peak, endings = held.results.get(timeout=60)
        held.endings = [Ending(kind, status, b"", seconds) for kind, status, seconds in endings]
        child.join(timeout=30)


class _Held:
    def __init__(self, open_now: Any, stop: Any, results: Any) -> None:
        self.open_now, self.stop, self.results = open_now, stop, results
        self.peak, self.endings, self.samples = 0, [], []

    def ended(self, kind: str) -> list[Ending]:
        return [ending for ending in self.endings if ending.kind == kind]

    def wait_until_open(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.open_now.value < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return bool(self.open_now.value >= count)


def _hold(port: int, head: int, body: int, idle: int, held: _Held) -> None:
    with slow_clients(port, head, body, idle, spread_seconds=5.0) as load:
        while not held.stop.wait(0.05):
            held.open_now.value = sum(load.open.values())
    endings = [(ending.kind, ending.status, ending.seconds_open) for ending in load.endings]
    held.results.put((load.peak_open, endings))


def slow_run(directory: Path, name: str, checkout: Path | None, args: argparse.Namespace) -> list[str]:
    total = args.head + args.body + args.idle
    with serve(directory, name, checkout) as server:
        port = int(server.env["PORT"])
        quiet, _, _ = probe(server.base_url, args.seconds / 2)
        rss_before, pss_before = memory_mb(server)
        with held_elsewhere(port, args.head, args.body, args.idle) as load:
            all_open = load.wait_until_open(total, timeout=60)
            cpu_before = cpu_seconds(server.pids())
            latencies, health, failures = probe(server.base_url, args.seconds, load=load)
            cpu_share = (cpu_seconds(server.pids()) - cpu_before) / args.seconds
            rss_with, pss_with = memory_mb(server)
        peak = load.peak
        endings = {kind: load.ended(kind) for kind in ("head", "body", "idle")}
    p99 = max(percentile(latencies, 0.99), percentile(health, 0.99))

    def closed(kind: str) -> str:
        found = endings[kind]
        if not found:
            return "none closed"
        answered = sum(1 for ending in found if ending.status == 408)
        longest = max(ending.seconds_open for ending in found)
        return f"{len(found)} closed ({answered} with 408), longest open {longest:.1f} s"

    print(
        f"# {name}: {peak} slow connections open at once (all {total}: {all_open}), while probing "
        f"{min(load.samples, default=0)}-{max(load.samples, default=0)}; "
        f"memory {rss_before:.0f} -> {rss_with:.0f} MB RSS, {pss_before:.0f} -> {pss_with:.0f} MB PSS; "
        f"server CPU {cpu_share:.2f} cores while they were open; with none open p50 "
        f"{percentile(quiet, 0.5) * 1000:.0f} ms, p99 {percentile(quiet, 0.99) * 1000:.0f} ms (PUT)"
    )
    for kind in endings:
        print(f"#   {kind}: {closed(kind)}")
    return [
        name,
        str(len(latencies) + len(health)),
        str(failures),
        *(
            f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.99) * 1000:.0f} / "
            f"{max(values, default=float('nan')) * 1000:.0f}"
            for values in (latencies, health)
        ),
        f"{rss_before:.0f} -> {rss_with:.0f}",
        f"{pss_before:.0f} -> {pss_with:.0f}",
        verdict(failures == 0 and p99 <= 1.0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--head", type=int, default=500)
    parser.add_argument("--body", type=int, default=200)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--base", type=Path, help="checkout of the version to compare with (before)")
    parser.add_argument("--pairs", type=int, default=3, help="before/after accept-throughput pairs")
    parser.add_argument("--accept-seconds", type=float, default=10)
    args = parser.parse_args()
    header(f"slow clients: {args.head} trickling headers, {args.body} trickling bodies, {args.idle} idle keep-alive")
    directory = workdir("slow-clients")
    versions: list[tuple[str, Path | None]] = [("after (this checkout)", None)]
    if args.base:
        versions.insert(0, ("before (" + str(args.base) + ")", args.base))

    rows = [
        (
            "server",
            "200s",
            "failed",
            "PUT p50 / p99 / max ms",
            "GET /healthz p50 / p99 / max ms",
            "RSS MB",
            "PSS MB",
            "p99 <= 1 s",
        )
    ]
    rows += [tuple(slow_run(directory, name, checkout, args)) for name, checkout in versions]
    print(f"# normal requests: a PUT buildEvent and a GET /healthz, fresh connections, 5/s each, {args.seconds:.0f} s")
    table(rows)
    if not args.base:
        return

    accept = [("pair", "app", "version", "req/s", "server CPU ms/request", "non-2xx", "socket errors")]
    for pair in range(1, args.pairs + 1):
        for app in ("bare", "bridge"):
            for name, checkout in versions:
                run_name = f"accept-{pair}-{app}-{'base' if checkout else 'new'}"
                with serve(directory, run_name, checkout, app) as server:
                    result = throughput(server.base_url, args.accept_seconds, 16, server=server)
                accept.append(
                    (
                        str(pair),
                        "bare Flask" if app == "bare" else "bridge, SQLite",
                        name.split(" ")[0],
                        f"{result.requests_per_second:.0f}",
                        f"{result.cpu_ms_per_request:.2f}",
                        str(result.non_2xx),
                        str(result.errors),
                    )
                )
    print(f"# accept throughput: PUT buildEvent, SQLite, {args.accept_seconds:.0f} s per run, before/after pairs")
    table(accept)


if __name__ == "__main__":
    main()
