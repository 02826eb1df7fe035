"""CPU per durable PUT buildEvent, in process: where the accept path spends its time, without a server in the way.

    .venv/bin/python bench/profile_accept.py [--requests 2000] [--top 25] [--log-level INFO]

Builds the app as ``serve`` does (JSON logs on, multi-process metrics directory, SQLite in WAL with fsync'd
commits, the body-deadline middleware given a real socket) and sends requests through Flask's test client. Prints
the CPU milliseconds per request without and then with cProfile, and cProfile's top functions by cumulative time.
Not a throughput figure (no HTTP parsing, no gunicorn): a tool for finding what a change saves.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative or tottime")
    parser.add_argument("--by-package", action="store_true", help="also sum own time by package")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="profile-accept-", dir=os.environ.get("PROFILE_DIR")))

    from bridge.config import load_config
    from bridge.operations.multiproc import make_metrics_dir

    config = make_metrics_dir(
        load_config(
            {
                "DATABASE_URL": f"sqlite:///{directory / 'bridge.db'}",
                "BRIDGE_TOKENS": "jdoe:abcdefghijklmnopqrstuvwxyz0123456789z",
                "BRIDGE_SINK_PATH": str(directory / "sink.jsonl"),
                "LOG_LEVEL": args.log_level,
            }
        ),
        os.environ,
    )
    from bridge.operations.logs import configure_logging
    from bridge.storage import migrate
    from bridge.storage.store import Store
    from bridge.web.app import create_app
    from tests.reliability.harness import running_body

    configure_logging(config)
    sys.stderr = open(directory / "log.jsonl", "w")  # noqa: SIM115 (the logs are part of the cost, not the output)
    store = Store(config.database_url)
    migrate.upgrade(store)
    app = create_app(config, store)
    server_side, _client_side = socket.socketpair()
    client = app.test_client()
    client.environ_base["gunicorn.socket"] = server_side
    import json

    path = "/jdoe/apps/example/events/buildEvent?apiToken=abcdefghijklmnopqrstuvwxyz0123456789z"
    bodies = [json.dumps(running_body(number)).encode() for number in range(args.requests)]

    walls: list[float] = []

    def run() -> float:
        started, wall = time.process_time(), time.perf_counter()
        for body in bodies:
            response = client.put(path, data=body, content_type="application/json")
            if response.status_code != 200:
                raise SystemExit(f"unexpected {response.status_code}: {response.get_data(as_text=True)}")
        walls.append((time.perf_counter() - wall) * 1000 / len(bodies))
        return (time.process_time() - started) * 1000 / len(bodies)

    run()  # warm-up: imports, statement caches, the first page of the table
    plain = run()
    profiler = cProfile.Profile()
    profiler.enable()
    profiled = run()
    profiler.disable()
    sys.stderr = sys.__stderr__
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats(args.sort).print_stats(args.top)
    print(text.getvalue())
    if args.by_package:
        print(by_package(profiler))
    print(
        f"CPU per request: {plain:.3f} ms (wall {walls[1]:.3f} ms; under cProfile {profiled:.3f} ms),"
        f" {args.requests} requests, log level {args.log_level}"
    )


def by_package(profiler: cProfile.Profile) -> str:
    """Own (not cumulative) time summed by the package a function lives in: which layer the time goes to."""
    totals: dict[str, float] = {}
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_calls, _primitive, own, _cumulative, _callers) in stats.items():
        if "site-packages/" in filename:
            package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif filename.startswith(str(REPO)):
            package = "/".join(Path(filename).relative_to(REPO).parts[:2])
        elif filename == "~":
            package = f"builtin {function}"
        else:
            package = "stdlib " + Path(filename).stem
        totals[package] = totals.get(package, 0.0) + own
    whole = sum(totals.values())
    rows = sorted(totals.items(), key=lambda item: -item[1])[:30]
    return "\n".join(f"{own / whole:6.1%}  {package}" for package, own in rows)


if __name__ == "__main__":
    main()
