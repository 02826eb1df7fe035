"""The database connection: one engine and session factory per app or worker, tuned for durability.

SQLite runs in WAL mode with ``synchronous=FULL`` so an answered request survives a power cut, and every
transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing
with "database is locked" when a read lock cannot be upgraded. PostgreSQL needs nothing special.

Before that BEGIN, a SQLite transaction takes a lock of its own (a thread lock in the process, then ``flock`` on
``<database>.lock`` between processes): SQLite's busy handler sleeps up to 100 ms at a time while it waits, which
showed as stalls of most of a second when the web workers and the delivery worker collided, whereas a waiter on
this lock goes ahead within a millisecond of its release.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bridge.groupcommit import GroupCommit

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Store:
    """Owns the engine and hands out sessions whose transaction commits on success and rolls back on error."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        path = _sqlite_path(database_url)
        self._writer_lock = WriterLock(Path(f"{path}.lock")) if path else None
        self._group_commit = GroupCommit(self.transaction) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one committed-or-rolled-back transaction."""
        held = self._writer_lock.held() if self._writer_lock else contextlib.nullcontext()
        with held, self._sessions() as session, session.begin():
            yield session

    def write(self, function: Callable[[Session], T]) -> T:
        """``function(session)`` in a committed transaction: on SQLite one shared with the writes other threads of
        this process make at the same moment (:mod:`bridge.groupcommit`), so they pay one lock and one fsync.
        ``function`` must not call ``write`` itself."""
        if self._group_commit is not None:
            return self._group_commit.run(function)
        with self.transaction() as session:
            return function(session)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer_lock:
            self._writer_lock.close()


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        _create_sqlite_parent(database_url)
        engine = create_engine(database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself; pysqlite's own deferred BEGIN would defeat IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Only takes effect on a new, empty file; pruning then gives space back (bridge/retention.py).
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_path(database_url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory ones."""
    if not database_url.startswith("sqlite") or "///" not in database_url:
        return None
    path = database_url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path).expanduser().resolve() if path and path != ":memory:" else None


def _create_sqlite_parent(database_url: str) -> None:
    path = _sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


class WriterLock:
    """One SQLite transaction at a time across threads and processes, handed over without sleeping 100 ms.

    Waiting is bounded by the busy timeout; past it the transaction goes ahead to SQLite's own locking, which
    then answers "database is locked" as before (a 503 at the routes) rather than hanging.
    """

    POLL_SECONDS = 0.0005

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._file: Any = None
        self._pid = 0
        self._flocked = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        if not self._thread_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            yield
            return
        try:
            self._depth += 1
            if self._depth == 1:
                self._flocked = self._flock(deadline)
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._flocked:
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._flocked = False
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._file is not None:
                self._file.close()
            self._file, self._pid = None, 0

    def _flock(self, deadline: float) -> bool:
        if self._pid != os.getpid():
            # A lock file inherited across fork shares its flock with the parent, so each process opens its own.
            self._file = open(self.path, "a")  # noqa: SIM115 (held for the life of the process)
            self._pid = os.getpid()
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(self.POLL_SECONDS)
