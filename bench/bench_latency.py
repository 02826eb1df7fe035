"""Latency at a constant arrival rate: p50/p99 of PUT buildEvent at 200 requests/s, open loop, on SQLite.

    .venv/bin/python bench/bench_latency.py [--rate 200] [--seconds 30] [--sweep [--step-seconds 10]]

Requests leave on a clock (request i at i/rate seconds) whatever the server is doing, and each latency runs from
the time the request was due, so a server that stalls shows it in the tail instead of slowing the client down.
The bridge runs as ``pipeline-bridge serve`` (2 web processes and the delivery worker, file sink). Target
(issue 17): p99 <= 25 ms at 200 req/s.

``--sweep`` then measures more rates on the same bridge, ``--step-seconds`` each after a 2 s warm-up: 50, 100,
200, 300, 400, 600, ... until p99 passes 400 ms, a request fails or the generator falls behind; then it halves the
gap between the highest rate under and the lowest over 100 ms (and 25 ms) until they are within 25 % of each
other, and prints between which rates p99 crosses each (about 2 minutes in all on two cores).

Every row also gives the rate the generator actually sent at and how late it began its requests: it runs on the
same cores as the server, and a row where it could not keep to its clock is flagged (its latencies then include
the generator's own delay).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from common import (
    BridgeProcess,
    Sent,
    bridge,
    cpu_seconds,
    header,
    open_loop,
    percentile,
    spread,
    sqlite_url,
    table,
    verdict,
    workdir,
)

TARGET_RATE = 200.0
TARGET_P99_MS = 25.0
CROSSINGS_MS = (100.0, 25.0)  # the p99 limits whose crossing rate --sweep reports
SWEEP_RATES = (50, 100, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200)
STOP_P99_MS = 400.0  # far enough above 100 ms that higher rates only measure a longer queue
BISECT_UNTIL = 1.25  # stop halving once the rate over is within this factor of the rate under
WARM_UP_SECONDS = 2.0
GENERATOR_MIN_SHARE = 0.97  # of the asked rate, below which the generator did not keep up
GENERATOR_MAX_LATE_MS = 5.0  # p99 of how late it began requests, above which it did not keep up


@dataclasses.dataclass(frozen=True)
class Step:
    """One measured rate: every request's answer, and the CPU the server and the generator spent meanwhile."""

    rate: float
    sent: list[Sent]
    server_cpu_seconds: float
    generator_cpu_seconds: float

    @property
    def accepted_ms(self) -> list[float]:
        return [item.latency * 1000 for item in self.sent if item.status == 200]

    @property
    def failed(self) -> int:
        return len(self.sent) - len(self.accepted_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.accepted_ms, 0.99)

    @property
    def send_rate(self) -> float:
        """Requests per second the generator actually began, first to last."""
        began = sorted(item.due + item.late for item in self.sent)
        return (len(began) - 1) / (began[-1] - began[0]) if len(began) > 1 else float("nan")

    @property
    def late_p99_ms(self) -> float:
        return percentile([item.late * 1000 for item in self.sent], 0.99)

    @property
    def generator_kept_up(self) -> bool:
        return self.send_rate >= GENERATOR_MIN_SHARE * self.rate and self.late_p99_ms <= GENERATOR_MAX_LATE_MS

    def crosses(self, limit_ms: float) -> bool:
        """Whether this rate is over ``limit_ms`` at p99; a failed request counts as over."""
        return bool(self.failed) or self.p99_ms > limit_ms

    def row(self) -> tuple[str, ...]:
        answered = max(1, len(self.accepted_ms))
        flag = "" if self.generator_kept_up else " (!)"
        return (
            f"{self.rate:.0f}",
            f"{self.send_rate:.0f}{flag}",
            f"{self.late_p99_ms:.1f}",
            str(len(self.sent)),
            str(len(self.accepted_ms)),
            str(self.failed),
            *spread(self.accepted_ms, "ms", 1)[1],
            f"{self.server_cpu_seconds * 1000 / answered:.2f}",
            f"{self.generator_cpu_seconds * 1000 / max(1, len(self.sent)):.2f}",
        )


HEADINGS = (
    "rate",
    "sent/s",
    "late p99 ms",
    "requests",
    "200",
    "failed",
    *spread([], "ms", 1)[0],
    "server CPU ms/req",
    "generator CPU ms/req",
)


def measure(server: BridgeProcess, rate: float, seconds: float, warm_up: float) -> Step:
    """A warm-up at ``rate`` (connections, caches, a WAL checkpoint; its queue drains first), then the run."""
    open_loop(server.base_url, rate, warm_up)
    pids = server.pids()
    server_before, generator_before = cpu_seconds(pids), time.process_time()
    sent = open_loop(server.base_url, rate, seconds)
    step = Step(rate, sent, cpu_seconds(pids) - server_before, time.process_time() - generator_before)
    print(f"# {rate:.0f} req/s: p99 {step.p99_ms:.1f} ms, {step.failed} failed", file=sys.stderr, flush=True)
    return step


def bracket(steps: dict[float, Step], limit_ms: float) -> tuple[float | None, float | None]:
    """The highest measured rate under ``limit_ms`` below the lowest one over it (None where there is none)."""
    over = [rate for rate, step in steps.items() if step.crosses(limit_ms)]
    if not over:
        return max(steps), None
    under = [rate for rate in steps if rate < min(over)]
    return (max(under) if under else None), min(over)


def sweep(server: BridgeProcess, steps: dict[float, Step], seconds: float) -> None:
    """Step the rate up until p99 is far past 100 ms, then narrow down where it crosses each limit."""
    for rate in SWEEP_RATES:
        if rate not in steps:
            steps[rate] = measure(server, rate, seconds, WARM_UP_SECONDS)
        step = steps[rate]
        if step.p99_ms > STOP_P99_MS or step.failed or not step.generator_kept_up:
            break
    for limit_ms in CROSSINGS_MS:
        while True:
            under, over = bracket(steps, limit_ms)
            if under is None or over is None or over <= BISECT_UNTIL * under:
                break
            middle = float(round((under + over) / 2))
            steps[middle] = measure(server, middle, seconds, WARM_UP_SECONDS)


def crossing(steps: dict[float, Step], limit_ms: float) -> str:
    under, over = bracket(steps, limit_ms)
    if over is None:
        return f"p99 stays <= {limit_ms:.0f} ms up to {under:.0f} req/s, the highest rate measured"
    if under is None:
        return f"p99 is over {limit_ms:.0f} ms already at {over:.0f} req/s, the lowest rate measured"
    return f"p99 crosses {limit_ms:.0f} ms between {under:.0f} and {over:.0f} req/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--sweep", action="store_true", help="then find where p99 crosses 100 ms and 25 ms")
    parser.add_argument("--step-seconds", type=float, default=10, help="length of each sweep step")
    args = parser.parse_args()
    header(f"latency of PUT buildEvent at {args.rate:.0f} req/s, open loop, SQLite{', then a sweep' * args.sweep}")
    directory = workdir("latency")
    with bridge(directory, sqlite_url(directory)) as server:
        target = measure(server, args.rate, args.seconds, 3)
        steps = {args.rate: target}
        if args.sweep:
            sweep(server, steps, args.step_seconds)
    table([HEADINGS, *(steps[rate].row() for rate in sorted(steps))])
    behind = [f"{rate:.0f}" for rate in sorted(steps) if not steps[rate].generator_kept_up]
    if behind:
        print(
            f"(!) the generator did not keep to its clock at {', '.join(behind)} req/s (sent/s under "
            f"{GENERATOR_MIN_SHARE:.0%} of the rate or p99 over {GENERATOR_MAX_LATE_MS:.0f} ms late): those "
            "latencies include its own delay"
        )
    else:
        print(f"the generator kept to its clock at every rate (p99 at most {GENERATOR_MAX_LATE_MS:.0f} ms late)")
    if args.sweep:
        for limit_ms in CROSSINGS_MS:
            print(crossing(steps, limit_ms))
    ok = not target.crosses(TARGET_P99_MS)
    print(
        f"p99 = {target.p99_ms:.1f} ms at {args.rate:.0f} req/s (target <= {TARGET_P99_MS:.0f} ms at "
        f"{TARGET_RATE:.0f} req/s): {verdict(ok)}"
    )


if __name__ == "__main__":
    main()
