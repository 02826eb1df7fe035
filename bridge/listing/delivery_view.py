"""What ListEvents and UpdateBuildEvent show of an event's delivery: the truth about its newest translation.

An event's outbox rows come in translations, one per request that mapped to something: a build has a running
translation (a pipeline and its job) and later a final one. Once a final translation exists it alone is described,
so a finished build never shows the time its *running* rows were delivered; until then the newest running
translation is. Within a translation the least advanced row decides the state (a pipeline delivered while its job
is still retried is ``pending``).

States: ``none`` (the event sends nothing: pushes, pull requests, queued builds, failed deploys), ``pending`` (to
be sent; ``attempts`` failed so far, ``next_attempt_at``, ``reason`` the last failure), ``delivered`` (with
``delivered_at``; a running row superseded by its final event counts as delivered), ``expired`` (the intake would
refuse it as too old or inconsistent; ``reason`` says why) and ``dead`` (the intake refused it; ``reason`` holds its
answer; ``pipeline-bridge dead-letters redrive`` sends it again).

``last_attempt`` is the newest try of the described rows (:mod:`bridge.delivery.attempts`): when, the intake's status
(null when no connection was made) and the first characters of its answer; null before the first try.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.target import rfc3339
from bridge.delivery.attempts import Attempt, latest_attempts
from bridge.storage.models import OutboxItem
from bridge.storage.outbox import DEAD, DELIVERED, EXPIRED, PENDING, SUPERSEDED

NONE = "none"
# The order a translation's rows decide its state in: the least advanced row wins.
_RANK = {DEAD: 0, EXPIRED: 1, PENDING: 2, DELIVERED: 3}


@dataclasses.dataclass(frozen=True)
class DeliveryRow:
    """The columns of one outbox row the view reads."""

    id: int
    event_id: int
    final: bool
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    reason: str | None
    delivered_at: dt.datetime | None
    remote_id: str | None
    created_at: dt.datetime


NOTHING_SENT: dict[str, Any] = {
    "state": NONE,
    "reason": None,
    "delivered_at": None,
    "attempts": 0,
    "next_attempt_at": None,
    "last_attempt": None,
}
# How much of the intake's answer a listing repeats; the console's event page shows more.
ANSWER_CHARS = 200


def delivery_views(session: Session, event_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each event's delivery as a client sees it; events that send nothing are absent (see :data:`NOTHING_SENT`)."""
    if not event_ids:
        return {}
    statement = (
        select(
            OutboxItem.id,
            OutboxItem.event_id,
            OutboxItem.final,
            OutboxItem.state,
            OutboxItem.attempts,
            OutboxItem.next_attempt_at,
            OutboxItem.reason,
            OutboxItem.delivered_at,
            OutboxItem.remote_id,
            OutboxItem.created_at,
        )
        .where(OutboxItem.event_id.in_(event_ids))
        .order_by(OutboxItem.id)
    )
    by_event: dict[int, list[DeliveryRow]] = {}
    for row in session.execute(statement):
        by_event.setdefault(row.event_id, []).append(DeliveryRow(**row._mapping))
    shown = {event_id: newest_translation(rows) for event_id, rows in by_event.items()}
    tried = latest_attempts(session, [row.id for rows in shown.values() for row in rows])
    return {event_id: describe(rows, tried) for event_id, rows in shown.items()}


def newest_translation(rows: Sequence[DeliveryRow]) -> list[DeliveryRow]:
    """The rows of the translation to describe: the final one when there is one, else the newest running one.

    The rows one request enqueued share its receipt time (``created_at``), which is how a translation is told apart.
    """
    finals = [row for row in rows if row.final]
    chosen = finals or list(rows)
    newest = max(row.created_at for row in chosen)
    return [row for row in chosen if row.created_at == newest]


def describe(rows: Iterable[DeliveryRow], tried: Mapping[int, Attempt]) -> dict[str, Any]:
    """One translation's rows as the ``delivery`` object (JSON-ready); ``rows`` is never empty.

    ``tried`` holds the newest attempt by outbox id (:func:`bridge.delivery.attempts.latest_attempts`).
    """
    rows = list(rows)
    shown = min(rows, key=lambda row: _RANK[_shown_state(row)])
    state = _shown_state(shown)
    delivered = [row.delivered_at for row in rows if row.delivered_at is not None]
    view: dict[str, Any] = {
        "state": state,
        "reason": shown.reason if state != DELIVERED else None,
        "delivered_at": rfc3339(max(delivered)) if state == DELIVERED and delivered else None,
        "attempts": max(row.attempts for row in rows),
        "next_attempt_at": rfc3339(min(row.next_attempt_at for row in rows if row.state == PENDING))
        if state == PENDING
        else None,
    }
    view["last_attempt"] = _last_attempt([tried[row.id] for row in rows if row.id in tried])
    remote_id = next((row.remote_id for row in rows if row.remote_id), None)
    if remote_id:
        view["remote_id"] = remote_id
    return view


def _last_attempt(tries: Sequence[Attempt]) -> dict[str, Any] | None:
    if not tries:
        return None
    newest = max(tries, key=lambda attempt: attempt.attempted_at)
    return {
        "at": rfc3339(newest.attempted_at),
        "status": newest.status or None,
        "answer": newest.answer[:ANSWER_CHARS],
    }


def _shown_state(row: DeliveryRow) -> str:
    return DELIVERED if row.state == SUPERSEDED else row.state
