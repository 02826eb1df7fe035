"""Closing runs that never finish: a running pipeline or job with no final status after ``BRIDGE_STALE_RUN_HOURS``.

A CI job that dies never reports its end (the Distelli Jenkins guide's scripts send no Cancelled or TimedOut), and
Datadog shows a running pipeline for at most three days before dropping it. So the bridge sends the final event
itself: the last running body of that ``unique_id`` with status ``error``, an error block saying no final status
arrived within that time, a tag naming the bridge as the closer, and the end at the running event's receipt plus
that time (so with the default 12 hours the end is still inside the intake's 18-hour window).

This works on outbox rows, so it is the same for Distelli builds and every webhook source. The stored event keeps
its status; its ``state`` records the closing, which ListEvents shows (:func:`listing`). A real final status that
arrives later is mapped and sent as usual, with the same ``unique_id``, and replaces the closing in Datadog.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from adapters.payload import read_source_time
from adapters.target import CI_PIPELINE, INTAKE_WINDOW, Outbound, expiry_reason, rfc3339
from bridge.config import Config
from bridge.ingest.runlock import lock_run
from bridge.storage import outbox
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store

log = structlog.get_logger(__name__)

STATE_KEY = "closed_by_bridge"
CLOSED_TAG = "pipeline_bridge.closed:no_final_status"
ERROR_TYPE = "no_final_status"
BATCH_SIZE = 200


@dataclasses.dataclass(frozen=True)
class Closed:
    """One run level the bridge closed."""

    event_id: int
    unique_id: str
    level: str
    end: dt.datetime
    expired_reason: str | None


def reason_text(hours: float) -> str:
    return f"No final status arrived from the CI tool within {hours:g} hours; pipeline-bridge closed the run."


def close_stale_runs(store: Store, config: Config, now: dt.datetime | None = None) -> list[Closed]:
    """Close every run level whose running event is older than the stale time and that has no final event."""
    now = now or dt.datetime.now(dt.UTC)
    after = dt.timedelta(hours=config.stale_run_hours)
    closed: list[Closed] = []
    seen: set[int] = set()
    while True:
        # The look reads a whole window of running rows, so it runs outside the writer lock that every accepted
        # request waits for on SQLite; each event is checked again under its run's lock before it is closed.
        with store.read() as session:
            candidates = [row for row in _open_runs(session, now - after) if row.id not in seen]
            session.expunge_all()
        if not candidates:
            return closed
        seen.update(row.id for row in candidates)
        by_event: dict[int, list[OutboxItem]] = {}
        for row in candidates:
            by_event.setdefault(row.event_id, []).append(row)
        with store.transaction() as session:
            for event_id, rows in by_event.items():
                closed += _close_event(session, event_id, rows, after, config.stale_run_hours, now)
        if closed:
            log.warning("stale.closed", runs=len(closed), unique_ids=[item.unique_id for item in closed][:20])


def _open_runs(session: Session, older_than: dt.datetime) -> list[OutboxItem]:
    """Running rows queued between one intake window before ``older_than`` and it, with no final row of their run.

    Older ones could only be closed with an end the intake refuses; the bound keeps the scan to one window of
    running rows however long the history.

    The check for a final row reads only the candidate's run: a subquery for each candidate (``OFFSET 0`` keeps
    PostgreSQL from turning it into a join that hashes every final row of the history), with ``final`` tested
    through :func:`outbox.unindexed` (the state too: the state-led index holds the whole history's delivered
    rows). Without statistics (SQLite's, which nothing analyzes), SQLite read
    the ``(final, created_at)`` index's every final row for every candidate: 2.8 s holding the writer lock behind
    1,000 finished builds, four times that behind twice as many (``tests/test_stale_history.py``).
    """
    other = aliased(OutboxItem)
    has_final = (
        select(other.id)
        .where(other.unique_id == OutboxItem.unique_id, outbox.unindexed(other.final, False).is_(True))
        .offset(0)
        .exists()
    )
    statement = (
        select(OutboxItem)
        .where(
            OutboxItem.final == False,  # noqa: E712 (the form the (final, created_at) index matches)
            OutboxItem.created_at <= older_than,
            OutboxItem.created_at > older_than - INTAKE_WINDOW,
            OutboxItem.kind == CI_PIPELINE,
            outbox.unindexed(OutboxItem.state, "").in_((outbox.PENDING, outbox.DELIVERED)),
            ~has_final,
        )
        .order_by(OutboxItem.id)
        .limit(BATCH_SIZE)
    )
    return list(session.scalars(statement))


def _close_event(
    session: Session, event_id: int, rows: list[OutboxItem], after: dt.timedelta, hours: float, now: dt.datetime
) -> list[Closed]:
    """Under the same lock the event's own requests take, recheck and enqueue the closing bodies."""
    event = session.get(Event, event_id)
    if event is None:
        return []
    if event.run_key:
        lock_run(session, event.source, event.run_key)
    elif session.get_bind().dialect.name == "postgresql":
        # UpdateBuildEvent holds the row while it writes; read its state again once it is ours.
        session.refresh(event, with_for_update=True)
    newest: dict[str, OutboxItem] = {}
    for row in rows:
        newest[row.unique_id] = row
    finals = set(
        session.scalars(
            select(OutboxItem.unique_id).where(OutboxItem.unique_id.in_(newest), OutboxItem.final.is_(True))
        )
    )
    outbounds = [_closing(row, after, hours, now) for unique_id, row in newest.items() if unique_id not in finals]
    if not outbounds:
        return []
    outbox.enqueue(session, event_id, outbounds, now)
    marker = {"at": rfc3339(now), "after_hours": hours, "reason": reason_text(hours)}
    session.execute(
        update(Event).where(Event.id == event_id).values(state={**event.state, STATE_KEY: marker}),
        execution_options={"synchronize_session": False},
    )
    return [Closed(event_id, item.unique_id, item.level, item.end or now, item.expired_reason) for item in outbounds]


def _closing(row: OutboxItem, after: dt.timedelta, hours: float, now: dt.datetime) -> Outbound:
    """The final body for a running row: its own body with status error, an end, the error block and the tag."""
    body = copy.deepcopy(row.body)
    resource: dict[str, Any] = body["data"]["attributes"]["resource"]
    start = read_source_time(resource.get("start")) or row.created_at
    end = max(min(row.created_at + after, now), start)
    resource["status"] = "error"
    resource["end"] = rfc3339(end)
    resource["error"] = {"domain": "unknown", "type": ERROR_TYPE, "message": reason_text(hours)}
    resource["tags"] = [*resource.get("tags", []), CLOSED_TAG]
    return Outbound(CI_PIPELINE, row.unique_id, row.level, True, body, end, expiry_reason(start, end, now))


def listing(state: Mapping[str, Any], status_is_final: bool) -> dict[str, Any] | None:
    """What ListEvents shows of a closing: when, why, and whether the real final status came afterwards."""
    marker = state.get(STATE_KEY)
    if not isinstance(marker, Mapping):
        return None
    return {"closed_at": marker.get("at"), "reason": marker.get("reason"), "final_status_arrived": status_is_final}
