"""The console over HTTP (Flask's test client): who gets in, what every answer carries, what the pages read, and
the delivery attempts the sender writes. The browser tests (test_console_browser.py) drive the same pages in
Chromium against a served bridge; these cover the cases a browser adds nothing to, on both databases."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bridge.config import Config, ConfigError, load_config
from bridge.delivery import attempts
from bridge.delivery.delivery_gate import DeliveryGate
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.operations import logs
from bridge.operations.logs import configure_logging
from bridge.storage.models import DeliveryAttempt, OutboxItem
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer
from tests.sender_support import add_event, pipeline_outbound

ADMIN = "admin-token-for-http-tests-0042"
BEARER = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def config(make_config: Callable[..., Config], database_url: str) -> Config:
    return make_config(DATABASE_URL=database_url, BRIDGE_ADMIN_TOKEN=ADMIN)


def _csrf(client: FlaskClient, path: str = "/console/login") -> str:
    page = client.get(path, headers={})
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def _login(client: FlaskClient, token: str = ADMIN, **extra: str) -> Any:
    return client.post("/console/login", data={"csrf_token": _csrf(client), "token": token, **extra})


def test_without_an_admin_token_every_console_path_is_the_apis_404(
    make_config: Callable[..., Config], store: Store
) -> None:
    client = create_app(make_config(DATABASE_URL=store.database_url), store).test_client()
    for path in ("/console", "/console/", "/console/login", "/console/static/refresh.js"):
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 404
        assert answer.get_json()["error"]["code"] == "not_found"


def test_an_admin_token_shorter_than_16_characters_stops_the_process_and_is_masked_otherwise() -> None:
    with pytest.raises(ConfigError) as error:
        load_config({"BRIDGE_ADMIN_TOKEN": "short"})
    assert error.value.problems == {"BRIDGE_ADMIN_TOKEN": "must be at least 16 characters"}
    assert "short" not in str(error.value)
    assert load_config({"BRIDGE_ADMIN_TOKEN": ADMIN}).masked()["BRIDGE_ADMIN_TOKEN"] == "****"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_session_cookie_is_httponly_strict_and_secure_over_https(client: FlaskClient, app: Flask) -> None:
    plain = _login(client)
    assert plain.status_code == 302 and plain.headers["Location"] == "/console/"
    cookie = plain.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie

    secure_client = app.test_client()
    page = secure_client.get("/console/login", base_url="https://bridge.example.com")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token is not None
    secure = secure_client.post(
        "/console/login", data={"csrf_token": token.group(1), "token": ADMIN}, base_url="https://bridge.example.com"
    )
    assert "; Secure" in secure.headers["Set-Cookie"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_console_answer_carries_a_strict_policy_and_is_never_cached(client: FlaskClient) -> None:
    for path in ("/console/login", "/console/", "/console/apps", "/console/dead-letters"):
        answer = client.get(path, headers=BEARER)
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
    assert "<script>" not in client.get("/console/", headers=BEARER).get_data(as_text=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_post_without_the_csrf_token_is_refused_even_when_logged_in(client: FlaskClient) -> None:
    assert client.post("/console/login", data={"token": ADMIN}).status_code == 400
    _login(client)
    assert client.get("/console/").status_code == 200
    refused = client.post("/console/dead-letters/redrive", data={"id": "1"})
    assert refused.status_code == 400
    assert "reload and retry" in refused.get_data(as_text=True)
    assert client.post("/console/logout").status_code == 400


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_logout_ends_the_session(client: FlaskClient) -> None:
    _login(client)
    assert client.post("/console/logout", data={"csrf_token": _csrf(client, "/console/")}).status_code == 302
    assert client.get("/console/").headers["Location"].startswith("/console/login")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_login_never_redirects_off_the_console(client: FlaskClient) -> None:
    for target in ("https://evil.example.com/", "//evil.example.com/console/", "/hooks/github"):
        assert _login(client, next=target).headers["Location"] == "/console/"
    assert _login(client, next="/console/dead-letters").headers["Location"] == "/console/dead-letters"


@pytest.fixture
def logged(config: Config, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(config)
    capsys.readouterr()

    def text() -> str:
        captured = capsys.readouterr()
        return captured.out + captured.err

    yield text
    logs.clear_context()
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failed_logins_are_logged_without_the_guess_and_throttled_after_five(
    client: FlaskClient, logged: Callable[[], str]
) -> None:
    guesses = [f"guess-number-{n}-of-the-token" for n in range(5)]
    for guess in guesses:
        assert _login(client, token=guess).status_code == 401
    throttled = _login(client)  # even the right token waits now
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 301
    assert client.get("/console/").status_code == 302

    text = logged()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    failures = [line for line in lines if line["event"] == "console.login_failed"]
    assert [line["failures_in_window"] for line in failures] == [1, 2, 3, 4, 5]
    assert any(line["event"] == "console.login_throttled" for line in lines)
    assert not any(guess in text for guess in guesses) and ADMIN not in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_wrong_bearer_is_refused_and_a_bearer_post_changes_nothing(client: FlaskClient, store: Store) -> None:
    assert client.get("/console/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/console/", headers={"Authorization": f"Basic {ADMIN}"}).status_code == 302
    add_event(store, [pipeline_outbound()])
    assert client.post("/console/dead-letters/redrive", headers=BEARER, data={"id": "1"}).status_code == 403


def test_the_overview_shows_the_pause_and_the_holds_the_sender_stored(client: FlaskClient, store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    gate = DeliveryGate(store, dt.timedelta(seconds=30), dt.timedelta(minutes=5))
    gate.pause(403, "403: API key is invalid", now)
    with store.transaction() as session:
        gate.hold(session, "dora_deployment", now + dt.timedelta(minutes=1), 429, 3, now)
    page = client.get("/console/", headers=BEARER).get_data(as_text=True)
    assert "Delivery is paused" in page and "403: API key is invalid" in page
    assert "dora_deployment" in page and "3 failures in a row" in page


def test_each_request_is_an_attempt_of_every_row_it_carried_without_the_api_key(
    store: Store, intake: IntakeServer
) -> None:
    event_id = add_event(store, [pipeline_outbound(), pipeline_outbound()])
    intake.then(503, body='{"errors":["busy, key test-dd-api-key"]}')
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    assert sender.run_once().retried == 2
    # Past the backoff and the endpoint's hold, the intake answers 202.
    assert sender.run_once(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).delivered == 2

    with store.transaction() as session:
        ids = list(session.scalars(select(DeliveryAttempt.outbox_id).distinct()))
        tried = attempts.of_rows(session, ids)
        latest = attempts.latest_attempts(session, ids)
    assert len(ids) == 2 and event_id
    assert [(a.status, a.endpoint) for a in tried if a.outbox_id == ids[0]] == [
        (503, f"{intake.url}/api/v2/ci/pipeline"),
        (202, f"{intake.url}/api/v2/ci/pipeline"),
    ]
    assert "[REDACTED]" in tried[0].answer and intake.api_key not in "".join(a.answer for a in tried)
    assert {outbox_id: a.status for outbox_id, a in latest.items()} == {ids[0]: 202, ids[1]: 202}


def test_attempts_are_bounded_per_row_keeping_the_newest(store: Store) -> None:
    event_id = add_event(store, [pipeline_outbound()])
    start = dt.datetime.now(dt.UTC)
    with store.transaction() as session:
        outbox_id = session.scalar(select(OutboxItem.id).where(OutboxItem.event_id == event_id))
        assert outbox_id is not None
        for n in range(attempts.KEEP_PER_ROW + 5):
            attempts.record(session, [outbox_id], start + dt.timedelta(seconds=n), "https://x/api", 503, f"try {n}")
    with store.transaction() as session:
        kept = attempts.of_rows(session, [outbox_id])
        count = session.scalar(select(func.count()).select_from(DeliveryAttempt))
    assert count == attempts.KEEP_PER_ROW
    assert [a.answer for a in kept] == [f"try {n}" for n in range(5, attempts.KEEP_PER_ROW + 5)]


def test_search_finds_a_build_by_commit_prefix_unique_id_id_and_app(client: FlaskClient, store: Store) -> None:
    created = client.put(
        f"/{USER}/apps/search-app/events/buildEvent?apiToken={TOKEN}",
        json={"build_status": "Running", "commit_id": "abcdef0123456789abcdef0123456789abcdef01"},
    )
    event_id = created.get_json()["event_id"]
    with store.transaction() as session:
        unique_id = session.scalars(select(OutboxItem.unique_id).where(OutboxItem.event_id == int(event_id))).first()
    for query in ("abcdef012", event_id, unique_id):
        page = client.get(f"/console/search?q={query}", headers=BEARER).get_data(as_text=True)
        assert f'href="/console/builds/{event_id}"' in page, query
    page = client.get("/console/search?q=search-app", headers=BEARER).get_data(as_text=True)
    assert 'href="/console/apps/jdoe/search-app"' in page
    assert "No event has that id" in client.get("/console/search?q=ffff0000", headers=BEARER).get_data(as_text=True)


def test_apps_and_sources_page_through_every_app_with_its_last_event_and_states(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.web.console import queries

    monkeypatch.setattr(queries, "APPS_PAGE", 2)
    for app_name in ("app-c", "app-a", "app-b"):
        created = client.put(
            f"/{USER}/apps/{app_name}/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"}
        )
        assert created.status_code == 200
    first = client.get("/console/apps", headers=BEARER).get_data(as_text=True)
    assert re.findall(r'href="/console/apps/jdoe/(app-[abc])"', first) == ["app-a", "app-b"]
    assert "pending</span> 2" in first
    following = re.search(r'href="(/console/apps\?after_user=jdoe&amp;after_app=app-b)"', first)
    assert following is not None
    second = client.get(following.group(1).replace("&amp;", "&"), headers=BEARER).get_data(as_text=True)
    assert re.findall(r'href="/console/apps/jdoe/(app-[abc])"', second) == ["app-c"]
    assert "Next page" not in second


def test_the_overview_counts_what_was_accepted_and_what_is_pending(client: FlaskClient) -> None:
    for _ in range(3):
        client.put(f"/{USER}/apps/count-app/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"})
    page = client.get("/console/", headers=BEARER).get_data(as_text=True)
    assert re.search(r'id="accepted-hour">3<', page)
    assert re.search(r'id="pending">6<', page)  # a running pipeline and job per build
    assert "accepted (3)" in page
    # The next refresh reads only the last minutes (the rest is remembered) and still counts every event.
    client.put(f"/{USER}/apps/count-app/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"})
    page = client.get("/console/", headers=BEARER).get_data(as_text=True)
    assert re.search(r'id="accepted-hour">4<', page) and "accepted (4)" in page
