"""WAL checkpoints on SQLite in a thread of their own, outside the writer lock.

SQLite checkpoints by itself: the ``COMMIT`` that takes the WAL past ``wal_autocheckpoint`` pages copies every
frame into the database file and fsyncs both files before it returns. In the bridge that ``COMMIT`` runs inside
the writer lock, so every writer of every process waited for it: at 200 creates a second, commits that normally
take a millisecond took 20 to 230 ms once every few seconds, and the requests queued behind them made p99 latency
tens of times the median (``bench_latency.py``). Here each process that writes runs a :class:`Checkpointer`: a daemon
thread that every :data:`INTERVAL_SECONDS` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of the pool
without the writer lock: it copies the frames and fsyncs the database file while the writers go on (a passive
checkpoint never blocks a writer and is never blocked by one; SQLite lets one checkpoint run at a time, whichever
process asks). But SQLite starts the WAL again from its beginning only when a write transaction begins on a WAL
that is completely checkpointed, which under a steady stream of writes never happens (a write always lands during
the checkpoint), and the file grew by every write. So the thread then takes the writer lock for a second passive
checkpoint, which copies only what was written during the first, a few pages: the next write restarts the WAL,
and it stays a few megabytes.

The connections' own ``wal_autocheckpoint`` stays on at :data:`AUTOCHECKPOINT_PAGES`, far above what the thread
lets the WAL reach: only a process whose thread cannot keep up (or died) checkpoints inside a commit, as before.
Durability is unchanged (see :mod:`bridge.storage.durability`): under ``synchronous=NORMAL`` a checkpoint syncs the
WAL before it copies and the database file after, whoever runs it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import structlog

INTERVAL_SECONDS = 0.2
AUTOCHECKPOINT_PAGES = 20_000  # 80 MB of 4 KiB pages: the backstop, reached only if no thread checkpoints
_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
# How often at most a checkpoint that keeps failing is logged.
FAILURE_LOG_SECONDS = 60.0

log = structlog.get_logger(__name__)


class Checkpointer:
    """Runs passive checkpoints every :data:`INTERVAL_SECONDS` in a daemon thread of the process that calls
    :meth:`start` first (again after a fork: a thread does not survive one), on connections ``connect`` gives;
    ``held`` is the writer lock, taken for the short second checkpoint of each round."""

    def __init__(
        self,
        connect: Callable[[], contextlib.AbstractContextManager[Any]],
        held: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._connect = connect
        self._held = held
        self._pid = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._logged_at = -FAILURE_LOG_SECONDS

    def start(self) -> None:
        """Start this process's thread, once; cheap enough to call before every write."""
        if self._pid == os.getpid() or self._stopped.is_set():
            return
        with self._lock:
            if self._pid != os.getpid() and not self._stopped.is_set():
                self._pid = os.getpid()
                arguments = (weakref.ref(self), self._stopped)
                threading.Thread(target=_run, args=arguments, name="sqlite-checkpoints", daemon=True).start()

    def checkpoint(self) -> None:
        """One round: a passive checkpoint, then one more inside the writer lock for what was written meanwhile. A
        failure is logged (at most once a minute) and the next round tried anyway."""
        try:
            with self._connect() as pooled:
                checkpoint = pooled.driver_connection.execute
                checkpoint(_PASSIVE).fetchall()
                with self._held():
                    checkpoint(_PASSIVE).fetchall()
        except Exception as exc:  # noqa: BLE001 (a thread that stopped would leave the WAL to the commits again)
            if time.monotonic() - self._logged_at >= FAILURE_LOG_SECONDS:
                self._logged_at = time.monotonic()
                log.warning("storage.checkpoint_failed", error=str(exc))

    def stop(self) -> None:
        """End this process's thread (the store is disposed): at most one more round runs, already under way."""
        self._stopped.set()


def _run(checkpointer: weakref.ref[Checkpointer], stopped: threading.Event) -> None:
    """The thread: a round every :data:`INTERVAL_SECONDS` until the store is disposed or is garbage (the thread
    holds it weakly, so a store nobody disposed does not keep it running)."""
    while not stopped.wait(INTERVAL_SECONDS):
        alive = checkpointer()
        if alive is None:
            return
        alive.checkpoint()
        del alive
