"""What sloppy legacy clients send, accepted: doubled slashes, odd Content-Types, any-case statuses, loose ISO 8601,
string booleans, numeric ids and extra fields."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, TestResponse

from bridge.storage.store import Store
from tests.conftest import TOKEN
from tests.distelli_api import SQLITE_ONLY, DistelliApi, sample, sample_bytes, stored_events

pytestmark = SQLITE_ONLY  # every quirk is handled before storage; test_api_create covers both databases


def _raw_path(api: DistelliApi, method: str, path: str, body: bytes = b"") -> TestResponse:
    """Send ``path`` exactly as a client's request line would ("PUT //jdoe/apps/... HTTP/1.1").

    The test client otherwise reads a path starting with "//" as "//host/path", the way a browser would.
    """
    builder = EnvironBuilder(method=method, path="/", query_string={"apiToken": TOKEN}, data=body)
    builder.path = path
    return api.client.open(builder)


@pytest.mark.parametrize(
    "path",
    [
        "//jdoe/apps/example-node/events/buildEvent",
        "/jdoe//apps/example-node/events/buildEvent",
        "/jdoe/apps//example-node//events///buildEvent",
    ],
)
def test_doubled_slashes_in_a_create_path_are_accepted(api: DistelliApi, path: str) -> None:
    response = _raw_path(api, "PUT", path, sample_bytes("create_build_event.json"))

    assert response.status_code == 200
    assert api.event(response.get_json()["event_id"])["build_id"] == "J23465"


def test_doubled_slashes_in_update_and_list_paths_are_accepted(api: DistelliApi) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})

    updated = _raw_path(api, "POST", f"//jdoe/apps/example-node/events//{event_id}", b"{}")
    listed = _raw_path(api, "GET", "//jdoe/apps/example-node//events")

    assert updated.status_code == 200
    assert [event["event_id"] for event in listed.get_json()["events"]] == [int(event_id)]


def test_trailing_slash_on_the_list_path_is_accepted(api: DistelliApi) -> None:
    api.create_id("pushEvent", {})

    response = api.client.get(f"/jdoe/apps/example-node/events/?apiToken={TOKEN}")

    assert response.status_code == 200 and len(response.get_json()["events"]) == 1


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",  # curl -d without -H
    "text/plain",
    "application/octet-stream",
    "multipart/form-data; boundary=xyz",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_json_body_is_read_whatever_the_content_type_says(api: DistelliApi, content_type: str | None) -> None:
    body = sample_bytes("create_build_event.json")

    created = api.client.put(api.url("/buildEvent"), data=body, content_type=content_type)
    updated = api.client.post(
        api.url(f"/{created.get_json()['event_id']}"), data=b'{"build_status":"success"}', content_type=content_type
    )

    assert created.status_code == 200
    assert updated.status_code == 200
    event = updated.get_json()["event"]
    assert (event["build_id"], event["build_status"]) == ("J23465", "Success")


def test_json_body_with_a_utf8_byte_order_mark_is_read(api: DistelliApi) -> None:
    event_id = api.create_id("pushEvent", codecs.BOM_UTF8 + sample_bytes("create_push_event.json"))

    assert api.event(event_id)["author_name"] == "John Doe"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("waiting", "Waiting"),
        ("QUEUED", "Queued"),
        ("running", "Running"),
        ("rUnNiNg", "Running"),
        (" Running ", "Running"),
        ("success", "Success"),
        ("SUCCESS", "Success"),
        ("failed", "Failed"),
        ("timedout", "TimedOut"),
        ("TIMEDOUT", "TimedOut"),
        ("cancelled", "Cancelled"),
        ("canceled", "Cancelled"),  # the spec's own spelling in "The build was canceled"
    ],
)
def test_build_status_in_any_case_is_stored_in_the_spec_spelling(api: DistelliApi, sent: str, stored: str) -> None:
    created = api.create_id("buildEvent", {"build_status": sent})
    running = api.create_id("buildEvent", {"build_status": "Running"})

    assert api.event(created)["build_status"] == stored
    assert api.update(running, {"build_status": sent}).get_json()["event"]["build_status"] == stored


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("2016-08-15T22:22:22.111Z", "2016-08-15T22:22:22.111Z"),
        ("2016-08-15T22:22:22Z", "2016-08-15T22:22:22.000Z"),
        ("2016-08-15T22:22:22", "2016-08-15T22:22:22.000Z"),
        ("2016-08-15T22:22:22.1Z", "2016-08-15T22:22:22.100Z"),
        ("2016-08-15T22:22:22.123456Z", "2016-08-15T22:22:22.123Z"),
        ("2016-08-15T22:22:22+00:00", "2016-08-15T22:22:22.000Z"),
        ("2016-08-15T22:22:22.111+02:00", "2016-08-15T20:22:22.111Z"),
        ("2016-08-15T22:22:22-05:00", "2016-08-16T03:22:22.000Z"),
        ("2016-08-15T22:22:22-0500", "2016-08-16T03:22:22.000Z"),
        ("2016-08-15 22:22:22Z", "2016-08-15T22:22:22.000Z"),
        ("2016-08-15T22:22Z", "2016-08-15T22:22:00.000Z"),
        ("2016-08-15t22:22:22.111z", "2016-08-15T22:22:22.111Z"),
    ],
)
def test_iso_8601_times_with_or_without_milliseconds_or_offset_are_shown_in_utc(
    api: DistelliApi, sent: str, shown: str
) -> None:
    event_id = api.create_id("buildEvent", {"build_start": sent, "build_status": "Queued"})

    assert api.event(event_id)["build_start"] == shown
    assert api.update(event_id, {"build_end": sent.replace("22:22", "22:59", 1)}).status_code == 200


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("true", True), ("false", False), ("True", True), ("FALSE", False), (True, True), (False, False), (1, True)],
)
def test_booleans_sent_as_strings_are_booleans(api: DistelliApi, sent: Any, stored: bool) -> None:
    build = api.create_id("buildEvent", {"auto_build": sent})
    deploy = api.create_id("deployEvent", {"auto_deploy": sent})

    assert api.event(build)["auto_build"] is stored
    assert api.event(deploy)["auto_deploy"] is stored


@pytest.mark.parametrize(
    ("kind", "field", "sent", "shown"),
    [
        ("buildEvent", "build_id", 96, "96"),
        ("buildEvent", "build_id", 96.0, "96"),
        ("buildEvent", "build_id", 12.5, "12.5"),
        ("buildEvent", "parent_event_id", 1800, "1800"),
        ("buildEvent", "release_version", 5, "5"),
        ("pushEvent", "commit_id", 1234567, "1234567"),
        ("deployEvent", "deployment_number", 107557, "107557"),
    ],
)
def test_numeric_ids_are_kept_as_their_text(api: DistelliApi, kind: str, field: str, sent: Any, shown: str) -> None:
    event_id = api.create_id(kind, {field: sent})

    assert api.event(event_id)[field] == shown


def test_null_fields_are_accepted_as_unset(api: DistelliApi) -> None:
    body = {key: None for key in sample("create_build_event.json")}

    event = api.event(api.create_id("buildEvent", body))

    assert all(event[key] is None for key in body)


def test_unknown_fields_are_kept_in_the_stored_raw_body_and_ignored(api: DistelliApi, store: Store) -> None:
    extra = {"job_name": "deploy-prod", "build_number": 7, "env": {"NODE_ENV": "production"}, "tags": ["a", "b"]}
    body = {**sample("create_build_event.json"), **extra}

    event_id = api.create_id("buildEvent", body)
    update = api.update(event_id, {"build_status": "Success", "duration_ms": 1234})

    assert update.status_code == 200
    assert not set(extra) & set(api.event(event_id))
    created_raw, updated_raw = json.loads(stored_events(store)[0].raw_body)
    assert created_raw == body
    assert updated_raw == {"build_status": "Success", "duration_ms": 1234}
