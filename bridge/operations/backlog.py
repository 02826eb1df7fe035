"""Warnings before Datadog's window closes: a backlog waiting too long, a pause lasting too long.

``/readyz`` stays 200 with ``status: degraded`` and the reasons (taking the bridge out of the router would lose the
events it still accepts); the worker logs one line per upkeep interval naming how many events will pass the
intake's 18-hour window within the next hour if nothing changes.
"""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapters.target import CI_PIPELINE, INTAKE_WINDOW
from bridge.config import Config
from bridge.delivery.delivery_gate import PAUSED
from bridge.storage.models import OutboxItem, SenderState
from bridge.storage.outbox import PENDING, oldest_pending_queued_at

log = structlog.get_logger(__name__)

EXPIRY_HORIZON = dt.timedelta(hours=1)


def warnings(session: Session, config: Config, now: dt.datetime | None = None) -> list[str]:
    """Why delivery is at risk, one sentence each; empty when all is well."""
    now = now or dt.datetime.now(dt.UTC)
    found: list[str] = []
    oldest = oldest_pending_queued_at(session)
    warn_after = dt.timedelta(hours=config.backlog_warn_hours)
    if oldest is not None and _aware(oldest) <= now - warn_after:
        hours = (now - _aware(oldest)) / dt.timedelta(hours=1)
        found.append(
            f"events have been waiting for delivery for {hours:.2f} hours (warning after {config.backlog_warn_hours:g})"
        )
    pause = session.get(SenderState, PAUSED)
    since = _parse(pause.value.get("since")) if pause is not None else None
    if pause is not None and (since is None or since <= now - dt.timedelta(minutes=config.pause_warn_minutes)):
        minutes = (now - since) / dt.timedelta(minutes=1) if since else float("nan")
        found.append(
            f"delivery has been paused for {minutes:.1f} minutes: the intake refused the API key"
            f" (status {pause.value.get('status')})"
        )
    return found


def expiring_soon(session: Session, now: dt.datetime | None = None, horizon: dt.timedelta = EXPIRY_HORIZON) -> int:
    """Pending pipeline rows whose end passes the intake's window within ``horizon``."""
    now = now or dt.datetime.now(dt.UTC)
    count = session.scalar(
        select(func.count()).where(
            OutboxItem.state == PENDING,
            OutboxItem.kind == CI_PIPELINE,
            OutboxItem.end_time.is_not(None),
            OutboxItem.end_time <= now + horizon - INTAKE_WINDOW,
        )
    )
    return int(count or 0)


def log_warnings(session: Session, config: Config, now: dt.datetime | None = None) -> list[str]:
    """The worker's periodic line: the warnings, and how many events expire within the hour if nothing changes."""
    found = warnings(session, config, now)
    soon = expiring_soon(session, now)
    if found or soon:
        log.warning("backlog.warning", expiring_within_hour=soon, reasons=found)
    return found


def _parse(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _aware(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _aware(moment: dt.datetime | str) -> dt.datetime:
    # An aggregate bypasses the column type on SQLite, so min() can come back as naive text.
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
