"""The durable outbox: intake bodies written in the same transaction as the event they came from.

Because an accepted event and its translation commit together, a crash can lose neither; the sender reads
this table at its own pace. States: ``pending`` (to send, at ``next_attempt_at``), ``delivered``, ``superseded``
(a running event whose final event was sent in its place), ``expired`` (the intake would refuse it as too old)
and ``dead`` (the intake refused it as invalid; kept for redrive).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.base import Outbound
from bridge.models import OutboxItem

PENDING, DELIVERED, SUPERSEDED, EXPIRED, DEAD = "pending", "delivered", "superseded", "expired", "dead"
STATES = (PENDING, DELIVERED, SUPERSEDED, EXPIRED, DEAD)


def enqueue(session: Session, event_id: int, outbounds: Iterable[Outbound], now: dt.datetime) -> list[OutboxItem]:
    """Add the mapped bodies of one event; those the mapping found too old are stored as expired, not sent."""
    items = [
        OutboxItem(
            event_id=event_id,
            kind=outbound.kind,
            unique_id=outbound.unique_id,
            level=outbound.level,
            final=outbound.final,
            body=outbound.body,
            end_time=outbound.end,
            state=EXPIRED if outbound.expired_reason else PENDING,
            reason=outbound.expired_reason,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for outbound in outbounds
    ]
    session.add_all(items)
    return items


def delivery_summary(session: Session, event_ids: list[int]) -> dict[int, dict[str, object]]:
    """The delivery state of each event as a client should see it: the least advanced of its outbox rows."""
    if not event_ids:
        return {}
    rows = session.execute(
        select(OutboxItem.event_id, OutboxItem.state, OutboxItem.reason, OutboxItem.delivered_at)
        .where(OutboxItem.event_id.in_(event_ids))
        .order_by(OutboxItem.id)
    ).all()
    rank = {DEAD: 0, EXPIRED: 1, PENDING: 2, SUPERSEDED: 3, DELIVERED: 4}
    summary: dict[int, dict[str, object]] = {}
    for event_id, state, reason, delivered_at in rows:
        shown = SUPERSEDED if state == SUPERSEDED else state
        current = summary.get(event_id)
        if current is None or rank[shown] < rank[str(current["state"])]:
            summary[event_id] = {
                "state": DELIVERED if shown == SUPERSEDED else shown,
                "reason": reason,
                "delivered_at": delivered_at,
            }
    return summary


def counts_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()
    return {state: count for state, count in rows}
