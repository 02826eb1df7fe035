"""The sans-I/O contract between the bridge's core and a source adapter, and the kit adapters are built from.

An adapter knows one CI source's wire format and how it maps onto Datadog bodies; it never touches Flask, the
database or the network. The core hands it bytes and headers, stores what it returns, and delivers what it maps.
Keeping the contract this small is what makes a new source one module.

The kit (apprise's base class, gidgethub's one verifier): a source subclasses :class:`WebhookSource` and declares
what differs (its name, Datadog provider, :class:`HmacSignature` or :class:`SharedToken`, its schemas, how to tell
a body's kind, what to store and how to map); the base verifies, signs, dispatches, drops old news and wraps each
resource for the intake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

from marshmallow import Schema

# The ``X as X`` names are re-exported: ``parse`` raises Rejected (the core catches it from here), and code written
# against the single base module of before (the Distelli adapter, a few tests) imports the Datadog names from here.
# New code imports the target model from adapters.target and body reading from adapters.payload.
from adapters.payload import Rejected as Rejected
from adapters.payload import json_object, kind_name, load, read_source_time
from adapters.target import CI_PIPELINE as CI_PIPELINE
from adapters.target import CLOCK_SKEW as CLOCK_SKEW
from adapters.target import DORA_DEPLOYMENT as DORA_DEPLOYMENT
from adapters.target import FINAL_STATUSES, RUNNING, Outbound, pipeline_outbound, rfc3339
from adapters.target import INTAKE_WINDOW as INTAKE_WINDOW
from adapters.target import clamp_future as clamp_future
from adapters.target import expiry_reason as expiry_reason
from adapters.target import pipeline_request as pipeline_request

# The lifecycle a webhook record carries in ``SourceRecord.status``: QUEUED (waiting: queue time only), RUNNING,
# or one of the final statuses the intake knows (adapters.target.FINAL_STATUSES).
QUEUED = "queued"
_SHA = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")
_SCP_URL = re.compile(r"^[\w.-]+@([\w.-]+):")
_NOT_IN_EMAIL = re.compile(r"[^A-Za-z0-9._+-]")


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
        data = _URL_NAMESPACE + name.encode("utf-8", "surrogatepass")
        return _uuid5_text(hashlib.sha1(data, usedforsecurity=False).digest())


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes
# The bits uuid.UUID(version=5) sets: the variant (RFC 4122) and the version.
_VARIANT_MASK, _VARIANT = ~(0xC000 << 48), 0x8000 << 48
_VERSION_MASK, _VERSION_5 = ~(0xF000 << 64), 5 << 76


def _uuid5_text(digest: bytes) -> str:
    """``str(uuid.UUID(bytes=digest[:16], version=5))``, without building the UUID object that is thrown away."""
    number = int.from_bytes(digest[:16]) & _VARIANT_MASK | _VARIANT
    text = f"{number & _VERSION_MASK | _VERSION_5:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


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


@runtime_checkable
class WebhookAdapter(Protocol):
    """A source that posts its own webhooks to ``POST /hooks/<name>``."""

    name: str

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The headers the source would add to this body; tests and replays sign payloads with it."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        """Return None when the request is authentic, else a short reason (never echoing the secret)."""

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        """Validate and parse a payload; None means "a valid event this adapter ignores" (answered 202)."""

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        """Map a record, given earlier records of the same run (oldest first), to intake bodies."""


# --- Request headers and authentication ------------------------------------------------------------------------
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


@dataclasses.dataclass(frozen=True)
class HmacSignature:
    """A header carrying ``prefix`` + the HMAC-SHA256 of the body in hex (GitHub's ``sha256=``, CircleCI's
    ``v1=``). A header may list several signatures separated by commas (``v1=…,v2=…``); one match is enough."""

    header: str
    prefix: str = ""

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        return {self.header: self.prefix + hmac_sha256_hex(secret, body)}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = header(headers, self.header)
        if not given:
            return f"the {self.header} header is missing"
        expected = self.prefix + hmac_sha256_hex(secret, body)
        if not any(secrets_match(part.strip(), expected) for part in given.split(",")):
            return f"the {self.header} signature does not match the body"
        return None


@dataclasses.dataclass(frozen=True)
class SharedToken:
    """The secret itself in a header, or in a query parameter for tools that can only set a URL (never logged)."""

    header: str
    query: str | None = None

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        return {self.header: secret}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = header(headers, self.header) or (query_param(headers, self.query) if self.query else None)
        if not given:
            where = f" or {self.query} query parameter" if self.query else ""
            return f"the {self.header} header{where} is missing"
        if not secrets_match(given, secret):
            return f"the {self.header} token does not match"
        return None


# --- The lifecycle ----------------------------------------------------------------------------------------------
class Step(enum.StrEnum):
    """What a record does to its run: starts it running, or ends it."""

    RUNNING = "running"
    FINAL = "final"


def transition(record: SourceRecord, history: Sequence[SourceRecord]) -> Step | None:
    """The :class:`Step` this record moves its run forward by, or None when it is old news.

    Webhooks arrive late, twice and out of order: a running after any running or final is dropped, and a final
    equal to one already seen is dropped, so the intake sees at most one running event and one final event.
    """
    seen = [earlier.status for earlier in history]
    if record.status == RUNNING:
        return None if any(status != QUEUED for status in seen) else Step.RUNNING
    if record.status in FINAL_STATUSES:
        return None if record.status in seen else Step.FINAL
    return None


def first_received(record: SourceRecord, history: Sequence[SourceRecord], now: dt.datetime) -> dt.datetime:
    """When the bridge first heard of this run: the start of its queue time when the source does not say."""
    times = [earlier.received_at for earlier in history if earlier.received_at is not None]
    return min([*times, record.received_at or now])


def delivery_id(value: Any) -> str | None:
    """A delivery id, or None when the source sent none or an empty one.

    An empty id names no delivery: kept as ``''`` it would make every later empty one look like a repeat of the
    first. Such a webhook is accepted like one from a source that sends no id (not deduplicated).
    """
    return (value.strip() or None) if isinstance(value, str) else None


# --- Git facts --------------------------------------------------------------------------------------------------
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


def author_email(username: str | None, repository_url: str, context: MappingContext) -> str:
    """An author email for sources that only name the author: the operator's address for that username (any
    case), else the template's synthetic one on the repository's host."""
    name = (username or "").strip()
    mapped = context.author_emails.get(name) or next(
        (email for known, email in context.author_emails.items() if name and known.lower() == name.lower()), None
    )
    if mapped:
        return mapped
    safe = _NOT_IN_EMAIL.sub("-", name).strip(".-") or "unknown"
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


# --- Resources --------------------------------------------------------------------------------------------------
def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    """The optional parts of a resource that have a value: a missing ``git`` or ``node`` is left out."""
    return {key: value for key, value in values.items() if value is not None}


def pipeline_resource(unique_id: str, name: str, url: str, start: str, **optional: Any) -> dict[str, Any]:
    """A running pipeline resource; ``optional`` parts given as None are left out."""
    required = {"level": "pipeline", "unique_id": unique_id, "name": name, "url": url, "start": start}
    return {**required, "status": RUNNING, "partial_retry": False, **_present(optional)}


def job_resource(
    job_id: str, name: str, pipeline: tuple[str, str], url: str, start: str, **optional: Any
) -> dict[str, Any]:
    """A running job resource of ``pipeline`` (its unique id and name); ``optional`` parts given as None are left
    out."""
    unique_id, pipeline_name = pipeline
    required = {"level": "job", "id": job_id, "name": name, "pipeline_unique_id": unique_id}
    required |= {"pipeline_name": pipeline_name, "url": url, "start": start}
    return {**required, "status": RUNNING, **_present(optional)}


def finish(
    resource: dict[str, Any], status: str, end: str | None, context: MappingContext, error: dict[str, str] | None
) -> None:
    """Make a resource final: its status, its end (the source's, else the receipt time) and, when it failed, the
    error block."""
    resource["status"] = status
    resource["end"] = end or rfc3339(context.received_at)
    if status == "error" and error is not None:
        resource["error"] = error


def error_block(domain: str, kind: str, message: str) -> dict[str, str]:
    """The ``error`` of a failed resource: ``domain`` is ``user``, ``provider`` or ``unknown``."""
    return {"domain": domain, "type": kind, "message": message}


def ci_outbound(resource: dict[str, Any], provider_name: str, context: MappingContext) -> Outbound:
    """Wrap a finished or running pipeline, stage or job resource as an :class:`Outbound`.

    Times may be in any form the source wrote; they are clamped to the receipt time and a start after the end is
    moved back to it, so the mapping never produces a body the intake refuses for its clock.
    """
    now = context.received_at
    start = read_source_time(resource["start"]) or now
    return pipeline_outbound(resource, provider_name, now, start, read_source_time(resource.get("end")))


def milliseconds_between(start: dt.datetime | None, end: dt.datetime | None) -> int:
    """A non-negative duration in ms (a queue time), 0 when either end is unknown."""
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


# --- The kit ----------------------------------------------------------------------------------------------------
class WebhookSource:
    """A webhook adapter built from the kit: subclass it, declare what differs, implement three methods.

    Declare ``name`` (the URL segment), ``auth`` (an :class:`HmacSignature` or :class:`SharedToken`),
    ``schemas`` (the marshmallow schema of each kind of body mapped), how to tell a body's kind (``kind_field``
    and/or ``kind_header``, the header's values translated by ``header_kinds``; a source with one schema needs
    neither) and, when Datadog knows the source by another name, ``provider``. Implement :meth:`record` (what to
    store of a body's checked values) and :meth:`resources` (the Datadog resources a record that moves its run
    forward becomes). The base signs, verifies, parses (a kind with no schema is ignored, an empty delivery id is
    no id), drops old news and wraps each resource for the intake.
    """

    name: ClassVar[str]
    provider: ClassVar[str | None] = None  # None: Datadog knows the source by its name
    kind_field: ClassVar[str | None] = None
    kind_header: ClassVar[str | None] = None
    header_kinds: ClassVar[Mapping[str, str] | None] = None
    auth: ClassVar[HmacSignature | SharedToken]
    schemas: ClassVar[Mapping[str, Schema]]

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        return self.auth.sign(body, secret)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        return self.auth.verify(headers, body, secret)

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        data = json_object(body)
        kind = self.kind(headers, data)
        if kind is None or kind not in self.schemas:
            return None  # pings and every event the source adds later
        record = self.record(kind, load(self.schemas[kind], data), headers)
        if record is None:
            return None
        return dataclasses.replace(record, delivery_id=delivery_id(record.delivery_id))

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        step = transition(record, history)
        if step is None:
            return []
        provider = self.provider or self.name
        return [ci_outbound(item, provider, context) for item in self.resources(record, history, context, step)]

    def kind(self, headers: Mapping[str, str], data: Mapping[str, Any]) -> str | None:
        """Which of :attr:`schemas` this body is: its ``kind_field``, else its ``kind_header`` (through
        ``header_kinds`` when given), else the only schema there is; None for a body this source does not map."""
        if self.kind_field is not None:
            kind = kind_name(data.get(self.kind_field), self.kind_field)
            if kind:
                return kind
        if self.kind_header is not None:
            given = header(headers, self.kind_header) or ""
            return self.header_kinds.get(given) if self.header_kinds is not None else given or None
        return next(iter(self.schemas)) if len(self.schemas) == 1 else None

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        """What to store of a body of ``kind`` whose checked ``values`` the schema gave."""
        raise NotImplementedError

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        """The pipeline, stage and job resources a record that moves its run by ``step`` becomes."""
        raise NotImplementedError
