"""Every real webhook body of ``../shared/corpus`` replayed through ``POST /hooks/<source>`` into the strict intake.

Each file is moved to the present (every time in its own format: ISO with ``Z`` or an offset, GitLab's
``2016-08-12 15:23:28 UTC``, epoch milliseconds), signed as its source signs it with the test secret, given a
fresh delivery id, posted alone to a fresh database, and delivered. What each file must become is worked out here
from the raw payload, independently of the adapters: the source's own status words in Datadog's terms, and the
level (pipeline, stage, job) its kind of webhook describes. The files this project deliberately ignores or
refuses are listed below with the reason; the README's webhook table says the same.

The corpus is read where it lives, next to the project; it is never copied in. Under ``CI=true`` a missing corpus
is a failure, not a skip.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.models import Event
from bridge.storage.store import Store
from tests.intake_server import IntakeServer
from tests.test_adapter_samples import adapter
from tests.test_hooks_http import config, secret  # noqa: F401  (the config fixture enables every native source)

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

# Files that are not pipeline events at all: answered 202 {"ignored": true}, nothing stored.
NOT_EVENTS = {"check_run", "check_suite"}
IGNORED = {
    "go-playground-github/workflow_job.json": "hand-written fixture: action 'My workflow_job' is no GitHub action",
    "go-playground-github/workflow_run.json": "hand-written fixture: action 'My workflow_run' is no GitHub action",
}
# Shapes refused with a 4xx JSON error that says why (the README's webhook table lists them).
OBSOLETE = "CircleCI 1.0 notify webhooks: CircleCI 1.0 was shut down in 2018"
NO_PROJECT = "synthetic GitLab fixture without the project's web address: no link Datadog could show"
REFUSED = {
    "circleci-legacy/idobata-circle_ci-v1-notify.json": OBSOLETE,
    "circleci-legacy/zulip-super_minimal_payload.failed.json": OBSOLETE,
    **{
        f"otel-gitlab/{name}.json": NO_PROJECT
        for name in (
            "job.canceled",
            "job.failed",
            "job.pending",
            "job.running",
            "job.skipped",
            "job.success.missing-timestamps",
            "job.success.zero-queued-duration",
            "job.success.zero-value-runner",
            "pipeline.canceled",
            "pipeline.created-with-finished_at",
            "pipeline.failed",
            "pipeline.preparing-with-finished_at",
            "pipeline.running-with-finished_at",
            "pipeline.scheduled-with-finished_at",
            "pipeline.skipped",
            "pipeline.success-without-finished_at",
            "pipeline.success.no-project",
            "pipeline.unknown-status",
            "pipeline.waiting_for_resource-with-finished_at",
        )
    },
}

# What the sent git block must say where the payload is odd: CircleCI projects on GitLab name their commit only in
# pipeline.trigger_parameters, and GitHub's CodeQL runs give a pull request's ref as head_branch.
GIT = {
    "zulip-circleci/job-completed.gitlab.success.real-2022.json": {
        "repository_url": "https://gitlab.com/zulip-testing/circleci-webhook-test",
        "sha": "c31f86994c54672f97b5bd5e544315b7bd40e4c1",
        "branch": "main",
    },
    "zulip-circleci/workflow-completed.gitlab.success.real-2022.json": {
        "repository_url": "https://gitlab.com/zulip-testing/circleci-webhook-test",
        "branch": "main",
    },
    "cogni-github/workflow_run.in_progress.signed.json": {"branch": "pull/166/head"},
}

# The sources' own words for each outcome, as Datadog names it (from each source's documentation).
GITHUB = {"success": "success", "failure": "error", "cancelled": "canceled", "skipped": "skipped"}
GITHUB_RUNNING = {"in_progress"}
GITLAB = {"success": "success", "failed": "error", "canceled": "canceled", "skipped": "skipped"}
CIRCLECI = {"success": "success", "failed": "error", "canceled": "canceled", "not_run": "skipped"}
JENKINS = {"SUCCESS": "success", "FAILURE": "error", "UNSTABLE": "error", "ABORTED": "canceled"}
JENKINS_FINAL = {"COMPLETED", "FINALIZED", "FINISHED"}


@dataclasses.dataclass(frozen=True)
class Case:
    folder: str
    file: str
    meta: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.file}"

    @property
    def source(self) -> str:
        if self.folder == "jenkins-notification":
            return "jenkins"
        return self.folder.rsplit("-", 1)[-1].replace("legacy", "circleci")

    def body(self) -> dict[str, Any]:
        return dict(json.loads((CORPUS / self.folder / self.file).read_text()))

    def event_header(self) -> dict[str, str]:
        """The header the file says it came with, without the corpus's notes in parentheses."""
        match = re.match(r"^([A-Za-z0-9-]+): ([^(]+?)\s*(?:\(.*)?$", self.meta.get("event_header") or "")
        return {match[1]: match[2]} if match else {}


def cases() -> list[Any]:
    index = CORPUS / "INDEX.json"
    if not index.exists():
        return [pytest.param(None, id="corpus-missing")]
    found = []
    for entry in json.loads(index.read_text()):
        meta_path = CORPUS / entry["source"] / entry["file"].replace(".json", ".meta.json")
        case = Case(entry["source"], entry["file"], json.loads(meta_path.read_text()))
        found.append(pytest.param(case, id=case.key))
    return found


# --- Moving a payload to the present, each time kept in the form it was written in ------------------------------
_TIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?P<sep>[T ])(?P<clock>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?"
    r"(?P<zone>Z|z| UTC|[+-]\d{2}:\d{2}|[+-]\d{4}| [+-]\d{4})?$"
)
_MILLIS = range(10**12, 10**13)
_SECONDS = range(10**9, 10**10)


def _zone(text: str | None) -> dt.timezone:
    if not text or text.strip() in ("Z", "z", "UTC"):
        return dt.UTC
    text = text.strip().replace(":", "")
    offset = dt.timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
    return dt.timezone(-offset if text[0] == "-" else offset)


def read_time(value: Any, key: str) -> dt.datetime | None:
    if isinstance(value, str) and (match := _TIME.match(value)):
        return dt.datetime.fromisoformat(f"{match['date']}T{match['clock']}").replace(tzinfo=_zone(match["zone"]))
    if isinstance(value, int) and not isinstance(value, bool) and (key == "timestamp" or key.endswith("_at")):
        if value in _MILLIS:
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        if value in _SECONDS:
            return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


def write_time(original: Any, moment: dt.datetime) -> Any:
    if isinstance(original, int):
        return int(moment.timestamp() * 1000) if original in _MILLIS else int(moment.timestamp())
    match = _TIME.match(original)
    assert match is not None
    local = moment.astimezone(_zone(match["zone"]))
    fraction = ""
    if match["fraction"]:
        digits = len(match["fraction"]) - 1
        fraction = "." + f"{local.microsecond:06d}".ljust(digits, "0")[:digits]
    clock = local.strftime(f"%Y-%m-%d{match['sep']}%H:%M:%S")
    return f"{clock}{fraction}{match['zone'] or ''}"


def times(value: Any, key: str = "") -> list[dt.datetime]:
    if isinstance(value, dict):
        return [moment for name, item in value.items() for moment in times(item, name)]
    if isinstance(value, list):
        return [moment for item in value for moment in times(item, key)]
    moment = read_time(value, key)
    return [moment] if moment else []


def shift(value: Any, delta: dt.timedelta, key: str = "") -> Any:
    if isinstance(value, dict):
        return {name: shift(item, delta, name) for name, item in value.items()}
    if isinstance(value, list):
        return [shift(item, delta, key) for item in value]
    moment = read_time(value, key)
    return value if moment is None else write_time(value, moment + delta)


def fresh(case: Case, now: dt.datetime) -> dict[str, Any]:
    """The payload as if its last moment were ``now``, with a fresh delivery id where the body carries one."""
    payload = case.body()
    found = times(payload)
    if found:
        payload = shift(payload, now - max(found))
    if case.source == "circleci" and "id" in payload:
        payload["id"] = str(uuid.uuid4())
    return payload


def delivery_headers(case: Case, payload: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **case.event_header()}
    headers["X-GitHub-Delivery" if case.source == "github" else "X-Gitlab-Event-UUID"] = str(uuid.uuid4())
    headers.update(adapter(case.source).sign(payload, secret(case.source)))
    return headers


# --- What each file must become, read from the raw payload ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Expected:
    level: str
    status: str | None  # a Datadog final status, "running", or None when nothing is sent yet (queued)


def expected(case: Case, payload: dict[str, Any]) -> Expected:
    kind = case.event_header()
    if case.source == "github":
        event = kind["X-GitHub-Event"]
        item = payload[event]
        level = "pipeline" if event == "workflow_run" else "job"
        if payload["action"] == "completed":
            return Expected(level, GITHUB[item["conclusion"]])
        return Expected(level, "running" if payload["action"] in GITHUB_RUNNING else None)
    if case.source == "gitlab":
        if "object_attributes" in payload:
            status = payload["object_attributes"]["status"]
            return Expected("pipeline", GITLAB.get(status) or ("running" if status == "running" else None))
        status = payload["build_status"]
        return Expected("job", GITLAB.get(status) or ("running" if status == "running" else None))
    if case.source == "circleci":
        if payload["type"] == "job-completed":
            return Expected("job", CIRCLECI[payload["job"]["status"]])
        return Expected("pipeline", CIRCLECI[payload["workflow"]["status"]])
    build = payload["build"]
    if build["phase"] in JENKINS_FINAL:
        return Expected("pipeline", JENKINS[build["status"]])
    return Expected("pipeline", "running" if build["phase"] == "STARTED" else None)


def stored(store: Store) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.mark.parametrize("case", cases())
def test_a_real_webhook_lands_as_its_source_meant_it(
    client: FlaskClient, store: Store, intake: IntakeServer, case: Case | None
) -> None:
    if case is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the webhook corpus is missing at {CORPUS}")
        pytest.skip(f"the webhook corpus is not at {CORPUS}")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    payload = fresh(case, now)
    raw = json.dumps(payload).encode()
    answer = client.post(f"/hooks/{case.source}", data=raw, headers=delivery_headers(case, raw))
    reply = answer.get_json()

    if case.key in REFUSED:
        assert 400 <= answer.status_code < 500, reply
        assert reply["error"]["code"] and reply["error"]["message"], reply
        assert stored(store) == 0
        return
    if case.key in IGNORED or case.meta.get("event_header", "").split(": ")[-1] in NOT_EVENTS:
        assert (answer.status_code, reply) == (202, {"ignored": True})
        assert stored(store) == 0
        return

    assert answer.status_code == 202, reply
    assert stored(store) == 1
    result = Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()
    assert set(intake.statuses()) <= {202}, [request.body for request in intake.requests]
    want = expected(case, payload)
    resources = intake.accepted_resources()
    assert result.delivered == len(resources) == reply["enqueued"]
    at_level = [resource for resource in resources if resource["level"] == want.level]
    if want.status is None:
        assert resources == []
        return
    assert [resource["status"] for resource in at_level] == [want.status]
    sent = at_level[0]
    assert sent["url"].startswith(("https://", "http://")), sent["url"]
    assert ("end" in sent) == (want.status != "running")
    if want.status == "error":
        assert sent["error"]["message"]
    for resource in resources:
        assert not (resource.get("git") or {}).get("branch", "").startswith("refs/"), resource["git"]
    if case.key in GIT:
        assert sent["git"].items() >= GIT[case.key].items(), sent.get("git")
    others = [resource for resource in resources if resource["level"] != want.level]
    assert all(resource["level"] == "stage" and resource["status"] != "running" for resource in others)
