"""Jenkins: the Notification plugin's JSON (phases QUEUED, STARTED, COMPLETED, FINALIZED, and FINISHED).

Each build becomes a Datadog pipeline: STARTED sends the running event, COMPLETED (or FINALIZED, when only that
phase is configured) the final one. FINISHED is what plugin versions before mid-2014 called their last phase: it
is read as FINALIZED. Those versions also send no ``full_url``, only a ``url`` relative to the Jenkins root, which
the plugin never names: the bridge then links the build under the ``jenkins_url`` query parameter of the hook's
URL (the Jenkins root, e.g. ``?token=…&jenkins_url=https://ci.example.com/``), else under the bridge's own public
URL, since Datadog refuses a relative link. The plugin cannot sign its requests, so the shared secret travels in the
``X-Jenkins-Token`` header or, since the plugin can only set a URL, in a ``token`` query parameter (which the
bridge never logs). The plugin sends no delivery id; the build URL plus the phase stands in for one, since each
phase of a build is sent once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from marshmallow import fields, validate

from adapters import base
from adapters.base import QUEUED, MappingContext, Rejected, SharedToken, SourceRecord, Step, WebhookSource
from adapters.payload import PayloadSchema, optional_text, read_source_time
from adapters.target import MAX_DURATION, RUNNING, rfc3339

PROVIDER = "jenkins"
NOTIFICATION = "notification"
TOKEN_HEADER, TOKEN_PARAM = "X-Jenkins-Token", "token"
ROOT_PARAM = "jenkins_url"
FINAL_PHASES = ("COMPLETED", "FINALIZED", "FINISHED")
PHASES = ("QUEUED", "STARTED", *FINAL_PHASES)
STATUSES = {
    "SUCCESS": "success",
    "UNSTABLE": "error",
    "FAILURE": "error",
    "ABORTED": "canceled",
    "NOT_BUILT": "skipped",
}
# Epoch milliseconds from 2000 to 2100: anything else is not a build time.
TIMESTAMPS = validate.Range(min=946_684_800_000, max=4_102_444_800_000)
MAX_ID = 200
# A longer build is one the intake refuses, and adding it to the start could leave the calendar.
MAX_DURATION_MS = MAX_DURATION // dt.timedelta(milliseconds=1)


class ScmSchema(PayloadSchema):
    url = optional_text()
    branch = optional_text()
    commit = optional_text()
    culprits = fields.List(fields.String(), load_default=list)


class BuildSchema(PayloadSchema):
    full_url = optional_text()
    url = fields.String(required=True)
    number = fields.Integer(required=True, validate=validate.Range(min=0))
    queue_id = fields.Integer(allow_none=True)
    phase = fields.String(required=True, validate=validate.OneOf(PHASES))
    status = optional_text(validate=validate.OneOf(STATUSES))
    timestamp = fields.Integer(allow_none=True, validate=TIMESTAMPS)
    duration = fields.Integer(
        allow_none=True, validate=validate.Range(min=0, max=MAX_DURATION // dt.timedelta(milliseconds=1))
    )
    display_name = optional_text()
    scm = fields.Nested(ScmSchema, allow_none=True)


class NotificationSchema(PayloadSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    display_name = optional_text()
    url = fields.String(required=True)
    build = fields.Nested(BuildSchema, required=True)


class JenkinsAdapter(WebhookSource):
    """``POST /hooks/jenkins?token=…``: the Notification plugin's HTTP endpoint with format JSON."""

    name = PROVIDER
    # A Jenkins job that can set headers (e.g. httpRequest) sends the header; the plugin can only set a URL.
    auth = SharedToken(TOKEN_HEADER, query=TOKEN_PARAM)
    schemas = {NOTIFICATION: NotificationSchema()}
    # The plugin sends one shape (so one schema, and no kind to tell); its phase says the rest.

    def record(self, kind: str, values: dict[str, Any], headers: Mapping[str, str]) -> SourceRecord | None:
        build = values["build"]
        if build["phase"] in FINAL_PHASES and not build.get("status"):
            raise Rejected("A finished build must carry its status.", fields={"build": {"status": ["Required."]}})
        run = build.get("full_url") or f"{values['url']}#{build['number']}"
        scm = build.get("scm") or {}
        status = STATUSES[build["status"]] if build.get("status") and build["phase"] != "STARTED" else None
        root = base.query_param(headers, ROOT_PARAM)
        if not build.get("full_url") and root:
            values["jenkins_url"] = _absolute_root(root)
        phase, branch = build["phase"], base.split_ref(scm.get("branch"))[0]
        status = status or (QUEUED if phase == "QUEUED" else RUNNING)
        delivery_id = _bounded(f"{run}#{phase}", MAX_ID)
        return SourceRecord(
            phase, _bounded(run, 400), values["name"], values, delivery_id, status, branch, scm.get("commit")
        )

    def resources(
        self, record: SourceRecord, history: Sequence[SourceRecord], context: MappingContext, step: Step
    ) -> list[dict[str, Any]]:
        values = record.fields
        build = values["build"]
        started = read_source_time(build.get("timestamp")) or base.first_received(record, history, context.received_at)
        queued = [earlier.received_at for earlier in history if earlier.event_type == "QUEUED"]
        resource = base.pipeline_resource(
            context.run_uuid(PROVIDER, record.run_key),
            values.get("display_name") or values["name"],
            _build_url(values, context),
            rfc3339(started),
            pipeline_id=str(build["number"]),
            queue_time=base.milliseconds_between(queued[0] if queued else None, started),
            git=_git(build.get("scm") or {}, context),
        )
        tags = [f"jenkins.job:{values['name']}"]
        if step == Step.FINAL:
            duration = build.get("duration") or 0
            end = started + dt.timedelta(milliseconds=duration) if duration else context.received_at
            result = str(build["status"]).lower()
            error = base.error_block("user", result, f"Jenkins: {values['name']} #{build['number']} {result}")
            base.finish(resource, str(record.status), rfc3339(end), context, error)
            tags.append(f"jenkins.result:{build['status']}")
        resource["tags"] = tags
        return [resource]


def _git(scm: Mapping[str, Any], context: MappingContext) -> dict[str, Any] | None:
    repository = scm.get("url")
    if not repository:
        return None
    culprits = scm.get("culprits") or []
    email = base.author_email(culprits[0] if culprits else None, repository, context)
    branch, tag = base.split_ref(scm.get("branch"))
    return base.git_info(repository, scm.get("commit"), email, branch=branch, tag=tag)


def _absolute_root(root: str) -> str:
    """The ``jenkins_url`` parameter as an absolute http(s) URL ending in ``/``, or :class:`Rejected`."""
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Rejected(
            f"The {ROOT_PARAM} query parameter must be the absolute http(s) URL of the Jenkins root.",
            fields={ROOT_PARAM: ["Not an absolute http(s) URL."]},
        )
    return root if root.endswith("/") else root + "/"


def _build_url(values: Mapping[str, Any], context: MappingContext) -> str:
    """The build's absolute URL: the plugin's ``full_url``, else its relative ``url`` under the Jenkins root the
    hook's URL named, else under the bridge's public URL (Datadog refuses a relative URL)."""
    build = values["build"]
    if build.get("full_url") and urlsplit(build["full_url"]).scheme in ("http", "https"):
        return str(build["full_url"])
    root = values.get("jenkins_url") or context.public_url.rstrip("/") + "/"
    return urljoin(root, str(build["url"]).lstrip("/"))


def _bounded(value: str, limit: int) -> str:
    """The value, or a digest of it when it is longer than its column."""
    if len(value) <= limit:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


adapter = JenkinsAdapter()
