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
    delivery_id,
    first_received,
    git_info,
    header,
    hmac_sha256_hex,
    json_object,
    load,
    milliseconds_between,
    optional_text,
    parse_time,
    rfc3339,
    secrets_match,
    split_ref,
    transition,
)

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
    timestamp = Moment(allow_none=True)
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
    created_at = Moment(allow_none=True)
    run_started_at = Moment(allow_none=True)
    updated_at = Moment(allow_none=True)
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
    created_at = Moment(allow_none=True)
    started_at = Moment(allow_none=True)
    completed_at = Moment(allow_none=True)
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


SCHEMAS = {WORKFLOW_RUN: WorkflowRunEventSchema(), WORKFLOW_JOB: WorkflowJobEventSchema()}


class GitHubAdapter:
    """``POST /hooks/github``; configure the webhook with content type ``application/json``."""

    name = "github"

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The headers GitHub adds to a delivery, for tests and for replaying a saved payload."""
        return {"X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(secret, body)}

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        signature = header(headers, "X-Hub-Signature-256")
        if not signature:
            return "the X-Hub-Signature-256 header is missing"
        if not secrets_match(signature, "sha256=" + hmac_sha256_hex(secret, body)):
            return "the X-Hub-Signature-256 signature does not match the body"
        return None

    def parse(self, headers: Mapping[str, str], body: bytes) -> SourceRecord | None:
        event = header(headers, "X-GitHub-Event")
        if event not in SCHEMAS:
            return None  # ping and every event this adapter does not map
        values = load(SCHEMAS[event], json_object(body))
        status = _status(values["action"], values[event].get("conclusion"))
        if status is None:
            return None
        repository = values["repository"]["full_name"]
        item = values[event]
        key = f"{repository}#run:{item['id']}:{item['run_attempt']}" if event == WORKFLOW_RUN else None
        return SourceRecord(
            event_type=event,
            run_key=key or f"{repository}#job:{item['id']}",
            app_name=repository,
            fields=values,
            delivery_id=delivery_id(header(headers, "X-GitHub-Delivery")),
            status=status,
            branch=_branch(item),
            commit_id=item["head_sha"],
        )

    def map(self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> list[Outbound]:
        if transition(record, history) is None:
            return []
        if record.event_type == WORKFLOW_RUN:
            resource = _pipeline(record, history, context)
        else:
            resource = _job(record, history, context)
        return [ci_outbound(resource, PROVIDER, context)]


def _branch(item: Mapping[str, Any]) -> str | None:
    """The branch a user knows the run by. ``head_branch`` is a branch name, except in runs GitHub starts itself
    (CodeQL's default setup sends ``refs/pull/166/head``): then the pull request's own branch when the payload
    names it, else the ref as ``git`` shows it (``pull/166/head``)."""
    head = item.get("head_branch")
    if not head or not head.startswith("refs/"):
        return head or None
    pulls = [pull for pull in item.get("pull_requests") or [] if (pull.get("head") or {}).get("ref")]
    return pulls[0]["head"]["ref"] if pulls else split_ref(head)[0]


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
    created = parse_time(run.get("created_at"))
    started = parse_time(run.get("run_started_at")) or created or first_received(record, history, context.received_at)
    resource: dict[str, Any] = {
        "level": "pipeline",
        "unique_id": _pipeline_uuid(context, repository["full_name"], run["id"], run["run_attempt"]),
        "name": run.get("name") or workflow_name or repository["full_name"],
        "url": run["html_url"],
        "start": rfc3339(started),
        "status": RUNNING,
        "partial_retry": False,
        "pipeline_id": str(run["id"]),
        "queue_time": milliseconds_between(created, started),
    }
    if run.get("event"):
        resource["is_manual"] = run["event"] == "workflow_dispatch"
    commit = run.get("head_commit") or {}
    author, committer = commit.get("author") or {}, commit.get("committer") or {}
    login = (run.get("actor") or values.get("sender") or {}).get("login")
    git = git_info(
        repository["html_url"],
        run["head_sha"],
        author.get("email") or author_email(login, repository["html_url"], context),
        branch=_branch(run),
        message=commit.get("message"),
        author_name=author.get("name"),
        committer_name=committer.get("name"),
        committer_email=committer.get("email"),
        commit_time=_rfc3339_or_none(commit.get("timestamp")),
    )
    if git:
        resource["git"] = git
    tags = [f"github.repository:{repository['full_name']}", f"github.run_attempt:{run['run_attempt']}"]
    if run.get("event"):
        tags.append(f"github.event:{run['event']}")
    if record.status != RUNNING:
        resource["status"] = record.status
        resource["end"] = run.get("updated_at") or rfc3339(context.received_at)
        _finish(resource, tags, run.get("conclusion"), f"workflow run {run['id']}")
    resource["tags"] = tags
    return resource


def _job(record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext) -> dict[str, Any]:
    values = record.fields
    job, repository = values["workflow_job"], values["repository"]
    created = parse_time(job.get("created_at"))
    started = parse_time(job.get("started_at")) or first_received(record, history, context.received_at)
    resource: dict[str, Any] = {
        "level": "job",
        "id": context.run_uuid(PROVIDER, repository["full_name"], "job", job["id"]),
        "name": job["name"],
        "pipeline_unique_id": _pipeline_uuid(context, repository["full_name"], job["run_id"], job["run_attempt"]),
        "pipeline_name": job.get("workflow_name") or repository["full_name"],
        "url": job["html_url"],
        "start": rfc3339(started),
        "status": RUNNING,
        "queue_time": milliseconds_between(created, started),
    }
    login = (values.get("sender") or {}).get("login")
    git = git_info(
        repository["html_url"],
        job["head_sha"],
        author_email(login, repository["html_url"], context),
        branch=_branch(job),
    )
    if git:
        resource["git"] = git
    if job.get("runner_name"):
        resource["node"] = {"name": job["runner_name"], "labels": job["labels"]}
    tags = [f"github.repository:{repository['full_name']}", f"github.run_attempt:{job['run_attempt']}"]
    if record.status != RUNNING:
        resource["status"] = JOB_STATUS.get(str(record.status), record.status)
        resource["end"] = job.get("completed_at") or rfc3339(context.received_at)
        failed = [step["name"] for step in job["steps"] if step.get("conclusion") == "failure" and step.get("name")]
        what = f"job {job['name']!r}" + (f" (step {failed[0]!r})" if failed else "")
        _finish(resource, tags, job.get("conclusion"), what)
    resource["tags"] = tags
    return resource


def _finish(resource: dict[str, Any], tags: list[str], conclusion: str | None, what: str) -> None:
    """Add the conclusion tag, and the error block when the run or job failed."""
    tags.append(f"github.conclusion:{conclusion or 'unknown'}")
    if resource["status"] == "error":
        resource["error"] = {
            "domain": ERROR_DOMAINS.get(conclusion or "", "unknown"),
            "type": conclusion or "unknown",
            "message": f"GitHub Actions: {what} ended with {conclusion or 'no conclusion'}",
        }


def _rfc3339_or_none(value: str | None) -> str | None:
    moment = parse_time(value)
    return rfc3339(moment) if moment else None


adapter = GitHubAdapter()
