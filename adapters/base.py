"""The sans-I/O contract between the bridge's core and a source adapter.

An adapter knows one CI source's wire format and how it maps onto Datadog bodies; it never touches Flask, the
database or the network. The core hands it bytes and headers, stores what it returns, and delivers what it maps.
Keeping the contract this small is what makes a new source one module.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields

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
        # uuid.uuid5 itself, but a lone surrogate in a source's name (valid JSON, not valid UTF-8) cannot fail it.
        data = uuid.NAMESPACE_URL.bytes + name.encode("utf-8", "surrogatepass")
        digest = hashlib.sha1(data, usedforsecurity=False).digest()
        return str(uuid.UUID(bytes=digest[:16], version=5))


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
    # Set by the core: when the bridge received this record (history records always carry it).
    received_at: dt.datetime | None = None


class Rejected(Exception):
    """Raised by ``parse`` when a payload is not one the adapter accepts; carries per-field messages."""

    def __init__(
        self, message: str, fields: Mapping[str, Any] | None = None, status: int = 400, code: str = "invalid_payload"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields) if fields else None
        self.status = status
        self.code = code


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


# --- Helpers for webhook adapters -------------------------------------------------------------------------------
# Lifecycle statuses a webhook record carries in ``SourceRecord.status``: the two not-yet-final ones, then the
# final statuses the intake knows (``blocked`` exists only at pipeline level).
QUEUED, RUNNING = "queued", "running"
FINAL_STATUSES = frozenset({"success", "error", "canceled", "skipped", "blocked"})
_SHA = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")
_SCP_URL = re.compile(r"^[\w.-]+@([\w.-]+):")
_SPACED_UTC = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ?(UTC|[+-]\d{2}:?\d{2})$")


class RequestHeaders(Mapping[str, str]):
    """Case-insensitive request headers, plus the query parameters, as the core hands them to ``verify`` and
    ``parse``. Plain dicts work too; :func:`header` and :func:`query_param` read either."""

    def __init__(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (), query: Mapping[str, str] | None = None
    ) -> None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        self._headers = {name.lower(): value for name, value in items}
        self.query = dict(query or {})

    def __getitem__(self, name: str) -> str:
        return self._headers[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name, or None."""
    if isinstance(headers, RequestHeaders):
        return headers.get(name)
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def query_param(headers: Mapping[str, str], name: str) -> str | None:
    """A query parameter of the request, when the core passed :class:`RequestHeaders`."""
    query: Mapping[str, str] = getattr(headers, "query", {})
    return query.get(name)


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secrets_match(given: str | None, expected: str) -> bool:
    """Compare in constant time, so a wrong secret cannot be guessed byte by byte."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


# Bodies from CI tools are shallow; code that walks one must not run out of stack on a hostile one.
MAX_DEPTH = 64


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`Rejected`.

    A leading UTF-8 byte order mark (a JSON file saved on a Windows build agent) is skipped. ``NaN``,
    ``Infinity``, numbers too large for a float and nesting deeper than :data:`MAX_DEPTH` are refused: they are
    not JSON, or not storable, and neither the databases nor Datadog accept them.
    """
    try:
        data = json.loads(body.removeprefix(codecs.BOM_UTF8), parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Rejected("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise Rejected("The request body must be a JSON object.", code="invalid_body")
    if _depth(data) > MAX_DEPTH:
        raise Rejected(f"The request body nests deeper than {MAX_DEPTH} levels.", code="invalid_body")
    return data


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest, found without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate with a marshmallow schema; field errors become one :class:`Rejected` naming every bad field."""
    try:
        values: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise Rejected("Some fields are invalid.", fields=fields) from None
    return values


def parse_time(value: Any) -> dt.datetime | None:
    """An aware datetime from ISO 8601 (``Z`` allowed), GitLab's ``2016-08-12 15:23:28 UTC``, or epoch millis."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    spaced = _SPACED_UTC.match(text)
    if spaced:
        zone = "+00:00" if spaced[3] == "UTC" else spaced[3]
        text = f"{spaced[1]}T{spaced[2]}{zone}"
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class PayloadSchema(Schema):
    """A schema for a source's webhook payload: sources add fields all the time, so unknown keys are ignored."""

    class Meta:
        unknown = EXCLUDE


def optional_text(**kwargs: Any) -> fields.String:
    """A string field that may be missing or null."""
    return fields.String(allow_none=True, **kwargs)


# Times a run can have: a year inside the calendar's ends once in UTC, so adding a queue time or a duration (at
# most a year, see MAX_DURATION) can never leave the calendar.
EARLIEST = dt.datetime(2, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9998, 12, 31, tzinfo=dt.UTC)
# Go's and .NET's zero time: what their clients send for "not set".
ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


class Moment(fields.Field):
    """A time in any form :func:`parse_time` reads, kept as the source wrote it so stored fields stay raw.

    A zero time (year 1, midnight UTC) is read as missing; any other time outside :data:`EARLIEST` ..
    :data:`LATEST` once in UTC is refused, so no later arithmetic on it can overflow into a 500.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = fields.String()._deserialize(value, attr, data, **kwargs)
        moment = parse_time(text)
        if moment is None:
            raise ValidationError("Not a date and time.")
        try:
            in_utc = moment.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            raise ValidationError("Not a date and time the calendar can hold in UTC.") from None
        if in_utc == ZERO_TIME:
            return None
        if not EARLIEST <= in_utc <= LATEST:
            raise ValidationError(f"Not between {EARLIEST.year} and {LATEST.year}.")
        return text


def transition(record: SourceRecord, history: Sequence[SourceRecord]) -> str | None:
    """``"running"`` or ``"final"`` when this record moves its run forward, None when it is old news.

    Webhooks arrive late, twice and out of order: a running after any running or final is dropped, and a final
    equal to one already seen is dropped, so the intake sees at most one running event and one final event.
    """
    seen = [earlier.status for earlier in history]
    if record.status == RUNNING:
        return None if any(status != QUEUED for status in seen) else "running"
    if record.status in FINAL_STATUSES:
        return None if record.status in seen else "final"
    return None


def first_received(record: SourceRecord, history: Sequence[SourceRecord], now: dt.datetime) -> dt.datetime:
    """When the bridge first heard of this run: the start of its queue time when the source does not say."""
    times = [earlier.received_at for earlier in history if earlier.received_at is not None]
    return min([*times, record.received_at or now])


def author_email(username: str | None, repository_url: str, context: MappingContext) -> str:
    """An author email for sources that only name the author: the operator's address for that username (any
    case), else the template's synthetic one on the repository's host."""
    name = (username or "").strip()
    mapped = context.author_emails.get(name) or next(
        (email for known, email in context.author_emails.items() if name and known.lower() == name.lower()), None
    )
    if mapped:
        return mapped
    safe = re.sub(r"[^A-Za-z0-9._+-]", "-", name).strip(".-") or "unknown"
    # str.replace, not str.format: a template with other braces must not fail the request that stores the event.
    template = context.author_email_template
    return template.replace("{username}", safe).replace("{host}", repository_host(repository_url))


def repository_host(repository_url: str) -> str:
    """The host of a repository URL, scp-like ``git@host:owner/name.git`` included; ``localhost`` if none."""
    scp = _SCP_URL.match(repository_url)
    host = scp[1] if scp else urlsplit(repository_url).hostname
    return (host or "localhost").lower()


def git_info(repository_url: str | None, sha: str | None, email: str | None, **extra: Any) -> dict[str, Any] | None:
    """The resource's ``git`` block, or None when the intake would refuse it (no repository, sha or email)."""
    if not repository_url or not sha or not _SHA.match(sha) or not email:
        return None
    git: dict[str, Any] = {"repository_url": repository_url, "sha": sha.lower(), "author_email": email}
    git.update({key: value for key, value in extra.items() if value})
    return git


def ci_outbound(resource: dict[str, Any], provider_name: str, context: MappingContext) -> Outbound:
    """Wrap a finished or running pipeline, stage or job resource as an :class:`Outbound`.

    Times are clamped to the receipt time and a start after the end is moved back to it, so the mapping never
    produces a body the intake refuses for its clock; a final event the intake's window has passed is expired.
    """
    now = context.received_at
    resource = dict(resource)
    start = clamp_future(parse_time(resource["start"]) or now, now)
    end = parse_time(resource.get("end"))
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


def milliseconds_between(start: dt.datetime | None, end: dt.datetime | None) -> int:
    """A non-negative duration in ms (a queue time), 0 when either end is unknown."""
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


def delivery_id(value: Any) -> str | None:
    """A delivery id, or None when the source sent none or an empty one.

    An empty id names no delivery: kept as ``''`` it would make every later empty one look like a repeat of the
    first. Such a webhook is accepted like one from a source that sends no id (not deduplicated).
    """
    return (value.strip() or None) if isinstance(value, str) else None


def split_ref(ref: str | None) -> tuple[str | None, str | None]:
    """A CI tool's ref as ``(branch, tag)`` in the names a user sees.

    ``refs/heads/``, ``refs/remotes/origin/``, ``refs/remotes/`` and ``origin/`` go (``origin/main`` is ``main``);
    ``refs/tags/v1`` is the tag ``v1``; any other ref (``refs/pull/166/head``) loses ``refs/``, as ``git`` shows it.
    """
    if not ref:
        return None, None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/") or None
    for prefix in ("refs/heads/", "refs/remotes/origin/", "refs/remotes/", "origin/", "refs/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix) or None, None
    return ref, None


def rfc3339_or_none(value: Any) -> str | None:
    """A time in any form :func:`parse_time` reads as RFC 3339 in UTC, or None when it is missing or unusable."""
    moment = parse_time(value)
    try:
        return rfc3339(moment) if moment else None
    except (OverflowError, ValueError):
        return None
