"""Latency at a constant arrival rate: p50/p99 of PUT buildEvent at 500 requests/s, open loop, on SQLite.

    .venv/bin/python bench/bench_latency.py [--rate 500] [--seconds 30]

Requests leave on a clock (request i at i/rate seconds) whatever the server is doing, and each latency runs from
the time the request was due, so a server that stalls shows it in the tail instead of slowing the client down.
The bridge runs as ``pipeline-bridge serve`` (2 web processes and the delivery worker, file sink). Target:
p99 <= 25 ms.
"""

from __future__ import annotations

import argparse

from common import bridge, header, open_loop, percentile, spread, sqlite_url, table, verdict, workdir

TARGET_P99_MS = 25.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    header(f"latency of PUT buildEvent at {args.rate:.0f} req/s, open loop, SQLite")
    directory = workdir("latency")
    with bridge(directory, sqlite_url(directory)) as server:
        open_loop(server.base_url, args.rate, 3)  # warm-up: connections, caches, the first WAL checkpoint
        sent = open_loop(server.base_url, args.rate, args.seconds)
    accepted = [item.latency * 1000 for item in sent if item.status == 200]
    failed = len(sent) - len(accepted)
    headings, cells = spread(accepted, "ms", 1)
    table([("requests", "200", "failed", *headings), (str(len(sent)), str(len(accepted)), str(failed), *cells)])
    p99 = percentile(accepted, 0.99)
    print(f"p99 = {p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms): {verdict(p99 <= TARGET_P99_MS and not failed)}")


if __name__ == "__main__":
    main()
