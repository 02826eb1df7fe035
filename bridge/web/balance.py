"""Spreading client connections over the web workers, which all wait on one listening socket.

The kernel wakes every worker waiting on the shared listener and the first to call ``accept()`` gets the
connection, so who gets what is a race. A client that keeps its connection (a proxy, a load balancer, wrk's 16
keep-alive connections opened at once) stays with the winner: in 2 of 8 runs of the accept benchmark here one
worker of two took all 16 connections and served every request on one core while the other idled (387-426 req/s
against 514-560 when they were split, 2026-12-02), and 16 connections opened together in the gunicorn test went
16/0, 15/1, 13/3, 16/0 in four runs.

Each worker writes how many connections it holds into memory shared with the master and the other workers
(:class:`ConnectionCounts`); a worker holding more than another live one leaves the listener to it,
:data:`YIELD_SECONDS` at a time while the others' counts keep changing (they accept, if slowly, as on a loaded
machine: with 20 ms and no such check, 16 connections still went 13/3 and 14/2 under load) or while no client is
waiting to be accepted. Only once a whole interval passes with a client waiting and no change does it accept, and
then it does not yield again for :data:`ACCEPT_SECONDS`: a worker that is stuck or gone leaves a client waiting at
most one interval, and slows the others' accepting by a fifth at most. Without the waiting client in that rule, the
quiet after a burst of connections closing looked like a stuck worker: the next burst, within the accept window,
went to one worker (3/13 in the gunicorn test, in a CI run and once on a quiet machine).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable

YIELD_SECONDS = 0.25
ACCEPT_SECONDS = 1.0
_FREE = -1  # a slot no live worker holds
_INT_BYTES = 4


class ConnectionCounts:
    """Open connections per web worker, one slot each, in an anonymous shared mapping made by the master before it
    forks: every worker reads every slot, and writes only its own (an aligned 4-byte store, seen whole)."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, slots * _INT_BYTES)
        self._counts = memoryview(self._memory).cast("i")
        for slot in range(slots):
            self._counts[slot] = _FREE

    def claim(self, taken: set[int]) -> int | None:
        """In the master, for a worker about to fork: a slot no live worker holds (None if all are). It counts
        once the worker starts accepting, so nobody leaves connections to a worker still starting."""
        for slot in range(len(self._counts)):
            if slot not in taken:
                self._counts[slot] = _FREE
                return slot
        return None

    def release(self, slot: int) -> None:
        """In the master, once the worker holding ``slot`` has exited."""
        self._counts[slot] = _FREE

    def set(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def others(self, slot: int) -> tuple[int, ...]:
        """Every slot's count but ``slot``'s: what changes while the other workers accept."""
        return tuple(other for at, other in enumerate(self._counts) if at != slot)

    def fewer_elsewhere(self, slot: int, count: int) -> bool:
        """Whether a live worker other than the one at ``slot`` holds fewer than ``count`` connections."""
        return any(_FREE < other < count for at, other in enumerate(self._counts) if at != slot)


class AcceptGate:
    """One worker's side: its slot, and when it began leaving the listener to a worker holding fewer."""

    def __init__(self, counts: ConnectionCounts | None, slot: int | None) -> None:
        self._counts = counts
        self._slot = slot
        self._yielding_since: float | None = None
        self._others_then: tuple[int, ...] = ()
        self._accepting_until = 0.0

    def held(self, count: int) -> None:
        """This worker accepts, and holds ``count`` connections now."""
        if self._counts is not None and self._slot is not None:
            self._counts.set(self._slot, count)

    def closed(self) -> None:
        """This worker accepts no more (it is stopping): nobody should leave connections to it."""
        if self._counts is not None and self._slot is not None:
            self._counts.release(self._slot)

    def leave_to_others(self, count: int, client_waiting: Callable[[], bool]) -> bool:
        """Whether to leave new connections to another worker now (see the module docstring for how long);
        ``client_waiting`` says whether a client waits to be accepted, asked only when an interval has passed."""
        if self._counts is None or self._slot is None or not self._counts.fewer_elsewhere(self._slot, count):
            self._yielding_since = None
            return False
        now = time.monotonic()
        if now < self._accepting_until:
            return False
        if self._yielding_since is None:
            self._yielding_since, self._others_then = now, self._counts.others(self._slot)
        if now - self._yielding_since < YIELD_SECONDS:
            return True
        others = self._counts.others(self._slot)
        if others != self._others_then or not client_waiting():  # slow, or nothing to take: not stuck
            self._yielding_since, self._others_then = now, others
            return True
        self._yielding_since, self._accepting_until = None, now + ACCEPT_SECONDS  # nobody took them
        return False

    def seconds_left(self) -> float | None:
        """How long until :meth:`leave_to_others` must be asked again, while yielding."""
        if self._yielding_since is None:
            return None
        return max(0.0, self._yielding_since + YIELD_SECONDS - time.monotonic())
