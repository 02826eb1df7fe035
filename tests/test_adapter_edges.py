"""Webhook values at the edges that once answered 500: each is now a 4xx JSON error naming the field, or accepted.

Every case posts a signed sample with one value changed through the real route, on both databases: times at the
calendar's ends once in UTC, durations too large to add to a time, kinds sent as objects or lists, and empty
delivery ids (which are read as "no id": the webhook is accepted, and a second one is not a duplicate of it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bridge.storage.models import Event
from bridge.storage.store import Store
from tests.test_adapter_samples import adapter, body, context, headers, received_at
from tests.test_hooks_http import config, fresh, post  # noqa: F401  (config enables every native source)


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted ``path`` of the payload to ``value``."""

    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = payload
        for key in parents:
            target = target[key]
        target[last] = value

    return change


EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:03Z", "9999-12-31T23:59Z"]
HUGE = [10**12, 1e300, -1e300, -1.0]

# (source, sample, path, value, field the error names, or None when the webhook is accepted)
CASES: list[tuple[str, str, str, Any, str | None]] = [
    *[("github", "workflow_run.completed", "workflow_run.created_at", t, "workflow_run") for t in EDGE_TIMES],
    *[("github", "workflow_job.completed.failure", "workflow_job.completed_at", t, "workflow_job") for t in EDGE_TIMES],
    *[("gitlab", "pipeline.failed", "object_attributes.finished_at", t, "object_attributes") for t in EDGE_TIMES],
    *[("circleci", "workflow-completed.success", "workflow.stopped_at", t, "workflow") for t in EDGE_TIMES],
    # Go's and .NET's zero time means "not set": accepted as a missing time.
    ("github", "workflow_run.completed", "workflow_run.updated_at", "0001-01-01T00:00:00Z", None),
    ("gitlab", "job.failed", "build_started_at", "0001-01-01 00:00:00 UTC", None),
    ("circleci", "job-completed.failed", "job.started_at", "0001-01-01T00:00:00Z", None),
    ("jenkins", "completed.success", "build.duration", 300_000_000_000_000, "build"),
    ("jenkins", "completed.success", "build.duration", 3e14, "build"),
    ("jenkins", "completed.success", "build.duration", 10**30, "build"),
    *[("gitlab", "pipeline.failed", "object_attributes.queued_duration", n, "object_attributes") for n in HUGE],
    *[("gitlab", "job.failed", "build_queued_duration", n, "build_queued_duration") for n in HUGE],
    *[("circleci", "job-completed.success", "type", kind, "type") for kind in ({"a": 1}, ["job-completed"], 7)],
    *[("gitlab", "pipeline.failed", "object_kind", kind, "object_kind") for kind in ({"a": 1}, ["pipeline"], 7)],
]


@pytest.mark.parametrize(("source", "name", "path", "value", "field"), CASES)
def test_an_edge_value_is_a_clear_4xx_or_accepted(
    client: FlaskClient, source: str, name: str, path: str, value: Any, field: str | None
) -> None:
    payload = json.loads(fresh(source, name, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    setting(path, value)(payload)
    answer = post(client, source, name, json.dumps(payload).encode())
    reply = answer.get_json()
    if field is None:
        assert answer.status_code == 202, reply
        return
    assert answer.status_code == 400, reply
    assert reply["error"]["code"] == "invalid_payload"
    assert field in reply["error"]["fields"], reply


def stored(store: Store) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.mark.parametrize(
    ("source", "name", "empty"),
    [
        ("github", "workflow_run.completed", {"X-GitHub-Delivery": ""}),
        ("github", "workflow_run.completed", {"X-GitHub-Delivery": "  "}),
        ("gitlab", "pipeline.failed", {"X-Gitlab-Event-UUID": ""}),
        ("circleci", "workflow-completed.success", None),
    ],
)
def test_an_empty_delivery_id_is_no_id_so_each_such_webhook_is_accepted(
    client: FlaskClient, store: Store, source: str, name: str, empty: dict[str, str] | None
) -> None:
    """An empty id names no delivery: both webhooks are stored, neither is a 500 or a "duplicate" of the other."""
    answers = []
    for minutes in (2, 1):
        payload = json.loads(fresh(source, name, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)))
        if empty is None:
            payload["id"] = ""
        answers.append(post(client, source, name, json.dumps(payload).encode(), **(empty or {})))
    assert [answer.status_code for answer in answers] == [202, 202], [answer.get_json() for answer in answers]
    assert [answer.get_json()["duplicate"] for answer in answers] == [False, False]
    assert stored(store) == 2
    with store.transaction() as session:
        assert session.scalars(select(Event.delivery_id)).all() == [None, None]


@pytest.mark.parametrize(
    ("source", "name", "path"),
    [
        ("github", "workflow_run.completed", "repository.full_name"),
        ("jenkins", "completed.success", "build.full_url"),
        ("gitlab", "pipeline.failed", "project.path_with_namespace"),
        ("circleci", "workflow-completed.success", "project.slug"),
    ],
)
def test_a_lone_surrogate_in_a_name_maps_without_failing(source: str, name: str, path: str) -> None:
    """Valid JSON that is not valid UTF-8 (``"\\udfff"``) must not crash the mapping where ids are hashed; how it is
    stored is the storage's concern."""
    payload = json.loads(body(source, name))
    setting(path, "x\udfffy" + ("/" * 500 if source == "jenkins" else ""))(payload)
    raw = json.dumps(payload).encode()
    record = adapter(source).parse(headers(source, name, raw), raw)
    assert record is not None
    record = dataclasses.replace(record, received_at=received_at(source, name))
    assert adapter(source).map(record, [], context(received_at(source, name)))
