"""apiToken authentication on every route, and the token kept out of error bodies, logs and stored rows."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog

from bridge.storage.store import Store
from tests.conftest import OTHER_TOKEN, OTHER_USER, TOKEN, USER
from tests.distelli_api import SQLITE_ONLY, DistelliApi, assert_error, sample, stored_events, stored_rows

WRONG_TOKEN = "wrong-token-0123456789abcdefghijklmnopq"

# (label, user in the path, token in the query)
REFUSED = [
    ("missing token", USER, None),
    ("empty token", USER, ""),
    ("wrong token", USER, WRONG_TOKEN),
    ("token with a character more", USER, TOKEN + "z"),
    ("prefix of the token", USER, TOKEN[:-1]),
    ("another user's valid token on this user's path", USER, OTHER_TOKEN),
    ("this user's token on another user's path", OTHER_USER, TOKEN),
    ("unknown user", "nobody", TOKEN),
    ("user name in another case", USER.upper(), TOKEN),
]
ROUTES = [
    ("PUT buildEvent", lambda api: api.create("buildEvent", sample("create_build_event.json"))),
    ("PUT pushEvent", lambda api: api.create("pushEvent", sample("create_push_event.json"))),
    ("PUT pullRequestEvent", lambda api: api.create("pullRequestEvent", sample("create_pull_request_event.json"))),
    ("PUT deployEvent", lambda api: api.create("deployEvent", sample("create_deploy_event.json"))),
    ("POST update", lambda api: api.update("1", sample("update_build_event.json"))),
    ("GET list", lambda api: api.list()),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("label", "user", "token"), REFUSED, ids=[case[0] for case in REFUSED])
@pytest.mark.parametrize(("route", "call"), ROUTES, ids=[route[0] for route in ROUTES])
def test_request_without_this_users_token_is_401_and_stores_nothing(
    api: DistelliApi, store: Store, label: str, user: str, token: str | None, route: str, call: Any
) -> None:
    response = call(api.as_user(user, token))

    assert_error(response, 401, "unauthorized")
    text = response.get_data(as_text=True)
    assert TOKEN not in text and OTHER_TOKEN not in text and WRONG_TOKEN not in text
    assert stored_events(store) == []


def test_refused_update_leaves_the_build_untouched(api: DistelliApi) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})

    assert_error(api.as_user(USER, OTHER_TOKEN).update(event_id, {"build_status": "Success"}), 401)

    assert api.event(event_id)["build_status"] == "Running"


def test_refused_list_shows_nothing(api: DistelliApi) -> None:
    api.create_id("pushEvent", {"commit_msg": "private"})

    response = api.as_user(USER, WRONG_TOKEN).list()

    assert_error(response, 401)
    assert "private" not in response.get_data(as_text=True)


def test_each_user_reaches_their_own_path_with_their_own_token(api: DistelliApi) -> None:
    other = api.as_user(OTHER_USER, OTHER_TOKEN)

    mine, theirs = api.create_id("pushEvent", {}), other.create_id("pushEvent", {})

    assert [event["event_id"] for event in api.events()] == [int(mine)]
    assert [event["event_id"] for event in other.events()] == [int(theirs)]


def _exercise_every_outcome(api: DistelliApi) -> None:
    """Accepted, updated, listed, refused, invalid, missing and conflicting requests, some with the token in the
    body too, the way a careless script might send it."""
    body = {**sample("create_build_event.json"), "apiToken": TOKEN, "extra": {"apiToken": TOKEN, "keep": "me"}}
    event_id = api.create_id("buildEvent", body)
    api.update(event_id, {"build_status": "Running", "api_token": TOKEN})
    api.update(event_id, {"build_status": "Success"})
    api.update(event_id, {"build_status": "Running"})  # 409
    api.update(str(int(event_id) + 99), {})  # 404
    api.create("buildEvent", {"build_status": "Bogus", "apiToken": TOKEN})  # 400
    api.create("buildEvent", b"{not json")  # 400
    api.list(filter_name="Branch", filter_branch="master")
    api.list(order="sideways")  # 400
    api.as_user(USER, WRONG_TOKEN).list()  # 401
    api.as_user(USER, OTHER_TOKEN).create("pushEvent", {})  # 401
    api.as_user("nobody", TOKEN).list()  # 401


def test_no_stored_row_holds_a_token(api: DistelliApi, store: Store) -> None:
    _exercise_every_outcome(api)

    rows = repr(stored_rows(store))

    assert "keep" in rows  # the unknown field next to the nested token is kept
    assert TOKEN not in rows and OTHER_TOKEN not in rows and WRONG_TOKEN not in rows


def test_no_log_event_carries_a_token_even_before_redaction(
    api: DistelliApi, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The routes must never hand a token to a logger; redaction in bridge.operations.logs is the second defence."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        _exercise_every_outcome(api)
    printed = capsys.readouterr()

    assert any(event["event"] == "event.accepted" for event in events)
    logged = (
        repr(events) + caplog.text + repr([record.__dict__ for record in caplog.records]) + printed.out + printed.err
    )
    assert TOKEN not in logged and OTHER_TOKEN not in logged and WRONG_TOKEN not in logged


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Served:
    """A bridge web process started for one test; :meth:`stop` ends it and returns everything it printed."""

    def __init__(self, tmp_path: Path) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / "web.log"
        env = {
            **os.environ,
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
            "BRIDGE_TOKENS": f"{USER}:{TOKEN},{OTHER_USER}:{OTHER_TOKEN}",
            "BRIDGE_SINK_PATH": str(tmp_path / "sink.jsonl"),
            "LOG_LEVEL": "DEBUG",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--no-worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_until_up(self) -> None:
        for _ in range(600):
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise AssertionError(f"the bridge never answered /healthz:\n{self.log_path.read_text()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        return self.log_path.read_text()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The Procfile's web process (``pipeline-bridge serve --no-worker``) on a free port, stopped afterwards."""
    server = Served(tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


def test_served_bridge_logs_no_token_in_access_or_application_logs(served: Served) -> None:
    base = f"{served.url}//{USER}/apps/example-node/events"

    created = requests.put(f"{base}/buildEvent?apiToken={TOKEN}", data=b'{"build_status":"Running"}', timeout=10)
    event_url = f"{base}/{created.json()['event_id']}?apiToken={TOKEN}"
    invalid = requests.post(event_url, json={"build_status": "Bogus"}, timeout=10)
    requests.get(f"{base}?apiToken={TOKEN}&filter_name=Branch&filter_branch=master", timeout=10)
    refused = requests.get(f"{base}?apiToken={WRONG_TOKEN}", timeout=10)
    requests.get(f"{served.url}/{OTHER_USER}/apps/x/events?apiToken={TOKEN}", timeout=10)
    log = served.stop()

    assert (created.status_code, invalid.status_code, refused.status_code) == (200, 400, 401)
    assert WRONG_TOKEN not in refused.text
    assert "/apps/example-node/events" in log  # the requests were logged at all
    assert TOKEN not in log and WRONG_TOKEN not in log and OTHER_TOKEN not in log
