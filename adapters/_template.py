"""TEMPLATE: copy to ``adapters/<source>.py`` (or your own package) and replace every ``mysource``.

Say here, in two or three sentences, which webhooks of the source this adapter maps and what each becomes in
Datadog (pipeline, stage, job), how the source authenticates, and what the delivery id is. This module is not
registered (its name starts with ``_``): a copy named ``adapters/<source>.py`` is found by the registry with no
other change, and one in your own package through an entry point. See ``docs/writing-an-adapter.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields, validate

from adapters import base
from adapters.base import QUEUED, HmacSignature, MappingContext, SourceRecord, Step, WebhookSource
from adapters.payload import PayloadSchema, SourceTime, optional_text, read_source_time
from adapters.target import RUNNING, rfc3339

# The source's states: waiting ones become QUEUED, the running one RUNNING, the rest a Datadog final status.
STATUSES = {"queued": QUEUED, "running": RUNNING, "passed": "success", "failed": "error", "cancelled": "canceled"}


class BuildSchema(PayloadSchema):
    """Only the fields the mapping reads; unknown keys are ignored so the source can add fields freely."""

    id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    pipeline = fields.String(required=True, validate=validate.Length(min=1, max=200))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    url = fields.String(required=True)
    started_at = SourceTime(allow_none=True)
    finished_at = SourceTime(allow_none=True)
    repository_url = optional_text()
    commit = optional_text()
    branch = optional_text()
    author = optional_text()


class MySourceAdapter(WebhookSource):
    """``POST /hooks/mysource``; the secret is ``BRIDGE_HOOK_SECRETS=mysource:<secret>``."""

    name = "mysource"
    provider = "custom"  # Datadog's provider_name: the source's own name when Datadog knows it
    auth = HmacSignature("X-MySource-Signature")
    schemas = {"build": BuildSchema()}
    # One schema needs no kind; a source with several names where the kind is: kind_field = "type" (a field of
    # the body) and/or kind_header = "X-MySource-Event", whose values header_kinds may translate.

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        # SourceRecord(event_type, run_key, app_name, fields, delivery_id, status, branch, commit_id)
        run_key, delivery_id = f"{values['pipeline']}#{values['id']}", base.header(headers, "X-MySource-Delivery")
        status, branch, commit_id = STATUSES[values["status"]], values.get("branch"), values.get("commit")
        return SourceRecord(kind, run_key, values["pipeline"], values, delivery_id, status, branch, commit_id)

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        build = record.fields
        started = read_source_time(build.get("started_at")) or base.first_received(record, history, context.received_at)
        repository = build.get("repository_url")
        email = base.author_email(build.get("author"), repository, context) if repository else None
        resource = base.pipeline_resource(
            context.run_uuid(self.name, record.run_key),
            build["pipeline"],
            build["url"],
            rfc3339(started),
            pipeline_id=build["id"],
            git=base.git_info(repository, build.get("commit"), email, branch=build.get("branch")),
        )
        if step == Step.FINAL:
            base.finish(resource, str(record.status), build.get("finished_at"), context, error=None)
        return [resource]


adapter = MySourceAdapter()
