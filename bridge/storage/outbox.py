"""The durable outbox: intake bodies written in the same transaction as the event they came from.

Because an accepted event and its translation commit together, a crash can lose neither; the sender reads
this table at its own pace. States: ``pending`` (to send, at ``next_attempt_at``), ``delivered``, ``superseded``
(a running event whose final event was sent in its place), ``expired`` (the intake would refuse it as too old)
and ``dead`` (the intake refused it as invalid; kept for redrive).

Every write the sender makes is one set-based statement guarded by the lease, so a worker whose lease passed to
another never overwrites what the other recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, aliased

from adapters.target import CI_PIPELINE, INTAKE_WINDOW, Outbound
from bridge.operations import metrics
from bridge.storage.models import OutboxItem
from bridge.storage.prepared import Executor, dialect_of, prepared_insert

PENDING, DELIVERED, SUPERSEDED, EXPIRED, DEAD = "pending", "delivered", "superseded", "expired", "dead"
STATES = (PENDING, DELIVERED, SUPERSEDED, EXPIRED, DEAD)
WINDOW_PASSED = "the intake's 18-hour window passed before it could be delivered"


def enqueue(on: Executor, event_id: int, outbounds: Iterable[Outbound], now: dt.datetime) -> None:
    """Add the mapped bodies of one event; those the mapping found too old are stored as expired, not sent."""
    Enqueue(dialect_of(on), event_id, outbounds, now).run(on)


class Enqueue:
    """The outbox rows of one event's mapped bodies, converted for the driver when this is made, and their one
    prepared INSERT (:mod:`bridge.storage.prepared`): nothing reads the rows back in the same transaction.

    A create makes it before its write, with a stand-in for the event id the write will give
    (:mod:`bridge.ingest.premapped`); :meth:`run` then puts the real values in.
    """

    def __init__(self, dialect: Dialect, event_id: int, outbounds: Iterable[Outbound], now: dt.datetime) -> None:
        rows = [
            {
                "event_id": event_id,
                "kind": outbound.kind,
                "unique_id": outbound.unique_id,
                "level": outbound.level,
                "final": outbound.final,
                "body": outbound.body,
                "end_time": outbound.end,
                "state": EXPIRED if outbound.expired_reason else PENDING,
                "reason": outbound.expired_reason,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for outbound in outbounds
        ]
        self._statement = statement = prepared_insert(_TABLE, dialect, _ENQUEUED_COLUMNS)
        self._parameters = [statement.convert(row) for row in rows]
        self._expired = sum(row["state"] == EXPIRED for row in rows)
        self._event_id_at = statement.key_of("event_id")
        self._texts_at = [statement.key_of("unique_id"), statement.key_of("body")]

    def run(self, on: Executor, event_id: int | None = None, texts: Sequence[tuple[str, str]] = ()) -> int:
        """Insert the rows in ``on``'s transaction; how many. With ``event_id``, that id is theirs instead of the one
        given when this was made, and each ``(old, new)`` of ``texts`` is replaced in their run ids and bodies.
        Run again (its group's transaction was rolled back and run again), it inserts them again."""
        parameters = self._parameters
        if event_id is not None:
            parameters = [self._rewritten(row, event_id, texts) for row in parameters]
        if parameters:
            self._statement.execute_many_converted(on, parameters)
            metrics.count_expired("arrived_too_old", self._expired)
        return len(parameters)

    def _rewritten(self, row: Any, event_id: int, texts: Sequence[tuple[str, str]]) -> Any:
        values: Any = dict(row) if isinstance(row, dict) else list(row)
        values[self._event_id_at] = event_id
        for at in self._texts_at:
            text = values[at]
            for old, new in texts:
                text = text.replace(old, new)
            values[at] = text
        return values if isinstance(row, dict) else type(row)(values)


@dataclasses.dataclass(frozen=True)
class LeasedRow:
    """One claimed row: what ordering, superseding and expiry need, and the event as it goes into a batch."""

    id: int
    kind: str
    unique_id: str
    level: str
    final: bool
    end_time: dt.datetime | None
    attempts: int
    event: bytes


@dataclasses.dataclass
class ClaimOutcome:
    """What one claim took: rows to send (leased to the claimer), and rows it settled without sending."""

    to_send: list[LeasedRow] = dataclasses.field(default_factory=list)
    expired: list[LeasedRow] = dataclasses.field(default_factory=list)
    superseded: list[LeasedRow] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.to_send) + len(self.expired) + len(self.superseded)


# Core statements on the table: the sender's updates touch many rows by id and need none of the ORM's bookkeeping.
_TABLE = OutboxItem.metadata.tables[OutboxItem.__tablename__]
# The columns :func:`enqueue` gives, in its rows' order.
_ENQUEUED_COLUMNS = (
    "event_id",
    "kind",
    "unique_id",
    "level",
    "final",
    "body",
    "end_time",
    "state",
    "reason",
    "attempts",
    "next_attempt_at",
    "created_at",
)

# The event as a batch carries it, cut from the stored JSON text by the database: a pipeline body's ``data``
# object, a deployment whole. Parsing and re-encoding every body in Python would halve delivery throughput.
_EVENT_JSON = case(
    (OutboxItem.kind == CI_PIPELINE, OutboxItem.body["data"].as_string()), else_=cast(OutboxItem.body, Text)
)


def claim(
    session: Session,
    worker_id: str,
    now: dt.datetime,
    lease_until: dt.datetime,
    limit: int,
    kinds: Collection[str],
    skip_locked: bool,
) -> ClaimOutcome:
    """Lease up to ``limit`` due rows, oldest first, at most one per ``unique_id`` so none overtakes another.

    A row waits while an older row of its ``unique_id`` is pending. Rows past the intake's window are expired and
    running rows whose final event is pending or delivered are superseded here, so they are never sent.
    """
    due = _due_rows(now, limit, kinds, in_due_order=session.get_bind().dialect.name == "sqlite")
    if skip_locked:
        due = due.with_for_update(skip_locked=True, of=OutboxItem.__table__)
    rows = [
        LeasedRow(id_, kind, unique_id, level, final, end_time, attempts, event.encode())
        for id_, kind, unique_id, level, final, end_time, attempts, event in session.execute(due)
    ]
    if not rows:
        return ClaimOutcome()
    outcome = _sort_claimed(rows, _newest_final_ids(session, {row.unique_id for row in rows if not row.final}), now)
    _update_rows(session, [row.id for row in outcome.expired], None, state=EXPIRED, reason=WINDOW_PASSED)
    metrics.count_expired("waited", len(outcome.expired))
    _update_rows(session, [row.id for row in outcome.superseded], None, state=SUPERSEDED, delivered_at=now, reason=None)
    _update_rows(session, [row.id for row in outcome.to_send], None, lease_owner=worker_id, lease_until=lease_until)
    return outcome


def _due_rows(now: dt.datetime, limit: int, kinds: Collection[str], in_due_order: bool) -> Select[Any]:
    """The pending rows whose attempt is due and whose lease (if any) ran out, none behind an older pending row.

    Oldest first: by id, or ``in_due_order`` (SQLite) by when each became due, which is the order rows were queued
    in but for retries, which take their place at their new time. A run's rows go in id order either way (the
    check below). SQLite has no statistics, ever, and for an id order read and sorted every due row before the
    limit: 97-118 ms a claim behind 100,000 due rows, inside the writer lock, and a drain quadratic in the backlog.
    In due order it reads ``ix_outbox_due`` as that is sorted and stops at the limit (5 ms). PostgreSQL keeps the
    id order: with statistics from before a backlog (saying none is pending) it then walks the pending-only index
    in order and stops at the limit, where the due order made it read and sort every pending row.

    The check for an older pending row must read the row's own run only (``ix_outbox_unique``), however many rows
    the database believes are pending. As a plain ``NOT EXISTS`` PostgreSQL turned it into a join planned from its
    statistics, and where they said few rows were pending (a table not analyzed yet, or analyzed before an intake
    outage left a backlog) it read every pending row once per due row through a pending-only index: a claim over
    3,000 backlog rows took 0.5-0.7 s, ten times the backlog a hundred times that (``tests/test_claim_backlog.py``,
    bench/RESULTS.md 2026-12-04). ``OFFSET 0`` keeps the subquery from being pulled up into a join, and with the
    state tested through :func:`state_is` the run's index is the only one it can use. SQLite's plan is the same
    either way (``SEARCH outbox_1 USING INDEX ix_outbox_unique (unique_id=? AND id<?)``).
    """
    older = aliased(OutboxItem)
    blocked_by_older = (
        select(older.id)
        .where(older.unique_id == OutboxItem.unique_id, older.id < OutboxItem.id, state_is(older.state, PENDING))
        .offset(0)
        .exists()
    )
    return (
        select(
            OutboxItem.id,
            OutboxItem.kind,
            OutboxItem.unique_id,
            OutboxItem.level,
            OutboxItem.final,
            OutboxItem.end_time,
            OutboxItem.attempts,
            _EVENT_JSON,
        )
        .where(
            OutboxItem.state == PENDING,
            OutboxItem.kind.in_(kinds),
            OutboxItem.next_attempt_at <= now,
            (OutboxItem.lease_until.is_(None)) | (OutboxItem.lease_until < now),
            ~blocked_by_older,
        )
        .order_by(*((OutboxItem.next_attempt_at, OutboxItem.id) if in_due_order else (OutboxItem.id,)))
        .limit(limit)
    )


def _sort_claimed(
    rows: Sequence[LeasedRow], final_ids: Mapping[tuple[str, str], int], now: dt.datetime
) -> ClaimOutcome:
    """Which claimed rows go out, which are too old for the intake, and which a newer final event supersedes."""
    outcome = ClaimOutcome()
    for row in rows:
        if row.kind == CI_PIPELINE and row.end_time is not None and row.end_time + INTAKE_WINDOW <= now:
            outcome.expired.append(row)
        elif not row.final and final_ids.get((row.unique_id, row.level), 0) > row.id:
            outcome.superseded.append(row)
        else:
            outcome.to_send.append(row)
    return outcome


def _newest_final_ids(session: Session, unique_ids: Collection[str]) -> dict[tuple[str, str], int]:
    """For these runs, the id of the newest final row per level that is pending or delivered.

    ``final`` and ``state`` are tested through :func:`unindexed`, so the runs' own index is the only one to read.
    SQLite, which nothing analyzes, took the ``(final, created_at)`` index and read every final row of the history
    for each claim (``tests/test_claim_history.py``)."""
    if not unique_ids:
        return {}
    rows = session.execute(
        select(OutboxItem.unique_id, OutboxItem.level, func.max(OutboxItem.id))
        .where(
            OutboxItem.unique_id.in_(unique_ids),
            unindexed(OutboxItem.final, False).is_(True),
            unindexed(OutboxItem.state, "").in_((PENDING, DELIVERED)),
        )
        .group_by(OutboxItem.unique_id, OutboxItem.level)
    ).all()
    return {(unique_id, level): newest for unique_id, level, newest in rows}


def _update_rows(session: Session, ids: Sequence[int], worker_id: str | None, **values: Any) -> int:
    """Update rows by id in one statement; with ``worker_id``, only those whose lease that worker still holds."""
    if not ids:
        return 0
    statement = update(_TABLE).where(_ids_in(session, ids))
    if worker_id is not None:
        statement = statement.where(_TABLE.c.lease_owner == worker_id, _TABLE.c.lease_until.is_not(None))
    return _rowcount(session.execute(statement.values(**values)))


def _ids_in(session: Session, ids: Sequence[int]) -> ColumnElement[bool]:
    """``id IN (...)``; on PostgreSQL one array parameter, since a thousand separate ones cost more than the update."""
    if session.get_bind().dialect.name == "postgresql":
        return _TABLE.c.id == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(BigInteger)))
    return _TABLE.c.id.in_(ids)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def finish(
    session: Session,
    ids: Sequence[int],
    worker_id: str,
    state: str,
    now: dt.datetime,
    reason: str | None = None,
    remote_id: str | None = None,
) -> int:
    """Record the end of delivery for rows still leased to ``worker_id``; returns how many were recorded."""
    values: dict[str, Any] = {"state": state, "reason": reason, "lease_until": None}
    if state in (DELIVERED, SUPERSEDED):
        values["delivered_at"] = now
    if remote_id is not None:
        values["remote_id"] = remote_id
    return _update_rows(session, ids, worker_id, **values)


def release(session: Session, ids: Sequence[int], worker_id: str) -> int:
    """Give rows back untouched (no attempt counted), so any worker may take them at once."""
    return _update_rows(session, ids, worker_id, lease_owner=None, lease_until=None)


def renew(session: Session, ids: Sequence[int], worker_id: str, lease_until: dt.datetime) -> int:
    """Extend our lease on rows still being worked on, so a long pass is not taken over halfway."""
    return _update_rows(session, ids, worker_id, lease_until=lease_until)


def reschedule(
    session: Session, ids: Sequence[int], worker_id: str, next_attempt_at: dt.datetime, reason: str
) -> tuple[int, int]:
    """Count a failed attempt and schedule the next one; rows that would then be too old are expired instead.

    Returns (rescheduled, expired).
    """
    if not ids:
        return 0, 0
    columns = _TABLE.c
    too_old = and_(
        columns.kind == CI_PIPELINE,
        columns.end_time.is_not(None),
        columns.end_time <= next_attempt_at - INTAKE_WINDOW,
    )
    owned = and_(_ids_in(session, ids), columns.lease_owner == worker_id, columns.lease_until.is_not(None))
    expired = session.execute(
        update(_TABLE)
        .where(owned, too_old)
        .values(state=EXPIRED, reason=f"{WINDOW_PASSED} (last attempt: {reason})", lease_until=None)
    )
    rescheduled = session.execute(
        update(_TABLE)
        .where(owned)
        .values(
            attempts=columns.attempts + 1,
            next_attempt_at=next_attempt_at,
            reason=f"last attempt: {reason}",
            lease_owner=None,
            lease_until=None,
        )
    )
    metrics.count_expired("waited", _rowcount(expired))
    return _rowcount(rescheduled), _rowcount(expired)


def redrive(session: Session, now: dt.datetime, outbox_ids: Sequence[int] | None = None) -> int:
    """Queue dead letters again (all, or the given ids); returns how many.

    A running event whose final event was delivered since is superseded instead: sending it now would show a
    finished run as running again.
    """
    statement = select(OutboxItem).where(OutboxItem.state == DEAD)
    if outbox_ids:
        statement = statement.where(OutboxItem.id.in_(outbox_ids))
    rows = list(session.scalars(statement.order_by(OutboxItem.id)))
    final_ids = _newest_final_ids(session, {row.unique_id for row in rows if not row.final})
    stale = [row.id for row in rows if not row.final and final_ids.get((row.unique_id, row.level), 0) > row.id]
    fresh = [row.id for row in rows if row.id not in set(stale)]
    _update_rows(session, stale, None, state=SUPERSEDED, delivered_at=now, reason="its final event was delivered")
    _update_rows(session, fresh, None, state=PENDING, attempts=0, next_attempt_at=now, reason=None, lease_until=None)
    return len(rows)


def dead_letters(session: Session) -> list[OutboxItem]:
    """Every row the intake refused as invalid, oldest first."""
    return list(session.scalars(select(OutboxItem).where(OutboxItem.state == DEAD).order_by(OutboxItem.id)))


def delivery_summary(session: Session, event_ids: list[int]) -> dict[int, dict[str, object]]:
    """The delivery state of each event as a client should see it: the least advanced of its outbox rows.

    A superseded row counts as delivered, since its final event went in its place. ``remote_id`` is the id the
    intake answered with (DORA deployments), present once there is one.
    """
    if not event_ids:
        return {}
    rows = session.execute(
        select(OutboxItem.event_id, OutboxItem.state, OutboxItem.reason, OutboxItem.delivered_at, OutboxItem.remote_id)
        .where(OutboxItem.event_id.in_(event_ids))
        .order_by(OutboxItem.id)
    ).all()
    rank = {DEAD: 0, EXPIRED: 1, PENDING: 2, DELIVERED: 3}
    summary: dict[int, dict[str, object]] = {}
    remote_ids: dict[int, str] = {}
    for event_id, state, reason, delivered_at, remote_id in rows:
        if remote_id:
            remote_ids.setdefault(event_id, remote_id)
        shown = DELIVERED if state == SUPERSEDED else state
        current = summary.get(event_id)
        if current is None or rank[shown] < rank[str(current["state"])]:
            summary[event_id] = {"state": shown, "reason": reason, "delivered_at": delivered_at}
    for event_id, remote_id in remote_ids.items():
        summary[event_id]["remote_id"] = remote_id
    return summary


def oldest_pending_queued_at(session: Session) -> dt.datetime | None:
    """When the oldest row still waiting for delivery was queued: the lowest pending id's, one step in the
    pending-only index. Rows are numbered as they are queued, so that is the oldest (to the milliseconds two
    requests' commits can cross in). ``min(created_at)`` read the whole backlog: 45-58 ms a ``/readyz`` behind
    100,000 pending rows, and health checks call it every few seconds.

    SQLite, which nothing analyzes, prefers the state-led index for ``state = 'pending'`` and sorts the whole
    backlog by id, so it is told the index; PostgreSQL finds the partial index itself from the constant."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    statement = text(_OLDEST_PENDING_SQLITE if sqlite else _OLDEST_PENDING)
    return session.scalar(statement.columns(OutboxItem.created_at))


_OLDEST_PENDING = "SELECT created_at FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1"
_OLDEST_PENDING_SQLITE = _OLDEST_PENDING.replace("FROM outbox", "FROM outbox INDEXED BY ix_outbox_pending")


def counts_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()
    return {state: count for state, count in rows}


def unindexed(column: Any, empty: Any) -> ColumnElement[Any]:
    """``column`` through ``coalesce(column, empty)``: the same values for a NOT NULL column, but no index covers
    it, so a condition on it is checked on the rows the others found and cannot steer the planner to an index that
    starts with the column (the state-led, pending-only or ``(final, created_at)`` ones, which hold every row of
    that state or of every finished run). A SQLite store never has statistics, and without them SQLite takes such
    an index for any equality on its column."""
    return func.coalesce(column, empty)


def state_is(state: Any, value: str) -> ColumnElement[bool]:
    """``state = value`` through :func:`unindexed`."""
    return unindexed(state, "") == value
