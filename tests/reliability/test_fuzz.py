"""Fuzzing every route through the Flask test client: whatever arrives, the answer is never a 500 and always JSON.

Random JSON values, random types in the fields the schemas know, random paths and query strings, and bodies that
are huge or nested deeper than any parser likes. The webhook routes get real payload shapes (tests/samples and
../shared/corpus, read in place) signed as their source signs them, so the mutations reach the adapters and the
database instead of stopping at the signature check; the Distelli routes get the spec's examples. The mutations
are the ones that found bugs before: calendar edges in time fields, huge and negative numbers in number fields,
the wrong JSON type for any key, and lone surrogates and NULs in any string. After all of it the service still
accepts a good build.

``FUZZ_EXAMPLES`` is the number of generated cases over all the generated tests together (default 700, about half
a minute, which ``make test`` runs); the long run is
``FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/reliability/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import distelli
from bridge.config import Config
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.reliability.harness import APP, running_body
from tests.test_adapter_samples import NATIVE, SAMPLES, SECRET, adapter, index

FIELDS = sorted(
    {field.data_key or name for schema in distelli.SCHEMAS.values() for name, field in schema().fields.items()}
)
ROUTE_TAILS = ["buildEvent", "pushEvent", "pullRequestEvent", "deployEvent", "1", "0", "-1", "9" * 30]
FIXED_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/hooks/github", "/hooks/gitlab", "/", ""]
QUERY_NAMES = ["apiToken", "max_results", "marker", "order", "filter_name", "filter_event_type", "filter_branch"]
METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CONTENT_TYPES = [None, "application/json", "application/x-www-form-urlencoded", "text/plain; charset=latin-1"]
# The generated tests below share FUZZ_EXAMPLES between them: two random-request tests, the Distelli shapes and
# one per webhook source.
GENERATED_TESTS = 3 + len(NATIVE)
PER_TEST = max(1, int(os.environ.get("FUZZ_EXAMPLES", "700")) // GENERATED_TESTS)
FUZZ = settings(
    max_examples=PER_TEST,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_SLASHES = re.compile("/{2,}")  # the bridge serves //metrics as /metrics
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

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
    config = make_config(BRIDGE_HOOK_SECRETS=",".join(f"{source}:{SECRET}" for source in NATIVE))
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


# Routes whose successful answer is documented as something else than JSON (Prometheus' text format).
NOT_JSON_ROUTES = ("/metrics",)


def assert_answered_cleanly(response: Any, method: str, path: str = "") -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if method == "HEAD" or response.status_code == 204 or (method == "OPTIONS" and not response.data):
        return  # answers without a body: HEAD, 204, and the Allow-only answer to OPTIONS
    if response.status_code < 400 and path.rstrip("/") in NOT_JSON_ROUTES:
        return
    assert response.is_json and response.get_json(silent=True) is not None, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        error = response.get_json()["error"]
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
    assert_answered_cleanly(response, method, _SLASHES.sub("/", path))


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


# Values that broke a time, number or type somewhere before; the strategies mix them with random ones.
CALENDAR_EDGES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:04.999Z",
    "0001-01-01 00:00:00 UTC",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31 23:59:59 -1400",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "2016-02-30T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "0000-00-00T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "2016-08-15T22:22:22.111111111111Z",
    "2016-08-15T24:00:00Z",
    "2016-08-15T22:22:22+99:99",
    "",
]
BIG_NUMBERS = [
    0,
    -1,
    10**12,
    -(10**12),
    3 * 10**14,
    2**63,
    -(2**63) - 1,
    2**64,
    10**300,
    -(10**300),
    1e300,
    -1e300,
    1e-300,
    10**4000,
]
UNSTORABLE = ["\udfff", "\ud800", "\x00", "a\x00b", "\udfff\x00"]

wrong_types = st.sampled_from([None, True, False, 0, -1, 1.5, "", "x", [], {}, [None], {"": None}])
numbers = st.sampled_from(BIG_NUMBERS) | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
strings_with_unstorable = st.builds(
    lambda head, bad, tail: head + bad + tail, st.text(max_size=6), st.sampled_from(UNSTORABLE), st.text(max_size=6)
)


def mutation(value: Any) -> st.SearchStrategy[Any]:
    """What may replace ``value``: an edge of its own kind most of the time, else any wrong type."""
    if isinstance(value, bool) or value is None:
        own: st.SearchStrategy[Any] = st.booleans() | numbers
    elif isinstance(value, int | float):
        own = numbers | st.sampled_from(CALENDAR_EDGES)
    elif isinstance(value, str):
        own = (
            st.sampled_from(CALENDAR_EDGES)
            | strings_with_unstorable
            | st.just(value + "\udfff")
            | st.just(value[:1] + "\x00" + value[1:])
            | st.text(max_size=20)
            | numbers
        )
    else:
        own = st.sampled_from([[], {}, [value], {"x": value}])
    return own | wrong_types | json_values


def node_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a parsed payload, containers included."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += node_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for position, item in enumerate(value[:3]):
            found += node_paths(item, (*prefix, position))
    return found


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def mutated(data: st.DataObject, payload: Any) -> Any:
    """``payload`` with one to four of its keys given a hostile value (or removed, or a key renamed)."""
    payload = json.loads(json.dumps(payload))
    paths = node_paths(payload)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="path")
        try:
            parent = at(payload, path[:-1])
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a container on this path
        choice = data.draw(st.sampled_from(["value", "value", "value", "remove", "bad_key"]), label="kind")
        if choice == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        elif choice == "bad_key" and isinstance(parent, dict):
            parent[str(path[-1]) + data.draw(st.sampled_from(UNSTORABLE))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = data.draw(mutation(current), label=f"value at {path}")
    return payload


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


HEADER_NAMES = ("x-", "content-type", "circleci-", "idempotency-key", "user-agent")


def corpus_shapes(source: str) -> list[tuple[Any, dict[str, str]]]:
    """Real payloads of ``source`` from ../shared/corpus, read in place, with the headers they came with."""
    shapes = []
    folders = [folder for folder in sorted(CORPUS.glob("*")) if folder.is_dir() and source in folder.name]
    for path in (path for folder in folders for path in sorted(folder.glob("*.json"))):
        if path.name.endswith(".meta.json"):
            continue
        meta = json.loads(path.with_name(path.name[: -len(".json")] + ".meta.json").read_text())
        headers = dict(meta.get("headers") or {})
        event = meta.get("event_header", "")
        if ":" in event and not event.startswith("("):
            name, value = event.split(":", 1)
            headers.setdefault(name.strip(), value.strip())
        kept = {name: value for name, value in headers.items() if name.lower().startswith(HEADER_NAMES)}
        shapes.append((json.loads(path.read_text()), {k: v for k, v in kept.items() if "signature" not in k.lower()}))
    return shapes


def sample_shapes(source: str) -> list[tuple[Any, dict[str, str]]]:
    samples = index(source)["samples"]
    return [
        (json.loads((SAMPLES / source / f"{name}.json").read_text()), meta["headers"]) for name, meta in samples.items()
    ]


SHAPES = {source: sample_shapes(source) + corpus_shapes(source) for source in NATIVE}
FRESH_DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitlab-Event-UUID", "Idempotency-Key")


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("source", NATIVE)
def test_signed_real_webhook_shapes_with_hostile_values_never_get_a_500(
    fuzz_client: FlaskClient, source: str, data: st.DataObject
) -> None:
    shape, headers = data.draw(st.sampled_from(SHAPES[source]), label="shape")
    payload = encode(mutated(data, shape))
    headers = {**headers, **adapter(source).sign(payload, SECRET)}  # type: ignore[attr-defined]
    for name in FRESH_DELIVERY_HEADERS:
        if name in headers:
            headers[name] = str(uuid.uuid4())  # a fresh delivery each time, so the payload reaches the database

    response = fuzz_client.post(f"/hooks/{source}", data=payload, headers=headers)

    assert_answered_cleanly(response, "POST")


DISTELLI_SAMPLES = {
    "buildEvent": "create_build_event",
    "pushEvent": "create_push_event",
    "pullRequestEvent": "create_pull_request_event",
    "deployEvent": "create_deploy_event",
}


def distelli_sample(name: str) -> Any:
    return json.loads((SAMPLES / "distelli" / f"{name}.json").read_text())


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(DISTELLI_SAMPLES)))
def test_the_spec_examples_with_hostile_values_never_get_a_500(
    fuzz_client: FlaskClient, data: st.DataObject, kind: str
) -> None:
    base = f"/{USER}/apps/{APP}/events"
    created = fuzz_client.put(
        f"{base}/{kind}?apiToken={TOKEN}",
        data=encode(mutated(data, distelli_sample(DISTELLI_SAMPLES[kind]))),
        content_type="application/json",
    )
    assert_answered_cleanly(created, "PUT")
    if kind != "buildEvent":
        return
    event_id = created.get_json()["event_id"] if created.status_code == 200 else "1"
    update = encode(mutated(data, distelli_sample("update_build_event")))
    updated = fuzz_client.post(f"{base}/{event_id}?apiToken={TOKEN}", data=update, content_type="application/json")
    assert_answered_cleanly(updated, "POST")
