"""The Distelli (Puppet Pipelines) Events API: request schemas, build lifecycle, and the Datadog mapping.

Everything here is pure: the routes in ``bridge.routes.events`` validate with these schemas, the core stores what
:func:`advance_build` returns, and :func:`translate` turns a stored event (plus its related push or pull request)
into intake bodies. Tests drive it with plain dicts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from adapters.base import (
    CI_PIPELINE,
    DORA_DEPLOYMENT,
    MappingContext,
    Outbound,
    clamp_future,
    expiry_reason,
    pipeline_request,
    rfc3339,
)

BUILD, PUSH, PULL_REQUEST, DEPLOY = "BUILD", "PUSH", "PULL_REQUEST", "DEPLOY"
WAITING_STATES = ("Waiting", "Queued")
TERMINAL_STATES = ("Success", "Failed", "TimedOut", "Cancelled")
BUILD_STATES = (*WAITING_STATES, "Running", *TERMINAL_STATES)
DEPLOY_STATES = ("Waiting", "Queued", "Running", *TERMINAL_STATES)

_STATE_ALIASES = {state.lower(): state for state in BUILD_STATES} | {
    "canceled": "Cancelled",
    "timed_out": "TimedOut",
    "timeout": "TimedOut",
    "succeeded": "Success",
    "failure": "Failed",
}

_DD_STATUS = {"Success": "success", "Failed": "error", "TimedOut": "error", "Cancelled": "canceled"}

PROVIDER_NAMES = {
    "jenkins": "jenkins",
    "circleci": "circleci",
    "travisci": "travisci",
    "travis": "travisci",
    "codeship": "codeship",
    "azuredevops": "azurepipelines",
    "azurepipelines": "azurepipelines",
}

REPO_HOSTS = {
    "github": "github.com",
    "gitlab": "gitlab.com",
    "bitbucket": "bitbucket.org",
    "azuredevops": "dev.azure.com",
}

GIT_FIELDS = (
    "repo_url",
    "commit_url",
    "repo_owner",
    "repo_name",
    "repo_provider",
    "author_username",
    "author_name",
    "commit_msg",
    "commit_id",
    "branch",
)
PUSH_FIELDS = tuple(sorted(GIT_FIELDS))
BUILD_FIELDS = tuple(
    sorted(
        (
            *GIT_FIELDS,
            "auto_build",
            "build_end",
            "build_id",
            "build_provider",
            "build_start",
            "build_status",
            "build_url",
            "parent_event_id",
            "release_version",
        )
    )
)
DEPLOY_FIELDS = tuple(
    sorted(
        (
            *GIT_FIELDS,
            "auto_deploy",
            "deploy_end",
            "deploy_start",
            "deployment_id",
            "deployment_number",
            "deployment_status",
            "deployment_type",
            "env_name",
            "parent_event_id",
            "release_version",
        )
    )
)
FIELDS_BY_TYPE = {BUILD: BUILD_FIELDS, PUSH: PUSH_FIELDS, PULL_REQUEST: PUSH_FIELDS, DEPLOY: DEPLOY_FIELDS}
TIME_FIELDS = frozenset({"build_start", "build_end", "deploy_start", "deploy_end"})

_SHA = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")
_URL_COMMIT_SUFFIX = re.compile(r"/(?:-/)?commits?/[0-9a-fA-F]+/?$")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Identifier(fields.String):
    """A string the way sloppy clients send it: numbers are accepted and kept as their text.

    NUL characters and unpaired surrogates are refused: PostgreSQL cannot store them and Datadog cannot read them.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if _UNSTORABLE.search(text):
            raise ValidationError("Must not contain NUL characters or unpaired surrogates.")
        return text


class Moment(fields.AwareDateTime):
    """An ISO 8601 time, naive ones taken as UTC, held in UTC; a time that leaves the calendar in UTC is refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        moment: dt.datetime = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError("Not a valid datetime.") from None


class State(fields.String):
    """A build or deploy status in any case, normalised to the spec's spelling."""

    def __init__(self, allowed: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = tuple(allowed)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        state = _STATE_ALIASES.get(text.strip().lower().replace(" ", ""))
        if state is None or state not in self.allowed:
            raise ValidationError(f"Must be one of: {', '.join(self.allowed)}.")
        return state


def _text(limit: int = 2000) -> fields.Field:
    return Identifier(allow_none=True, validate=validate.Length(max=limit))


def _time() -> fields.Field:
    return Moment(allow_none=True, default_timezone=dt.UTC)


class _DistelliSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    repo_url = _text()
    commit_url = _text()
    repo_owner = _text(200)
    repo_name = _text(400)
    repo_provider = _text(100)
    author_username = _text(200)
    author_name = _text(400)
    commit_msg = _text(65_536)
    commit_id = _text(200)
    branch = _text(400)


class PushEventSchema(_DistelliSchema):
    """CreatePushEvent and CreatePullRequestEvent bodies: the repository and commit being pushed."""


class PullRequestEventSchema(_DistelliSchema):
    """CreatePullRequestEvent: the same fields as a push."""


def _check_order(data: Mapping[str, Any], start: str, end: str) -> None:
    if data.get(start) and data.get(end) and data[end] < data[start]:
        raise ValidationError({end: [f"Must not be before {start}."]})


class BuildEventSchema(_DistelliSchema):
    """CreateBuildEvent; also UpdateBuildEvent, since clients re-send any build field on update."""

    build_status = State(BUILD_STATES, allow_none=True)
    build_start = _time()
    build_end = _time()
    auto_build = fields.Boolean(allow_none=True)
    build_id = _text(200)
    build_provider = _text(100)
    build_url = _text()
    parent_event_id = _text(40)
    release_version = _text(200)

    @validates_schema
    def _end_after_start(self, data: dict[str, Any], **_: Any) -> None:
        _check_order(data, "build_start", "build_end")


class DeployEventSchema(_DistelliSchema):
    """PutDeployEvent, the bridge's extension for the deploy events ListEvents has always shown."""

    deployment_id = _text(200)
    deployment_number = _text(100)
    deployment_status = State(DEPLOY_STATES, allow_none=True)
    deployment_type = _text(100)
    env_name = _text(200)
    release_version = _text(200)
    auto_deploy = fields.Boolean(allow_none=True)
    parent_event_id = _text(40)
    deploy_start = _time()
    deploy_end = _time()

    @validates_schema
    def _end_after_start(self, data: dict[str, Any], **_: Any) -> None:
        _check_order(data, "deploy_start", "deploy_end")


SCHEMAS: dict[str, type[Schema]] = {
    BUILD: BuildEventSchema,
    PUSH: PushEventSchema,
    PULL_REQUEST: PullRequestEventSchema,
    DEPLOY: DeployEventSchema,
}


def normalise_branch(branch: str | None) -> tuple[str | None, str | None]:
    """Split a CI tool's ref into (branch, tag): ``origin/`` and ``refs/heads/`` go, ``refs/tags/x`` is a tag."""
    if not branch:
        return None, None
    if branch.startswith("refs/tags/"):
        return None, branch[len("refs/tags/") :]
    for prefix in ("refs/heads/", "refs/remotes/origin/", "origin/"):
        if branch.startswith(prefix):
            return branch[len(prefix) :], None
    return branch, None


def to_stored(values: Mapping[str, Any]) -> dict[str, Any]:
    """Schema output as JSON-ready stored fields: datetimes become RFC 3339 strings."""
    return {key: rfc3339(value) if isinstance(value, dt.datetime) else value for key, value in values.items()}


def parse_time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) and value else None


def advance_build(
    prior_fields: Mapping[str, Any] | None,
    prior_state: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
    received_at: dt.datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a create or update to a build and return its new (fields, bookkeeping state).

    The state remembers when queueing started and when the build started, because Datadog wants a queue time
    and a start that never moves, while Distelli clients send those facts across several calls.
    """
    merged = {**(prior_fields or {}), **to_stored(changes)}
    state = dict(prior_state or {})
    status = merged.get("build_status")
    for key in TIME_FIELDS & merged.keys():
        moment = parse_time(merged[key])
        if moment is not None:
            merged[key] = rfc3339(clamp_future(moment, received_at))
    if status in WAITING_STATES and "queued_at" not in state:
        state["queued_at"] = rfc3339(received_at)
    if status in TERMINAL_STATES and not merged.get("build_end"):
        merged["build_end"] = rfc3339(received_at)
    if "started_at" not in state and (status == "Running" or status in TERMINAL_STATES):
        start = merged.get("build_start") or (rfc3339(received_at) if status == "Running" else None)
        start = start or merged["build_end"]
        if merged.get("build_end") and parse_time(start) > parse_time(merged["build_end"]):  # type: ignore[operator]
            start = merged["build_end"]
        state["started_at"] = start
    return merged, state


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATES


def translate(
    event_id: int,
    username: str,
    app_name: str,
    event_type: str,
    fields_now: Mapping[str, Any],
    state: Mapping[str, Any],
    prior_status: str | None,
    related: Sequence[Mapping[str, Any]],
    context: MappingContext,
) -> list[Outbound]:
    """Map a stored Distelli event onto intake bodies, given the status it had before this request.

    ``related`` holds the fields of the build's parent push or pull request and of the newest push of the same
    commit, nearest first; they fill in git facts the build itself lacks.
    """
    if event_type == BUILD:
        return _translate_build(event_id, username, app_name, fields_now, state, prior_status, related, context)
    if event_type == DEPLOY:
        return _translate_deploy(event_id, username, app_name, fields_now, prior_status, related, context)
    return []


def _translate_build(
    event_id: int,
    username: str,
    app_name: str,
    build: Mapping[str, Any],
    state: Mapping[str, Any],
    prior_status: str | None,
    related: Sequence[Mapping[str, Any]],
    context: MappingContext,
) -> list[Outbound]:
    status = build.get("build_status")
    becomes_running = status == "Running" and prior_status != "Running"
    becomes_final = status in TERMINAL_STATES and prior_status not in TERMINAL_STATES
    if not (becomes_running or becomes_final):
        return []

    facts = _with_related(build, related)
    pipeline_uuid = context.run_uuid(username, app_name, event_id)
    job_uuid = context.run_uuid(username, app_name, event_id, "job")
    start = parse_time(state.get("started_at")) or context.received_at
    queued_at = parse_time(state.get("queued_at"))
    queue_ms = max(0, int((start - queued_at).total_seconds() * 1000)) if queued_at else 0
    provider = _provider_name(build.get("build_provider"))
    url = build.get("build_url") or f"{context.public_url}/{username}/apps/{app_name}/events/{event_id}"
    git, git_tags = _git(facts, context)
    tags = _tags(username, app_name, build, facts) + git_tags

    common: dict[str, Any] = {"name": app_name, "url": url, "start": rfc3339(start), "queue_time": queue_ms}
    if git:
        common["git"] = git
    if tags:
        common["tags"] = tags
    pipeline: dict[str, Any] = {
        "level": "pipeline",
        "unique_id": pipeline_uuid,
        **common,
        "partial_retry": False,
    }
    if build.get("build_id"):
        pipeline["pipeline_id"] = str(build["build_id"])
    if build.get("auto_build") is not None:
        pipeline["is_manual"] = not build["auto_build"]
    job: dict[str, Any] = {
        "level": "job",
        "id": job_uuid,
        **common,
        "name": f"{provider} build" if provider != "custom" else "build",
        "pipeline_name": app_name,
        "pipeline_unique_id": pipeline_uuid,
    }

    if becomes_final:
        end = parse_time(build.get("build_end")) or context.received_at
        final: dict[str, Any] = {"status": _DD_STATUS[str(status)], "end": rfc3339(end)}
        if status in ("Failed", "TimedOut"):
            final["error"] = _error(str(status), provider, build)
        reason = expiry_reason(start, end, context.received_at)
        return [
            Outbound(
                CI_PIPELINE,
                pipeline_uuid,
                "pipeline",
                True,
                pipeline_request(pipeline | final, provider),
                end,
                reason,
            ),
            Outbound(CI_PIPELINE, job_uuid, "job", True, pipeline_request(job | final, provider), end, reason),
        ]
    running = {"status": "running"}
    return [
        Outbound(CI_PIPELINE, pipeline_uuid, "pipeline", False, pipeline_request(pipeline | running, provider)),
        Outbound(CI_PIPELINE, job_uuid, "job", False, pipeline_request(job | running, provider)),
    ]


def _translate_deploy(
    event_id: int,
    username: str,
    app_name: str,
    deploy: Mapping[str, Any],
    prior_status: str | None,
    related: Sequence[Mapping[str, Any]],
    context: MappingContext,
) -> list[Outbound]:
    if deploy.get("deployment_status") != "Success" or prior_status == "Success":
        return []
    facts = _with_related(deploy, related)
    finished = parse_time(deploy.get("deploy_end")) or context.received_at
    started = parse_time(deploy.get("deploy_start")) or finished
    deployment_uuid = context.run_uuid(username, app_name, "deploy", event_id)
    attributes: dict[str, Any] = {
        "id": f"distelli-{deployment_uuid}",
        "service": context.service_names.get(app_name, app_name),
        "started_at": _nanoseconds(started),
        "finished_at": _nanoseconds(finished),
        "custom_tags": [f"distelli.user:{username}", f"distelli.app:{app_name}"],
    }
    if deploy.get("env_name"):
        attributes["env"] = deploy["env_name"]
    if deploy.get("release_version"):
        attributes["version"] = str(deploy["release_version"])
    repository = _repository_url(facts)
    sha = facts.get("commit_id")
    if repository and sha and _SHA.match(str(sha)):
        attributes["git"] = {"commit_sha": str(sha).lower(), "repository_url": repository}
    body = {"data": {"attributes": attributes}}
    return [Outbound(DORA_DEPLOYMENT, deployment_uuid, "deployment", True, body, finished, None)]


def _with_related(event: Mapping[str, Any], related: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    facts = dict(event)
    for other in related:
        for key in GIT_FIELDS:
            if not facts.get(key) and other.get(key):
                facts[key] = other[key]
    return facts


def _provider_name(build_provider: str | None) -> str:
    if not build_provider:
        return "custom"
    key = re.sub(r"[^a-z]", "", build_provider.lower())
    return PROVIDER_NAMES.get(key, key or "custom")


def _repository_url(facts: Mapping[str, Any]) -> str | None:
    if facts.get("repo_url"):
        return str(facts["repo_url"])
    if facts.get("commit_url"):
        derived = _URL_COMMIT_SUFFIX.sub("", str(facts["commit_url"]))
        if derived != facts["commit_url"]:
            return derived
    host = REPO_HOSTS.get(str(facts.get("repo_provider") or "").lower())
    if host and facts.get("repo_owner") and facts.get("repo_name"):
        return f"https://{host}/{facts['repo_owner']}/{facts['repo_name']}"
    return None


def _author_email(facts: Mapping[str, Any], repository_url: str, context: MappingContext) -> str:
    username = facts.get("author_username") or facts.get("repo_owner") or "unknown"
    if username in context.author_emails:
        return context.author_emails[username]
    host = urlsplit(repository_url).hostname or "localhost"
    safe = re.sub(r"[^A-Za-z0-9._+-]", "-", str(username)) or "unknown"
    return context.author_email_template.format(username=safe, host=host)


def _git(facts: Mapping[str, Any], context: MappingContext) -> tuple[dict[str, Any] | None, list[str]]:
    sha = facts.get("commit_id")
    repository = _repository_url(facts)
    if not sha or not _SHA.match(str(sha)) or not repository:
        return None, [f"git.commit_id:{sha}"] if sha else []
    git: dict[str, Any] = {
        "repository_url": repository,
        "sha": str(sha).lower(),
        "author_email": _author_email(facts, repository, context),
    }
    branch, tag = normalise_branch(facts.get("branch"))
    if branch:
        git["branch"] = branch
    if tag:
        git["tag"] = tag
    if facts.get("commit_msg"):
        git["message"] = facts["commit_msg"]
    if facts.get("author_name"):
        git["author_name"] = facts["author_name"]
        git["committer_name"] = facts["author_name"]
    return git, []


def _tags(username: str, app_name: str, build: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    tags = [f"distelli.user:{username}", f"distelli.app:{app_name}"]
    if build.get("build_provider"):
        tags.append(f"ci.provider:{build['build_provider']}")
    if facts.get("repo_provider"):
        tags.append(f"repo.provider:{facts['repo_provider']}")
    if build.get("release_version"):
        tags.append(f"release:{build['release_version']}")
    return tags


def _error(status: str, provider: str, build: Mapping[str, Any]) -> dict[str, Any]:
    build_name = f"build {build['build_id']}" if build.get("build_id") else "the build"
    if status == "TimedOut":
        return {"domain": "provider", "type": "timeout", "message": f"{provider}: {build_name} timed out"}
    return {"domain": "provider", "type": "build_failed", "message": f"{provider}: {build_name} failed"}


def _nanoseconds(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
