"""Group commit: the writes of concurrent requests in one process share one transaction.

On SQLite every write transaction holds the one writer lock from ``BEGIN IMMEDIATE`` to ``COMMIT``, so the web
workers' requests queue on it one at a time, each paying its own lock hand-over and ``BEGIN``. Here a request hands
its write to :meth:`GroupCommit.run` as a function of the session. The first thread to arrive (the leader) takes
every write queued in this process by then, runs them one after the other in one transaction and commits once;
threads that arrived while it was busy wait, and the next of them leads the next group. The leader lets the next
group start as soon as its ``COMMIT`` has returned, then waits for the WAL to reach the disk (``durable``, see
:mod:`bridge.storage.durability`) and only then hands each thread its own result or exception: no write is answered
before it is durable, and the disk's latency overlaps the next group's work instead of adding to it. A group whose
writes all run prepared statements alone (a create) runs on the driver's connection without a session, whose
transaction cost more CPU than the create's two INSERTs.

A write that raises (a 404, a 409, a unique-index conflict) fails alone: the transaction is rolled back, that write
gets its exception, and the others of the group run again in a new transaction. Writes are functions of the
session and what they were given, so running one again does the same thing (no savepoint per write: they cost a
quarter of the write's time in the serialized section, for a case that is rare). If the commit itself fails, or the
flush after it, every write of the group raises that error: none of them is known to be stored.

On PostgreSQL, which has no single writer, only creates are grouped (``Store.write_statements``): there the
saving is each create's own COMMIT, a WAL flush, and its BEGIN (same-run A/B, 2 web processes, 10 pairs of 10 s:
8 faster; PostgreSQL's processes 2.45 to 2.64 ms of CPU a create before, 2.09 to 2.33 after). Writes that update
rows (``Store.write``) keep a transaction each there: PostgreSQL holds row locks until COMMIT, and two groups
updating the same two builds in opposite orders would deadlock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")


class _Group:
    """The writes one leader took, and the moment they are all answered (committed and durable, or failed)."""

    __slots__ = ("done", "writes")

    def __init__(self, writes: list[_Write[Any]]) -> None:
        self.writes = writes
        self.done = threading.Event()


class _Write(Generic[T]):
    """One queued write and, once its group has committed, what it returned or raised."""

    __slots__ = ("error", "function", "group", "needs_session", "result")

    def __init__(self, function: Callable[[Any], T], needs_session: bool) -> None:
        self.function = function
        self.needs_session = needs_session
        self.result: T | None = None
        self.error: BaseException | None = None
        self.group: _Group | None = None


class _Undo(Exception):
    """Rolls the group's transaction back after one of its writes raised."""


class GroupCommit:
    """Batches the writes of one process's threads into shared transactions opened by ``transaction``; each
    group's flush to disk happens inside ``durable`` (entered before, and left after, the group's transaction)."""

    def __init__(
        self,
        transaction: Callable[[], contextlib.AbstractContextManager[Session]],
        statements_transaction: Callable[[], contextlib.AbstractContextManager[Any]],
        durable: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._transaction = transaction
        self._statements_transaction = statements_transaction
        self._durable = durable
        self._queue_lock = threading.Lock()
        self._queue: list[_Write[Any]] = []
        self._leader = threading.Lock()

    def run(self, function: Callable[[Any], T], needs_session: bool = True) -> T:
        """``function(session)`` inside a committed transaction, possibly shared; its result, or its exception.
        Without ``needs_session`` the function runs only prepared statements, on a session or on what
        ``statements_transaction`` gives: a group of such writes alone takes no session."""
        write = _Write(function, needs_session)
        with self._queue_lock:
            self._queue.append(write)
        led: _Group | None = None
        try:
            # Left in this order: the next leader may start once this group has committed, before its flush.
            with self._durable(), self._leader:
                if write.group is None:
                    with self._queue_lock:
                        led, self._queue = _Group(self._queue), []
                    for queued in led.writes:
                        queued.group = led
                    self._commit(led.writes)
        except BaseException as exc:  # the flush failed: handed to every write of the group
            if led is None:
                raise
            for queued in led.writes:
                if queued.error is None:
                    queued.error, queued.result = exc, None
        finally:
            if led is not None:
                led.done.set()
        assert write.group is not None
        write.group.done.wait()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _commit(self, writes: list[_Write[Any]]) -> None:
        pending = list(writes)
        while pending:
            opened = (
                self._transaction if any(write.needs_session for write in pending) else self._statements_transaction
            )
            try:
                with opened() as on:
                    for write in pending:
                        _run(on, write)
            except _Undo:
                pending = [write for write in pending if write.error is None]
                continue
            except BaseException as exc:  # noqa: BLE001 (handed to every write's own thread, which re-raises it)
                for write in pending:
                    write.error, write.result = exc, None
            return


def _run(on: Any, write: _Write[Any]) -> None:
    try:
        write.result = write.function(on)
    except Exception as exc:
        write.error, write.result = exc, None
        raise _Undo from exc
