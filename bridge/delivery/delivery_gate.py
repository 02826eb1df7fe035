"""The gate in front of delivery: the pause (the intake refused the key) and the per-endpoint holds (backoff).

Both live in the ``sender_state`` table so every worker process sees the same gate: a pause stored by one
worker stops all of them, and a hold set after a 429 or 5xx keeps every worker off that endpoint until it lifts.
The :class:`~bridge.delivery.sender.Sender` asks the gate what it may send each pass and tells it what the intake
answered; the console and ``/metrics`` read it through :func:`current`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.storage.models import SenderState
from bridge.storage.store import Store

log = structlog.get_logger(__name__)

# sender_state names: delivery paused (the key was refused), and a per-kind hold (rate limit or intake down).
PAUSED = "delivery_paused"
HOLD = "delivery_hold:"


@dataclasses.dataclass(frozen=True)
class Pause:
    """Delivery is paused: the intake's status and words, since when, and when the next probe batch may go."""

    status: int
    reason: str
    since: dt.datetime
    probe_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Hold:
    """One endpoint (an outbox kind) is held after a retryable failure until ``until``."""

    kind: str
    until: dt.datetime
    status: int
    failures: int


@dataclasses.dataclass(frozen=True)
class Opening:
    """What one pass may do: the kinds it may send, whether delivery is paused, and whether it is the probe."""

    kinds: list[str]
    paused: bool
    probing: bool
    held: frozenset[str]


def read_state(session: Session, lock: bool = False) -> dict[str, dict[str, Any]]:
    """Every shared sender value by name; ``lock`` holds the rows (PostgreSQL) until the transaction ends."""
    statement = select(SenderState)
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return {row.name: dict(row.value) for row in session.scalars(statement)}


def write_state(session: Session, name: str, value: dict[str, Any] | None, now: dt.datetime) -> None:
    """Set (or, with None, remove) a shared sender value; an upsert, so two workers never collide."""
    if value is None:
        session.execute(delete(SenderState).where(SenderState.name == name))
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(SenderState).values(name=name, value=value, updated_at=now)
    session.execute(
        statement.on_conflict_do_update(index_elements=[SenderState.name], set_={"value": value, "updated_at": now})
    )


def current(session: Session) -> tuple[Pause | None, list[Hold]]:
    """The pause (or None) and the holds as stored now, for pages and health checks; reads, never writes."""
    return _parse(read_state(session))


def _parse(state: dict[str, dict[str, Any]]) -> tuple[Pause | None, list[Hold]]:
    raw = state.get(PAUSED)
    pause = None
    if raw is not None:
        pause = Pause(
            int(raw.get("status", 0)), str(raw.get("reason", "")), _time(raw["since"]), _time(raw["probe_at"])
        )
    holds = [
        Hold(name.removeprefix(HOLD), _time(value["until"]), int(value.get("status", 0)), int(value.get("failures", 0)))
        for name, value in sorted(state.items())
        if name.startswith(HOLD)
    ]
    return pause, holds


class DeliveryGate:
    """Opens a pass for the kinds not held, closes delivery on a refused key, and lets one probe through now and
    then so delivery resumes by itself once the key works."""

    def __init__(self, store: Store, probe_every: dt.timedelta, log_paused_every: dt.timedelta) -> None:
        self.store = store
        self.probe_every = probe_every
        self.log_paused_every = log_paused_every

    def open(self, session: Session, kinds: Iterable[str], now: dt.datetime) -> Opening:
        """The kinds this pass may send (none while paused, unless it wins the probe), in ``session``."""
        state = read_state(session)
        pause, holds = _parse(state)
        held = frozenset(hold.kind for hold in holds)
        lifted = {hold.kind for hold in holds if hold.until <= now}
        allowed = [kind for kind in kinds if kind not in held or kind in lifted]
        if pause is None:
            return Opening(allowed, False, False, held)
        if pause.probe_at > now or not allowed:
            return Opening([], True, False, held)
        # Several workers may get here at once on PostgreSQL; each sends at most one probe batch per interval.
        value = dict(state[PAUSED], probe_at=(now + self.probe_every).isoformat())
        write_state(session, PAUSED, value, now)
        return Opening(allowed, True, True, held)

    def failures_in_a_row(self, session: Session, kind: str) -> int:
        """How many failures this endpoint had in a row before this one, its hold row locked until commit."""
        earlier = read_state(session, lock=True).get(HOLD + kind) or {}
        return int(earlier.get("failures", 0))

    def hold(
        self, session: Session, kind: str, until: dt.datetime, status: int, failures: int, now: dt.datetime
    ) -> None:
        """Keep every worker off ``kind``'s endpoint until ``until``, in the caller's transaction."""
        write_state(session, HOLD + kind, {"until": until.isoformat(), "status": status, "failures": failures}, now)

    def end_hold(self, kind: str, now: dt.datetime) -> None:
        """The endpoint answered again: the next failure starts the backoff afresh."""
        with self.store.transaction() as session:
            write_state(session, HOLD + kind, None, now)

    def pause(self, status: int, reason: str, now: dt.datetime) -> None:
        """Store the pause for every process to see; log it at most once per interval, however many probes."""
        with self.store.transaction() as session:
            earlier = read_state(session, lock=True).get(PAUSED) or {}
            logged_at = earlier.get("logged_at")
            due_log = logged_at is None or _time(logged_at) + self.log_paused_every <= now
            value: dict[str, Any] = {
                "status": status,
                "reason": reason,
                "since": earlier.get("since", now.isoformat()),
                "probe_at": (now + self.probe_every).isoformat(),
                "logged_at": now.isoformat() if due_log else logged_at,
            }
            write_state(session, PAUSED, value, now)
        if due_log:
            log.error("delivery.paused", status=status, reason=reason, since=value["since"])

    def resume(self, now: dt.datetime) -> None:
        with self.store.transaction() as session:
            write_state(session, PAUSED, None, now)


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)
