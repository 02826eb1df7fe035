"""The Datadog side of every mapping: what the intake takes, and the envelope and rules its bodies follow.

Adapters map onto this model and the delivery side (outbox, sender, intake client) works from it, so the intake's
rules live in one place: the two kinds of body, the 18-hour window, the longest run, clock skew, the request
envelope, why a body would be refused, and how times ahead of the clock are clamped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

CI_PIPELINE = "ci_pipeline"
DORA_DEPLOYMENT = "dora_deployment"

# The intake refuses an end older than this, so anything older is marked expired rather than sent.
INTAKE_WINDOW = dt.timedelta(hours=18)
# The intake refuses a run longer than this.
MAX_DURATION = dt.timedelta(days=365)
# Clocks of CI machines drift; a time this far ahead of receipt is clamped to the receipt time.
CLOCK_SKEW = dt.timedelta(seconds=5)


# The statuses the intake knows: running, then the final ones (``blocked`` exists only at pipeline level).
RUNNING = "running"
FINAL_STATUSES = frozenset({"success", "error", "canceled", "skipped", "blocked"})


@dataclasses.dataclass(frozen=True)
class Outbound:
    """One request body for the intake, with what the sender needs to order, supersede and expire it."""

    kind: str
    unique_id: str
    level: str
    final: bool
    body: dict[str, Any]
    end: dt.datetime | None = None
    expired_reason: str | None = None


def rfc3339(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form both Distelli and Datadog show."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pipeline_request(resource: dict[str, Any], provider_name: str, env: str | None = None) -> dict[str, Any]:
    """Wrap a pipeline, stage or job resource in the envelope ``POST /api/v2/ci/pipeline`` expects."""
    attributes: dict[str, Any] = {"provider_name": provider_name, "resource": resource}
    if env:
        attributes["env"] = env
    return {"data": {"attributes": attributes, "type": "cipipeline_resource_request"}}


def expiry_reason(start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime) -> str | None:
    """Why the intake would refuse these times, or None when it would take them."""
    if end is None:
        return None
    if end < now - INTAKE_WINDOW:
        return "end is more than 18 hours in the past; the intake refuses it"
    if start is not None and end < start:
        return "end is before start; the intake refuses it"
    if start is not None and end - start > MAX_DURATION:
        return "the run lasted more than a year; the intake refuses it"
    return None


def clamp_future(moment: dt.datetime, now: dt.datetime) -> dt.datetime:
    """Clamp a time further ahead than clock skew allows to the receipt time."""
    return now if moment > now + CLOCK_SKEW else moment


def pipeline_outbound(
    resource: dict[str, Any], provider_name: str, now: dt.datetime, start: dt.datetime, end: dt.datetime | None
) -> Outbound:
    """Wrap a pipeline, stage or job resource as an :class:`Outbound`, its times clamped to ``now``.

    A time ahead of the clock is clamped to the receipt time and a start after the end is moved back to it, so no
    body is refused for its clock; a final event the intake's window has passed is marked expired.
    """
    resource = dict(resource)
    start = clamp_future(start, now)
    if end is not None:
        end = clamp_future(end, now)
        start = min(start, end)
        resource["end"] = rfc3339(end)
    resource["start"] = rfc3339(start)
    level = resource["level"]
    unique_id = resource["unique_id"] if level == "pipeline" else resource["id"]
    final = resource["status"] != RUNNING
    reason = expiry_reason(start, end, now) if final else None
    return Outbound(CI_PIPELINE, unique_id, level, final, pipeline_request(resource, provider_name), end, reason)
