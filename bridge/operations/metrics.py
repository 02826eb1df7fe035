"""Prometheus metrics: the counters the web and worker processes update, and the names operators graph.

Callers use the small functions below rather than the metric objects, so the metric names and labels live in
one place. Counters and histograms are per process and, under gunicorn, shared through prometheus_client's
multi-process directory (``bridge.operations.multiproc``); what is true of the database as a whole (outbox depth, age of
the oldest pending row, dead letters, the paused flag) is read at scrape time by :class:`OutboxCollector`, so
every process reports the same figure.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.delivery import delivery_gate
from bridge.storage.models import SenderState
from bridge.storage.store import Store

if TYPE_CHECKING:
    from flask import Flask, Response

log = structlog.get_logger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("bridge_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
REQUEST_LATENCY = Histogram(
    "bridge_http_request_seconds", "Time to answer one HTTP request", ["route", "method"], buckets=LATENCY_BUCKETS
)
ACCEPTED = Counter("bridge_events_accepted_total", "Events accepted and stored", ["source", "event_type"])
DELIVERIES = Counter("bridge_deliveries_total", "Outbox rows finished, by result", ["kind", "result"])
RETRIES = Counter("bridge_delivery_retries_total", "Outbox rows scheduled for another attempt", ["kind", "status"])
EXPIRED = Counter(
    "bridge_outbox_expired_total",
    "Intake bodies stored expired instead of sent: waited (the window passed while queued) or arrived_too_old",
    ["cause"],
)
INTAKE_LATENCY = Histogram(
    "bridge_intake_request_seconds", "Time the intake took to answer one batch", ["kind"], buckets=LATENCY_BUCKETS
)


# Each metric's children by label values: ``labels()`` checks and builds them under a lock on every call, which the
# accept path paid three times a request; the label sets are small and fixed (routes, methods, statuses, sources).
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def count_accepted(source: str, event_type: str) -> None:
    _child(ACCEPTED, source, event_type).inc()


def count_finished(kind: str, result: str, count: int = 1) -> None:
    """``result`` is one of delivered, superseded, dead, expired."""
    DELIVERIES.labels(kind=kind, result=result).inc(count)


def count_expired(cause: str, count: int = 1) -> None:
    """``cause`` is ``waited`` (delivery took longer than the intake's window) or ``arrived_too_old``."""
    if count:
        EXPIRED.labels(cause=cause).inc(count)


def count_retry(kind: str, status: int, count: int = 1) -> None:
    RETRIES.labels(kind=kind, status=str(status)).inc(count)


def observe_intake(kind: str, seconds: float) -> None:
    INTAKE_LATENCY.labels(kind=kind).observe(seconds)


def delivery_paused(session: Session) -> dict[str, Any]:
    """The sender's paused flag as health checks show it: ``{"paused": bool, "status"?, "reason"?, "since"?}``.

    The sender keeps the ``delivery_gate.PAUSED`` row while the intake refuses the API key and deletes it on resume.
    """
    pause = session.get(SenderState, delivery_gate.PAUSED)
    if pause is None:
        return {"paused": False}
    return {"paused": True, **{key: pause.value.get(key) for key in ("status", "reason", "since")}}


class OutboxCollector:
    """Reads the outbox at scrape time: rows by state, depth, age of the oldest pending row, paused flag."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        from bridge.storage import outbox  # here: outbox counts expirations through this module
        from bridge.storage.outbox import PENDING, STATES

        try:
            with self.store.read() as session:
                counts = outbox.counts_by_state(session)
                oldest = outbox.oldest_pending_queued_at(session)
                paused = delivery_paused(session)["paused"]
        except SQLAlchemyError as exc:
            log.warning("metrics.outbox_unreadable", error_type=type(exc).__name__)
            yield GaugeMetricFamily("bridge_outbox_up", "1 when the outbox could be read for this scrape", 0)
            return
        yield GaugeMetricFamily("bridge_outbox_up", "1 when the outbox could be read for this scrape", 1)
        by_state = GaugeMetricFamily("bridge_outbox_rows", "Outbox rows by state", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        yield GaugeMetricFamily("bridge_outbox_depth", "Outbox rows waiting for delivery", counts.get(PENDING, 0))
        yield GaugeMetricFamily(
            "bridge_dead_letters", "Outbox rows the intake refused as invalid", counts.get("dead", 0)
        )
        age = (dt.datetime.now(dt.UTC) - _aware(oldest)).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "bridge_outbox_oldest_pending_age_seconds", "Age of the oldest row waiting for delivery", max(age, 0.0)
        )
        yield GaugeMetricFamily(
            "bridge_delivery_paused", "1 while delivery is paused because the intake refused the API key", int(paused)
        )


def _aware(moment: dt.datetime) -> dt.datetime:
    # An aggregate bypasses the column type on SQLite, so min() can come back as a naive UTC value.
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class _ProcessRegistry:
    """This process's own metrics, for a scrape without a multi-process directory (tests, a single process)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def render(store: Store, metrics_dir: str | None) -> bytes:
    """The Prometheus text exposition of every process's metrics plus the outbox read now."""
    registry = CollectorRegistry()
    if metrics_dir:
        MultiProcessCollector(registry, metrics_dir)
    else:
        registry.register(_ProcessRegistry())
    registry.register(OutboxCollector(store))
    return generate_latest(registry)


def init_app(app: Flask) -> None:
    """Count and time every request by its route pattern (not its path, which would explode the label set)."""
    from flask import g, request  # here, not at the top: the delivery worker counts deliveries without Flask

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule, method = request.url_rule, request.method  # each read of the proxy finds the request again
        route = rule.rule if rule is not None else "unmatched"
        method = method if method in METHODS else "other"
        _child(REQUESTS, route, method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            _child(REQUEST_LATENCY, route, method).observe(time.perf_counter() - started)
        return response
