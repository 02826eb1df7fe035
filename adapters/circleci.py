"""CircleCI: ``workflow-completed`` and ``job-completed`` webhooks, signed with ``circleci-signature`` (v1).

CircleCI only tells when things end, so each webhook is one final event: a workflow becomes a Datadog pipeline
and a job a job of that pipeline. The payload's own ``id`` identifies the delivery.

``workflow.status`` exists only in ``workflow-completed``; a ``job-completed`` may carry no ``workflow`` at all
(GitLab and GitHub App projects), and then belongs to a pipeline named after the CircleCI pipeline. Projects of
those kinds have no ``pipeline.vcs`` either: their commit comes from ``pipeline.trigger_parameters``.
CircleCI 1.0's ``notify`` webhooks (``{"payload": {...}}``) are refused: CircleCI 1.0 was shut down in 2018.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields

from adapters import base
from adapters.base import HmacSignature, MappingContext, Rejected, SourceRecord, Step, WebhookSource
from adapters.payload import PayloadSchema, SourceTime, optional_text, rfc3339_or_none
from adapters.target import rfc3339

PROVIDER = "circleci"
WORKFLOW, JOB = "workflow-completed", "job-completed"
# The trigger_parameters keys that describe the commit of a project without pipeline.vcs.
TRIGGER_SOURCES = ("gitlab", "github_app")
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
    committed_at = SourceTime(allow_none=True)


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
    trigger_parameters = fields.Dict(allow_none=True)


class WorkflowSchema(PayloadSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = optional_text()  # only in workflow-completed
    created_at = SourceTime(required=True)
    stopped_at = SourceTime(allow_none=True)
    url = fields.String(required=True)


class JobSchema(PayloadSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    number = fields.Integer(allow_none=True)
    status = fields.String(required=True)
    started_at = SourceTime(allow_none=True)
    stopped_at = SourceTime(allow_none=True)


class ProjectSchema(PayloadSchema):
    slug = fields.String(required=True)
    name = optional_text()


class WebhookSchema(PayloadSchema):
    type = fields.String(required=True)
    id = fields.String(required=True)
    happened_at = SourceTime(allow_none=True)
    workflow = fields.Nested(WorkflowSchema, required=True)
    pipeline = fields.Nested(PipelineSchema, required=True)
    project = fields.Nested(ProjectSchema, required=True)


class JobWebhookSchema(WebhookSchema):
    workflow = fields.Nested(WorkflowSchema, allow_none=True)
    job = fields.Nested(JobSchema, required=True)


class CircleCIAdapter(WebhookSource):
    """``POST /hooks/circleci``; create the webhook in Project Settings with the bridge's secret."""

    name = PROVIDER
    # The header may carry several schemes ("v1=...,v2=..."); only v1 is defined today.
    auth = HmacSignature("circleci-signature", "v1=")
    schemas = {WORKFLOW: WebhookSchema(), JOB: JobWebhookSchema()}
    kind_field, kind_header = "type", "circleci-event-type"

    def kind(self, headers: Mapping[str, str], data: Mapping[str, Any]) -> str | None:
        if "payload" in data and "type" not in data:
            raise Rejected(
                "This is a CircleCI 1.0 notify webhook, which the bridge does not read: CircleCI 1.0 was shut down "
                "in 2018. Add a webhook in the project's settings (workflow-completed and job-completed) instead."
            )
        return super().kind(headers, data)

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        unit = values["job"] if kind == JOB else values["workflow"]
        if not unit.get("status"):
            missing = {"workflow": {"status": ["Missing data for required field."]}}
            raise Rejected("Some fields are invalid.", fields=missing)
        commit = _commit(values["pipeline"])
        slug, status = values["project"]["slug"], STATUSES.get(unit["status"], "error")
        run_key = f"{slug}#{'job' if kind == JOB else 'workflow'}:{unit['id']}"
        return SourceRecord(kind, run_key, slug, values, values["id"], status, commit.get("branch"), commit.get("sha"))

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        values = record.fields
        workflow, pipeline = values.get("workflow"), values["pipeline"]
        slug = values["project"]["slug"]
        if workflow:
            pipeline_uuid = context.run_uuid(PROVIDER, "workflow", workflow["id"])
            pipeline_name, pipeline_url = workflow["name"], workflow["url"]
        else:  # a job-completed of a GitLab or GitHub App project: its pipeline is all it names
            pipeline_uuid = context.run_uuid(PROVIDER, "pipeline", pipeline["id"])
            pipeline_name = values["project"].get("name") or slug
            pipeline_url = f"https://app.circleci.com/pipelines/{slug}/{pipeline.get('number') or ''}".rstrip("/")
        git = _git(values, context)
        if record.event_type == WORKFLOW:
            assert workflow is not None  # the workflow-completed schema requires it
            number = pipeline.get("number")
            resource = base.pipeline_resource(
                pipeline_uuid,
                pipeline_name,
                pipeline_url,
                workflow["created_at"],
                pipeline_id=None if number is None else str(number),
                git=git,
            )
            end, what, raw = workflow.get("stopped_at"), f"workflow {workflow['name']!r}", workflow["status"]
        else:
            job = values["job"]
            end = job.get("stopped_at") or rfc3339(context.received_at)
            resource = base.job_resource(
                context.run_uuid(PROVIDER, "job", job["id"]),
                job["name"],
                (pipeline_uuid, pipeline_name),
                f"{pipeline_url}/jobs/{job['number']}" if workflow and job.get("number") else pipeline_url,
                job.get("started_at") or end,
                git=git,
            )
            what, raw = f"job {job['name']!r}", job["status"]
        error = base.error_block("unknown", raw, f"CircleCI: {what} ended {raw}")
        base.finish(resource, str(record.status), end, context, error)
        resource["tags"] = [f"circleci.project:{slug}", f"circleci.status:{raw}"]
        trigger = (pipeline.get("trigger") or {}).get("type")
        if trigger:
            resource["tags"].append(f"circleci.trigger:{trigger}")
        return [resource]


def _text(value: Any) -> str | None:
    """A non-empty string, else None: CircleCI's trigger parameters carry ``""`` for unset."""
    return value if isinstance(value, str) and value else None


def _commit(pipeline: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's commit in one shape: from ``pipeline.vcs`` (GitHub OAuth and Bitbucket projects), else from
    ``pipeline.trigger_parameters`` (GitLab and GitHub App projects send no ``vcs``)."""
    vcs = pipeline.get("vcs") or {}
    if vcs.get("revision"):
        commit = vcs.get("commit") or {}
        author, committer = commit.get("author") or {}, commit.get("committer") or {}
        return {
            "repository": vcs.get("origin_repository_url") or vcs.get("target_repository_url"),
            "sha": vcs["revision"],
            "branch": vcs.get("branch"),
            "tag": vcs.get("tag"),
            "message": "\n\n".join(part for part in (commit.get("subject"), commit.get("body")) if part),
            "author_name": author.get("name"),
            "author_email": author.get("email"),
            "committer_name": committer.get("name"),
            "committer_email": committer.get("email"),
            "commit_time": commit.get("committed_at"),
        }
    parameters = pipeline.get("trigger_parameters") or {}
    source: Mapping[str, Any] = next(
        (parameters[key] for key in TRIGGER_SOURCES if isinstance(parameters.get(key), dict)), {}
    )
    git: Mapping[str, Any] = parameters["git"] if isinstance(parameters.get("git"), dict) else {}

    def first(*values: Any) -> str | None:
        return next((text for value in values if (text := _text(value))), None)

    return {
        "repository": first(source.get("web_url"), source.get("repo_url"), git.get("checkout_url")),
        "sha": first(source.get("checkout_sha"), source.get("commit_sha"), git.get("checkout_sha")),
        "branch": first(source.get("branch"), git.get("branch")),
        "tag": first(source.get("tag"), git.get("tag")),
        "message": first(source.get("commit_message"), source.get("commit_title")),
        "author_name": first(source.get("commit_author_name")),
        "author_email": first(source.get("commit_author_email")),
        "commit_time": first(source.get("commit_timestamp")),
    }


def _git(values: Mapping[str, Any], context: MappingContext) -> dict[str, Any] | None:
    commit = _commit(values["pipeline"])
    repository = commit["repository"]
    name = commit.get("author_name")
    ref = {"tag": commit["tag"]} if commit.get("tag") else {"branch": commit.get("branch")}
    return base.git_info(
        repository,
        commit["sha"],
        commit.get("author_email") or (base.author_email(name, repository, context) if repository else None),
        **ref,
        message=commit.get("message"),
        author_name=name,
        committer_name=commit.get("committer_name"),
        committer_email=commit.get("committer_email"),
        commit_time=rfc3339_or_none(commit.get("commit_time")),
    )


adapter = CircleCIAdapter()
