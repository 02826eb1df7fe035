"""CircleCI: ``workflow-completed`` and ``job-completed`` webhooks, signed with ``circleci-signature`` (v1).

CircleCI only tells when things end, so each webhook is one final event: a workflow becomes a Datadog pipeline
and a job a job of that pipeline. The payload's own ``id`` identifies the delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields

from adapters.base import (
    MappingContext,
    Moment,
    Outbound,
    PayloadSchema,
    SourceRecord,
    author_email,
    ci_outbound,
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

PROVIDER = "circleci"
WORKFLOW, JOB = "workflow-completed", "job-completed"
STATUSES = {
    "success": "success",
    "failed": "error",
    "error": "error",
    "failing": "error",
    "infrastructure_fail": "error",
    "timedout": "error",
    "unauthorized": "error",
    "canceled": "canceled",
    "not_run": "skipped",
}


PersonSchema = PayloadSchema.from_dict({"name": optional_text(), "email": optional_text()})


class VcsCommitSchema(PayloadSchema):
    subject = optional_text()
    body = optional_text()
    author = fields.Nested(PersonSchema, allow_none=True)
    committer = fields.Nested(PersonSchema, allow_none=True)
    committed_at = Moment(allow_none=True)


class VcsSchema(PayloadSchema):
    origin_repository_url = optional_text()
    target_repository_url = optional_text()
    revision = optional_text()
    branch = optional_text()
    tag = optional_text()
    commit = fields.Nested(VcsCommitSchema, allow_none=True)


class PipelineSchema(PayloadSchema):
    id = fields.String(required=True)
    number = fields.Integer(allow_none=True)
    trigger = fields.Nested(PayloadSchema.from_dict({"type": optional_text()}), allow_none=True)
    vcs = fields.Nested(VcsSchema, allow_none=True)


class WorkflowSchema(PayloadSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True)
    created_at = Moment(required=True)
    stopped_at = Moment(allow_none=True)
    url = fields.String(required=True)


class JobSchema(PayloadSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    number = fields.Integer(allow_none=True)
    status = fields.String(required=True)
    started_at = Moment(allow_none=True)
    stopped_at = Moment(allow_none=True)


class ProjectSchema(PayloadSchema):
    slug = fields.String(required=True)
    name = optional_text()


class WebhookSchema(PayloadSchema):
    type = fields.String(required=True)
    id = fields.String(required=True)
    happened_at = Moment(allow_none=True)
    workflow = fields.Nested(WorkflowSchema, required=True)
    pipeline = fields.Nested(PipelineSchema, required=True)
    project = fields.Nested(ProjectSchema, required=True)


class JobWebhookSchema(WebhookSchema):
    job = fields.Nested(JobSchema, required=True)


SCHEMAS = {WORKFLOW: WebhookSchema(), JOB: JobWebhookSchema()}


class CircleCIAdapter:
    """``POST /hooks/circleci``; create the webhook in Project Settings with the bridge's secret."""

    name = "circleci"

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The header CircleCI adds to every delivery."""
        return {"circleci-signature": "v1=" + hmac_sha256_hex(secret, body)}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = header(headers, "circleci-signature")
        if not given:
            return "the circleci-signature header is missing"
        # The header may carry several schemes ("v1=...,v2=..."); only v1 is defined today.
        signatures = [part.strip()[3:] for part in given.split(",") if part.strip().startswith("v1=")]
        expected = hmac_sha256_hex(secret, body)
        if not any(secrets_match(signature, expected) for signature in signatures):
            return "the circleci-signature v1 signature does not match the body"
        return None

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        data = json_object(body)
        kind = data.get("type") or header(headers, "circleci-event-type")
        if kind not in SCHEMAS:
            return None  # "ping" and any event type CircleCI adds later
        values = load(SCHEMAS[str(kind)], data)
        vcs = values["pipeline"].get("vcs") or {}
        unit = values["job"] if kind == JOB else values["workflow"]
        return SourceRecord(
            event_type=str(kind),
            run_key=f"{values['project']['slug']}#{'job' if kind == JOB else 'workflow'}:{unit['id']}",
            app_name=values["project"]["slug"],
            fields=values,
            delivery_id=values["id"],
            status=STATUSES.get(unit["status"], "error"),
            branch=vcs.get("branch"),
            commit_id=vcs.get("revision"),
        )

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        if transition(record, history) is None:
            return []
        values = record.fields
        workflow = values["workflow"]
        pipeline_uuid = context.run_uuid(PROVIDER, "workflow", workflow["id"])
        common: dict[str, Any] = {"status": record.status}
        git = _git(values, context)
        if git:
            common["git"] = git
        if record.event_type == WORKFLOW:
            resource: dict[str, Any] = {
                "level": "pipeline",
                "unique_id": pipeline_uuid,
                "name": workflow["name"],
                "url": workflow["url"],
                "start": workflow["created_at"],
                "end": workflow.get("stopped_at") or rfc3339(context.received_at),
                "partial_retry": False,
                **common,
            }
            number = values["pipeline"].get("number")
            if number is not None:
                resource["pipeline_id"] = str(number)
            what, raw = f"workflow {workflow['name']!r}", workflow["status"]
        else:
            job = values["job"]
            end = job.get("stopped_at") or rfc3339(context.received_at)
            resource = {
                "level": "job",
                "id": context.run_uuid(PROVIDER, "job", job["id"]),
                "name": job["name"],
                "pipeline_unique_id": pipeline_uuid,
                "pipeline_name": workflow["name"],
                "url": f"{workflow['url']}/jobs/{job['number']}" if job.get("number") else workflow["url"],
                "start": job.get("started_at") or end,
                "end": end,
                **common,
            }
            what, raw = f"job {job['name']!r}", job["status"]
        if record.status == "error":
            resource["error"] = {"domain": "unknown", "type": raw, "message": f"CircleCI: {what} ended {raw}"}
        resource["tags"] = [f"circleci.project:{values['project']['slug']}", f"circleci.status:{raw}"]
        trigger = (values["pipeline"].get("trigger") or {}).get("type")
        if trigger:
            resource["tags"].append(f"circleci.trigger:{trigger}")
        return [ci_outbound(resource, PROVIDER, context)]


def _git(values: Mapping[str, Any], context: MappingContext) -> dict[str, Any] | None:
    vcs = values["pipeline"].get("vcs") or {}
    repository = vcs.get("origin_repository_url") or vcs.get("target_repository_url")
    commit = vcs.get("commit") or {}
    author, committer = commit.get("author") or {}, commit.get("committer") or {}
    message = "\n\n".join(part for part in (commit.get("subject"), commit.get("body")) if part)
    committed = parse_time(commit.get("committed_at"))
    ref = {"tag": vcs["tag"]} if vcs.get("tag") else {"branch": vcs.get("branch")}
    return git_info(
        repository,
        vcs.get("revision"),
        author.get("email") or (author_email(author.get("name"), repository, context) if repository else None),
        **ref,
        message=message,
        author_name=author.get("name"),
        committer_name=committer.get("name"),
        committer_email=committer.get("email"),
        commit_time=rfc3339(committed) if committed else None,
    )


adapter = CircleCIAdapter()
