"""Prometheus metrics: the counters the web and worker processes update, and the names operators graph.

Callers use the small functions below rather than the metric objects, so the metric names and labels live in
one place.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ACCEPTED = Counter("bridge_events_accepted_total", "Events accepted and stored", ["source", "event_type"])
DELIVERIES = Counter("bridge_deliveries_total", "Outbox rows finished, by result", ["kind", "result"])
RETRIES = Counter("bridge_delivery_retries_total", "Outbox rows scheduled for another attempt", ["kind", "status"])
INTAKE_LATENCY = Histogram(
    "bridge_intake_request_seconds",
    "Time the intake took to answer one batch",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def count_accepted(source: str, event_type: str) -> None:
    ACCEPTED.labels(source=source, event_type=event_type).inc()


def count_finished(kind: str, result: str, count: int = 1) -> None:
    """``result`` is one of delivered, superseded, dead, expired."""
    DELIVERIES.labels(kind=kind, result=result).inc(count)


def count_retry(kind: str, status: int, count: int = 1) -> None:
    RETRIES.labels(kind=kind, status=str(status)).inc(count)


def observe_intake(kind: str, seconds: float) -> None:
    INTAKE_LATENCY.labels(kind=kind).observe(seconds)
