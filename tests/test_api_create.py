"""CreateBuildEvent, CreatePushEvent, CreatePullRequestEvent and the deployEvent extension, with the spec's bodies."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bridge.storage.store import Store
from tests.distelli_api import RFC3339_MS, DistelliApi, sample, sample_bytes, stored_events

SPEC_CREATES = [
    ("buildEvent", "create_build_event.json", "BUILD"),
    ("pushEvent", "create_push_event.json", "PUSH"),
    ("pullRequestEvent", "create_pull_request_event.json", "PULL_REQUEST"),
    ("deployEvent", "create_deploy_event.json", "DEPLOY"),
]


def _spec_keys(event_type: str) -> set[str]:
    """The keys the spec's ListEvents result shows for one kind of event."""
    listed = sample("list_events_result.json")["events"]
    return {key for event in listed if event["event_type"] == event_type for key in event}


@pytest.mark.parametrize(("kind", "sample_name", "event_type"), SPEC_CREATES)
def test_spec_example_body_is_accepted_with_200_and_a_string_event_id(
    api: DistelliApi, kind: str, sample_name: str, event_type: str
) -> None:
    response = api.create(kind, sample_bytes(sample_name))

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"event_id"}
    assert isinstance(body["event_id"], str) and body["event_id"].isdigit()


@pytest.mark.parametrize(("kind", "sample_name", "event_type"), SPEC_CREATES)
def test_created_event_is_listed_with_every_field_it_was_sent(
    api: DistelliApi, kind: str, sample_name: str, event_type: str
) -> None:
    event_id = api.create_id(kind, sample_bytes(sample_name))

    event = api.event(event_id)

    assert event["event_id"] == int(event_id)
    assert event["event_type"] == event_type
    assert event["app_name"] == "example-node"
    assert RFC3339_MS.match(event["event_time"])
    assert {key: event[key] for key in sample(sample_name)} == sample(sample_name)


@pytest.mark.parametrize(("kind", "sample_name", "event_type"), [c for c in SPEC_CREATES if c[2] != "PULL_REQUEST"])
def test_listed_event_has_every_key_the_spec_shows_for_its_kind_null_when_unset(
    api: DistelliApi, kind: str, sample_name: str, event_type: str
) -> None:
    event_id = api.create_id(kind, {})

    event = api.event(event_id)

    assert _spec_keys(event_type) <= set(event)
    assert all(
        event[key] is None for key in _spec_keys(event_type) - {"app_name", "event_id", "event_time", "event_type"}
    )


def test_pull_request_event_shows_the_same_keys_as_a_push(api: DistelliApi) -> None:
    push = api.event(api.create_id("pushEvent", {}))
    pull_request = api.event(api.create_id("pullRequestEvent", {}))

    assert set(pull_request) == set(push)
    assert pull_request["event_type"] == "PULL_REQUEST"


def test_event_time_is_the_receipt_time(api: DistelliApi) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)
    event_id = api.create_id("pushEvent", sample("create_push_event.json"))
    after = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1)

    event_time = dt.datetime.fromisoformat(api.event(event_id)["event_time"])

    assert before <= event_time <= after


@pytest.mark.parametrize("status", ["Success", "Failed", "TimedOut", "Cancelled"])
def test_terminal_build_created_without_build_end_gets_the_receipt_time(api: DistelliApi, status: str) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)
    event_id = api.create_id("buildEvent", {"build_status": status, "build_start": before.isoformat()})
    after = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1)

    build_end = api.event(event_id)["build_end"]

    assert RFC3339_MS.match(build_end)
    assert before <= dt.datetime.fromisoformat(build_end) <= after


@pytest.mark.parametrize("status", ["Waiting", "Queued", "Running"])
def test_build_that_is_not_finished_gets_no_build_end(api: DistelliApi, status: str) -> None:
    event_id = api.create_id("buildEvent", {"build_status": status})

    assert api.event(event_id)["build_end"] is None


def test_empty_body_creates_an_event_with_every_field_null(api: DistelliApi) -> None:
    response = api.create("buildEvent", b"")

    assert response.status_code == 200
    event = api.event(response.get_json()["event_id"])
    assert event["build_status"] is None and event["branch"] is None


def test_every_create_is_stored_once_with_its_kind(api: DistelliApi, store: Store) -> None:
    ids = [api.create_id(kind, sample(sample_name)) for kind, sample_name, _ in SPEC_CREATES]

    stored = stored_events(store)

    assert [str(event.id) for event in stored] == ids
    assert [event.event_type for event in stored] == [event_type for _, _, event_type in SPEC_CREATES]


def test_apps_are_kept_apart(api: DistelliApi) -> None:
    mine = api.create_id("pushEvent", {"branch": "master"})
    theirs = api.for_app("other-app").create_id("pushEvent", {"branch": "master"})

    assert [e["event_id"] for e in api.events()] == [int(mine)]
    assert [e["event_id"] for e in api.for_app("other-app").events()] == [int(theirs)]


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({"branch": "origin/master"}, "branch", "origin/master"),
        ({"commit_msg": "multi\nline ünïcode ✓"}, "commit_msg", "multi\nline ünïcode ✓"),
        ({"build_provider": "AzureDevops"}, "build_provider", "AzureDevops"),
        ({"parent_event_id": "1800"}, "parent_event_id", "1800"),
        ({"release_version": "v5"}, "release_version", "v5"),
        ({"auto_build": False}, "auto_build", False),
    ],
)
def test_build_fields_are_shown_as_sent(api: DistelliApi, body: dict[str, Any], field: str, expected: Any) -> None:
    event_id = api.create_id("buildEvent", body)

    assert api.event(event_id)[field] == expected
