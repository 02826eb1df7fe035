"""Bad input: every case gets the one JSON error shape with the right 4xx, nothing is stored, never a 500."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from bridge.config import Config
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.distelli_api import SQLITE_ONLY, DistelliApi, assert_error, stored_events

BIG = b'{"commit_msg": "' + b"x" * (1024 * 1024) + b'"}'

# (label, body as bytes or JSON, status, code, field named in "fields" or None)
BAD_CREATES: list[tuple[str, Any, int, str, str | None]] = [
    ("invalid JSON", b'{"build_status": "Running",}', 400, "invalid_json", None),
    ("truncated JSON", b'{"build_status": "Run', 400, "invalid_json", None),
    ("not UTF-8", b'{"build_id": "\xff\xfe"}', 400, "invalid_json", None),
    ("form encoded", b"build_status=Running&build_id=1", 400, "invalid_json", None),
    ("NaN", b'{"build_id": NaN}', 400, "invalid_json", None),
    ("Infinity", b'{"commit_msg": -Infinity}', 400, "invalid_json", None),
    ("float too large", b'{"build_id": 1e400}', 400, "invalid_json", None),
    ("integer with 5000 digits", b'{"build_id": ' + b"9" * 5000 + b"}", 400, "invalid_json", None),
    ("integer with 300 digits", b'{"build_id": ' + b"9" * 300 + b"}", 400, "invalid_field", "build_id"),
    ("array body", [{"build_status": "Running"}], 400, "invalid_body", None),
    ("string body", b'"Running"', 400, "invalid_body", None),
    ("number body", b"42", 400, "invalid_body", None),
    ("null body", b"null", 400, "invalid_body", None),
    ("nested 65 deep", b'{"x": ' + b"[" * 64 + b"]" * 64 + b"}", 400, "invalid_body", None),
    ("nested 100000 deep", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json", None),
    ("unknown build_status", {"build_status": "Exploded"}, 400, "invalid_field", "build_status"),
    ("build_status a number", {"build_status": 3}, 400, "invalid_field", "build_status"),
    ("unparseable time", {"build_start": "yesterday at noon"}, 400, "invalid_field", "build_start"),
    ("impossible date", {"build_start": "2016-02-30T10:00:00Z"}, 400, "invalid_field", "build_start"),
    ("time as epoch number", {"build_end": 1471299742}, 400, "invalid_field", "build_end"),
    ("time before year 1 in UTC", {"build_start": "0001-01-01T00:00:00+01:00"}, 400, "invalid_field", "build_start"),
    ("time after 9999 in UTC", {"build_end": "9999-12-31T23:59:59-05:00"}, 400, "invalid_field", "build_end"),
    ("build_id an object", {"build_id": {"n": 1}}, 400, "invalid_field", "build_id"),
    ("build_id a boolean", {"build_id": True}, 400, "invalid_field", "build_id"),
    ("commit_msg a list", {"commit_msg": ["a", "b"]}, 400, "invalid_field", "commit_msg"),
    ("auto_build not a boolean", {"auto_build": "maybe"}, 400, "invalid_field", "auto_build"),
    ("auto_build a list", {"auto_build": [True]}, 400, "invalid_field", "auto_build"),
    ("field too long", {"build_id": "x" * 201}, 400, "invalid_field", "build_id"),
    (
        "build_end before build_start",
        {"build_start": "2016-08-15T22:22:22.111Z", "build_end": "2016-08-15T22:22:21Z"},
        400,
        "invalid_field",
        "build_end",
    ),
    ("body over 1 MiB", BIG, 413, "payload_too_large", None),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("label", "body", "status", "code", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_bad_create_body_is_refused_with_one_json_error_and_nothing_is_stored(
    api: DistelliApi, store: Store, label: str, body: Any, status: int, code: str, field: str | None
) -> None:
    error = assert_error(api.create("buildEvent", body), status, code)

    if field is not None:
        assert field in error["fields"]
    assert stored_events(store) == []


def test_every_bad_field_is_named_at_once(api: DistelliApi) -> None:
    body = {"build_status": "Nope", "build_start": "soon", "auto_build": "perhaps", "build_id": [1]}

    error = assert_error(api.create("buildEvent", body), 400, "invalid_field")

    assert set(error["fields"]) == {"build_status", "build_start", "auto_build", "build_id"}
    assert error["fields"]["build_start"] == ["Not a valid datetime."]


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("pushEvent", {"branch": {"name": "master"}}, "branch"),
        ("pullRequestEvent", {"commit_id": ["abc"]}, "commit_id"),
        ("deployEvent", {"deployment_status": "Exploded"}, "deployment_status"),
        ("deployEvent", {"deploy_start": "2016-08-15T22:00:00Z", "deploy_end": "2016-08-15T21:00:00Z"}, "deploy_end"),
    ],
)
@SQLITE_ONLY
def test_bad_fields_of_the_other_kinds_are_named(api: DistelliApi, kind: str, body: Any, field: str) -> None:
    error = assert_error(api.create(kind, body), 400, "invalid_field")

    assert field in error["fields"]


@pytest.mark.parametrize(
    ("label", "body", "code", "field"),
    [
        ("invalid JSON", b"{", "invalid_json", None),
        ("array body", [1], "invalid_body", None),
        ("unknown build_status", {"build_status": "Done"}, "invalid_field", "build_status"),
        ("unparseable time", {"build_end": "the 5th"}, "invalid_field", "build_end"),
        ("wrong type", {"release_version": {"v": 1}}, "invalid_field", "release_version"),
    ],
)
def test_bad_update_body_is_refused_and_the_build_is_untouched(
    api: DistelliApi, label: str, body: Any, code: str, field: str | None
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})
    before = api.event(event_id)

    error = assert_error(api.update(event_id, body), 400, code)

    if field is not None:
        assert field in error["fields"]
    assert api.event(event_id) == before


@SQLITE_ONLY
@pytest.mark.parametrize(("body", "status"), [(b'{"commit_msg": "short"}', 200), (BIG, 413)], ids=["small", "big"])
def test_chunked_body_without_content_length_is_read_whole_or_refused_with_413(
    api: DistelliApi, store: Store, body: bytes, status: int
) -> None:
    """Werkzeug cuts a chunked body at the limit instead of refusing it; a cut body must not pass as invalid JSON."""
    response = api.client.put(
        api.url("/pushEvent"),
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == status
    if status == 413:
        assert_error(response, 413, "payload_too_large")
    assert len(stored_events(store)) == (1 if status == 200 else 0)


def test_update_body_over_1_mib_is_413(api: DistelliApi) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})

    assert_error(api.update(event_id, BIG), 413, "payload_too_large")
    assert api.event(event_id)["commit_msg"] is None


# Values that reach the database's own text columns: PostgreSQL refuses NUL and overlong VARCHARs, so these run on
# both databases to prove the refusal happens at the edge, not as a driver error.
UNSTORABLE = [
    ("NUL in an indexed field", {"branch": "mas\u0000ter"}, "branch"),
    ("NUL in a stored field", {"commit_msg": "a\u0000b"}, "commit_msg"),
    ("unpaired surrogate", {"author_name": "\ud800"}, "author_name"),
    ("commit_id longer than its column", {"commit_id": "c" * 201}, "commit_id"),
    ("branch longer than its column", {"branch": "b" * 401}, "branch"),
]


@pytest.mark.parametrize(("label", "body", "field"), UNSTORABLE, ids=[case[0] for case in UNSTORABLE])
def test_text_the_database_cannot_store_is_refused_at_the_edge(
    api: DistelliApi, store: Store, label: str, body: dict[str, Any], field: str
) -> None:
    error = assert_error(api.create("pushEvent", body), 400, "invalid_field")

    assert field in error["fields"]
    assert stored_events(store) == []


@pytest.mark.parametrize(
    "app_name",
    ["a" * 201, "bad%00name", "tab%09name", "%FF%FE", "%ED%A0%80"],
    ids=["too long", "NUL", "control character", "not UTF-8", "encoded surrogate"],
)
def test_app_name_the_database_cannot_store_is_400(api: DistelliApi, store: Store, app_name: str) -> None:
    bad_app = api.for_app(app_name)

    for response in (bad_app.create("pushEvent", {}), bad_app.list(), bad_app.update("1", {})):
        error = assert_error(response, 400, "invalid_path")
        assert "app_name" in error["fields"]
    assert stored_events(store) == []


def test_longest_storable_app_name_is_accepted(api: DistelliApi) -> None:
    longest = api.for_app("a" * 200)

    event_id = longest.create_id("pushEvent", {})

    assert longest.event(event_id)["app_name"] == "a" * 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/"),
        ("get", "/jdoe"),
        ("get", "/jdoe/apps"),
        ("get", "/jdoe/apps/example-node"),
        ("put", "/jdoe/apps/example-node/events/buildEvent/extra"),
        ("get", "/jdoe/apps/example-node/events/1/2"),
        ("get", "/api/v2/ci/pipeline"),
    ],
)
def test_unknown_route_is_404_json(api: DistelliApi, method: str, path: str) -> None:
    response = getattr(api.client, method)(f"{path}?apiToken=secret-in-query")

    error = assert_error(response, 404, "not_found")
    assert "secret-in-query" not in str(error)


@SQLITE_ONLY
@pytest.mark.parametrize("kind", ["releaseEvent", "buildevent", "1"])
def test_put_of_an_unknown_event_kind_is_404_naming_the_kinds(api: DistelliApi, store: Store, kind: str) -> None:
    error = assert_error(api.create(kind, {"build_status": "Running"}), 404, "unknown_event_kind")

    assert "buildEvent" in error["message"]
    assert stored_events(store) == []


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "suffix", "allowed"),
    [
        ("get", "/buildEvent", "PUT"),
        ("post", "/pushEvent", None),  # POST .../events/<id> takes "pushEvent" as an id: see the 404 test below
        ("delete", "/pullRequestEvent", "PUT"),
        ("get", "/1", "POST"),
        ("delete", "/1", "POST"),
        ("patch", "/1", "POST"),
        ("post", "", "GET"),
        ("put", "", "GET"),
        ("delete", "", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(api: DistelliApi, method: str, suffix: str, allowed: str | None) -> None:
    response = getattr(api.client, method)(api.url(suffix), json={})

    if allowed is None:
        assert_error(response, 404, "not_found")
        return
    assert_error(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]


@SQLITE_ONLY
def test_wrong_method_on_healthz_is_405_json(api: DistelliApi) -> None:
    assert_error(api.client.post("/healthz"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "call",
    [
        lambda api: api.create("buildEvent", {"build_status": "Running"}),
        lambda api: api.update("1", {"build_status": "Success"}),
        lambda api: api.list(),
    ],
    ids=["create", "update", "list"],
)
def test_unreachable_database_is_503_with_retry_after(make_config: Callable[..., Config], call: Any) -> None:
    config = make_config(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")
    api = DistelliApi(create_app(config).test_client())

    response = call(api)

    assert_error(response, 503, "unavailable")
    assert int(response.headers["Retry-After"]) > 0
