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

from adapters.base import (
    MAX_DURATION,
    QUEUED,
    RUNNING,
    MappingContext,
    Moment,
    Outbound,
    PayloadSchema,
    Rejected,
    SourceRecord,
    author_email,
    ci_outbound,
    delivery_id,
    first_received,
    git_info,
    header,
    json_object,
    load,
    milliseconds_between,
    optional_text,
    parse_time,
    rfc3339,
    secrets_match,
    transition,
)

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
    started_at = Moment(allow_none=True)
    finished_at = Moment(allow_none=True)


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
    created_at = Moment(allow_none=True)
    finished_at = Moment(allow_none=True)
    queued_duration = _seconds()
    url = optional_text()


class CommitSchema(PayloadSchema):
    message = optional_text()
    timestamp = Moment(allow_none=True)
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
    build_created_at = Moment(allow_none=True)
    build_started_at = Moment(allow_none=True)
    build_finished_at = Moment(allow_none=True)
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


SCHEMAS = {PIPELINE: PipelineHookSchema(), JOB: JobHookSchema()}


class GitLabAdapter:
    """``POST /hooks/gitlab``; set the webhook's secret token and tick "Pipeline events" and "Job events"."""

    name = "gitlab"

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The header GitLab adds to every delivery."""
        return {"X-Gitlab-Token": secret}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        token = header(headers, "X-Gitlab-Token")
        if not token:
            return "the X-Gitlab-Token header is missing"
        if not secrets_match(token, secret):
            return "the X-Gitlab-Token header does not match"
        return None

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        data = json_object(body)
        kind = data.get("object_kind")
        if kind is None:
            kind = EVENT_HEADERS.get(header(headers, "X-Gitlab-Event") or "")
        if kind is not None and not isinstance(kind, str):
            raise Rejected("Some fields are invalid.", fields={"object_kind": ["Not a valid string."]})
        if kind not in SCHEMAS:
            return None
        values = load(SCHEMAS[kind], data)
        if kind == JOB:
            _complete_job(values)
        delivery = delivery_id(header(headers, "Idempotency-Key") or header(headers, "X-Gitlab-Event-UUID"))
        project = values["project"]
        if kind == PIPELINE:
            run = values["object_attributes"]
            key, status = f"pipeline:{run['id']}", run["status"]
        else:
            run = values
            key, status = f"job:{values['build_id']}", values["build_status"]
        return SourceRecord(
            event_type=kind,
            run_key=f"{_project_key(project)}#{key}",
            app_name=project["path_with_namespace"],
            fields=values,
            delivery_id=delivery,
            status=STATUSES.get(status, QUEUED),
            branch=None if run.get("tag") else run.get("ref"),
            commit_id=run["sha"],
        )

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        step = transition(record, history)
        if step is None:
            return []
        if record.event_type == JOB:
            return [ci_outbound(_job(record, history, context), PROVIDER, context)]
        pipeline = _pipeline(record, history, context)
        outbounds = [ci_outbound(pipeline, PROVIDER, context)]
        if step == "final":
            outbounds += [ci_outbound(stage, PROVIDER, context) for stage in _stages(record.fields, pipeline, context)]
        return outbounds


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
    email = email or (values.get("user") or {}).get("email") or author_email(username, project["web_url"], context)
    return git_info(project["web_url"], values["sha"], email, **{ref_key: values.get("ref")}, **extra)


def _pipeline(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    attributes, project = values["object_attributes"], values["project"]
    created = parse_time(attributes.get("created_at")) or first_received(record, history, context.received_at)
    queue_ms = int((attributes.get("queued_duration") or 0) * 1000)
    resource: dict[str, Any] = {
        "level": "pipeline",
        "unique_id": _pipeline_uuid(context, project, attributes["id"]),
        "name": project["path_with_namespace"],
        "url": attributes.get("url") or f"{project['web_url']}/-/pipelines/{attributes['id']}",
        "start": rfc3339(created + dt.timedelta(milliseconds=queue_ms)),
        "status": RUNNING,
        "partial_retry": False,
        "pipeline_id": str(attributes["id"]),
        "queue_time": queue_ms,
    }
    if attributes.get("source"):
        resource["is_manual"] = attributes["source"] == "web"
    commit = values.get("commit") or {}
    author = commit.get("author") or {}
    commit_time = parse_time(commit.get("timestamp"))
    git = _git(
        project,
        attributes | {"user": values.get("user")},
        author.get("email"),
        context,
        message=commit.get("message"),
        author_name=author.get("name"),
        commit_time=rfc3339(commit_time) if commit_time else None,
    )
    if git:
        resource["git"] = git
    tags = [f"gitlab.project:{project['path_with_namespace']}"]
    if attributes.get("source"):
        tags.append(f"gitlab.source:{attributes['source']}")
    if record.status != RUNNING:
        resource["status"] = record.status
        resource["end"] = attributes.get("finished_at") or rfc3339(context.received_at)
        if record.status == "error":
            failed = [build["name"] for build in values["builds"] if _failed(build)]
            which = f" (job {failed[0]!r})" if failed else ""
            resource["error"] = _error("pipeline_failed", f"GitLab: pipeline {attributes['id']} failed{which}")
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
        starts = [moment for build in builds if (moment := parse_time(build.get("started_at")))]
        ends = [moment for build in builds if (moment := parse_time(build.get("finished_at")))]
        end = max(ends) if ends else parse_time(pipeline["end"]) or context.received_at
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
    created = parse_time(values.get("build_created_at"))
    started = parse_time(values.get("build_started_at")) or first_received(record, history, context.received_at)
    queue_ms = int((values.get("build_queued_duration") or 0) * 1000) or milliseconds_between(created, started)
    resource: dict[str, Any] = {
        "level": "job",
        "id": context.run_uuid(PROVIDER, _project_key(project), "job", values["build_id"]),
        "name": values["build_name"],
        "pipeline_unique_id": _pipeline_uuid(context, project, values["pipeline_id"]),
        "pipeline_name": project["path_with_namespace"],
        "url": f"{project['web_url']}/-/jobs/{values['build_id']}",
        "start": rfc3339(started),
        "status": RUNNING,
        "queue_time": queue_ms,
        "stage_name": values["build_stage"],
        "stage_id": _stage_uuid(context, project, values["pipeline_id"], values["build_stage"]),
    }
    commit = values.get("commit") or {}
    git = _git(
        project,
        values,
        commit.get("author_email"),
        context,
        message=commit.get("message"),
        author_name=commit.get("author_name"),
    )
    if git:
        resource["git"] = git
    runner = values.get("runner") or {}
    if runner.get("description"):
        resource["node"] = {"name": runner["description"], "labels": runner["tags"]}
    tags = [f"gitlab.project:{project['path_with_namespace']}"]
    if record.status != RUNNING:
        resource["status"] = record.status
        resource["end"] = values.get("build_finished_at") or rfc3339(context.received_at)
        if record.status == "error":
            reason = values.get("build_failure_reason") or "unknown_failure"
            resource["error"] = _error(reason, f"GitLab: job {values['build_name']!r} failed ({reason})")
            tags.append(f"gitlab.allow_failure:{str(values['build_allow_failure']).lower()}")
    resource["tags"] = tags
    return resource


USER_FAILURES = frozenset({"script_failure", "pipeline_failed", "stage_failed"})


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"domain": "user" if kind in USER_FAILURES else "unknown", "type": kind, "message": message}


adapter = GitLabAdapter()
