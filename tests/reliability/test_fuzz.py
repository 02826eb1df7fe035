"""Fuzzing every route through the Flask test client: whatever arrives, the answer is never a 500.

Random JSON values, random types in the fields the schemas know, random paths and query strings, and bodies that
are huge or nested deeper than any parser likes. After all of it the service still accepts a good build.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import distelli
from bridge import migrate
from bridge.app import create_app
from bridge.config import Config
from bridge.store import Store
from tests.conftest import TOKEN, USER
from tests.reliability.harness import APP, running_body

FIELDS = sorted(
    {field.data_key or name for schema in distelli.SCHEMAS.values() for name, field in schema().fields.items()}
)
ROUTE_TAILS = ["buildEvent", "pushEvent", "pullRequestEvent", "deployEvent", "1", "0", "-1", "9" * 30]
FIXED_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/hooks/github", "/hooks/gitlab", "/", ""]
QUERY_NAMES = ["apiToken", "max_results", "marker", "order", "filter_name", "filter_event_type", "filter_branch"]
METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CONTENT_TYPES = [None, "application/json", "application/x-www-form-urlencoded", "text/plain; charset=latin-1"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=10)
raw_bodies = bodies.map(json.dumps) | json_values.map(json.dumps) | st.binary(max_size=120) | st.just("")
segments = st.text(max_size=24)
paths = (
    st.builds(
        "/{}/apps/{}/events/{}".format, st.just(USER) | segments, segments, st.sampled_from(ROUTE_TAILS) | segments
    )
    | st.builds("/{}/apps/{}/events".format, st.just(USER) | segments, st.just(APP) | segments)
    | st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts))
    | st.sampled_from(FIXED_PATHS)
)
queries = st.dictionaries(
    st.sampled_from(QUERY_NAMES) | st.text(max_size=8), st.just(TOKEN) | st.text(max_size=30), max_size=5
)


@pytest.fixture
def fuzz_app(make_config: Callable[..., Config]) -> Iterator[Flask]:
    config = make_config()
    store = Store(config.database_url)
    migrate.upgrade(store)
    yield create_app(config, store)
    store.dispose()


@pytest.fixture
def fuzz_client(fuzz_app: Flask) -> Iterator[FlaskClient]:
    client = fuzz_app.test_client()
    yield client
    assert client.get("/healthz").status_code == 200
    good = client.put(f"/{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN}", json=running_body(1))
    assert good.status_code == 200, good.get_data(as_text=True)


def assert_answered_cleanly(response: Any, method: str) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400 and method != "HEAD":
        error = response.get_json(silent=True)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=paths,
    query=queries,
    body=raw_bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_random_requests_never_get_a_500(
    fuzz_client: FlaskClient, method: str, path: str, query: dict[str, str], body: str | bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    # The path goes in as the server would decode it, so "//x" or "?" stay part of the path.
    raw_path = {"PATH_INFO": path.encode("utf-8", "surrogatepass").decode("latin-1")}
    response = fuzz_client.open(
        "/", method=method, query_string=urlencode(query), data=body, headers=headers, environ_overrides=raw_path
    )
    assert_answered_cleanly(response, method)


@FUZZ
@given(field=st.sampled_from(FIELDS), value=json_values, extra=bodies)
def test_a_good_build_with_one_field_of_a_random_type_never_gets_a_500(
    fuzz_client: FlaskClient, field: str, value: Any, extra: dict[str, Any]
) -> None:
    base = f"/{USER}/apps/{APP}/events"
    created = fuzz_client.put(f"{base}/buildEvent?apiToken={TOKEN}", json={**running_body(2), field: value})
    assert_answered_cleanly(created, "PUT")
    event_id = created.get_json()["event_id"] if created.status_code == 200 else "1"
    updated = fuzz_client.post(f"{base}/{event_id}?apiToken={TOKEN}", json={**extra, field: value})
    assert_answered_cleanly(updated, "POST")


def nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


HOSTILE_BODIES = {
    "two_mebibytes": json.dumps({**running_body(3), "commit_msg": "x" * 2 * 1024 * 1024}),
    "list_nested_100k_deep": nested(100_000),
    "object_nested_100k_deep": '{"a":' * 100_000 + "0" + "}" * 100_000,
    "field_nested_100k_deep": '{"build_status":' + nested(100_000) + "}",
    "field_nested_900_deep": json.dumps({**running_body(4), "build_id": json.loads(nested(900))}),
    "extra_key_nested_900_deep": json.dumps({**running_body(5), "x": json.loads(nested(900))}),
    "a_hundred_thousand_keys": json.dumps({f"k{index}": index for index in range(100_000)}),
    "huge_number": '{"build_status": "Running", "build_id": ' + "9" * 5000 + "}",
    "huge_float": '{"build_status": "Running", "build_start": 1e999}',
    "lone_surrogate": '{"build_status": "Running", "build_id": "\\ud800"}',
    "nul_in_string": '{"build_status": "Running", "build_id": "a\\u0000b"}',
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
@pytest.mark.parametrize("method, tail", [("PUT", "buildEvent"), ("POST", "1")])
def test_huge_and_deeply_nested_bodies_get_a_clear_4xx(
    fuzz_client: FlaskClient, body: str, method: str, tail: str
) -> None:
    response = fuzz_client.open(
        f"/{USER}/apps/{APP}/events/{tail}?apiToken={TOKEN}", method=method, data=body, content_type="application/json"
    )
    assert_answered_cleanly(response, method)
