"""Retention: delete events whose delivery is settled once they are older than the retention, in small batches.

An event may go when its last change is older than ``BRIDGE_RETENTION_DAYS`` and none of its outbox rows is
pending (waiting, retrying or leased); one with a dead letter stays ``BRIDGE_DEAD_LETTER_RETENTION_DAYS``. Events
that sent nothing (pushes, queued builds) follow the same age rule. Each batch of 50 is one short transaction (on
SQLite it holds the writer lock for a few milliseconds) followed by a pause twice as long, so requests being
accepted wait at most one small batch and the pruner never holds the lock more than a third of the time.

Two events are always kept, because SQLite gives a table without AUTOINCREMENT the largest id still present plus
one: the newest event and the event of the newest outbox row. Without them, an installation idle for longer than
the retention would hand out id 1 again, and with it the pipeline ``unique_id`` and ListEvents markers of an event
that existed before. Lookups by id (a build's ``parent_event_id``) then find nothing rather than the wrong event.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import operator
import threading
import time
from collections.abc import Sequence

import structlog
from sqlalchemy import and_, delete, func, or_, select, text, tuple_
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.storage.models import DeliveryAttempt, Event, OutboxItem
from bridge.storage.outbox import DEAD, PENDING, state_is
from bridge.storage.store import Store

log = structlog.get_logger(__name__)

BATCH_SIZE = 50
# After each batch the pruner waits this many times as long as the batch took (at least PAUSE_MIN seconds), so on
# SQLite it holds the one writer lock for at most a third of the time and accepting never queues behind a run.
PAUSE_FACTOR = 2.0
PAUSE_MIN = 0.02
# SQLite pages handed back to the file system per transaction (4 KiB each: 1 MiB).
VACUUM_PAGES = 256
# Free pages kept for the rows that come next, as a share of the file: in a steady state each prune frees about
# what the next minutes fill, and handing that back only for the file to grow again would be wasted writes.
VACUUM_RESERVE = 0.1


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """How long settled events and events with dead letters are kept."""

    keep: dt.timedelta
    keep_dead: dt.timedelta
    batch_size: int = BATCH_SIZE

    @classmethod
    def from_config(cls, config: Config) -> RetentionPolicy:
        return cls(
            keep=dt.timedelta(days=config.retention_days),
            keep_dead=dt.timedelta(days=max(config.dead_letter_retention_days, config.retention_days)),
        )


@dataclasses.dataclass
class PruneReport:
    """What one prune deleted, or with ``dry_run`` would delete."""

    dry_run: bool
    events: int = 0
    outbox: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    batches: int = 0
    pages_freed: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        states = ", ".join(f"{state} {count}" for state, count in sorted(self.outbox.items())) or "none"
        text = f"{verb} {self.events} event(s) and {sum(self.outbox.values())} outbox row(s) ({states})"
        return f"{text}; {self.pages_freed} SQLite page(s) given back" if self.pages_freed else text


def prune(
    store: Store,
    policy: RetentionPolicy,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    stopping: threading.Event | None = None,
) -> PruneReport:
    """Delete (or count, with ``dry_run``) every event the policy lets go, one batch per transaction."""
    now = now or dt.datetime.now(dt.UTC)
    started = time.monotonic()
    report = PruneReport(dry_run=dry_run)
    after: tuple[dt.datetime, int] | None = None
    pause = threading.Event() if stopping is None else stopping
    while not pause.is_set():
        batch_started = time.monotonic()
        with store.transaction() as session:
            candidates = _candidates(session, now - policy.keep, after, policy.batch_size)
            if not candidates:
                break
            ids = _deletable(session, candidates, now - policy.keep_dead)
            if ids:
                report.outbox.update(_outbox_states(session, ids) if dry_run else _delete(session, ids))
        report.events += len(ids)
        report.batches += bool(ids)
        after = candidates[-1]
        pause.wait(max(PAUSE_MIN, PAUSE_FACTOR * (time.monotonic() - batch_started)))
    if not dry_run and report.events and store.is_sqlite:
        report.pages_freed = give_back_space(store, stopping)
    if report.events:
        seconds = round(time.monotonic() - started, 4)
        log.info("retention.pruned", dry_run=dry_run, events=report.events, outbox=dict(report.outbox), seconds=seconds)
    return report


def _candidates(
    session: Session, cutoff: dt.datetime, after: tuple[dt.datetime, int] | None, limit: int
) -> list[tuple[dt.datetime, int]]:
    """The next ``limit`` events (oldest change first, after ``after``) past the cutoff, each with its position.

    Only the events' own index is read here; which of them have rows that keep them is :func:`_deletable`'s
    question, asked of these events alone. As one statement with ``NOT EXISTS`` checks, PostgreSQL planned those
    checks from its statistics: where they said few rows were pending (an outage's backlog arriving after the
    last ANALYZE), it read every pending row for every event, 112 ms a batch of 500 with 3,000 pending
    (bench/RESULTS.md, 2026-12-04), and forms that probed per event lost the ordered scan that stops at the batch.
    """
    rows = OutboxItem.__table__.c
    newest_outbox_event = select(rows.event_id).where(rows.id == select(func.max(rows.id)).scalar_subquery())
    statement = (
        select(Event.updated_at, Event.id)
        .where(
            Event.updated_at < cutoff,
            Event.id < select(func.max(Event.id)).scalar_subquery(),
            Event.id.not_in(newest_outbox_event),
        )
        .order_by(Event.updated_at, Event.id)
        .limit(limit)
    )
    if after is not None:
        moment, event_id = after
        statement = statement.where(
            or_(Event.updated_at > moment, and_(Event.updated_at == moment, Event.id > event_id))
            if session.get_bind().dialect.name == "sqlite"
            else tuple_(Event.updated_at, Event.id) > tuple_(moment, event_id)
        )
    if session.get_bind().dialect.name == "postgresql":
        # An event a request is updating right now (it holds the row) is left for the next prune.
        statement = statement.with_for_update(skip_locked=True, of=Event)
    return [(moment, event_id) for moment, event_id in session.execute(statement)]


def _deletable(session: Session, candidates: Sequence[tuple[dt.datetime, int]], dead_cutoff: dt.datetime) -> list[int]:
    """The ids of ``candidates`` with nothing pending and no dead letter kept (one younger than ``dead_cutoff``)."""
    rows = OutboxItem.__table__.c
    ids = [event_id for _, event_id in candidates]
    kept_dead = [event_id for moment, event_id in candidates if moment >= dead_cutoff]
    # On SQLite, which nothing analyzes, a plain state test took the state-led index and read the whole backlog for
    # each batch; through state_is, which no index covers, the events' own index is the only one left. PostgreSQL
    # picks the events' index from its statistics, and without them reads only the pending rows that way.
    state_of = state_is if session.get_bind().dialect.name == "sqlite" else operator.eq
    keeps = state_of(rows.state, PENDING)
    if kept_dead:
        keeps = or_(keeps, and_(state_of(rows.state, DEAD), rows.event_id.in_(kept_dead)))
    keeping = select(rows.event_id).where(rows.event_id.in_(ids), keeps)
    kept = set(session.scalars(keeping))
    return [event_id for event_id in ids if event_id not in kept]


def _outbox_states(session: Session, event_ids: Sequence[int]) -> dict[str, int]:
    rows = session.execute(
        select(OutboxItem.state, func.count()).where(OutboxItem.event_id.in_(event_ids)).group_by(OutboxItem.state)
    )
    return {state: count for state, count in rows}


def _delete(session: Session, event_ids: Sequence[int]) -> collections.Counter[str]:
    """Delete the events and everything that refers to them, children first (the foreign keys are enforced).

    Returns the deleted outbox rows by state.
    """
    outbox_rows = select(OutboxItem.id).where(OutboxItem.event_id.in_(event_ids))
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.outbox_id.in_(outbox_rows)))
    states = session.scalars(delete(OutboxItem).where(OutboxItem.id.in_(outbox_rows)).returning(OutboxItem.state))
    deleted = collections.Counter(states)
    session.execute(delete(Event).where(Event.id.in_(event_ids)), execution_options={"synchronize_session": False})
    return deleted


def give_back_space(store: Store, stopping: threading.Event | None = None) -> int:
    """On a SQLite file in ``auto_vacuum=INCREMENTAL`` mode, return free pages to the file system a few at a time.

    Each step holds the writer lock for about one MiB of pages; a tenth of the file stays free for new rows. A file
    made before that mode was set keeps its free pages and reuses them for new rows, so it stops growing but does
    not shrink; :func:`enable_incremental` switches it once. Returns the pages given back.
    """
    freed = 0
    while not (stopping and stopping.is_set()):
        with store.transaction() as session:
            connection = session.connection()
            if connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:
                return freed
            free = int(connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)
            pages = int(connection.exec_driver_sql("PRAGMA page_count").scalar() or 0)
            excess = free - int(pages * VACUUM_RESERVE)
            if excess <= 0:
                return freed
            step = min(excess, VACUUM_PAGES)
            # pysqlite steps a statement once, and each step of this pragma frees one page; executescript runs it
            # to the end. It commits the (empty) transaction first; the writer lock stays ours throughout.
            connection.connection.dbapi_connection.executescript(  # type: ignore[union-attr]
                f"PRAGMA incremental_vacuum({step});"
            )
        freed += step
    return freed


def enable_incremental(store: Store) -> bool:
    """Switch a SQLite file to ``auto_vacuum=INCREMENTAL`` (a full VACUUM); True when it was switched now.

    The VACUUM rewrites the whole file while holding the writer lock: accepting waits (up to the busy timeout,
    30 s) until it ends. Run it once, at a quiet time: ``pipeline-bridge prune --enable-incremental-vacuum``.
    """
    if not store.is_sqlite:
        return False
    with store.transaction() as session:
        connection = session.connection()
        if connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2:
            return False
        dbapi = connection.connection.dbapi_connection
        dbapi.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")  # type: ignore[union-attr]
    return True


def row_counts(session: Session) -> dict[str, int]:
    """Rows in the tables retention bounds (the benchmark and ``prune`` print them)."""
    return {
        table: int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)  # noqa: S608
        for table in ("events", "outbox")
    }
