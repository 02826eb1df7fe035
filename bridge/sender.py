"""The sender: claims due outbox rows, sends them in batches, and records what the intake said.

Rows are claimed with a lease (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) so several workers share the work
and a worker that dies has its rows taken over when the lease expires. Nothing is sent while an older row of the
same ``unique_id`` is still pending, so a final event never overtakes its running event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, aliased

from adapters.base import INTAKE_WINDOW
from bridge.intake import BATCH_LIMITS, Intake, IntakeReply
from bridge.models import OutboxItem
from bridge.outbox import DEAD, DELIVERED, EXPIRED, PENDING, SUPERSEDED
from bridge.store import Store

log = structlog.get_logger(__name__)

RETRYABLE = frozenset({0, 408, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: about ``first`` seconds, doubling up to ``ceiling``."""

    first: float = 2.0
    ceiling: float = 60.0
    jitter: float = 0.25

    def delay(self, attempts: int, hint: float | None = None) -> float:
        base = min(self.ceiling, self.first * 2 ** max(0, attempts - 1))
        spread = base * self.jitter
        delay = base + random.uniform(-spread, spread)
        return max(delay, hint or 0.0)


@dataclasses.dataclass(frozen=True)
class SenderSettings:
    """How much one pass claims and how long a claim holds."""

    batch_size: int = 1000
    lease: dt.timedelta = dt.timedelta(seconds=60)
    retry: RetryPolicy = RetryPolicy()


@dataclasses.dataclass
class PassResult:
    """What one delivery pass did, for logs, metrics and tests."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    superseded: int = 0


class Sender:
    """One worker's delivery loop body; :meth:`run_once` is a single claim-send-record pass."""

    def __init__(self, store: Store, intake: Intake, settings: SenderSettings | None = None) -> None:
        self.store = store
        self.intake = intake
        self.settings = settings or SenderSettings()
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"

    def run_once(self, now: dt.datetime | None = None) -> PassResult:
        now = now or dt.datetime.now(dt.UTC)
        result = PassResult()
        claimed = self._claim(now)
        result.claimed = len(claimed)
        if not claimed:
            return result
        to_send = self._drop_superseded(claimed, result)
        by_kind: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in to_send:
            by_kind[item.kind].append(item)
        for kind, items in by_kind.items():
            limit = BATCH_LIMITS[kind]
            for start in range(0, len(items), limit):
                self._send(kind, items[start : start + limit], result)
        return result

    def _claim(self, now: dt.datetime) -> list[OutboxItem]:
        older = aliased(OutboxItem)
        blocked_by_older = (
            select(older.id)
            .where(older.unique_id == OutboxItem.unique_id, older.id < OutboxItem.id, older.state == PENDING)
            .exists()
        )
        due = (
            select(OutboxItem)
            .where(
                OutboxItem.state == PENDING,
                OutboxItem.next_attempt_at <= now,
                or_(OutboxItem.lease_until.is_(None), OutboxItem.lease_until < now),
                ~blocked_by_older,
            )
            .order_by(OutboxItem.id)
            .limit(self.settings.batch_size)
        )
        with self.store.transaction() as session:
            if not self.store.is_sqlite:
                due = due.with_for_update(skip_locked=True, of=OutboxItem)
            items = list(session.scalars(due))
            lease_until = now + self.settings.lease
            for item in items:
                item.lease_owner = self.worker_id
                item.lease_until = lease_until
            return items

    def _drop_superseded(self, items: Sequence[OutboxItem], result: PassResult) -> list[OutboxItem]:
        """A running event whose final event is in the same claim need not be sent."""
        finals = {(item.unique_id, item.level) for item in items if item.final}
        superseded = [item for item in items if not item.final and (item.unique_id, item.level) in finals]
        if superseded:
            self._finish(superseded, SUPERSEDED, None)
            result.superseded += len(superseded)
        return [item for item in items if item not in superseded]

    def _send(self, kind: str, items: list[OutboxItem], result: PassResult) -> None:
        reply = self.intake.send(kind, [item.body for item in items])
        if reply.accepted:
            self._finish(items, DELIVERED, None, remote_ids=reply.remote_ids)
            result.delivered += len(items)
            log.info("delivery.sent", kind=kind, count=len(items), status=reply.status)
            return
        if reply.status == 413 and len(items) > 1:
            middle = len(items) // 2
            self._send(kind, items[:middle], result)
            self._send(kind, items[middle:], result)
            return
        if reply.status == 400:
            if len(items) > 1:
                middle = len(items) // 2
                self._send(kind, items[:middle], result)
                self._send(kind, items[middle:], result)
                return
            self._finish(items, DEAD, f"intake refused it (400): {reply.error}")
            result.dead += 1
            log.warning("delivery.dead_letter", kind=kind, outbox_id=items[0].id, reason=reply.error)
            return
        self._retry(items, reply, result)

    def _retry(self, items: list[OutboxItem], reply: IntakeReply, result: PassResult) -> None:
        now = dt.datetime.now(dt.UTC)
        paused = reply.status in (401, 403)
        with self.store.transaction() as session:
            for item in self._reload(session, items):
                attempts = item.attempts + (0 if paused else 1)
                delay = self.settings.retry.delay(attempts or 1, reply.retry_after)
                next_attempt = now + dt.timedelta(seconds=delay)
                if item.end_time is not None and next_attempt > item.end_time + INTAKE_WINDOW:
                    item.state, item.reason = (
                        EXPIRED,
                        "the intake's 18-hour window passed before it could be delivered",
                    )
                    result.expired += 1
                else:
                    result.retried += 1
                item.attempts = attempts
                item.next_attempt_at = next_attempt
                item.lease_owner = item.lease_until = None
                if item.state == PENDING:
                    item.reason = f"last attempt: {reply.status or 'no connection'} {reply.error or ''}".strip()
        log.warning("delivery.retry", status=reply.status, count=len(items), paused=paused)

    def _finish(
        self, items: Sequence[OutboxItem], state: str, reason: str | None, remote_ids: Sequence[str] = ()
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        with self.store.transaction() as session:
            for index, item in enumerate(self._reload(session, items)):
                item.state = state
                item.reason = reason
                item.lease_owner = item.lease_until = None
                if state in (DELIVERED, SUPERSEDED):
                    item.delivered_at = now
                if index < len(remote_ids):
                    item.remote_id = remote_ids[index]

    def _reload(self, session: Session, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Our claimed rows, still leased to us: a row whose lease passed to another worker is left alone."""
        ids = [item.id for item in items]
        return list(
            session.scalars(
                select(OutboxItem)
                .where(OutboxItem.id.in_(ids), OutboxItem.lease_owner == self.worker_id)
                .order_by(OutboxItem.id)
            )
        )


def redrive(store: Store, outbox_ids: Sequence[int] | None = None) -> int:
    """Put dead letters back in the queue (all, or the given ids); returns how many."""
    with store.transaction() as session:
        statement = update(OutboxItem).where(OutboxItem.state == DEAD)
        if outbox_ids:
            statement = statement.where(OutboxItem.id.in_(outbox_ids))
        now = dt.datetime.now(dt.UTC)
        result = session.execute(
            statement.values(state=PENDING, attempts=0, next_attempt_at=now, reason=None).execution_options(
                synchronize_session=False
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
