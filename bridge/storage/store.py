"""The database connection: one engine and session factory per app or worker, tuned for durability.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and an ``fdatasync`` of the WAL after every transaction that
wrote, outside the writer lock (:mod:`bridge.storage.durability`), so an answered request survives a power cut,
and every transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of
failing with "database is locked" when a read lock cannot be upgraded. PostgreSQL needs nothing special.

Before that BEGIN, a SQLite transaction takes a lock of its own (a thread lock in the process, then ``flock`` on
``<database>.lock`` between processes): SQLite's busy handler sleeps up to 100 ms at a time while it waits, which
showed as stalls of most of a second when the web workers and the delivery worker collided, whereas a waiter on
this lock goes ahead within a millisecond of its release.

Faults an operator causes or suffers become a :class:`StorageUnavailable` with the reason, which the routes answer
as 503 and /readyz reports, instead of a 500 or a silent loss: the SQLite file deleted or replaced under the running
bridge (every later write would go into an unlinked inode, lost at the next restart), a disk that refuses writes
(remembered until a probe write passes, after which the WAL is checkpointed back to nothing so it does not eat the
freed space again), and a lock file that cannot be opened.

Every string bound to a statement passes :func:`storable` first: neither driver can encode a lone surrogate to
UTF-8 and PostgreSQL text refuses NUL, so both become U+FFFD instead of failing the request. JSON columns are
written with :func:`storable_json` for the same reason (PostgreSQL refuses the ``\\u0000`` escape too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from bridge.storage.checkpoints import AUTOCHECKPOINT_PAGES, Checkpointer
from bridge.storage.durability import FlushFailed, WriteAheadLog
from bridge.storage.groupcommit import GroupCommit

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN = "BEGIN IMMEDIATE"
# A create's transaction on PostgreSQL (Store.driver_transaction) lets PostgreSQL plan its statements once for any
# values: they are INSERTs, whose foreign-key checks PostgreSQL runs as statements of its own, and the related-events
# lookups, whose constants are in their text so one plan is right for every value. Planning each of them for its
# values instead cost 0.23 ms of PostgreSQL's CPU a create of 0.82 (bench/RESULTS.md, 2026-12-03).
_GENERIC_PLANS = "SET LOCAL plan_cache_mode = auto"
# The execution option of :meth:`Store.read`'s sessions.
READ_ONLY = "bridge_read_only"
# How often, at most, a store whose disk refused a write tries a probe write to learn that writes pass again.
WRITE_PROBE_SECONDS = 1.0
# Less free space than this where the SQLite file lives and /readyz says the disk is full: a few hundred pages of
# WAL, below which the next burst of writes fails.
DISK_FREE_FLOOR_BYTES = 1024 * 1024
# SQLite's result codes that mean "this database takes no writes now", with the reason a 503 gives.
_SQLITE_REFUSALS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "the disk refused a write (I/O error)",
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
}
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# A JSON ``\\u0000`` escape whose backslash is not itself escaped.
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


# One encoder, built once (``json.dumps`` with any option builds a new one per call): the output of
# ``json.dumps(value, ensure_ascii=False)``.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)


class StorageUnavailable(Exception):
    """The database cannot take this transaction for a reason an operator must fix or wait out: a 503 with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class DriverConnection:
    """A DBAPI connection from the engine's pool and the dialect its statements are compiled for: what the accept
    path's prepared statements (:mod:`bridge.storage.prepared`) run on when nothing needs a session. A session's
    transaction, and a Core connection's, cost more CPU than the two INSERTs of a create (checkout, the
    transaction's state machine, commit and close), most of it inside the serialized write."""

    dialect: Dialect
    driver: Any


class Store:
    """Owns the engine and hands out sessions whose transaction commits on success and rolls back on error."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The same pool; the option tells the SQLite "begin" hook to open a plain, deferred transaction.
        self._read_sessions = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        path = _sqlite_path(database_url)
        self._writer_lock = WriterLock(Path(f"{path}.lock")) if path else None
        self._wal = WriteAheadLog(path) if path else None
        self._checkpoints = Checkpointer(self._pooled, self._held) if path else None
        self._group_commit = GroupCommit(self.transaction, self.driver_transaction, self._durable)
        self._thread_connections = ThreadConnections(self.engine)
        self._file = DatabaseFile(path) if path else None
        if self._file is not None:
            event.listen(self.engine, "connect", self._file.on_connect)
        if self._wal is not None:
            event.listen(self.engine, "checkout", self._wal.on_checkout)
            event.listen(self.engine, "checkin", self._wal.on_checkin)
        self._refused: str | None = None
        self._next_probe = 0.0

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one committed-or-rolled-back transaction."""
        with self._writing(), self._durable(), self._held(), self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def driver_transaction(self) -> Iterator[DriverConnection]:
        """What :meth:`transaction` does (the same checks, lock, flush and refusals) on a DBAPI connection, for
        writes made only of prepared statements: ``BEGIN IMMEDIATE`` on SQLite (PostgreSQL's driver begins by
        itself, and the transaction starts by allowing plans made once, :data:`_GENERIC_PLANS`), then COMMIT, or
        ROLLBACK if the body raised."""
        with self._writing(), self._durable(), self._held(), self._statements_connection() as pooled:
            connection = DriverConnection(self.engine.dialect, pooled.driver_connection)
            if self.is_sqlite:
                _on_driver(connection, _BEGIN, functools.partial(connection.driver.execute, _BEGIN))
            else:
                _on_driver(connection, _GENERIC_PLANS, functools.partial(connection.driver.execute, _GENERIC_PLANS))
            try:
                yield connection
                _on_driver(connection, "COMMIT", connection.driver.commit)
            except BaseException:
                _roll_back(pooled)
                raise

    @contextlib.contextmanager
    def _statements_connection(self) -> Iterator[Any]:
        """What a :meth:`driver_transaction` runs on. On SQLite, this thread's own connection (the one its lookups
        use, :class:`ThreadConnections`): a checkout from the pool and back cost a create more instructions than its
        BEGIN and COMMIT. Its changes ask for the WAL flush as a pooled connection's check-in does. On PostgreSQL, a
        connection from the pool."""
        if self._wal is None:
            with self._pooled() as pooled:
                yield pooled
            return
        held = self._thread_connections.held()
        with self._wal.watching(held.driver_connection):
            yield held

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write transaction: the database file checked before it; a write the database refused (a
        full disk) remembered after, so /readyz says so until a probe write passes; after a write that passed while
        a refusal was remembered, the refusal is checked again."""
        if self._file is not None:
            self._file.check()
        try:
            yield
        except DBAPIError as exc:
            refusal = write_refusal(exc)
            if refusal is not None and self.is_sqlite:
                self._refused, self._next_probe = refusal, time.monotonic() + WRITE_PROBE_SECONDS
            raise
        if self._refused is not None:
            self.writes_refused()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only. On SQLite it takes neither the writer lock nor ``BEGIN IMMEDIATE``: a WAL
        reader sees the last commit and never waits for a writer, so lookups and listings stay out of the
        serialized section (a write in it would have to wait for SQLite's own lock instead: don't)."""
        if not self.is_sqlite:
            with self.transaction() as session:
                yield session
            return
        self._check_files()
        with self._read_sessions() as session, session.begin():
            yield session

    def lookups(self) -> DriverConnection:
        """This thread's own DBAPI connection for a few prepared SELECTs (:mod:`bridge.storage.prepared`) before a
        write, on SQLite: no session, no transaction and no writer lock, each statement reading the last commit.
        Kept by the thread (:class:`ThreadConnections`) rather than checked out of the pool for each create."""
        self._check_files()
        return DriverConnection(self.engine.dialect, self._thread_connections.get())

    def _check_files(self) -> None:
        """What a transaction checks on the way to the writer lock, for the reads that do not take it: the database
        file is the one first opened, and the lock file can be opened (else writes cannot pass, and reads say so)."""
        if self._file is not None:
            self._file.check()
        if self._writer_lock is not None:
            self._writer_lock.check()

    def writes_refused(self) -> str | None:
        """Why this database takes no writes now, or None; cheap enough for every /readyz.

        A deleted or replaced file stays refused until a restart. A refused write (disk full) is remembered, and
        at most once a second a probe write checks whether writes pass again; the first that does checkpoints
        and truncates the WAL, which grew while nothing could be checkpointed. A process that has not seen a
        write fail (each web worker and the delivery worker remember their own) reads the free space instead.
        """
        if self._wal is not None and self._wal.failure and self._refused is None:
            self._refused, self._next_probe = self._wal.failure, time.monotonic() + WRITE_PROBE_SECONDS
        if self._file is not None:
            self._file.check()
            if self._refused is None:
                return self._file.unwritable()
        if self._refused is None or time.monotonic() < self._next_probe:
            return self._refused
        self._next_probe = time.monotonic() + WRITE_PROBE_SECONDS
        try:
            self._probe_write()
        except DBAPIError as exc:
            self._refused = write_refusal(exc) or self._refused
        except StorageUnavailable as exc:
            self._refused = exc.reason
        else:
            self._refused = None
        return self._refused

    def _probe_write(self) -> None:
        """Write one row unchanged (a real page in the WAL), then checkpoint the WAL into the file and truncate it."""
        with self._durable(), self._held(), self.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
        # On the driver's connection, outside any transaction: a Connection would begin one (BEGIN IMMEDIATE) first,
        # and inside it the checkpoint fails with "database table is locked", so the refusal was never cleared.
        checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"
        with self._held(), self._pooled() as connection:
            try:
                connection.driver_connection.execute(checkpoint)
            except sqlite3.Error as exc:
                raise driver_error(checkpoint, exc, sqlite3.Error) from None

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Any]:
        """A DBAPI connection from the pool, given back at the end; a database that cannot be reached raises what
        Core's ``connect()`` would (an :class:`~sqlalchemy.exc.OperationalError`, a 503), not the driver's error."""
        error = self.engine.dialect.loaded_dbapi.Error
        try:
            pooled = self.engine.raw_connection()
        except error as exc:
            raise driver_error(None, exc, error) from None
        try:
            yield pooled
        finally:
            pooled.close()

    def _held(self) -> contextlib.AbstractContextManager[None]:
        return self._writer_lock.held() if self._writer_lock else contextlib.nullcontext()

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """Where the WAL flush of the writes inside happens: at its exit, after the writer lock is released. A flush
        the disk refuses is a :class:`StorageUnavailable` (a 503), remembered like a refused write."""
        if self._wal is None:
            yield
            return
        if self._checkpoints is not None:
            self._checkpoints.start()
        try:
            with self._wal.deferred():
                yield
        except FlushFailed as exc:
            reason = str(exc.strerror)
            self._refused, self._next_probe = reason, time.monotonic() + WRITE_PROBE_SECONDS
            raise StorageUnavailable(reason) from None

    def write(self, function: Callable[[Session], T]) -> T:
        """``function(session)`` in a committed transaction: on SQLite one shared with the writes other threads of
        this process make at the same moment (:mod:`bridge.storage.groupcommit`), so they pay one lock and one fsync.
        On PostgreSQL its own: such writes may update rows, which PostgreSQL locks until COMMIT, and two processes'
        groups taking the same two rows in opposite orders would deadlock. ``function`` must not call ``write``."""
        if self.is_sqlite:
            return self._group_commit.run(function)
        with self.transaction() as session:
            return function(session)

    def write_statements(self, function: Callable[[Session | DriverConnection], T]) -> T:
        """:meth:`write` for a ``function`` that only runs prepared statements, on whatever it is given: its
        transaction is a :meth:`driver_transaction` (on SQLite, unless another write of its group needs a
        session), which costs a fraction of a session's. Grouped on both databases: ``function`` must only insert
        and read (a create), taking no lock another transaction could hold, so a group cannot deadlock; on
        PostgreSQL a group of creates pays one COMMIT (one WAL flush) and one BEGIN instead of one each."""
        return self._group_commit.run(function, needs_session=False)

    def dispose(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self._thread_connections.close()
        self.engine.dispose()
        if self._writer_lock:
            self._writer_lock.close()


def write_refusal(error: DBAPIError) -> str | None:
    """The reason when ``error`` says the database takes no writes (disk full, read-only), else None."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    if code is None:
        return None
    return _SQLITE_REFUSALS.get(code & 0xFF)


def make_engine(database_url: str) -> Engine:
    # hide_parameters: a statement error's message would otherwise quote every bound value (a whole webhook body)
    # into the log line of the 500 it causes.
    options: dict[str, Any] = {"hide_parameters": True, "json_serializer": storable_json}
    if database_url.startswith("sqlite"):
        _create_sqlite_parent(database_url)
        engine = create_engine(database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        engine = create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5, **options)
        event.listen(engine, "connect", _postgresql_on_connect)
    event.listen(engine, "before_cursor_execute", _storable_parameters, retval=True)
    return engine


def storable(value: str) -> str:
    """``value`` with NUL and lone surrogates (which no driver can store) replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", value)


def replace_unstorable(data: Any) -> Any:
    """``data`` (parsed JSON: dicts, lists, scalars) with :func:`storable` applied to every string and key, in
    place; iterative, so a payload nested as deep as the JSON parser allows cannot exhaust the stack here."""
    if isinstance(data, str):
        return storable(data)
    stack = [data] if isinstance(data, dict | list) else []
    while stack:
        node = stack.pop()
        for key, value in list(node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(value, dict | list):
                stack.append(value)
            elif _unstorable(value):
                node[key] = storable(value)
            if isinstance(node, dict) and _unstorable(key):
                node[storable(key)] = node.pop(key)
    return data


def _unstorable(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    # isascii is a flag read, so the common case costs one call; only non-ASCII text needs the regex.
    return "\x00" in value if value.isascii() else _UNSTORABLE.search(value) is not None


def storable_json(value: Any) -> str:
    """JSON text both databases take: non-ASCII kept as is (lone surrogates then fixed by :func:`storable` with the
    other parameters), and ``\\u0000`` escapes, which PostgreSQL's JSON types refuse, replaced by U+FFFD."""
    encoded = _JSON_ENCODER.encode(value)
    return _NUL_ESCAPE.sub("\\1\ufffd", encoded) if "\\u0000" in encoded else encoded


def driver_error(statement: str | None, error: Exception, dbapi_error: type[Exception]) -> StatementError:
    """A driver's error on ``statement`` (None: connecting) run outside Core, raised as Core would raise it (a
    DBAPIError subclass, so 503 and 409 handling and :func:`write_refusal` see it the same), never quoting the
    values."""
    return DBAPIError.instance(statement, None, error, dbapi_error, hide_parameters=True)


def storable_row(parameters: Any) -> Any:
    """A statement's parameters (a dict, list or tuple) with :func:`storable` applied to every string, as given
    when none needs it."""
    values = parameters.values() if isinstance(parameters, dict) else parameters
    if not isinstance(values, list | tuple | type({}.values())):
        return parameters
    # One check over all the row's strings joined (C speed) instead of one call per parameter: this runs for
    # every statement.
    if not _unstorable("".join([value for value in values if isinstance(value, str)])):
        return parameters
    if isinstance(parameters, dict):
        return {key: storable(value) if isinstance(value, str) else value for key, value in parameters.items()}
    return type(parameters)(storable(value) if isinstance(value, str) else value for value in parameters)


def _storable_parameters(
    _connection: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool
) -> tuple[str, Any]:
    if executemany:
        return statement, type(parameters)(storable_row(row) for row in parameters)
    return statement, storable_row(parameters)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself; pysqlite's own deferred BEGIN would defeat IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Only a new, empty file can take it (pruning then gives space back: bridge/operations/retention.py); asked of
    # an existing file it is a write, which a read-only database refuses even to readers.
    if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # the fsync is the store's, outside the lock (durability.py)
    cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")  # checkpoints.py checkpoints outside it
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgresql_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver prepares a statement on the server after its fifth run, and PostgreSQL then plans it once for any
    # values (a generic plan) if that plan's estimate is no worse than the plans made for the values so far. For
    # "the newest push of this commit" (ORDER BY id DESC LIMIT 1) in an app whose events share a few commits, the
    # generic plan walks the primary key backwards and filters every event of the table: 1.85 ms of PostgreSQL's
    # CPU a create at 3,000 events, growing with the table. Planned for its values, the lookup reads the commit's
    # index (0.02 ms); planning every statement cost less than that one scan (bench/RESULTS.md, 2026-12-02 21:20).
    # A create's own transaction goes back to plans made once (_GENERIC_PLANS): its statements are safe with them.
    # SET outside a transaction, so the pool's rollback on check-in cannot undo it (SQLAlchemy's recipe).
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute("SET plan_cache_mode = force_custom_plan")
    cursor.close()
    dbapi_connection.autocommit = autocommit


def _on_driver(connection: DriverConnection, statement: str, call: Callable[[], object]) -> None:
    """``call()``, the driver running ``statement`` (BEGIN, COMMIT); its error raised as Core would raise it."""
    error = connection.dialect.loaded_dbapi.Error
    try:
        call()
    except error as exc:
        raise driver_error(statement, exc, error) from None


def _roll_back(pooled: Any) -> None:
    """Roll a failed write back; a connection that cannot even do that is dropped from the pool, and the write's
    own error is what the caller gets."""
    try:
        pooled.rollback()
    except Exception:  # noqa: BLE001 (the error that made the rollback necessary is raised instead)
        pooled.invalidate()


def _sqlite_on_begin(connection: Any) -> None:
    # On the driver's connection: through Core's execution this statement cost as much as an INSERT.
    begin = "BEGIN" if connection.get_execution_options().get(READ_ONLY) else _BEGIN
    try:
        connection.connection.driver_connection.execute(begin)
    except sqlite3.Error as exc:
        raise driver_error(begin, exc, sqlite3.Error) from None


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


class ThreadConnections:
    """One DBAPI connection per thread (and process), made by the engine's pool and then detached from it.

    On SQLite a create reads the events it relates to before its write, outside the writer lock, and then writes
    with two INSERTs; checking a connection out of the pool and back in, twice, cost more instructions than the
    reads (the pool's queue, its events, the rollback at check-in), about 4 % of a create. The connection is opened
    through the pool, so the engine's connect hooks (pragmas, the database file's identity) run on it. It holds no
    transaction between uses, so it pins no WAL snapshot: a write's transaction ends in COMMIT or ROLLBACK, and one
    whose ROLLBACK fails is dropped (:meth:`HeldConnection.invalidate`). A thread's connection closes when the
    thread ends, or at :meth:`close` (``Store.dispose``).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._opened: weakref.WeakSet[HeldConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This thread's DBAPI connection, opened on first use (raises what the pool's connect raises)."""
        return self.held().driver_connection

    def held(self) -> HeldConnection:
        """This thread's connection as its holder, which a failed write can roll back or drop."""
        held: HeldConnection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid() or held.dropped:  # one made before a fork is the parent's
            error = self._engine.dialect.loaded_dbapi.Error
            try:
                pooled = self._engine.raw_connection()
            except error as exc:
                raise driver_error(None, exc, error) from None
            pooled.detach()
            self._local.held = held = HeldConnection(pooled.dbapi_connection, os.getpid())
            with self._lock:
                self._opened.add(held)
        return held

    def close(self) -> None:
        with self._lock:
            opened, self._opened = list(self._opened), weakref.WeakSet()
        for held in opened:
            held.invalidate()  # a connection another thread is using fails its own statement


class HeldConnection:
    """One thread's connection, with the two calls :func:`_roll_back` makes on a pooled one."""

    __slots__ = ("__weakref__", "driver_connection", "dropped", "pid")

    def __init__(self, connection: Any, pid: int) -> None:
        self.driver_connection = connection
        self.pid = pid
        self.dropped = False

    def rollback(self) -> None:
        self.driver_connection.rollback()

    def invalidate(self) -> None:
        """Close it; the thread opens another at its next use."""
        self.dropped = True
        with contextlib.suppress(Exception):
            self.driver_connection.close()


class DatabaseFile:
    """Notices that the SQLite path no longer names the file this process has open.

    Deleting (or replacing) the file under a running bridge leaves every open connection writing into an unlinked
    inode: each write succeeds and is gone at the next restart. The device and inode seen when the store was made
    (or at its first connection, for a file that did not exist yet) are compared with the path's on every
    transaction (one ``stat``, about a microsecond) and at every new connection; once they differ, every
    transaction is refused until a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lost: str | None = None
        # Taken now when the file exists (a web worker that opens its first connection after the file was deleted
        # would otherwise take the empty file SQLite creates in its place for the database).
        self._identity: tuple[int, int] | None = self._stat()

    def on_connect(self, _dbapi_connection: Any, _record: Any) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` once the path names another file than the one first opened."""
        if self._lost is None:
            self._compare(self._stat())
        if self._lost is not None:
            raise StorageUnavailable(self._lost)

    def unwritable(self) -> str | None:
        """Why no write can pass, read without writing: a file this process may not write (a read-only mount, an
        immutable file) or less than :data:`DISK_FREE_FLOOR_BYTES` free where the database lives."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return None
        if not os.access(self.path, os.W_OK):
            return "the database is read-only"
        free = stat.f_bavail * stat.f_frsize
        return f"the disk is full ({free // 1024} KiB free)" if free < DISK_FREE_FLOOR_BYTES else None

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _compare(self, identity: tuple[int, int] | None) -> None:
        if self._identity is None:
            self._identity = identity  # the first file seen (None while no file exists yet)
        elif identity != self._identity:
            self._lost = (
                f"the database file {self.path} was deleted or replaced while the bridge had it open; "
                "writes are refused until the bridge is restarted"
            )


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

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` when this process cannot open the lock file: no write could pass, and
        reads, which do not take the lock, say so too rather than answer as if all were well."""
        if self._pid != os.getpid():
            with self._thread_lock:
                self._open()

    def _open(self) -> None:
        if self._pid != os.getpid():
            # A lock file inherited across fork shares its flock with the parent, so each process opens its own.
            try:
                self._file = open(self.path, "a")  # noqa: SIM115 (held for the life of the process)
            except OSError as exc:
                raise StorageUnavailable(f"the lock file {self.path} cannot be opened: {exc.strerror}") from None
            self._pid = os.getpid()

    def _flock(self, deadline: float) -> bool:
        self._open()
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(self.POLL_SECONDS)
