"""Group commit: the writes of concurrent requests in one process share one SQLite transaction.

On SQLite every write transaction holds the one writer lock from ``BEGIN IMMEDIATE`` to the fsync'd ``COMMIT``,
so the web workers' requests queue on it one at a time, each paying its own lock hand-over, ``BEGIN`` and fsync.
Here a request hands its write to :meth:`GroupCommit.run` as a function of the session. The first thread to
arrive (the leader) takes every write queued in this process by then, runs them one after the other in one
transaction, commits once and hands each thread its own result or exception; threads that arrived while it was
busy wait for it and the next of them leads the next group. No write is answered before the commit that stores it.

Each write of a group of more than one runs inside a savepoint, so one that fails (a 404, a 409, a unique-index
conflict) is undone alone and raises in its own request while the others commit. If the commit itself fails,
every write of the group raises that error: none of them was stored.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")


class _Write(Generic[T]):
    """One queued write and, once its group has committed, what it returned or raised."""

    __slots__ = ("done", "error", "function", "result")

    def __init__(self, function: Callable[[Session], T]) -> None:
        self.function = function
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Batches the writes of one process's threads into shared transactions opened by ``transaction``."""

    def __init__(self, transaction: Callable[[], contextlib.AbstractContextManager[Session]]) -> None:
        self._transaction = transaction
        self._queue_lock = threading.Lock()
        self._queue: list[_Write[Any]] = []
        self._leader = threading.Lock()

    def run(self, function: Callable[[Session], T]) -> T:
        """``function(session)`` inside a committed transaction, possibly shared; its result, or its exception."""
        write = _Write(function)
        with self._queue_lock:
            self._queue.append(write)
        with self._leader:
            if not write.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit(group)
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _commit(self, group: list[_Write[Any]]) -> None:
        try:
            with self._transaction() as session:
                if len(group) == 1:
                    group[0].result = group[0].function(session)
                else:
                    for write in group:
                        _run_in_savepoint(session, write)
        except BaseException as exc:  # noqa: BLE001 (handed to every write's own thread, which re-raises it)
            for write in group:
                if write.error is None:
                    write.error, write.result = exc, None
        finally:
            for write in group:
                write.done = True


def _run_in_savepoint(session: Session, write: _Write[Any]) -> None:
    try:
        with session.begin_nested():
            write.result = write.function(session)
    except Exception as exc:  # noqa: BLE001 (this write's own error, raised again in its own thread)
        write.error = exc
