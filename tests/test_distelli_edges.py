"""Distelli requests at the edges: times at the ends of the calendar in every time field, and a build updated
many times with large bodies. Never a 500; a build can always finish; what is kept of one event is bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.ingest.distelli_ingest import MAX_KEPT_BODIES, MAX_KEPT_BYTES
from bridge.storage.store import Store
from tests.distelli_api import DistelliApi, assert_error, stored_events, stored_rows
from tests.intake_server import DORA_PATH, IntakeServer
from tests.sender_support import deliver_all

# Go's and .NET's zero time in the spellings they serialise it, and other times in year 1 (UTC): taken as unset.
ZERO_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:04.999Z",
    "0001-01-01T00:00:00-14:00",
    "0001-12-31T23:59:59Z",
]
# Valid times far from now: stored; a final event this old expires, a future one is clamped to receipt.
FAR_TIMES = [
    "0002-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00Z",
    "2000-02-29T12:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59+14:00",
]
# Not times, or not in the calendar once in UTC: 400 naming the field.
BAD_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-01:00",
    "2017-02-29T00:00:00Z",
    "2016-12-31T23:59:60Z",
    "10000-01-01T00:00:00Z",
]

BUILD_FIELDS = ("build_start", "build_end")
DEPLOY_FIELDS = ("deploy_start", "deploy_end")


def _deliver(store: Store, intake: IntakeServer) -> None:
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)


def test_a_build_started_at_the_zero_time_can_finish_and_is_sent(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    """The issue's case: created Running at year 1, then every update answered 500 and the build never ended."""
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_start": "0001-01-01T00:00:00Z"})

    finished = api.update(event_id, {"build_status": "Success", "build_end": "0001-01-01T00:00:02Z"})
    created_final = api.create("buildEvent", {"build_status": "Failed", "build_start": "0001-01-01T00:00:01Z"})
    _deliver(store, intake)  # the running event is superseded by the final one queued before it left

    assert finished.status_code == 200
    assert finished.get_json()["event"]["build_start"] is None  # the zero time means "not known"
    assert created_final.status_code == 200
    assert intake.statuses() and set(intake.statuses()) == {202}
    statuses = sorted(resource["status"] for resource in intake.accepted_resources() if resource["level"] == "pipeline")
    assert statuses == ["error", "success"]


def _outcome(response: Any) -> str:
    """``ok`` or ``4xx``; anything else (a 500, a non-JSON body) fails the test that collects it."""
    if response.status_code == 200:
        return "ok"
    assert_error(response, response.status_code)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    return "4xx"


@pytest.mark.parametrize(("fields", "kind"), [(BUILD_FIELDS, "buildEvent"), (DEPLOY_FIELDS, "deployEvent")])
def test_calendar_edges_in_every_time_field_never_answer_500_and_the_intake_refuses_nothing(
    api: DistelliApi, store: Store, intake: IntakeServer, fields: tuple[str, str], kind: str
) -> None:
    status_key = "build_status" if kind == "buildEvent" else "deployment_status"
    wrong: dict[str, Any] = {}
    for field in fields:
        for value in ZERO_TIMES + FAR_TIMES + BAD_TIMES:
            label = f"{field}={value}"
            running = api.create(kind, {status_key: "Running", field: value})
            final = api.create(kind, {status_key: "Success", field: value})
            expected = "4xx" if value in BAD_TIMES else "ok"
            got = [_outcome(running), _outcome(final)]
            if kind == "buildEvent" and got[0] == "ok":
                build_id = running.get_json()["event_id"]
                got.append(_outcome(api.update(build_id, {field: value})))
                got.append(_outcome(api.update(build_id, {"build_status": "Failed"})))
            if set(got) != {expected}:
                wrong[label] = got
            if value in ZERO_TIMES and got[1] == "ok":
                shown = api.event(final.get_json()["event_id"])[field]
                if shown is not None and field.endswith("start"):
                    wrong[f"{label} shown"] = shown

    _deliver(store, intake)

    assert wrong == {}
    assert set(intake.statuses()) <= {202}
    assert not [row for row in stored_rows(store) if row["table"] == "outbox" and row["state"] == "dead"]
    if kind == "deployEvent":
        for deployment in intake.accepted_events(DORA_PATH):
            attributes = deployment["attributes"]
            assert 0 <= attributes["started_at"] <= attributes["finished_at"]


def test_what_one_build_keeps_of_its_request_bodies_is_bounded(api: DistelliApi, store: Store) -> None:
    """Each update's body is kept for the record, but a hundred 900 KB updates must not make a 90 MB row."""
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_id": "first"})
    padding = "x" * 900_000
    for number in range(12):
        response = api.update(event_id, {"build_status": "Running", "note": f"{number}:{padding}"})
        assert response.status_code == 200
    for number in range(MAX_KEPT_BODIES + 10):
        assert api.update(event_id, {"build_status": "Running", "small": number}).status_code == 200

    (event,) = stored_events(store)
    kept = json.loads(event.raw_body)

    assert len(event.raw_body) <= MAX_KEPT_BYTES
    assert len(kept) == MAX_KEPT_BODIES
    assert kept[0] == {"build_status": "Running", "build_id": "first"}  # the create's body is always kept
    assert kept[-1] == {"build_status": "Running", "small": MAX_KEPT_BODIES + 9}  # and the newest
    assert [body["small"] for body in kept[1:]] == list(range(11, MAX_KEPT_BODIES + 10))
    assert api.update(event_id, {"build_status": "Success"}).status_code == 200


def test_one_huge_update_after_a_huge_create_keeps_both(api: DistelliApi, store: Store) -> None:
    big = "y" * 1_000_000
    event_id = api.create_id("buildEvent", {"build_status": "Running", "note": big})
    for number in range(3):
        assert api.update(event_id, {"build_status": "Running", "note": f"{number}{big}"}).status_code == 200

    kept = json.loads(stored_events(store)[0].raw_body)

    assert [body["note"][:1] for body in kept] == ["y", "2"]
