"""Memory: resident size of every bridge process during a soak at 200 requests/s, sampled every 10 s.

    .venv/bin/python bench/bench_memory.py              # the 30-minute soak
    .venv/bin/python bench/bench_memory.py --minutes 5  # the quick run

``pipeline-bridge serve`` on SQLite (gunicorn master, 2 web workers, the delivery worker) delivers to the stand-in
intake while the open-loop generator sends Running builds. RSS comes from /proc/<pid>/status. Target: at most
200 MB for all processes together, and flat: the last sample within 10% of the first one after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from common import BridgeProcess, bridge, header, open_loop, sqlite_url, stand_in, table, verdict, workdir

SAMPLE_SECONDS = 10
TARGET_TOTAL_MB = 200
FLAT_GROWTH = 0.10


def rss_by_role(server: BridgeProcess) -> dict[str, float]:
    """MB of resident memory of the web master, the web workers together, and the delivery worker."""
    assert server.process is not None
    sizes = {"web master": 0.0, "web workers": 0.0, "delivery worker": 0.0}
    for pid in server.pids():
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path(f"/proc/{pid}/status").read_text()
            kilobytes = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if pid == server.process.pid:
                role = "web master"
            elif b"bridge worker" in command:
                role = "delivery worker"
            else:
                role = "web workers"
            sizes[role] += kilobytes / 1024
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    header(f"RSS during a {args.minutes:g}-minute soak at {args.rate:.0f} req/s, SQLite, sampled every 10 s")
    directory = workdir("memory")
    rows = [("elapsed s", "web master MB", "web workers MB", "delivery worker MB", "total MB", "failed requests")]
    totals = []
    with stand_in(directory) as intake_url, bridge(directory, sqlite_url(directory), intake_url) as server:
        for sample in range(1, round(args.minutes * 60 / SAMPLE_SECONDS) + 1):
            sent = open_loop(server.base_url, args.rate, SAMPLE_SECONDS)
            sizes = rss_by_role(server)
            totals.append(sum(sizes.values()))
            failed = sum(1 for item in sent if item.status != 201)
            rows.append(
                (str(sample * SAMPLE_SECONDS), *(f"{size:.1f}" for size in sizes.values()), f"{totals[-1]:.1f}")
            )
            rows[-1] += (str(failed),)
    table(rows)
    settled = totals[min(len(totals) - 1, 2)]  # after 30 s of warm-up: imports done, pools and caches filled
    growth = totals[-1] / settled - 1
    ok = max(totals) <= TARGET_TOTAL_MB and growth <= FLAT_GROWTH
    print(
        f"peak {max(totals):.1f} MB (target <= {TARGET_TOTAL_MB}), growth after warm-up {growth:+.1%} "
        f"(target <= {FLAT_GROWTH:.0%}): {verdict(ok)}"
    )


if __name__ == "__main__":
    main()
