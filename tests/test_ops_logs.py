"""Logs: one JSON object per line with the request's id, user, app and event id, and no secret anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from flask import Flask
from flask.testing import FlaskClient

from bridge.config import Config
from bridge.operations import logs
from bridge.operations.logs import configure_logging
from tests.conftest import TOKEN, USER

DD_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def logged(app: Flask, config: Config, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[Any]]]:
    """Configure logging as the processes do and hand back what was written, one parsed object per line."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(config)
    capsys.readouterr()

    def lines() -> list[Any]:
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert TOKEN not in text and DD_KEY not in text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    yield lines
    logs.clear_context()
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def test_what_is_logged_after_a_request_carries_none_of_its_context(
    client: FlaskClient, logged: Callable[[], list[Any]]
) -> None:
    response = client.put(f"/{USER}/apps/log-app/events/buildEvent?apiToken={TOKEN}", json={})
    assert response.status_code == 200
    structlog.get_logger("test").info("between.requests")

    between = [line for line in logged() if line["event"] == "between.requests"]
    assert len(between) == 1
    assert not {"request_id", "user", "app", "client"} & set(between[0])


def test_an_accepted_event_logs_request_id_user_app_and_event_id(
    client: FlaskClient, logged: Callable[[], list[Any]]
) -> None:
    response = client.put(
        f"/{USER}/apps/log-app/events/buildEvent?apiToken={TOKEN}",
        json={"build_status": "Running"},
        headers={"X-Request-ID": "ci-run-42.step-7", "Authorization": f"Bearer {TOKEN}", "DD-API-KEY": DD_KEY},
    )

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "ci-run-42.step-7"
    accepted = [line for line in logged() if line["event"] == "event.accepted"]
    assert len(accepted) == 1
    assert accepted[0]["request_id"] == "ci-run-42.step-7"
    assert (accepted[0]["user"], accepted[0]["app"]) == (USER, "log-app")
    assert str(accepted[0]["event_id"]) == response.get_json()["event_id"]
    assert accepted[0]["level"] == "info"


def test_a_request_without_a_usable_id_gets_a_fresh_one(client: FlaskClient) -> None:
    first = client.get("/healthz", headers={"X-Request-ID": "no spaces allowed\u00e9"})
    second = client.get("/healthz")

    assert first.headers["X-Request-ID"] != "no spaces allowed\u00e9"
    assert len(first.headers["X-Request-ID"]) == 32
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_a_careless_log_of_url_and_headers_shows_no_secret(app: Flask, logged: Callable[[], list[Any]]) -> None:
    url = f"https://bridge.example.com/{USER}/apps/a/events?apiToken={TOKEN}&max_results=5"
    with app.test_request_context(url, headers={"Authorization": f"token {TOKEN}", "DD-API-KEY": DD_KEY}):
        from flask import request

        structlog.get_logger("careless").warning(
            "debug.request", url=request.url, headers=dict(request.headers), note=f"sent DD-API-KEY: {DD_KEY}"
        )
        logging.getLogger("sqlalchemy.engine").warning("query for %s with %s", url, TOKEN)

    lines = logged()
    structured, foreign = lines
    assert structured["url"].endswith("apiToken=[REDACTED]&max_results=5")
    assert structured["headers"]["Authorization"] == "[REDACTED]"
    assert structured["headers"]["Dd-Api-Key"] == "[REDACTED]"
    assert foreign["logger"] == "sqlalchemy.engine"
    assert foreign["level"] == "warning"
    assert "[REDACTED]" in foreign["event"]


def test_an_object_logged_as_is_shows_its_repr_without_the_secret_it_holds(logged: Callable[[], list[Any]]) -> None:
    class Holder:
        def __repr__(self) -> str:
            return f"Holder(for {USER} with {TOKEN}, name='kept')"

    structlog.get_logger("careless").info("debug.object", thing=Holder(), things=[Holder()])

    (line,) = logged()  # logged() itself fails on the token or the key anywhere in the output
    assert line["thing"] == f"Holder(for {USER} with [REDACTED], name='kept')"
    assert line["things"] == [line["thing"]]


def test_an_unexpected_error_is_one_json_line_with_the_traceback_and_no_token(
    app: Flask, logged: Callable[[], list[Any]]
) -> None:
    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError(f"failed while holding {TOKEN}")

    response = app.test_client().get(f"/boom?apiToken={TOKEN}")

    assert response.status_code == 500
    (line,) = [line for line in logged() if line["event"] == "request.failed"]
    assert "RuntimeError" in line["exception"]
    assert line["request_id"] == response.headers["X-Request-ID"]
