"""Memory: resident size of every bridge process during a soak at 200 requests/s, sampled every 10 s.

    .venv/bin/python bench/bench_memory.py              # the 30-minute soak
    .venv/bin/python bench/bench_memory.py --minutes 5  # the quick run

``pipeline-bridge serve`` on SQLite (gunicorn master, 2 web workers, the delivery worker) delivers to the stand-in
intake while the open-loop generator sends Running builds. RSS comes from /proc/<pid>/status, PSS (shared pages
split between the processes sharing them) from /proc/<pid>/smaps_rollup. Target: at most 200 MB for all processes
together, and flat: the last sample within 10% of the first one after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from common import BridgeProcess, bridge, header, open_loop, sqlite_url, stand_in, table, verdict, workdir

SAMPLE_SECONDS = 10
TARGET_TOTAL_MB = 200
FLAT_GROWTH = 0.10


def memory_by_role(server: BridgeProcess) -> tuple[dict[str, float], float]:
    """MB of RSS of the web master, the web workers together and the delivery worker; and the total PSS.

    RSS counts a page shared by the forked processes once in each of them; PSS splits it between them, so the
    PSS total is what the processes cost the machine together.
    """
    assert server.process is not None
    sizes = {"web master": 0.0, "web workers": 0.0, "delivery worker": 0.0}
    proportional = 0.0
    for pid in server.pids():
        with contextlib.suppress(OSError, ValueError, StopIteration):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if pid == server.process.pid:
                role = "web master"
            elif b"bridge worker" in command:
                role = "delivery worker"
            else:
                role = "web workers"
            sizes[role] += _kilobytes(Path(f"/proc/{pid}/status"), "VmRSS:") / 1024
            proportional += _kilobytes(Path(f"/proc/{pid}/smaps_rollup"), "Pss:") / 1024
    return sizes, proportional


def _kilobytes(path: Path, field: str) -> int:
    return int(next(line for line in path.read_text().splitlines() if line.startswith(field)).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    header(f"RSS during a {args.minutes:g}-minute soak at {args.rate:.0f} req/s, SQLite, sampled every 10 s")
    directory = workdir("memory")
    rows = [("elapsed s", "master RSS", "web workers RSS", "delivery worker RSS", "total RSS", "total PSS", "failed")]
    totals, proportional = [], []
    with stand_in(directory) as intake_url, bridge(directory, sqlite_url(directory), intake_url) as server:
        for sample in range(1, round(args.minutes * 60 / SAMPLE_SECONDS) + 1):
            sent = open_loop(server.base_url, args.rate, SAMPLE_SECONDS)
            sizes, pss = memory_by_role(server)
            totals.append(sum(sizes.values()))
            proportional.append(pss)
            failed = sum(1 for item in sent if item.status != 200)
            cells = [f"{size:.1f}" for size in (*sizes.values(), totals[-1], pss)]
            rows.append((str(sample * SAMPLE_SECONDS), *cells, str(failed)))
            print(
                f"{sample * SAMPLE_SECONDS} s: RSS {totals[-1]:.1f} MB, PSS {pss:.1f} MB", file=sys.stderr, flush=True
            )
    print("# sizes in MB")
    table(rows)
    for name, series in (("RSS", totals), ("PSS", proportional)):
        settled = series[min(len(series) - 1, 2)]  # after 30 s of warm-up: imports done, pools and caches filled
        growth = series[-1] / settled - 1
        ok = max(series) <= TARGET_TOTAL_MB and growth <= FLAT_GROWTH
        print(
            f"total {name}: peak {max(series):.1f} MB (target <= {TARGET_TOTAL_MB}), growth after warm-up "
            f"{growth:+.1%} (target <= {FLAT_GROWTH:.0%}): {verdict(ok)}"
        )


if __name__ == "__main__":
    main()
