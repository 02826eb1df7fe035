"""The worker's periodic upkeep: close stale runs, prune past retention, log backlog warnings.

It runs in a thread of the delivery worker every ``BRIDGE_UPKEEP_MINUTES``, so a long first prune never delays
delivery. On PostgreSQL one worker at a time does it (a session advisory lock; the others skip that round); on
SQLite every transaction already holds the one writer lock, and a second worker finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bridge.config import Config
from bridge.operations import backlog, retention, stale
from bridge.storage.store import Store

log = structlog.get_logger(__name__)

# pg_try_advisory_lock key: "bridge-upkeep" in ASCII, any number no other part of the bridge uses.
ADVISORY_KEY = 0x6272696467652D75


@contextlib.contextmanager
def exclusive(store: Store) -> Iterator[bool]:
    """True when this process may run upkeep now; on PostgreSQL only one holder across all workers."""
    if store.is_sqlite:
        yield True
        return
    with store.engine.connect() as connection:
        mine = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar())
        connection.commit()
        try:
            yield mine
        finally:
            if mine:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                connection.commit()


class Upkeep:
    """One round of upkeep on demand (:meth:`run_once`) or every interval in a thread (:meth:`start`)."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.policy = retention.RetentionPolicy.from_config(config)
        self.interval = dt.timedelta(minutes=config.upkeep_minutes).total_seconds()

    def run_once(self, stopping: threading.Event | None = None) -> bool:
        """Close stale runs, prune, log warnings; False when another worker holds the upkeep lock."""
        with exclusive(self.store) as mine:
            if not mine:
                return False
            stale.close_stale_runs(self.store, self.config)
            retention.prune(self.store, self.policy, stopping=stopping)
            with self.store.transaction() as session:
                backlog.log_warnings(session, self.config)
        return True

    def start(self, stopping: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(stopping,), name="upkeep", daemon=True)
        thread.start()
        return thread

    def _loop(self, stopping: threading.Event) -> None:
        # The first round comes one interval after start, so a starting worker claims its first batch unhindered.
        while not stopping.wait(self.interval):
            try:
                self.run_once(stopping)
            except SQLAlchemyError as exc:
                # The database restarting is no reason to stop upkeep: the next round tries again.
                log.error("upkeep.database_error", error_type=type(exc).__name__)
