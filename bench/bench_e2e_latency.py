"""Accepted-to-delivered latency: from the 200 a client gets to the intake receiving the event, at 200 req/s.

    .venv/bin/python bench/bench_e2e_latency.py [--rate 200] [--seconds 30]

``pipeline-bridge serve`` on SQLite delivers to the stand-in intake (``stand_in.py``, answering 202 at once),
which records when it first received each pipeline ``unique_id``; the open-loop generator records when each 200
arrived. The pipeline-level running event of every accepted build is looked up. Target: p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import time

from common import (
    bridge,
    event_ids,
    header,
    open_loop,
    percentile,
    run_uuids,
    spread,
    sqlite_url,
    stand_in,
    stand_in_received,
    table,
    verdict,
    workdir,
)

TARGET_P99_SECONDS = 1.0
DRAIN_SECONDS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    header(f"accepted-to-delivered latency at {args.rate:.0f} req/s, SQLite, intake answering 202 at once")
    directory = workdir("e2e-latency")
    with stand_in(directory) as intake_url, bridge(directory, sqlite_url(directory), intake_url) as server:
        sent = open_loop(server.base_url, args.rate, args.seconds)
        accepted = {
            f"{run_uuids(event_id)[0]}/pipeline/running": item.answered_at
            for event_id, item in zip(event_ids(sent), [item for item in sent if item.status == 200], strict=True)
        }
        deadline = time.monotonic() + DRAIN_SECONDS
        received = stand_in_received(intake_url)
        while set(accepted) - set(received) and time.monotonic() < deadline:
            time.sleep(1)
            received = stand_in_received(intake_url)
    latencies = [received[key] - answered for key, answered in accepted.items() if key in received]
    missing = len(accepted) - len(latencies)
    headings, cells = spread(latencies, "s", 3)
    table(
        [
            ("accepted", "delivered", "not delivered", *headings),
            (str(len(accepted)), str(len(latencies)), str(missing), *cells),
        ]
    )
    p99 = percentile(latencies, 0.99)
    met = p99 <= TARGET_P99_SECONDS and not missing
    print(f"p99 = {p99:.3f} s (target <= {TARGET_P99_SECONDS:.0f} s): {verdict(met)}")


if __name__ == "__main__":
    main()
