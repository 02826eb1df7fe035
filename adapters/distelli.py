"""The Distelli (Puppet Pipelines) Events API: request schemas, build lifecycle, and the Datadog mapping.

Everything here is pure: the routes in ``bridge.web.routes.events`` validate with these schemas, the core stores what
:func:`advance_build` returns, and :func:`translate` turns a stored event (a :class:`DistelliRecord`, with its
related push or pull request) into intake bodies. Tests drive it with plain dicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from adapters.base import (
    CI_PIPELINE,
    CLOCK_SKEW,
    DORA_DEPLOYMENT,
    MappingContext,
    Outbound,
    author_email,
    clamp_future,
    expiry_reason,
    pipeline_request,
    rfc3339,
)

SOURCE = "distelli"
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

DD_STATUS = {"Success": "success", "Failed": "error", "TimedOut": "error", "Cancelled": "canceled"}
ERROR_TYPES = {"Failed": "build_failed", "TimedOut": "timeout"}
# Each Distelli build is one pipeline with one job; the job's name is the same for every run so Datadog can trend it.
JOB_NAME = "build"

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
# What a running build's body is made of: a later Running that adds none of these sends nothing new.
RUNNING_FIELDS = tuple(name for name in BUILD_FIELDS if name not in ("build_status", "build_end"))

_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_URL_COMMIT_SUFFIX = re.compile(r"/(?:-/)?commits?/[0-9a-fA-F]+/?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The Distelli Jenkins guide's shell scripts send these when the job has no git facts ("NoChangeID" as commit id).
_PLACEHOLDER = re.compile(r"^NoChange[A-Z][A-Za-z]*$")


def is_storable(text: str) -> bool:
    """False for text PostgreSQL cannot store (NUL) or Datadog cannot read (unpaired surrogates)."""
    return _UNSTORABLE.search(text) is None


class _SameValidators:
    """A field whose validators are combined once: marshmallow builds a new ``And`` of them for every value."""

    validators: list[Any]

    @functools.cached_property
    def _validate_all(self) -> validate.And:
        return validate.And(*self.validators)


class Identifier(_SameValidators, fields.String):
    """A string the way sloppy clients send it: numbers are accepted and kept as their text.

    NUL characters and unpaired surrogates are refused: PostgreSQL cannot store them and Datadog cannot read them.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not is_storable(text):
            raise ValidationError("Must not contain NUL characters or unpaired surrogates.")
        return text


def is_placeholder(value: Any) -> bool:
    """True for the stand-ins shell clients send for a fact they lack ("NoChangeID", "NoChangeBranch"...)."""
    return isinstance(value, str) and _PLACEHOLDER.match(value.strip()) is not None


def _unset(value: Any) -> bool:
    """True for ``""`` (or blanks): what a shell client sends for a variable that was never set."""
    return isinstance(value, str) and not value.strip()


def _unknown_time(value: Any) -> bool:
    """True for a time in year 1 (UTC): Go's ``time.Time{}`` and .NET's ``DateTime.MinValue`` serialise as
    ``0001-01-01T00:00:00Z``, which their clients send for "no value".

    Taken as unset rather than refused: no build ran then, and kept as a time it leaves nothing to subtract clock
    skew or the intake's window from.
    """
    return isinstance(value, dt.datetime) and value.year == 1


class DistelliTime(_SameValidators, fields.AwareDateTime):
    """An ISO 8601 time, naive ones taken as UTC, held in UTC; a time that leaves the calendar in UTC is refused.

    RFC 3339 allows a lower-case ``t`` and ``z``, which Python's parser does not, so the text is upper-cased first.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, str):
            value = value.upper()
        moment: dt.datetime = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError("Not a valid datetime.") from None


class State(_SameValidators, fields.String):
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
    return DistelliTime(allow_none=True, default_timezone=dt.UTC)


class _Boolean(_SameValidators, fields.Boolean):
    """``fields.Boolean`` with its validators combined once."""


class _DistelliSchema(Schema):
    """What every Distelli request body shares: the git facts, cleaned as clients send them.

    No field is required, so loading with ``partial=True`` gives the same values and errors; it lets marshmallow
    skip a field the body does not carry instead of running it on ``missing`` (most bodies send half the fields).
    """

    class Meta:
        unknown = EXCLUDE

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)

    @pre_load
    def _as_clients_send_it(self, data: Any, **_: Any) -> Any:
        """Drop ``""`` values (:func:`_unset`), and read ``parent_id``, which a script of the Distelli guide
        sends, as ``parent_event_id``."""
        if not isinstance(data, Mapping):
            return data
        cleaned = {key: value for key, value in data.items() if not _unset(value)}
        if "parent_event_id" in self.fields and cleaned.get("parent_event_id") is None and "parent_id" in cleaned:
            cleaned["parent_event_id"] = cleaned.pop("parent_id")
        return cleaned

    @post_load
    def _without_unknown_times(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """A zero time (:func:`_unknown_time`) is a field not sent."""
        return {key: value for key, value in data.items() if not _unknown_time(value)}

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
    auto_build = _Boolean(allow_none=True)
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
    auto_deploy = _Boolean(allow_none=True)
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
        return None, branch[len("refs/tags/") :] or None
    for prefix in ("refs/heads/", "refs/remotes/origin/", "origin/"):
        if branch.startswith(prefix):
            return branch[len(prefix) :] or None, None
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
    and a start that never moves, while Distelli clients send those facts across several calls. It also remembers
    which fields the running event carried (``running_fields``): a later Running sends again only when it adds one.
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
        start = merged.get("build_start") or (rfc3339(received_at) if status == "Running" else merged["build_end"])
        end = parse_time(merged.get("build_end"))
        if end is not None and status in TERMINAL_STATES and (parse_time(start) or end) > end:
            start = merged["build_end"]
        state["started_at"] = start
    if status == "Running":
        sent = state.get("running_fields")
        present = {name for name in RUNNING_FIELDS if merged.get(name) not in (None, "")}
        if sent is None or present - set(sent):
            state["running_fields"] = sorted(present | set(sent or ()))
    return merged, state


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATES


def order_problem(
    stored: Mapping[str, Any], changes: Mapping[str, Any], merged: Mapping[str, Any]
) -> tuple[str, dict[str, list[str]]] | None:
    """Why an update's build times contradict each other once merged with the stored ones, or None.

    The schema checks the times of one body (:func:`_check_order`); this checks them against what is stored, and
    names the field the update moved: a new start after the stored end, or an end before the start.
    """
    start, end = parse_time(merged.get("build_start")), parse_time(merged.get("build_end"))
    if start is None or end is None or end >= start:
        return None
    if changes.get("build_start") and stored.get("build_end") and not changes.get("build_end"):
        return "build_start is after the stored build_end.", {"build_start": ["Must not be after build_end."]}
    return "build_end is before build_start.", {"build_end": ["Must not be before build_start."]}


@dataclasses.dataclass(frozen=True)
class IndexColumns:
    """What the core indexes an event by, so ListEvents can filter and lookups can find related events."""

    status: str | None
    branch: str | None
    env_name: str | None
    commit_id: str | None
    release_version: str | None


def index_columns(stored: Mapping[str, Any]) -> IndexColumns:
    """The indexed values of stored fields: the build or deploy status, the branch as filters match it, the env,
    the commit id (a placeholder such as ``NoChangeID`` names no commit), and the release (a deploy finds the build
    of its release by it)."""
    commit = stored.get("commit_id")
    return IndexColumns(
        status=stored.get("build_status") or stored.get("deployment_status"),
        branch=normalise_branch(stored.get("branch"))[0] or stored.get("branch"),
        env_name=stored.get("env_name"),
        commit_id=None if is_placeholder(commit) else commit,
        release_version=stored.get("release_version") or None,
    )


@dataclasses.dataclass(frozen=True)
class DistelliRecord:
    """One stored Distelli event as :func:`translate` reads it, with what the request changed.

    ``prior_status`` and ``prior_state`` are the build's before this request (None and empty for a create), so the
    mapping can tell what is new. ``related`` holds the fields of the events that may know git facts this one
    lacks, nearest first: a build's parent push or pull request, a deploy's release build, then the newest push of
    the same commit.
    """

    event_id: int
    username: str
    app_name: str
    event_type: str
    fields: Mapping[str, Any]
    state: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prior_status: str | None = None
    prior_state: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    related: Sequence[Mapping[str, Any]] = ()


def translate(record: DistelliRecord, context: MappingContext) -> list[Outbound]:
    """Map a stored Distelli event onto intake bodies: what this request changed that Datadog should see."""
    if record.event_type == BUILD:
        return _translate_build(record, context)
    if record.event_type == DEPLOY:
        return _translate_deploy(record, context)
    return []


def event_url(context: MappingContext, username: str, app_name: str, event_id: int) -> str:
    """The bridge's own address for an event: the pipeline ``url`` when the CI tool gave no ``build_url``."""
    return f"{context.public_url}/{quote(username, safe='')}/apps/{quote(app_name, safe='')}/events/{event_id}"


def _build_phase(record: DistelliRecord) -> str | None:
    """``"final"`` once when the build ends, ``"running"`` when it starts running or a Running adds fields.

    Once a build has run, a later Waiting or Queued changes nothing that was sent, and a repeated Running that adds
    no field sends nothing (Datadog's guide: running updates only add fields).
    """
    status = record.fields.get("build_status")
    if status in TERMINAL_STATES:
        return None if record.prior_status in TERMINAL_STATES else "final"
    running_fields = record.state.get("running_fields")
    if status == "Running" and running_fields != record.prior_state.get("running_fields"):
        return "running"
    return None


def _translate_build(record: DistelliRecord, context: MappingContext) -> list[Outbound]:
    """The running or final pipeline and its one job, with the same ids every time."""
    phase = _build_phase(record)
    if phase is None:
        return []
    build = record.fields
    pipeline_uuid = context.run_uuid(record.username, record.app_name, record.event_id)
    job_uuid = context.run_uuid(record.username, record.app_name, record.event_id, "job")
    start = parse_time(record.state.get("started_at")) or context.received_at
    shared = _shared_resource(record, start, context)
    pipeline = {"level": "pipeline", "unique_id": pipeline_uuid, **shared, "partial_retry": False}
    if build.get("build_id"):
        pipeline["pipeline_id"] = str(build["build_id"])
    if build.get("auto_build") is not None:
        pipeline["is_manual"] = not build["auto_build"]
    job = {
        "level": "job",
        "id": job_uuid,
        **shared,
        "name": JOB_NAME,
        "pipeline_name": record.app_name,
        "pipeline_unique_id": pipeline_uuid,
    }
    final = phase == "final"
    end: dt.datetime | None = None
    reason: str | None = None
    outcome: dict[str, Any] = {"status": "running"}
    if final:
        end = _end(build, start, context.received_at)
        outcome = _final_outcome(build, end)
        reason = expiry_reason(start, end, context.received_at)
    provider = provider_name(build.get("build_provider"))
    return [
        Outbound(
            CI_PIPELINE, pipeline_uuid, "pipeline", final, pipeline_request(pipeline | outcome, provider), end, reason
        ),
        Outbound(CI_PIPELINE, job_uuid, "job", final, pipeline_request(job | outcome, provider), end, reason),
    ]


def _shared_resource(record: DistelliRecord, start: dt.datetime, context: MappingContext) -> dict[str, Any]:
    """What the pipeline and its job both carry: name, url, times, tags and git."""
    build = record.fields
    facts = with_related(build, record.related)
    git, git_tags = _git(facts, context)
    shared: dict[str, Any] = {
        "name": record.app_name,
        "url": build.get("build_url") or event_url(context, record.username, record.app_name, record.event_id),
        "start": rfc3339(start),
        "queue_time": _queue_ms(parse_time(record.state.get("queued_at")), start),
        "tags": _build_tags(record.username, record.app_name, build, facts) + git_tags,
    }
    if git:
        shared["git"] = git
    return shared


def _final_outcome(build: Mapping[str, Any], end: dt.datetime) -> dict[str, Any]:
    status = str(build.get("build_status"))
    outcome: dict[str, Any] = {"status": DD_STATUS[status], "end": rfc3339(end)}
    if status in ERROR_TYPES:
        outcome["error"] = _error(status, build)
    return outcome


def _end(build: Mapping[str, Any], start: dt.datetime, received_at: dt.datetime) -> dt.datetime:
    """The build's end; one a few seconds before a start the bridge took from its own clock is moved up to it."""
    end = parse_time(build.get("build_end")) or received_at
    if start - CLOCK_SKEW <= end < start:
        return start
    return end


def _queue_ms(queued_at: dt.datetime | None, start: dt.datetime) -> int:
    if queued_at is None:
        return 0
    return max(0, (start - queued_at) // dt.timedelta(milliseconds=1))


def _translate_deploy(record: DistelliRecord, context: MappingContext) -> list[Outbound]:
    """A successful deploy is one DORA deployment; other outcomes are not deployments DORA counts."""
    deploy, username, app_name, event_id = record.fields, record.username, record.app_name, record.event_id
    if deploy.get("deployment_status") != "Success" or record.prior_status == "Success":
        return []
    now = context.received_at
    finished = clamp_future(parse_time(deploy.get("deploy_end")) or now, now)
    started = min(clamp_future(parse_time(deploy.get("deploy_start")) or finished, now), finished)
    deployment_uuid = context.run_uuid(username, app_name, "deploy", event_id)
    tags = [
        _tag("distelli.user", username),
        _tag("distelli.app", app_name),
        _tag("distelli.deployment_id", deploy.get("deployment_id")),
    ]
    attributes: dict[str, Any] = {
        "id": f"distelli-{deployment_uuid}",
        "service": context.service_names.get(app_name, app_name),
        "started_at": nanoseconds(started),
        "finished_at": nanoseconds(finished),
        "custom_tags": [tag for tag in tags if tag],
    }
    if deploy.get("env_name"):
        attributes["env"] = str(deploy["env_name"])
    if deploy.get("release_version"):
        attributes["version"] = str(deploy["release_version"])
    facts = with_related(deploy, record.related)
    repository, sha = repository_url(facts), full_sha(facts.get("commit_id"))
    if repository and sha:
        attributes["git"] = {"commit_sha": sha, "repository_url": repository}
    body = {"data": {"attributes": attributes}}
    # DORA takes Unix nanoseconds in an int64: a deploy before 1970 (or before 1678) has no such time.
    reason = "the deployment started before 1970; the intake takes no such time" if started < _EPOCH else None
    return [Outbound(DORA_DEPLOYMENT, deployment_uuid, "deployment", True, body, finished, reason)]


def with_related(event: Mapping[str, Any], related: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The event's git facts, with the ones it lacks taken from related events of the same commit, nearest first.

    An event of another commit contributes nothing: its message or author would describe the wrong change.
    Placeholders such as ``NoChangeID`` are facts the client did not have, so they count as missing.
    """
    facts = {key: value for key, value in event.items() if not is_placeholder(value)}
    for other in related:
        mine, theirs = facts.get("commit_id"), other.get("commit_id")
        if mine and theirs and str(mine).lower() != str(theirs).lower():
            continue
        for key in GIT_FIELDS:
            if not facts.get(key) and other.get(key) and not is_placeholder(other[key]):
                facts[key] = other[key]
    return facts


def provider_name(build_provider: str | None) -> str:
    """Datadog's name for a CI provider: ``Travis CI`` is ``travisci``, ``AzureDevops`` is ``azurepipelines``."""
    key = re.sub(r"[^a-z0-9]", "", (build_provider or "").lower())
    return PROVIDER_NAMES.get(key, key or "custom")


def full_sha(commit_id: Any) -> str | None:
    """The commit id when it is a full 40-hex SHA (lower-cased), else None."""
    text = str(commit_id or "").strip()
    return text.lower() if _SHA.match(text) else None


def repository_url(facts: Mapping[str, Any]) -> str | None:
    """``repo_url``, else the repository part of ``commit_url``, else one built from provider, owner and name."""
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


def _git(facts: Mapping[str, Any], context: MappingContext) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``git`` block, or None and a tag carrying the commit id when the intake could not take one."""
    sha, repository = full_sha(facts.get("commit_id")), repository_url(facts)
    if not sha or not repository:
        tag = _tag("distelli.commit_id", facts.get("commit_id"))
        return None, [tag] if tag else []
    git: dict[str, Any] = {
        "repository_url": repository,
        "sha": sha,
        "author_email": author_email(facts.get("author_username"), repository, context),
    }
    branch, tag = normalise_branch(facts.get("branch"))
    if branch:
        git["branch"] = branch
    elif tag:
        git["tag"] = tag
    if facts.get("commit_msg"):
        git["message"] = str(facts["commit_msg"])
    if facts.get("author_name"):
        git["author_name"] = git["committer_name"] = str(facts["author_name"])
    return git, []


def _build_tags(username: str, app_name: str, build: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    tags = [
        _tag("distelli.user", username),
        _tag("distelli.app", app_name),
        _tag("ci.provider", build.get("build_provider")),
        _tag("repo.provider", facts.get("repo_provider")),
        _tag("release", build.get("release_version")),
    ]
    return [tag for tag in tags if tag]


def _tag(key: str, value: Any) -> str | None:
    """``key:value`` with the value on one line, or None when there is no value to tag."""
    text = " ".join(str(value).split()) if value is not None else ""
    return f"{key}:{text}" if text else None


def _error(status: str, build: Mapping[str, Any]) -> dict[str, Any]:
    tool = build.get("build_provider") or "CI"
    what = f"build {build['build_id']}" if build.get("build_id") else "build"
    verb = "timed out" if status == "TimedOut" else "failed"
    return {"domain": "provider", "type": ERROR_TYPES[status], "message": f"{tool} {what} {verb}"}


def nanoseconds(moment: dt.datetime) -> int:
    """Unix time in nanoseconds, exactly (DORA's ``started_at``/``finished_at``)."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000
