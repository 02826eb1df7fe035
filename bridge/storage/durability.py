"""Durable commits on SQLite with the fsync outside the writer lock.

SQLite's ``synchronous=FULL`` fsyncs the write-ahead log inside ``COMMIT``, so in the bridge the fsync ran while the
writer lock was held and every other writer, in every process, waited for the disk as well as for the lock. The
store's connections run ``synchronous=NORMAL`` instead, and :class:`WriteAheadLog` makes each write durable
before the code that made it goes on: when a connection that changed rows goes back to the pool (or a create's
transaction on its thread's own connection ends, ``Store.driver_transaction``), the WAL file is ``fdatasync``'d,
right away, or, inside :meth:`WriteAheadLog.deferred` (the store's transactions and group commits), once the
writer lock has been released. No request is answered before that returns.

Why an answered write is as durable as with ``FULL``:

- In WAL mode a commit writes its frames, the commit frame last, into the WAL file with ``write()`` before
  ``COMMIT`` returns; ``NORMAL`` only leaves out the fsync. ``fdatasync`` of that file after ``COMMIT`` returned puts
  every frame written so far on disk, ours included (Linux flushes the inode's dirty pages, whichever descriptor
  wrote them). After a power cut, recovery replays every frame up to the last valid commit frame: ours is valid.
- The WAL is only reset (written again from its start) after a checkpoint has copied every frame into the database
  file, and under ``NORMAL`` SQLite fsyncs the WAL before a checkpoint and the database file after it. So a write
  whose WAL frames were overwritten is already durable in the database file. A WAL file deleted when the last
  connection closed was checkpointed the same way.
- A new WAL file (a different inode at the path) has its directory entry synced before it is first relied on, so
  the file itself survives the power cut, as SQLite does for the WAL it creates under ``FULL``.
- What differs: another connection can read a committed write during the microseconds before its fdatasync
  returns (under ``FULL`` it becomes visible after). Such a write may still be lost by a power cut, but its request
  was not answered yet, so its client sends it again: at worst delivered twice, never answered and lost.

A failed ``fdatasync`` (the disk refused the write-back) fails the write: it is answered 503, not 200, and the
store reports the reason at ``/readyz`` until a write passes again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class FlushFailed(OSError):
    """The WAL could not be written back to the disk: the writes of the transaction are not known to be durable."""


class WriteAheadLog:
    """The WAL file of one SQLite database, and the fdatasync every write of this process waits for."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-wal")
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self._identity: tuple[int, int, int] | None = None  # pid, device, inode of the open descriptor
        self._local = threading.local()
        self.failure: str | None = None  # set by a flush that failed where nobody could be told (see on_checkin)

    # Pool events: a connection records its count of changed rows when it is checked out, and a connection that
    # changed rows is flushed when it is checked back in, which is the end of every transaction on it.
    def on_checkout(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info["wal_changes"] = _changes(dbapi_connection)

    def on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and _changes(dbapi_connection) != record.info.get("wal_changes"):
            self._changed()

    @contextlib.contextmanager
    def watching(self, dbapi_connection: Any) -> Iterator[None]:
        """Around a transaction on a connection the pool does not hand out (``Store.driver_transaction`` on a
        thread's own connection): if it changed rows, the flush a check-in would have asked for."""
        before = _changes(dbapi_connection)
        try:
            yield
        finally:
            if _changes(dbapi_connection) != before:
                self._changed()

    def _changed(self) -> None:
        """A connection of this thread changed rows: flush now, or inside :meth:`deferred` when it is left."""
        if getattr(self._local, "depth", 0):
            self._local.pending = True
            return
        try:
            self.flush()  # an engine.begin() outside the store's transactions (migrations): flushed right away
        except FlushFailed as exc:
            self.failure = str(exc.strerror)  # a pool event cannot fail the caller; readiness reports it instead

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Flushes that the writes inside ask for are done once, when the outermost ``deferred`` exits: after the
        writer lock taken inside it has been released. Raises :class:`FlushFailed` if that flush fails."""
        local = self._local
        local.depth = getattr(local, "depth", 0) + 1
        try:
            yield
        except BaseException:
            # The error goes on to the caller, who answers it; what was committed before it is flushed all the same.
            self._leave(local, quietly=True)
            raise
        self._leave(local, quietly=False)

    def _leave(self, local: threading.local, quietly: bool) -> None:
        local.depth -= 1
        if local.depth == 0 and getattr(local, "pending", False):
            local.pending = False
            try:
                self.flush()
            except FlushFailed as exc:
                if not quietly:
                    raise
                self.failure = str(exc.strerror)

    def flush(self) -> None:
        """fdatasync the WAL file at the database's path; nothing to do when there is none (see the module)."""
        try:
            descriptor = self._open()
            if descriptor is not None:
                os.fdatasync(descriptor)
        except OSError as exc:
            raise FlushFailed(exc.errno, f"the disk refused to write back the database log: {exc.strerror}") from None
        self.failure = None

    def _open(self) -> int | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        identity = (os.getpid(), stat.st_dev, stat.st_ino)
        with self._lock:
            if identity != self._identity:
                if self._descriptor is not None and self._identity and self._identity[0] == identity[0]:
                    os.close(self._descriptor)  # not one inherited across fork: that one is the parent's too
                self._descriptor = descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                opened = os.fstat(descriptor)
                self._identity = (identity[0], opened.st_dev, opened.st_ino)
                _sync_directory(self.path.parent)
            return self._descriptor


def _changes(dbapi_connection: Any) -> int:
    """The rows the connection has changed since it opened; -1 once it is closed after an error, which is then
    flushed all the same (it costs nothing then)."""
    try:
        changes: int = dbapi_connection.total_changes
    except sqlite3.ProgrammingError:
        return -1
    return changes


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
