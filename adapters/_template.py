"""TEMPLATE: copy to ``adapters/<source>.py`` (or your own package) and replace every ``mysource``.

Say here, in two or three sentences, which webhooks of the source this adapter maps and what each becomes in
Datadog (pipeline, stage, job), how the source authenticates, and what the delivery id is. This module is not
registered: it is never loaded unless it is copied and named in ``adapters.registry.BUILTIN_MODULES`` or in an
entry point. See ``docs/writing-an-adapter.md`` for the walk-through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields, validate

from adapters.base import (
    QUEUED,
    RUNNING,
    MappingContext,
    Moment,
    Outbound,
    PayloadSchema,
    SourceRecord,
    author_email,
    ci_outbound,
    first_received,
    git_info,
    header,
    hmac_sha256_hex,
    json_object,
    load,
    optional_text,
    parse_time,
    rfc3339,
    secrets_match,
    transition,
)

PROVIDER = "custom"  # Datadog's provider_name: the source's own name when Datadog knows it
SIGNATURE_HEADER = "X-MySource-Signature"
# The source's states: waiting ones become QUEUED, the running one RUNNING, the rest a Datadog final status.
STATUSES = {"queued": QUEUED, "running": RUNNING, "passed": "success", "failed": "error", "cancelled": "canceled"}


class BuildSchema(PayloadSchema):
    """Only the fields the mapping reads; unknown keys are ignored so the source can add fields freely."""

    id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    pipeline = fields.String(required=True, validate=validate.Length(min=1, max=200))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    url = fields.String(required=True)
    started_at = Moment(allow_none=True)
    finished_at = Moment(allow_none=True)
    repository_url = optional_text()
    commit = optional_text()
    branch = optional_text()
    author = optional_text()


SCHEMA = BuildSchema()


class MySourceAdapter:
    """``POST /hooks/mysource``; the secret is ``BRIDGE_HOOK_SECRETS=mysource:<secret>``."""

    name = "mysource"

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The headers the source adds; the contract tests sign the samples with it."""
        return {SIGNATURE_HEADER: hmac_sha256_hex(secret, body)}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = header(headers, SIGNATURE_HEADER)
        if not given:
            return f"the {SIGNATURE_HEADER} header is missing"
        if not secrets_match(given, hmac_sha256_hex(secret, body)):
            return "the signature does not match the body"
        return None

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        values = load(SCHEMA, json_object(body))
        return SourceRecord(
            event_type="build",
            run_key=f"{values['pipeline']}#{values['id']}",
            app_name=values["pipeline"],
            fields=values,
            delivery_id=header(headers, "X-MySource-Delivery"),
            status=STATUSES[values["status"]],
            branch=values.get("branch"),
            commit_id=values.get("commit"),
        )

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        if transition(record, history) is None:
            return []
        build = record.fields
        started = parse_time(build.get("started_at")) or first_received(record, history, context.received_at)
        resource: dict[str, Any] = {
            "level": "pipeline",
            "unique_id": context.run_uuid(self.name, record.run_key),
            "name": build["pipeline"],
            "url": build["url"],
            "start": rfc3339(started),
            "status": RUNNING,
            "partial_retry": False,
            "pipeline_id": build["id"],
        }
        repository = build.get("repository_url")
        if repository:
            email = author_email(build.get("author"), repository, context)
            git = git_info(repository, build.get("commit"), email, branch=build.get("branch"))
            if git:
                resource["git"] = git
        if record.status != RUNNING:
            resource["status"] = record.status
            resource["end"] = build.get("finished_at") or rfc3339(context.received_at)
        return [ci_outbound(resource, PROVIDER, context)]


adapter = MySourceAdapter()
