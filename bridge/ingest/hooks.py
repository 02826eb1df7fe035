"""Storing webhooks from any source adapter: the event, its history and its outbox rows in one transaction.

Nothing here knows a source. The route hands in an adapter and the record it parsed; this module turns the record
into an :class:`~bridge.storage.models.Event`, gives the adapter the earlier records of the same run, and has
:func:`bridge.ingest.ingest.ingest` store it and enqueue what the adapter maps, the one path Distelli events take too. A
delivery id seen before is answered with the original event and nothing new is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.base import MappingContext, Outbound, SourceRecord, WebhookAdapter
from bridge.config import Config
from bridge.ingest.ingest import InvalidRecord, ingest
from bridge.ingest.runlock import lock_run
from bridge.storage.models import Event, event_column_length

# The longest value each indexed column holds; a record over them is refused rather than failing on PostgreSQL.
COLUMN_LIMITS = {
    name: event_column_length(name)
    for name in ("event_type", "run_key", "app_name", "delivery_id", "status", "branch", "commit_id")
}


@dataclasses.dataclass(frozen=True)
class Accepted:
    """What a webhook became: its event id, whether it was a repeat, and how many bodies it queued."""

    event_id: int
    duplicate: bool
    enqueued: int


def check_columns(record: SourceRecord) -> None:
    """Refuse (:class:`~bridge.ingest.ingest.InvalidRecord`) a record whose values do not fit the events table."""
    too_long = {
        name: [f"Longer than {limit} characters."]
        for name, limit in COLUMN_LIMITS.items()
        if len(str(getattr(record, name) or "")) > limit
    }
    if too_long:
        raise InvalidRecord("Some values are too long to store.", fields=too_long)


def find_delivery(session: Session, source: str, delivery_id: str | None) -> Event | None:
    if not delivery_id:
        return None
    return session.scalars(select(Event).where(Event.source == source, Event.delivery_id == delivery_id)).first()


def history(session: Session, source: str, run_key: str) -> list[SourceRecord]:
    """Earlier records of the same run, oldest first, as the adapter parsed them."""
    events = session.scalars(
        select(Event).where(Event.source == source, Event.run_key == run_key).order_by(Event.id)
    ).all()
    return [to_record(event) for event in events]


def to_record(event: Event) -> SourceRecord:
    return SourceRecord(
        event_type=event.event_type,
        run_key=event.run_key or "",
        app_name=event.app_name,
        fields=event.fields,
        delivery_id=event.delivery_id,
        status=event.status,
        branch=event.branch,
        commit_id=event.commit_id,
        received_at=event.event_time,
    )


def receive(
    session: Session,
    config: Config,
    adapter: WebhookAdapter,
    record: SourceRecord,
    raw_body: str,
    received_at: dt.datetime,
) -> Accepted:
    """Store one parsed webhook and its translation; a repeated delivery id stores nothing."""
    check_columns(record)
    lock_run(session, adapter.name, record.run_key)
    original = find_delivery(session, adapter.name, record.delivery_id)
    if original is not None:
        return Accepted(original.id, duplicate=True, enqueued=0)
    record = dataclasses.replace(record, received_at=received_at)
    earlier = history(session, adapter.name, record.run_key)
    event = Event(
        source=adapter.name,
        username=adapter.name,
        app_name=record.app_name,
        event_type=record.event_type,
        status=record.status,
        branch=record.branch,
        commit_id=record.commit_id,
        run_key=record.run_key,
        delivery_id=record.delivery_id or None,  # an empty id is no id: the unique index must not see ""
        fields=record.fields,
        state={},
        raw_body=raw_body,
        event_time=received_at,
        updated_at=received_at,
    )

    def translate(_event: Event, context: MappingContext) -> list[Outbound]:
        return adapter.map(record, earlier, context)

    enqueued = ingest(session, config, event, translate, received_at)
    return Accepted(event.id, duplicate=False, enqueued=enqueued)


def stored_text(body: bytes) -> str:
    """The raw body as the events table keeps it; bytes that are not UTF-8 are replaced, never refused here."""
    return body.decode("utf-8", errors="replace")


def summary(accepted: Accepted) -> Mapping[str, Any]:
    """The JSON a source receives: enough to find the event again, nothing it did not send."""
    return {"event_id": str(accepted.event_id), "duplicate": accepted.duplicate, "enqueued": accepted.enqueued}
