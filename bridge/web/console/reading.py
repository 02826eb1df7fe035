"""Read-only sessions for the console's pages, which must never queue behind, or hold up, the writers.

Every transaction of :class:`~bridge.storage.store.Store` on SQLite starts with ``BEGIN IMMEDIATE`` and the bridge's
writer lock, which a page that only reads has no reason to take: in WAL mode a reader sees a consistent snapshot
while writers go on. So on SQLite the console reads through its own small engine whose connections are
``query_only`` and begin deferred; on PostgreSQL a read never blocks a write and the store's engine is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from bridge.storage.store import SQLITE_BUSY_TIMEOUT_MS, Store


class Reader:
    def __init__(self, store: Store) -> None:
        if store.is_sqlite:
            self.engine = create_engine(store.database_url, pool_size=2, max_overflow=2)
            event.listen(self.engine, "connect", _read_only)
        else:
            self.engine = store.engine
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction is rolled back when it closes: nothing it does can be written."""
        with self._sessions() as session:
            yield session


def _read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()
