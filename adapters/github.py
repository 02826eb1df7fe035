"""GitHub Actions: ``workflow_run`` and ``workflow_job`` webhooks, signed with ``X-Hub-Signature-256``.

A workflow run becomes a Datadog pipeline and a workflow job a job of that pipeline (one pipeline per run
attempt). ``queued``/``requested``/``waiting`` are remembered for the queue time, ``in_progress`` sends a
running event, ``completed`` the final one. GitHub retries a delivery with the same ``X-GitHub-Delivery``, which
the core uses to accept each delivery once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import fields

from adapters import base
from adapters.base import QUEUED, HmacSignature, MappingContext, SourceRecord, Step, WebhookSource
from adapters.payload import PayloadSchema, SourceTime, optional_text, read_source_time, rfc3339_or_none
from adapters.target import RUNNING, rfc3339

PROVIDER = "github"
WORKFLOW_RUN, WORKFLOW_JOB = "workflow_run", "workflow_job"
ACTION_STATUS = {"requested": QUEUED, "queued": QUEUED, "waiting": QUEUED, "in_progress": RUNNING}
CONCLUSIONS = {
    "success": "success",
    "failure": "error",
    "cancelled": "canceled",
    "skipped": "skipped",
    "timed_out": "error",
    "action_required": "blocked",
    "neutral": "success",
    "stale": "canceled",
    "startup_failure": "error",
}
# "blocked" exists only for pipelines; a job that waits for approval never ran.
JOB_STATUS = {"blocked": "canceled"}
ERROR_DOMAINS = {"failure": "user", "timed_out": "user", "startup_failure": "user"}


class PersonSchema(PayloadSchema):
    name = optional_text()
    email = optional_text()


class CommitSchema(PayloadSchema):
    id = optional_text()
    message = optional_text()
    timestamp = SourceTime(allow_none=True)
    author = fields.Nested(PersonSchema, allow_none=True)
    committer = fields.Nested(PersonSchema, allow_none=True)


class RepositorySchema(PayloadSchema):
    full_name = fields.String(required=True)
    html_url = fields.String(required=True)


class LoginSchema(PayloadSchema):
    login = optional_text()


class PullRequestSchema(PayloadSchema):
    head = fields.Nested(PayloadSchema.from_dict({"ref": optional_text()}), allow_none=True)


class RunSchema(PayloadSchema):
    id = fields.Integer(required=True)
    name = optional_text()
    run_attempt = fields.Integer(load_default=1)
    run_number = fields.Integer(allow_none=True)
    event = optional_text()
    status = optional_text()
    conclusion = optional_text()
    head_branch = optional_text()
    head_sha = fields.String(required=True)
    html_url = fields.String(required=True)
    created_at = SourceTime(allow_none=True)
    run_started_at = SourceTime(allow_none=True)
    updated_at = SourceTime(allow_none=True)
    head_commit = fields.Nested(CommitSchema, allow_none=True)
    actor = fields.Nested(LoginSchema, allow_none=True)
    pull_requests = fields.List(fields.Nested(PullRequestSchema), load_default=list)


class StepSchema(PayloadSchema):
    name = optional_text()
    conclusion = optional_text()


class JobSchema(PayloadSchema):
    id = fields.Integer(required=True)
    run_id = fields.Integer(required=True)
    run_attempt = fields.Integer(load_default=1)
    name = fields.String(required=True)
    workflow_name = optional_text()
    head_branch = optional_text()
    head_sha = fields.String(required=True)
    html_url = fields.String(required=True)
    status = optional_text()
    conclusion = optional_text()
    created_at = SourceTime(allow_none=True)
    started_at = SourceTime(allow_none=True)
    completed_at = SourceTime(allow_none=True)
    labels = fields.List(fields.String(), load_default=list)
    runner_name = optional_text()
    steps = fields.List(fields.Nested(StepSchema), load_default=list)


class WorkflowRunEventSchema(PayloadSchema):
    action = fields.String(required=True)
    workflow_run = fields.Nested(RunSchema, required=True)
    workflow = fields.Nested(PayloadSchema.from_dict({"name": optional_text()}), allow_none=True)
    repository = fields.Nested(RepositorySchema, required=True)
    sender = fields.Nested(LoginSchema, allow_none=True)


class WorkflowJobEventSchema(PayloadSchema):
    action = fields.String(required=True)
    workflow_job = fields.Nested(JobSchema, required=True)
    repository = fields.Nested(RepositorySchema, required=True)
    sender = fields.Nested(LoginSchema, allow_none=True)


class GitHubAdapter(WebhookSource):
    """``POST /hooks/github``; configure the webhook with content type ``application/json``."""

    name = PROVIDER
    auth = HmacSignature("X-Hub-Signature-256", "sha256=")
    schemas = {WORKFLOW_RUN: WorkflowRunEventSchema(), WORKFLOW_JOB: WorkflowJobEventSchema()}
    kind_header = "X-GitHub-Event"

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        status = _status(values["action"], values[kind].get("conclusion"))
        if status is None:
            return None
        repository = values["repository"]["full_name"]
        item = values[kind]
        key = f"run:{item['id']}:{item['run_attempt']}" if kind == WORKFLOW_RUN else f"job:{item['id']}"
        delivery_id = base.header(headers, "X-GitHub-Delivery")
        return SourceRecord(
            kind, f"{repository}#{key}", repository, values, delivery_id, status, _branch(item), item["head_sha"]
        )

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        if record.event_type == WORKFLOW_RUN:
            return [_pipeline(record, history, context)]
        return [_job(record, history, context)]


def _branch(item: Mapping[str, Any]) -> str | None:
    """The branch a user knows the run by. ``head_branch`` is a branch name, except in runs GitHub starts itself
    (CodeQL's default setup sends ``refs/pull/166/head``): then the pull request's own branch when the payload
    names it, else the ref as ``git`` shows it (``pull/166/head``)."""
    head = item.get("head_branch")
    if not head or not head.startswith("refs/"):
        return head or None
    pulls = [pull for pull in item.get("pull_requests") or [] if (pull.get("head") or {}).get("ref")]
    return pulls[0]["head"]["ref"] if pulls else base.split_ref(head)[0]


def _status(action: str, conclusion: str | None) -> str | None:
    if action == "completed":
        return CONCLUSIONS.get(conclusion or "", "error")
    return ACTION_STATUS.get(action)


def _pipeline_uuid(context: MappingContext, repository: str, run_id: int, attempt: int) -> str:
    return context.run_uuid(PROVIDER, repository, "run", run_id, attempt)


def _pipeline(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    run, repository = values["workflow_run"], values["repository"]
    workflow_name = (values.get("workflow") or {}).get("name")
    created = read_source_time(run.get("created_at"))
    started = (
        read_source_time(run.get("run_started_at"))
        or created
        or base.first_received(record, history, context.received_at)
    )
    commit = run.get("head_commit") or {}
    author, committer = commit.get("author") or {}, commit.get("committer") or {}
    login = (run.get("actor") or values.get("sender") or {}).get("login")
    git = base.git_info(
        repository["html_url"],
        run["head_sha"],
        author.get("email") or base.author_email(login, repository["html_url"], context),
        branch=_branch(run),
        message=commit.get("message"),
        author_name=author.get("name"),
        committer_name=committer.get("name"),
        committer_email=committer.get("email"),
        commit_time=rfc3339_or_none(commit.get("timestamp")),
    )
    resource = base.pipeline_resource(
        _pipeline_uuid(context, repository["full_name"], run["id"], run["run_attempt"]),
        run.get("name") or workflow_name or repository["full_name"],
        run["html_url"],
        rfc3339(started),
        pipeline_id=str(run["id"]),
        queue_time=base.milliseconds_between(created, started),
        is_manual=run["event"] == "workflow_dispatch" if run.get("event") else None,
        git=git,
    )
    tags = [f"github.repository:{repository['full_name']}", f"github.run_attempt:{run['run_attempt']}"]
    if run.get("event"):
        tags.append(f"github.event:{run['event']}")
    if record.status != RUNNING:
        _finish(
            resource,
            str(record.status),
            run.get("updated_at"),
            context,
            tags,
            run.get("conclusion"),
            f"workflow run {run['id']}",
        )
    resource["tags"] = tags
    return resource


def _job(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    job, repository = values["workflow_job"], values["repository"]
    created = read_source_time(job.get("created_at"))
    started = read_source_time(job.get("started_at")) or base.first_received(record, history, context.received_at)
    login = (values.get("sender") or {}).get("login")
    git = base.git_info(
        repository["html_url"],
        job["head_sha"],
        base.author_email(login, repository["html_url"], context),
        branch=_branch(job),
    )
    resource = base.job_resource(
        context.run_uuid(PROVIDER, repository["full_name"], "job", job["id"]),
        job["name"],
        (
            _pipeline_uuid(context, repository["full_name"], job["run_id"], job["run_attempt"]),
            job.get("workflow_name") or repository["full_name"],
        ),
        job["html_url"],
        rfc3339(started),
        queue_time=base.milliseconds_between(created, started),
        git=git,
        node={"name": job["runner_name"], "labels": job["labels"]} if job.get("runner_name") else None,
    )
    tags = [f"github.repository:{repository['full_name']}", f"github.run_attempt:{job['run_attempt']}"]
    if record.status != RUNNING:
        status = JOB_STATUS.get(str(record.status), str(record.status))
        failed = [step["name"] for step in job["steps"] if step.get("conclusion") == "failure" and step.get("name")]
        what = f"job {job['name']!r}" + (f" (step {failed[0]!r})" if failed else "")
        _finish(resource, status, job.get("completed_at"), context, tags, job.get("conclusion"), what)
    resource["tags"] = tags
    return resource


def _finish(
    resource: dict[str, Any],
    status: str,
    end: str | None,
    context: MappingContext,
    tags: list[str],
    conclusion: str | None,
    what: str,
) -> None:
    """Finish the run or job with the conclusion as a tag and, when it failed, in the error block."""
    tags.append(f"github.conclusion:{conclusion or 'unknown'}")
    message = f"GitHub Actions: {what} ended with {conclusion or 'no conclusion'}"
    error = base.error_block(ERROR_DOMAINS.get(conclusion or "", "unknown"), conclusion or "unknown", message)
    base.finish(resource, status, end, context, error)


adapter = GitHubAdapter()
