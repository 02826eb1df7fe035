"""/openapi.json describes the API the routes really serve, and the API keeps every promise the document makes."""

from __future__ import annotations

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bridge.listing import list_query
from bridge.web import openapi
from tests.conftest import TOKEN, USER

EXAMPLES_PER_OPERATION = 40  # x 6 operations x 2 databases: about 500 requests
SEEDED_APP = "seeded-app"
# Routes that only turn a confusing answer into a clear 404 (PUT of an unknown event kind): not operations.
REFUSAL_ENDPOINTS = {"events.create_unknown_kind"}
# The blueprints the document describes: the Distelli API, the webhooks and the health checks (not /metrics,
# which is Prometheus's format, nor the document itself).
DOCUMENTED_BLUEPRINTS = ("events.", "hooks.", "health.")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_document_is_openapi_3_with_the_error_shape_and_the_token(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "apiKey",
        "in": "query",
        "name": "apiToken",
    }
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]
    listed = document["paths"]["/{username}/apps/{app_name}/events"]["get"]
    assert {p["name"] for p in listed["parameters"]} >= {"max_results", "order", "marker", "filter_name"}


def test_document_lists_exactly_the_routes_the_app_serves(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
        if method != "parameters"
    }
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(DOCUMENTED_BLUEPRINTS) and rule.endpoint not in REFUSAL_ENDPOINTS
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert documented == served


def test_request_bodies_come_from_the_adapter_schemas(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    build = schemas["BuildEventRequest"]["properties"]
    assert build["build_status"]["enum"][:3] == ["Waiting", "Queued", "Running"]
    assert build["build_start"]["format"] == "date-time"
    assert build["commit_msg"]["maxLength"] == 65_536


def test_documented_filter_spellings_are_the_ones_the_api_parses() -> None:
    assert {name.lower() for name in openapi.FILTER_NAME_SPELLINGS} == set(list_query.FILTER_NAMES)
    assert set(openapi.EVENT_TYPE_SPELLINGS) == set(list_query.EVENT_TYPE_FILTERS)
    # Distelli's documentation spells them so; the document derives them from the fields each filter needs.
    assert openapi.FILTER_NAME_SPELLINGS == ("Branch", "EventType", "BranchAndEventType", "Env", "EnvAndBranch")


def test_documented_delivery_states_are_the_ones_listevents_shows(client: FlaskClient) -> None:
    event = client.get("/openapi.json").get_json()["components"]["schemas"]["Event"]
    delivery = event["properties"]["delivery"]
    assert delivery == {"$ref": "#/components/schemas/Delivery"}
    states = client.get("/openapi.json").get_json()["components"]["schemas"]["Delivery"]["properties"]["state"]
    assert states["enum"] == ["none", "pending", "delivered", "expired", "dead"]


def test_the_webhook_route_and_the_health_checks_are_documented(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert set(paths["/hooks/{name}"]["post"]["responses"]) >= {"200", "202", "401", "404"}
    assert "security" not in paths["/hooks/{name}"]["post"]  # each source signs its own way, no apiToken
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}


OPERATIONS = [
    (path, method.upper())
    for path, operations in openapi.document()["paths"].items()
    for method in operations
    if method != "parameters"
]


def _seed(client: FlaskClient) -> str:
    """A push, a running build of the same commit and a successful deploy; returns the build's id."""
    base = f"/{USER}/apps/{SEEDED_APP}/events"
    commit = {"commit_id": "0123456789abcdef0123456789abcdef01234567", "repo_url": "https://github.com/jdoe/app"}
    assert client.put(f"{base}/pushEvent?apiToken={TOKEN}", json={**commit, "branch": "main"}).status_code == 200
    build = client.put(f"{base}/buildEvent?apiToken={TOKEN}", json={**commit, "build_status": "Running"})
    deploy = client.put(f"{base}/deployEvent?apiToken={TOKEN}", json={**commit, "deployment_status": "Success"})
    assert build.status_code == deploy.status_code == 200
    return str(build.get_json()["event_id"])


@pytest.mark.slow  # about 500 generated requests
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_to_its_document(app: Flask, path: str, method: str) -> None:
    """Generated requests for the token's own user: never a 500, never an answer the document does not allow."""
    seeded_build = _seed(app.test_client())
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def call(case: schemathesis.Case) -> None:
        parameters = dict(case.path_parameters or {})
        if "app_name" in parameters:  # the Distelli API: the token's own user
            parameters["username"] = USER
            if len(parameters["app_name"]) % 2:  # half the cases act on an app that has events of every kind
                parameters["app_name"] = SEEDED_APP
                if "event_id" in parameters:
                    parameters["event_id"] = seeded_build
        case.path_parameters = parameters
        case.query = {**(case.query or {}), "apiToken": TOKEN}
        case.call_and_validate(checks=CHECKS)

    call()
