"""A slow intake: the bridge versus a naive forwarder when the intake takes 100 ms to answer.

    .venv/bin/python bench/bench_slow_intake.py [--delay 0.1] [--seconds 15] [--connections 32]

The naive forwarder (``baselines.py naive``) posts each event to the intake and answers its client afterwards,
so every request holds a gunicorn thread for the intake's 100 ms; the bridge answers once the event is stored and
delivers in batches from its outbox. Both run under the same gunicorn settings against the same stand-in intake,
loaded by the same closed-loop generator. Target (issue 17): the bridge's client-side throughput >= 10x the
forwarder's.
"""

from __future__ import annotations

import argparse

from common import baseline, bridge, header, sqlite_url, stand_in, table, throughput, verdict, workdir

TARGET_RATIO = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    header(f"client-side throughput with an intake answering after {args.delay * 1000:.0f} ms")
    directory = workdir("slow-intake")
    with stand_in(directory, delay=args.delay) as intake_url:
        with baseline(directory, "naive", intake_url) as server:
            naive = throughput(server.base_url, args.seconds, args.connections)
        with bridge(directory, sqlite_url(directory), intake_url) as server:
            durable = throughput(server.base_url, args.seconds, args.connections)
    ratio = durable.requests_per_second / naive.requests_per_second
    print(f"# load: {naive.tool}, {args.connections} connections, {args.seconds:.0f} s each after a 2 s warm-up")
    table(
        [
            ("server", "req/s", "non-2xx", "socket errors"),
            ("naive forwarder", f"{naive.requests_per_second:.0f}", str(naive.non_2xx), str(naive.errors)),
            ("bridge, SQLite", f"{durable.requests_per_second:.0f}", str(durable.non_2xx), str(durable.errors)),
        ]
    )
    print(f"bridge / naive = {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x): {verdict(ratio >= TARGET_RATIO)}")


if __name__ == "__main__":
    main()
