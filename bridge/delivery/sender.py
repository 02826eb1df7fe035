"""The sender: claims due outbox rows, sends them in batches, and acts on what the intake answers.

The policy in one place: 2xx delivered; 413 split; 400 bisected until the refused event is alone, which goes to
dead letters; 401, 403, a redirect or an unknown endpoint pause delivery (the configuration is wrong: nothing is
dropped and no attempt is counted) with one probe batch now and then; anything else (408, 429, 5xx, no
connection) is retried with backoff, and holds every request to that endpoint until the retry is due.
Everything the schedule needs (attempts, next attempt, holds, the pause) is in the database, so a restart or a
second worker continues exactly where the first one stopped. The pause and the holds are kept by
:mod:`bridge.delivery.delivery_gate`; every request is written to :mod:`bridge.delivery.attempts` for the audit trail.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import random
import threading
import time
import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy.orm import Session

from bridge.delivery import attempts
from bridge.delivery.delivery_gate import DeliveryGate
from bridge.delivery.intake import BATCH_LIMITS, MAX_BATCH_BYTES, Intake, IntakeReply
from bridge.operations import metrics
from bridge.storage import outbox
from bridge.storage.store import Store

log = structlog.get_logger(__name__)


class Action(enum.Enum):
    """What an intake status means for the batch that got it."""

    DELIVERED = "delivered"
    SPLIT = "split"
    BISECT = "bisect"
    PAUSE = "pause"
    RETRY = "retry"


STATUS_ACTIONS = {413: Action.SPLIT, 400: Action.BISECT, 422: Action.BISECT, 401: Action.PAUSE, 403: Action.PAUSE}
STATUS_ACTIONS |= {status: Action.PAUSE for status in (301, 302, 303, 307, 308, 404, 405)}


def action_for(status: int) -> Action:
    """The policy for one status; unknown statuses retry, since retrying can lose nothing."""
    if 200 <= status < 300:
        return Action.DELIVERED
    return STATUS_ACTIONS.get(status, Action.RETRY)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: about ``first`` seconds, doubling up to ``ceiling``, never under a hint."""

    first: float = 2.0
    ceiling: float = 60.0
    jitter: float = 0.25

    def delay(self, attempts: int, hint: float | None = None) -> float:
        base = min(self.ceiling, self.first * 2 ** max(0, attempts - 1))
        spread = base * self.jitter
        return max(base + random.uniform(-spread, spread), hint or 0.0)


@dataclasses.dataclass(frozen=True)
class SenderSettings:
    """How much one pass claims, how long a claim holds, and how often a paused sender tries again."""

    batch_size: int = 1000
    max_batch_bytes: int = MAX_BATCH_BYTES
    lease: dt.timedelta = dt.timedelta(seconds=60)
    retry: RetryPolicy = RetryPolicy()
    probe_every: dt.timedelta = dt.timedelta(seconds=30)
    log_paused_every: dt.timedelta = dt.timedelta(minutes=5)


@dataclasses.dataclass
class PassResult:
    """What one delivery pass did, for logs, metrics and tests."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    superseded: int = 0
    released: int = 0
    requests: int = 0
    paused: bool = False


class _Stop(Exception):
    """Ends a pass early (paused, held, or stopping); the rows not yet sent are released."""


class Sender:
    """One worker's delivery loop body; :meth:`run_once` is a single claim-send-record pass."""

    def __init__(self, store: Store, intake: Intake, settings: SenderSettings | None = None) -> None:
        self.store = store
        self.intake = intake
        self.settings = settings or SenderSettings()
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"
        self.stopping = threading.Event()
        self._open: set[int] = set()
        self._lease_until = _now()
        self._lock = threading.Lock()
        self.gate = DeliveryGate(store, self.settings.probe_every, self.settings.log_paused_every)
        self._held: set[str] = set()

    def run_once(self, now: dt.datetime | None = None) -> PassResult:
        now = now or _now()
        result = PassResult()
        self._lease_until = now + self.settings.lease
        with self.store.transaction() as session:
            opening = self.gate.open(session, BATCH_LIMITS, now)
            kinds, result.paused, probing = opening.kinds, opening.paused, opening.probing
            self._held = set(opening.held)
            if not kinds:
                return result
            claim = outbox.claim(
                session,
                self.worker_id,
                now,
                self._lease_until,
                self.settings.batch_size,
                kinds,
                skip_locked=not self.store.is_sqlite,
            )
        result.claimed = claim.size
        self._count_settled(claim, result)
        with self._lock:
            self._open = {row.id for row in claim.to_send}
        try:
            for kind in kinds:
                for batch in self._batches(kind, [row for row in claim.to_send if row.kind == kind]):
                    self._deliver(kind, batch, result, probing)
                    probing = probing and result.paused
        except _Stop:
            pass
        finally:
            result.released = self.release_open()
        return result

    def release_open(self) -> int:
        """Give back every claimed row not yet settled; safe to call from another thread (shutdown watchdog)."""
        with self._lock:
            ids, self._open = sorted(self._open), set()
        if not ids:
            return 0
        with self.store.transaction() as session:
            return outbox.release(session, ids, self.worker_id)

    def _batches(self, kind: str, rows: Sequence[outbox.LeasedRow]) -> list[list[outbox.LeasedRow]]:
        """Rows packed in order into batches under the intake's count limit and our byte limit."""
        limit = min(BATCH_LIMITS[kind], self.settings.batch_size)
        batches: list[list[outbox.LeasedRow]] = []
        size = 0
        for row in rows:
            if not batches or len(batches[-1]) >= limit or size + len(row.event) + 1 > self.settings.max_batch_bytes:
                batches.append([])
                size = 16  # the {"data":[...]} envelope
            batches[-1].append(row)
            size += len(row.event) + 1
        return batches

    def _deliver(self, kind: str, batch: list[outbox.LeasedRow], result: PassResult, probing: bool) -> None:
        if self.stopping.is_set():
            raise _Stop
        self._renew_lease()
        started = time.monotonic()
        sent_at = _now()
        reply = self.intake.send(kind, [row.event for row in batch])
        metrics.observe_intake(kind, time.monotonic() - started)
        result.requests += 1
        action = action_for(reply.status)
        ids = [row.id for row in batch]
        if action is Action.DELIVERED:
            remote_id = reply.remote_ids[0] if len(batch) == 1 and reply.remote_ids else None
            done = self._settle(kind, ids, reply, sent_at, outbox.DELIVERED, None, remote_id)
            result.delivered += done
            log.info("delivery.sent", kind=kind, count=done, status=reply.status, worker_id=self.worker_id)
            if kind in self._held:
                self.gate.end_hold(kind, _now())
                self._held.discard(kind)
            if probing:
                self.gate.resume(_now())
                log.info("delivery.resumed", worker_id=self.worker_id)
                result.paused = False
        elif action in (Action.SPLIT, Action.BISECT) and len(batch) > 1:
            self._record(ids, reply, sent_at)
            middle = len(batch) // 2
            for half in (batch[:middle], batch[middle:]):
                self._deliver(kind, half, result, probing and result.paused)
        elif action in (Action.SPLIT, Action.BISECT):
            reason = f"the intake refused it: {reply.error or reply.status}"
            result.dead += self._settle(kind, ids, reply, sent_at, outbox.DEAD, reason)
            log.warning("delivery.dead_letter", kind=kind, outbox_id=ids[0], status=reply.status, reason=reason)
        elif action is Action.PAUSE:
            self._record(ids, reply, sent_at)
            self.gate.pause(reply.status, reply.error or f"the intake answered {reply.status}", _now())
            result.paused = True
            raise _Stop
        else:
            self._retry(kind, batch, reply, sent_at, result)
            raise _Stop

    def _record(self, ids: list[int], reply: IntakeReply, sent_at: dt.datetime, session: Session | None = None) -> None:
        """Write this request's attempt for each row it carried, in ``session`` or a transaction of its own."""
        if session is None:
            with self.store.transaction() as own:
                attempts.record(own, ids, sent_at, reply.endpoint, reply.status, reply.answer)
            return
        attempts.record(session, ids, sent_at, reply.endpoint, reply.status, reply.answer)

    def _settle(
        self,
        kind: str,
        ids: list[int],
        reply: IntakeReply,
        sent_at: dt.datetime,
        state: str,
        reason: str | None,
        remote_id: str | None = None,
    ) -> int:
        with self.store.transaction() as session:
            self._record(ids, reply, sent_at, session)
            done = outbox.finish(session, ids, self.worker_id, state, _now(), reason, remote_id)
        with self._lock:
            self._open.difference_update(ids)
        metrics.count_finished(kind, state, done)
        return done

    def _retry(
        self, kind: str, batch: list[outbox.LeasedRow], reply: IntakeReply, sent_at: dt.datetime, result: PassResult
    ) -> None:
        """Count the attempt, schedule the next one, and hold the endpoint until then (other workers too)."""
        now = _now()
        why = reply.error or f"{reply.status}"
        ids = [row.id for row in batch]
        with self.store.transaction() as session:
            # The backoff follows the endpoint's failures in a row, not only this batch's attempts: during an
            # outage, fresh rows (a final event replacing a retried running one) must not reset it to 2 s.
            failures = self.gate.failures_in_a_row(session, kind) + 1
            tries = max(failures, max(row.attempts for row in batch) + 1)
            delay = self.settings.retry.delay(tries, reply.retry_after)
            next_attempt = now + dt.timedelta(seconds=delay)
            self._record(ids, reply, sent_at, session)
            retried, expired = outbox.reschedule(session, ids, self.worker_id, next_attempt, why)
            self.gate.hold(session, kind, next_attempt, reply.status, failures, now)
        with self._lock:
            self._open.difference_update(ids)
        result.retried += retried
        result.expired += expired
        metrics.count_retry(kind, reply.status, retried)
        metrics.count_finished(kind, outbox.EXPIRED, expired)
        log.warning(
            "delivery.retry", kind=kind, status=reply.status, count=retried, expired=expired, delay=round(delay, 3)
        )

    def _renew_lease(self) -> None:
        """Extend the lease when half of it is gone, so a long pass (many splits) is not taken over."""
        now = _now()
        if now < self._lease_until - self.settings.lease / 2:
            return
        with self._lock:
            ids = sorted(self._open)
        self._lease_until = now + self.settings.lease
        with self.store.transaction() as session:
            outbox.renew(session, ids, self.worker_id, self._lease_until)

    def _count_settled(self, claim: outbox.ClaimOutcome, result: PassResult) -> None:
        for state, rows in ((outbox.EXPIRED, claim.expired), (outbox.SUPERSEDED, claim.superseded)):
            for kind, count in collections.Counter(row.kind for row in rows).items():
                metrics.count_finished(kind, state, count)
        result.expired += len(claim.expired)
        result.superseded += len(claim.superseded)
        if claim.expired:
            log.warning("delivery.expired", count=len(claim.expired), ids=[row.id for row in claim.expired][:20])


def redrive(store: Store, outbox_ids: Sequence[int] | None = None) -> int:
    """Put dead letters back in the queue (all, or the given ids); returns how many."""
    with store.transaction() as session:
        return outbox.redrive(session, _now(), outbox_ids)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
