"""The accept gate's rules (bridge/web/balance.py), on one shared mapping standing in for the master's.

The gunicorn tests open real connections to real workers; these pin the timing rules those depend on, which a
loaded machine's scheduling makes hard to hit on purpose there.
"""

from __future__ import annotations

import time

import pytest

from bridge.web import balance
from bridge.web.balance import AcceptGate, ConnectionCounts


@pytest.fixture(autouse=True)
def _short_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balance, "YIELD_SECONDS", 0.02)
    monkeypatch.setattr(balance, "ACCEPT_SECONDS", 10.0)


def _two_workers() -> tuple[ConnectionCounts, AcceptGate]:
    counts = ConnectionCounts(2)
    return counts, AcceptGate(counts, 0)


def _ask_for(gate: AcceptGate, seconds: float, count: int, waiting: bool) -> list[bool]:
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers.append(gate.leave_to_others(count, lambda: waiting))
        time.sleep(0.002)
    return answers


def test_a_worker_holding_more_leaves_a_waiting_client_to_the_other_one_interval_then_takes_it() -> None:
    counts, gate = _two_workers()
    counts.set(0, 3)
    counts.set(1, 1)  # the other holds fewer, and takes nothing

    answers = _ask_for(gate, 0.1, 3, waiting=True)

    assert answers[0] is True
    assert answers[-1] is False  # it stopped leaving the client to a worker that did not take it


def test_the_quiet_after_connections_closed_is_not_taken_for_a_stuck_worker() -> None:
    """After a burst, both workers' connections close, the other's first; nobody connects for a while. The next
    connections must still go to the worker holding fewer, not all to this one for the accept window."""
    counts, gate = _two_workers()
    counts.set(0, 8)
    counts.set(1, 0)
    assert all(_ask_for(gate, 0.1, 8, waiting=False))  # nothing waits: it keeps leaving the listener to the other
    counts.set(0, 0)
    assert gate.leave_to_others(0, lambda: False) is False  # as many as the other: it accepts

    counts.set(0, 1)  # the next burst: this one took the first connection
    assert gate.leave_to_others(1, lambda: True) is True
