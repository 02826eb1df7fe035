"""Instructions per durable PUT buildEvent, in process, counted by callgrind: a figure the machine's load cannot move.

    .venv/bin/python bench/count_instructions.py [--against ../wt-before] [--few 50] [--many 250]

This machine's speed drifts by 2 x within an hour, which hides a change worth a few per cent in any timed run.
valgrind's callgrind counts the instructions a process executes instead, the same count for the same code and
input whatever else runs. Each tree is run twice under callgrind, sending ``--few`` and then ``--many`` requests
through Flask's test client to an app built as ``bench/profile_accept.py`` builds it (JSON logs, multi-process
metrics, SQLite); the difference divided by the difference in requests is what one request costs, start-up and
imports cancelled out. No gunicorn and no network: a tool for comparing versions of the app, not a throughput.
Needs ``valgrind`` (Debian package); a run takes about a minute and a half per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="a worktree of another commit, counted the same way after this one")
    parser.add_argument("--few", type=int, default=50)
    parser.add_argument("--many", type=int, default=250)
    parser.add_argument("--send", nargs=2, metavar=("TREE", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(Path(args.send[0]), int(args.send[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    trees = [REPO, *([Path(args.against).resolve()] if args.against else [])]
    for tree in trees:
        few, many = count(tree, args.few), count(tree, args.many)
        per_request = (many - few) / (args.many - args.few)
        print(f"{tree}: {per_request / 1e6:.3f} M instructions per request ({args.few} and {args.many} requests)")


def count(tree: Path, requests: int) -> int:
    """The instructions callgrind counted in one run that sends ``requests`` requests through ``tree``'s app."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--send",
        str(tree),
        str(requests),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    collected = re.search(r"Collected : (\d+)", finished.stderr)
    if collected is None:
        raise SystemExit(f"callgrind printed no count: {finished.stderr[-2000:]}")
    return int(collected.group(1))


def send(tree: Path, requests: int) -> None:
    """In the counted process: build the app of ``tree`` and send 20 warm-up requests, then ``requests`` more."""
    sys.path.insert(0, str(tree))
    directory = Path(tempfile.mkdtemp(prefix="count-instructions-"))
    from bridge.config import load_config
    from bridge.operations.multiproc import make_metrics_dir

    user, token = "jdoe", "abcdefghijklmnopqrstuvwxyz0123456789z"
    settings = {
        "DATABASE_URL": f"sqlite:///{directory / 'bridge.db'}",
        "BRIDGE_TOKENS": f"{user}:{token}",
        "BRIDGE_SINK_PATH": str(directory / "sink.jsonl"),
        "LOG_LEVEL": "INFO",
    }
    config = make_metrics_dir(load_config(settings), os.environ)
    # Only now: prometheus_client must not be imported before the metrics directory is set.
    from bridge.operations.logs import configure_logging
    from bridge.storage import migrate
    from bridge.storage.store import Store
    from bridge.web.app import create_app
    from tests.reliability.harness import running_body

    configure_logging(config)
    sys.stderr = open(directory / "log.jsonl", "w")  # noqa: SIM115 (the logs are part of the cost, not the output)
    try:  # the checkpoint thread runs by the clock, which valgrind slows 50 x: a count would vary with the machine
        from bridge.storage import checkpoints

        checkpoints.INTERVAL_SECONDS = 3600.0
    except ImportError:  # a tree from before it existed
        pass
    store = Store(config.database_url)
    migrate.upgrade(store)
    client = create_app(config, store).test_client()
    server_side, _client_side = socket.socketpair()
    client.environ_base["gunicorn.socket"] = server_side
    path = f"/{user}/apps/example/events/buildEvent?apiToken={token}"
    for number in range(20 + requests):
        response = client.put(path, data=json.dumps(running_body(number)), content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.get_data(as_text=True)}")


if __name__ == "__main__":
    main()
