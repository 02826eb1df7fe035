"""GitLab CI: Pipeline Hook and Job Hook webhooks, authenticated by the ``X-Gitlab-Token`` secret.

A pipeline becomes a Datadog pipeline and, once it is final, one stage event per stage of the jobs the hook
carries; a Job Hook becomes a job of that pipeline in its stage. ``running`` sends a running event,
``success``/``failed``/``canceled``/``skipped`` the final one, and every waiting status (``created``,
``pending``, ``manual``...) is remembered for the queue time only. GitLab's ``Idempotency-Key`` (or, on older
versions, ``X-Gitlab-Event-UUID``) is the delivery id.

Older GitLab versions send Job Hooks without a ``project`` object (only ``project_id``, ``project_name`` and
``repository``) and Pipeline Hooks whose ``project`` has no ``id``; a body without ``object_kind`` is read by its
``X-Gitlab-Event`` header.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from marshmallow import fields, validate

from adapters import base
from adapters.base import QUEUED, MappingContext, Rejected, SharedToken, SourceRecord, Step, WebhookSource
from adapters.payload import PayloadSchema, SourceTime, optional_text, read_source_time, rfc3339_or_none
from adapters.target import MAX_DURATION, RUNNING, rfc3339

PROVIDER = "gitlab"
PIPELINE, JOB = "pipeline", "build"
# X-Gitlab-Event names, for bodies without object_kind ("Build Hook" is what GitLab 8 called a Job Hook).
EVENT_HEADERS = {"Pipeline Hook": PIPELINE, "Job Hook": JOB, "Build Hook": JOB}
STATUSES = {"running": RUNNING, "success": "success", "failed": "error", "canceled": "canceled", "skipped": "skipped"}
NEVER_RAN = frozenset({"created", "manual", "skipped", "scheduled", "pending", "waiting_for_resource", "preparing"})


def _seconds() -> fields.Float:
    """A duration in seconds: at most a year (what the intake takes), so no time it is added to overflows."""
    return fields.Float(
        allow_none=True, allow_nan=False, validate=validate.Range(min=0, max=MAX_DURATION.total_seconds())
    )


class ProjectSchema(PayloadSchema):
    id = fields.Integer(allow_none=True)
    web_url = fields.String(required=True)
    path_with_namespace = fields.String(required=True)


class RepositorySchema(PayloadSchema):
    homepage = optional_text()


class UserSchema(PayloadSchema):
    username = optional_text()
    email = optional_text()


class RunnerSchema(PayloadSchema):
    description = optional_text()
    tags = fields.List(fields.String(), load_default=list)


class BuildSchema(PayloadSchema):
    id = fields.Integer(required=True)
    stage = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True)
    allow_failure = fields.Boolean(load_default=False)
    started_at = SourceTime(allow_none=True)
    finished_at = SourceTime(allow_none=True)


class PipelineAttributesSchema(PayloadSchema):
    id = fields.Integer(required=True)
    iid = fields.Integer(allow_none=True)
    name = optional_text()
    ref = optional_text()
    tag = fields.Boolean(load_default=False)
    sha = fields.String(required=True)
    source = optional_text()
    status = fields.String(required=True)
    stages = fields.List(fields.String(), load_default=list)
    created_at = SourceTime(allow_none=True)
    finished_at = SourceTime(allow_none=True)
    queued_duration = _seconds()
    url = optional_text()


class CommitSchema(PayloadSchema):
    message = optional_text()
    timestamp = SourceTime(allow_none=True)
    author = fields.Nested(
        PayloadSchema.from_dict({"name": optional_text(), "email": optional_text()}), allow_none=True
    )


class PipelineHookSchema(PayloadSchema):
    object_attributes = fields.Nested(PipelineAttributesSchema, required=True)
    project = fields.Nested(ProjectSchema, required=True)
    user = fields.Nested(UserSchema, allow_none=True)
    commit = fields.Nested(CommitSchema, allow_none=True)
    builds = fields.List(fields.Nested(BuildSchema), load_default=list)


class JobCommitSchema(PayloadSchema):
    id = fields.Integer(allow_none=True)  # the pipeline's id (GitLab 8 called a pipeline a commit)
    message = optional_text()
    author_name = optional_text()
    author_email = optional_text()


class JobHookSchema(PayloadSchema):
    ref = optional_text()
    tag = fields.Boolean(load_default=False)
    sha = fields.String(required=True)
    build_id = fields.Integer(required=True)
    build_name = fields.String(required=True)
    build_stage = fields.String(required=True)
    build_status = fields.String(required=True)
    build_created_at = SourceTime(allow_none=True)
    build_started_at = SourceTime(allow_none=True)
    build_finished_at = SourceTime(allow_none=True)
    build_queued_duration = _seconds()
    build_allow_failure = fields.Boolean(load_default=False)
    build_failure_reason = optional_text()
    pipeline_id = fields.Integer(allow_none=True)
    project_id = fields.Integer(required=True)
    project = fields.Nested(ProjectSchema, allow_none=True)
    repository = fields.Nested(RepositorySchema, allow_none=True)
    user = fields.Nested(UserSchema, allow_none=True)
    commit = fields.Nested(JobCommitSchema, allow_none=True)
    runner = fields.Nested(RunnerSchema, allow_none=True)


class GitLabAdapter(WebhookSource):
    """``POST /hooks/gitlab``; set the webhook's secret token and tick "Pipeline events" and "Job events"."""

    name = PROVIDER
    auth = SharedToken("X-Gitlab-Token")
    schemas = {PIPELINE: PipelineHookSchema(), JOB: JobHookSchema()}

    kind_field, kind_header, header_kinds = "object_kind", "X-Gitlab-Event", EVENT_HEADERS

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        if kind == JOB:
            _complete_job(values)
        project = values["project"]
        if kind == PIPELINE:
            run = values["object_attributes"]
            key, status = f"pipeline:{run['id']}", run["status"]
        else:
            run = values
            key, status = f"job:{values['build_id']}", values["build_status"]
        run_key, app_name = f"{_project_key(project)}#{key}", project["path_with_namespace"]
        delivery_id = base.header(headers, "Idempotency-Key") or base.header(headers, "X-Gitlab-Event-UUID")
        branch = None if run.get("tag") else run.get("ref")
        return SourceRecord(
            kind, run_key, app_name, values, delivery_id, STATUSES.get(status, QUEUED), branch, run["sha"]
        )

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        if record.event_type == JOB:
            return [_job(record, history, context)]
        pipeline = _pipeline(record, history, context)
        stages = _stages(record.fields, pipeline, context) if step == Step.FINAL else []
        return [pipeline, *stages]


def _complete_job(values: dict[str, Any]) -> None:
    """Fill in what older GitLab versions leave out of a Job Hook: ``project`` (they send only ``project_id`` and
    ``repository``) and ``pipeline_id`` (GitLab 8 sends it as ``commit.id``)."""
    if not values.get("project"):
        values["project"] = _job_project(values)
    if values.get("pipeline_id") is None:
        values["pipeline_id"] = (values.get("commit") or {}).get("id")
    if values["pipeline_id"] is None:
        raise Rejected(
            "A Job Hook needs its pipeline_id.", fields={"pipeline_id": ["Missing data for required field."]}
        )


def _job_project(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``project`` of a Job Hook from a GitLab version that sends only ``project_id`` and ``repository``."""
    homepage = (values.get("repository") or {}).get("homepage")
    if not homepage or urlsplit(homepage).scheme not in ("http", "https"):
        raise Rejected(
            "A Job Hook needs the project's web address: GitLab sends it as project.web_url or repository.homepage.",
            fields={"project": ["Missing data for required field."]},
        )
    path = urlsplit(homepage).path.strip("/")
    return {"id": values["project_id"], "web_url": homepage.rstrip("/"), "path_with_namespace": path}


def _project_key(project: Mapping[str, Any]) -> Any:
    """What identifies a project in run keys and ids: its id, or its path when an old GitLab sends no id."""
    return project["id"] if project.get("id") is not None else project["path_with_namespace"]


def _pipeline_uuid(context: MappingContext, project: Mapping[str, Any], pipeline_id: int) -> str:
    return context.run_uuid(PROVIDER, _project_key(project), "pipeline", pipeline_id)


def _stage_uuid(context: MappingContext, project: Mapping[str, Any], pipeline_id: int, stage: str) -> str:
    return context.run_uuid(PROVIDER, _project_key(project), "pipeline", pipeline_id, "stage", stage)


def _git(
    project: Mapping[str, Any], values: Mapping[str, Any], email: str | None, context: MappingContext, **extra: Any
) -> dict[str, Any] | None:
    ref_key = "tag" if values.get("tag") else "branch"
    username = (values.get("user") or {}).get("username")
    email = email or (values.get("user") or {}).get("email") or base.author_email(username, project["web_url"], context)
    return base.git_info(project["web_url"], values["sha"], email, **{ref_key: values.get("ref")}, **extra)


def _pipeline(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    attributes, project = values["object_attributes"], values["project"]
    created = read_source_time(attributes.get("created_at")) or base.first_received(
        record, history, context.received_at
    )
    queue_ms = int((attributes.get("queued_duration") or 0) * 1000)
    commit = values.get("commit") or {}
    author = commit.get("author") or {}
    git = _git(
        project,
        attributes | {"user": values.get("user")},
        author.get("email"),
        context,
        message=commit.get("message"),
        author_name=author.get("name"),
        commit_time=rfc3339_or_none(commit.get("timestamp")),
    )
    resource = base.pipeline_resource(
        _pipeline_uuid(context, project, attributes["id"]),
        project["path_with_namespace"],
        attributes.get("url") or f"{project['web_url']}/-/pipelines/{attributes['id']}",
        rfc3339(created + dt.timedelta(milliseconds=queue_ms)),
        pipeline_id=str(attributes["id"]),
        queue_time=queue_ms,
        is_manual=attributes["source"] == "web" if attributes.get("source") else None,
        git=git,
    )
    tags = [f"gitlab.project:{project['path_with_namespace']}"]
    if attributes.get("source"):
        tags.append(f"gitlab.source:{attributes['source']}")
    if record.status != RUNNING:
        failed = [build["name"] for build in values["builds"] if _failed(build)]
        which = f" (job {failed[0]!r})" if failed else ""
        error = _error("pipeline_failed", f"GitLab: pipeline {attributes['id']} failed{which}")
        base.finish(resource, str(record.status), attributes.get("finished_at"), context, error)
    resource["tags"] = tags
    return resource


def _stages(values: Mapping[str, Any], pipeline: Mapping[str, Any], context: MappingContext) -> list[dict[str, Any]]:
    """One finished stage per stage the pipeline's jobs ran in, in the order the pipeline declares them."""
    project, attributes = values["project"], values["object_attributes"]
    by_stage: dict[str, list[Mapping[str, Any]]] = {}
    for build in sorted(values["builds"], key=lambda build: build["id"]):
        by_stage.setdefault(build["stage"], []).append(build)
    order = [name for name in attributes["stages"] if name in by_stage]
    order += sorted(name for name in by_stage if name not in order)
    stages = []
    for name in order:
        builds = by_stage[name]
        starts = [moment for build in builds if (moment := read_source_time(build.get("started_at")))]
        ends = [moment for build in builds if (moment := read_source_time(build.get("finished_at")))]
        end = max(ends) if ends else read_source_time(pipeline["end"]) or context.received_at
        stage: dict[str, Any] = {
            "level": "stage",
            "id": _stage_uuid(context, project, attributes["id"], name),
            "name": name,
            "pipeline_unique_id": pipeline["unique_id"],
            "pipeline_name": pipeline["name"],
            "start": rfc3339(min(starts) if starts else end),
            "end": rfc3339(end),
            "status": _stage_status(builds),
        }
        if stage["status"] == "error":
            failed = [build["name"] for build in builds if _failed(build)]
            stage["error"] = _error("stage_failed", f"GitLab: stage {name!r} failed (job {failed[0]!r})")
        if "git" in pipeline:
            stage["git"] = pipeline["git"]
        stages.append(stage)
    return stages


def _failed(build: Mapping[str, Any]) -> bool:
    return bool(build["status"] == "failed" and not build["allow_failure"])


def _stage_status(builds: Sequence[Mapping[str, Any]]) -> str:
    statuses = {build["status"] for build in builds}
    if any(_failed(build) for build in builds):
        return "error"
    if "canceled" in statuses:
        return "canceled"
    if statuses <= NEVER_RAN:
        return "skipped"
    return "success"


def _job(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    project = values["project"]
    created = read_source_time(values.get("build_created_at"))
    started = read_source_time(values.get("build_started_at")) or base.first_received(
        record, history, context.received_at
    )
    queue_ms = int((values.get("build_queued_duration") or 0) * 1000) or base.milliseconds_between(created, started)
    commit = values.get("commit") or {}
    git = _git(
        project,
        values,
        commit.get("author_email"),
        context,
        message=commit.get("message"),
        author_name=commit.get("author_name"),
    )
    runner = values.get("runner") or {}
    resource = base.job_resource(
        context.run_uuid(PROVIDER, _project_key(project), "job", values["build_id"]),
        values["build_name"],
        (_pipeline_uuid(context, project, values["pipeline_id"]), project["path_with_namespace"]),
        f"{project['web_url']}/-/jobs/{values['build_id']}",
        rfc3339(started),
        queue_time=queue_ms,
        stage_name=values["build_stage"],
        stage_id=_stage_uuid(context, project, values["pipeline_id"], values["build_stage"]),
        git=git,
        node={"name": runner["description"], "labels": runner["tags"]} if runner.get("description") else None,
    )
    tags = [f"gitlab.project:{project['path_with_namespace']}"]
    if record.status != RUNNING:
        reason = values.get("build_failure_reason") or "unknown_failure"
        error = _error(reason, f"GitLab: job {values['build_name']!r} failed ({reason})")
        base.finish(resource, str(record.status), values.get("build_finished_at"), context, error)
        if record.status == "error":
            tags.append(f"gitlab.allow_failure:{str(values['build_allow_failure']).lower()}")
    resource["tags"] = tags
    return resource


USER_FAILURES = frozenset({"script_failure", "pipeline_failed", "stage_failed"})


def _error(kind: str, message: str) -> dict[str, str]:
    return base.error_block("user" if kind in USER_FAILURES else "unknown", kind, message)


adapter = GitLabAdapter()
