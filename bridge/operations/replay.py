"""Replay and backfill: map stored events again with today's mapping and queue what the intake still takes.

After a mapping fix, or an outage that expired events, ``pipeline-bridge replay`` (or the console) maps each
stored event from what was stored of it (a Distelli event's validated fields and lifecycle state, a webhook's
parsed record with the earlier records of its run) as if it arrived now, with the same ``unique_id`` (a uuid5 of
the event id), so Datadog updates the pipeline rather than adding one. Bodies whose end is outside the intake's
18-hour window are reported, never queued. An event that still has a body pending is left alone: it is on its way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from adapters import distelli
from adapters.registry import load_adapters
from adapters.target import Outbound
from bridge.config import Config
from bridge.ingest import distelli_ingest, hooks
from bridge.ingest.ingest import mapping_context
from bridge.storage import outbox
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store

BATCH_SIZE = 200


@dataclasses.dataclass(frozen=True)
class ReplayFilter:
    """Which stored events to replay: one app, optionally one user, and a range of their last change."""

    app_name: str
    username: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclasses.dataclass
class ReplayReport:
    """What a replay queued, or with ``dry_run`` would queue, and what it left out and why."""

    dry_run: bool
    events: int = 0
    queued_events: int = 0
    queued_bodies: int = 0
    nothing_to_send: int = 0
    still_pending: int = 0
    outside_window: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        verb = "would queue" if self.dry_run else "queued"
        return (
            f"{self.events} event(s) matched; {verb} {self.queued_bodies} body(ies) of {self.queued_events} event(s);"
            f" {len(self.outside_window)} outside the intake's window (not sent); {self.still_pending} still pending;"
            f" {self.nothing_to_send} send nothing"
        )


def replay(
    store: Store, config: Config, wanted: ReplayFilter, dry_run: bool = False, now: dt.datetime | None = None
) -> ReplayReport:
    """Replay every matching event, a batch per transaction, oldest first."""
    now = now or dt.datetime.now(dt.UTC)
    report = ReplayReport(dry_run=dry_run)
    adapters = load_adapters()
    after = 0
    while True:
        with store.transaction() as session:
            batch = list(session.scalars(_matching(wanted).where(Event.id > after).limit(BATCH_SIZE)))
            if not batch:
                return report
            for event in batch:
                _replay_one(session, config, event, adapters, now, dry_run, report)
            after = batch[-1].id


def _matching(wanted: ReplayFilter) -> Select[Event]:
    statement = select(Event).where(Event.app_name == wanted.app_name).order_by(Event.id)
    if wanted.username is not None:
        statement = statement.where(Event.username == wanted.username)
    if wanted.since is not None:
        statement = statement.where(Event.updated_at >= wanted.since)
    if wanted.until is not None:
        statement = statement.where(Event.updated_at < wanted.until)
    return statement


def _replay_one(
    session: Session,
    config: Config,
    event: Event,
    adapters: dict[str, Any],
    now: dt.datetime,
    dry_run: bool,
    report: ReplayReport,
) -> None:
    report.events += 1
    pending = session.scalar(
        select(OutboxItem.id).where(OutboxItem.event_id == event.id, OutboxItem.state == outbox.PENDING).limit(1)
    )
    if pending is not None:
        report.still_pending += 1
        return
    outbounds = _map(session, config, event, adapters, now)
    if not outbounds:
        report.nothing_to_send += 1
        return
    late = [outbound for outbound in outbounds if outbound.expired_reason]
    if late:
        report.outside_window.append(
            {"event_id": event.id, "unique_id": late[0].unique_id, "reason": late[0].expired_reason}
        )
    fresh = [outbound for outbound in outbounds if not outbound.expired_reason]
    if not fresh:
        return
    report.queued_events += 1
    report.queued_bodies += len(fresh)
    if not dry_run:  # queued for now by the clock, whatever moment the mapping was asked to assume
        outbox.enqueue(session, event.id, fresh, dt.datetime.now(dt.UTC))


def _map(session: Session, config: Config, event: Event, adapters: dict[str, Any], now: dt.datetime) -> list[Outbound]:
    """The event's bodies as today's mapping makes them, mapped as if it arrived now."""
    context = mapping_context(config, now)
    if event.source == distelli.SOURCE:
        identity = (event.id, event.username, event.app_name, event.event_type)
        related = distelli_ingest.related_events(session, event)
        return distelli.translate(
            distelli.DistelliRecord(*identity, event.fields, event.state, related=related), context
        )
    adapter = adapters.get(event.source)
    if adapter is None:
        return []
    earlier = session.scalars(
        select(Event)
        .where(Event.source == event.source, Event.run_key == event.run_key, Event.id < event.id)
        .order_by(Event.id)
    )
    mapped: list[Outbound] = adapter.map(hooks.to_record(event), [hooks.to_record(other) for other in earlier], context)
    return mapped
