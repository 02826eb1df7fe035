"""UpdateBuildEvent: the spec's example, the build lifecycle, terminal immutability and which ids are found."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.conftest import OTHER_TOKEN, OTHER_USER
from tests.distelli_api import SQLITE_ONLY, DistelliApi, assert_error, sample, sample_bytes, stored_events

TERMINAL = ["Success", "Failed", "TimedOut", "Cancelled"]


def _running_build(api: DistelliApi) -> str:
    return api.create_id("buildEvent", sample("create_build_event.json"))


def _outbox_count(store: Store) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxItem)) or 0


def test_spec_example_update_answers_200_with_the_whole_event(api: DistelliApi) -> None:
    event_id = _running_build(api)

    response = api.update(event_id, sample_bytes("update_build_event.json"))

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"event"}
    event = body["event"]
    assert event["event_id"] == int(event_id)
    assert event["build_status"] == "Success"
    assert event["build_end"] == "2016-08-17T22:22:22.111Z"
    assert event["release_version"] == "v123"
    assert event["build_id"] == "J23465"
    assert set(sample("update_build_event_result.json")["event"]) <= set(event)


def test_update_answer_is_the_event_as_list_events_shows_it(api: DistelliApi) -> None:
    event_id = _running_build(api)

    event = api.update(event_id, sample("update_build_event.json")).get_json()["event"]

    assert event == api.event(event_id)


def test_build_moves_through_every_non_terminal_state_then_finishes(api: DistelliApi) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Waiting"})

    for status in ["Queued", "Running", "Running", "Success"]:
        response = api.update(event_id, {"build_status": status})
        assert response.status_code == 200
        assert response.get_json()["event"]["build_status"] == status


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("commit_id", "05169ab2384e8cd991cfdf4e61f9642ccf600758"),
        ("branch", "origin/release"),
        ("build_url", "http://jenkins.example.com/job/2"),
        ("build_start", "2016-08-15T22:22:23.000Z"),
        ("auto_build", False),
    ],
)
def test_update_accepts_any_build_field_a_client_resends(api: DistelliApi, field: str, value: Any) -> None:
    event_id = _running_build(api)

    event = api.update(event_id, {field: value}).get_json()["event"]

    assert event[field] == value
    assert event["build_status"] == "Running"


def test_update_leaves_fields_it_does_not_name_alone(api: DistelliApi) -> None:
    event_id = _running_build(api)
    before = api.event(event_id)

    after = api.update(event_id, {"release_version": "v9"}).get_json()["event"]

    assert {**before, "release_version": "v9", "delivery": after["delivery"]} == after


@pytest.mark.parametrize("status", TERMINAL)
def test_terminal_update_without_build_end_gets_the_receipt_time(api: DistelliApi, status: str) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)

    event = api.update(event_id, {"build_status": status}).get_json()["event"]

    after = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1)
    assert before <= dt.datetime.fromisoformat(event["build_end"]) <= after


@pytest.mark.parametrize(
    ("status", "second_update"),
    [
        ("Success", {"build_status": "Running"}),
        ("Failed", {"release_version": "v999"}),
        ("TimedOut", {"build_status": "Success", "build_end": "2016-08-18T00:00:00Z"}),
        ("Cancelled", {}),
    ],
)
def test_update_after_a_terminal_state_is_refused_with_409_and_nothing_changes(
    api: DistelliApi, store: Store, status: str, second_update: dict[str, Any]
) -> None:
    event_id = _running_build(api)
    assert api.update(event_id, {"build_status": status}).status_code == 200
    listed_before, stored_before = api.event(event_id), stored_events(store)[0]
    outbox_before = _outbox_count(store)

    response = api.update(event_id, second_update)

    assert_error(response, 409, "immutable_event")
    assert api.event(event_id) == listed_before
    stored_after = stored_events(store)[0]
    assert (stored_after.fields, stored_after.state, stored_after.raw_body, stored_after.updated_at) == (
        stored_before.fields,
        stored_before.state,
        stored_before.raw_body,
        stored_before.updated_at,
    )
    assert _outbox_count(store) == outbox_before


@pytest.mark.parametrize("status", TERMINAL)
def test_build_created_terminal_is_immutable_from_the_start(api: DistelliApi, status: str) -> None:
    event_id = api.create_id("buildEvent", {"build_status": status})

    assert_error(api.update(event_id, {"release_version": "v2"}), 409, "immutable_event")


@pytest.mark.parametrize("kind", ["pushEvent", "pullRequestEvent", "deployEvent"])
def test_update_of_an_event_that_is_not_a_build_is_404(api: DistelliApi, store: Store, kind: str) -> None:
    event_id = api.create_id(kind, {"branch": "master"})
    stored_before = stored_events(store)[0].raw_body

    assert_error(api.update(event_id, {"build_status": "Success"}), 404, "not_found")
    assert stored_events(store)[0].raw_body == stored_before


def test_update_of_an_unknown_id_is_404(api: DistelliApi) -> None:
    event_id = _running_build(api)

    assert_error(api.update(str(int(event_id) + 1000), {"build_status": "Success"}), 404, "not_found")


@SQLITE_ONLY
@pytest.mark.parametrize("event_id", ["abc", "12abc", "-1", "1.0", "0x10", "99999999999999999999999", "%C2%B2"])
def test_update_of_an_id_that_is_not_a_number_is_404(api: DistelliApi, event_id: str) -> None:
    _running_build(api)

    assert_error(api.update(event_id, {"build_status": "Success"}), 404, "not_found")


def test_update_of_another_apps_build_is_404_and_leaves_it_running(api: DistelliApi) -> None:
    other_app = api.for_app("other-app")
    event_id = other_app.create_id("buildEvent", {"build_status": "Running"})

    assert_error(api.update(event_id, {"build_status": "Success"}), 404, "not_found")
    assert other_app.event(event_id)["build_status"] == "Running"


def test_update_of_another_users_build_is_404_and_leaves_it_running(api: DistelliApi) -> None:
    other_user = api.as_user(OTHER_USER, OTHER_TOKEN)
    event_id = other_user.create_id("buildEvent", {"build_status": "Running"})

    assert_error(api.update(event_id, {"build_status": "Success"}), 404, "not_found")
    assert other_user.event(event_id)["build_status"] == "Running"


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"build_end": "2016-08-15T22:22:21.000Z"}, "build_end"),
        ({"build_status": "Success", "build_end": "2016-08-15T22:00:00Z"}, "build_end"),
        ({"build_start": "2016-08-15T23:00:00Z", "build_end": "2016-08-15T22:30:00Z"}, "build_end"),
    ],
    ids=["end-before-stored-start", "terminal-end-before-stored-start", "both-in-body"],
)
def test_update_with_build_end_before_build_start_is_400_and_nothing_changes(
    api: DistelliApi, store: Store, update: dict[str, Any], field: str
) -> None:
    event_id = _running_build(api)  # build_start 2016-08-15T22:22:22.111Z
    before = api.event(event_id)
    raw_before = stored_events(store)[0].raw_body

    error = assert_error(api.update(event_id, update), 400, "invalid_field")

    assert field in error["fields"]
    assert api.event(event_id) == before
    assert stored_events(store)[0].raw_body == raw_before


def test_update_moving_build_start_after_the_stored_build_end_is_400(api: DistelliApi) -> None:
    event_id = api.create_id(
        "buildEvent",
        {"build_status": "Running", "build_start": "2016-08-15T22:00:00Z", "build_end": "2016-08-15T22:10:00Z"},
    )

    error = assert_error(api.update(event_id, {"build_start": "2016-08-15T22:20:00Z"}), 400, "invalid_field")

    assert "build_start" in error["fields"]


def test_every_accepted_update_body_is_kept_in_the_raw_history(api: DistelliApi, store: Store) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Queued", "x_first": 1})
    api.update(event_id, {"build_status": "Running", "x_second": 2})
    api.update(event_id, {"build_status": "Success", "x_third": 3})

    raw = stored_events(store)[0].raw_body

    assert raw.index("x_first") < raw.index("x_second") < raw.index("x_third")
