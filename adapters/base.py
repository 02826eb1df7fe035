"""The sans-I/O contract between the bridge's core and a source adapter.

An adapter knows one CI source's wire format and how it maps onto Datadog bodies; it never touches Flask, the
database or the network. The core hands it bytes and headers, stores what it returns, and delivers what it maps.
Keeping the contract this small is what makes a new source one module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

CI_PIPELINE = "ci_pipeline"
DORA_DEPLOYMENT = "dora_deployment"

# The intake refuses an end older than this, so anything older is marked expired rather than sent.
INTAKE_WINDOW = dt.timedelta(hours=18)
# The intake refuses a run longer than this.
MAX_DURATION = dt.timedelta(days=365)
# Clocks of CI machines drift; a time this far ahead of receipt is clamped to the receipt time.
CLOCK_SKEW = dt.timedelta(seconds=5)


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


@dataclasses.dataclass(frozen=True)
class MappingContext:
    """Installation-wide facts a mapping may use; built by the core from its config."""

    installation_id: str
    public_url: str
    received_at: dt.datetime
    author_emails: Mapping[str, str] = dataclasses.field(default_factory=dict)
    author_email_template: str = "{username}@users.noreply.{host}"
    service_names: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def run_uuid(self, *parts: object) -> str:
        """A UUID that is the same for the same run every time, so retries and replays never duplicate."""
        name = "/".join([self.installation_id, *(str(part) for part in parts)])
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """What an adapter parsed out of one webhook: enough for the core to store, deduplicate and group it."""

    event_type: str
    run_key: str
    app_name: str
    fields: dict[str, Any]
    delivery_id: str | None = None
    status: str | None = None
    branch: str | None = None
    commit_id: str | None = None


class Rejected(Exception):
    """Raised by ``parse`` when a payload is not one the adapter accepts; carries per-field messages."""

    def __init__(self, message: str, fields: Mapping[str, Any] | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields) if fields else None
        self.status = status


@runtime_checkable
class WebhookAdapter(Protocol):
    """A source that posts its own webhooks to ``POST /hooks/<name>``."""

    name: str

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        """Return None when the request is authentic, else a short reason (never echoing the secret)."""

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        """Validate and parse a payload; None means "a valid event this adapter ignores" (answered 202)."""

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        """Map a record, given earlier records of the same run (oldest first), to intake bodies."""


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
