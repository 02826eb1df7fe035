"""Warnings before Datadog's window closes (issue 16): /readyz degraded (still 200) while events wait too long or
delivery stays paused, cleared once they go; the worker's warning line; expired events counted by cause."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender, SenderSettings
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.distelli_api import DistelliApi, sample
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all, start_worker, wait_until


@pytest.fixture
def warned(make_config: Callable[..., Config], database_url: str) -> Any:
    """An app whose warnings come after about a second: 0.0003 hours of backlog, 0.02 minutes of pause."""
    config = make_config(
        DATABASE_URL=database_url, BRIDGE_BACKLOG_WARN_HOURS="0.0003", BRIDGE_PAUSE_WARN_MINUTES="0.02"
    )
    store = Store(config.database_url)
    migrate.upgrade(store)
    client = create_app(config, store).test_client()
    yield client, store
    store.dispose()


def _ready(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/readyz")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def test_readyz_is_degraded_while_events_wait_too_long_and_ready_once_they_go(
    warned: Any, intake: IntakeServer
) -> None:
    client, store = warned
    DistelliApi(client).create_id("buildEvent", {"build_status": "Success", "build_id": "1"})

    fresh = _ready(client)
    time.sleep(1.3)
    waiting = _ready(client)
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)
    delivered = _ready(client)

    assert fresh["status"] == "ready" and "reason" not in fresh
    assert waiting["status"] == "degraded"
    assert re.fullmatch(
        r"events have been waiting for delivery for \d+\.\d\d hours \(warning after 0\.0003\)", waiting["reason"]
    )
    assert delivered["status"] == "ready"


def test_readyz_is_degraded_while_delivery_stays_paused_and_ready_once_it_resumes(
    warned: Any, intake: IntakeServer
) -> None:
    client, store = warned
    DistelliApi(client).create_id("buildEvent", {"build_status": "Success", "build_id": "1"})
    settings = SenderSettings(probe_every=dt.timedelta(0))
    sender = Sender(store, HttpIntake(intake.url, "a-key-the-intake-refuses"), settings)
    sender.run_once()

    just_paused = _ready(client)
    time.sleep(1.4)
    long_paused = _ready(client)
    Sender(store, HttpIntake(intake.url, intake.api_key), settings).run_once()  # the key is fixed: the probe passes
    resumed = _ready(client)

    assert just_paused["delivery"]["paused"] is True
    assert just_paused["status"] == "ready"
    assert long_paused["status"] == "degraded"
    assert "delivery has been paused for" in long_paused["reason"]
    assert "the intake refused the API key (status 403)" in long_paused["reason"]
    assert resumed["status"] == "ready" and resumed["delivery"] == {"paused": False}


def test_the_worker_logs_how_many_events_expire_within_the_hour(
    api: DistelliApi, config: Config, tmp_path: Path
) -> None:
    late = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=17, minutes=30)).isoformat()
    api.create_id("buildEvent", {"build_status": "Success", "build_start": late, "build_end": late})
    api.create_id("buildEvent", {"build_status": "Success", "build_id": "fresh"})
    log_path = tmp_path / "worker.log"
    # Nothing listens on port 9: every attempt fails and is retried, so both builds stay pending.
    worker = start_worker(config.database_url, "http://127.0.0.1:9", log_path, BRIDGE_UPKEEP_MINUTES="0.01")
    try:
        wait_until(lambda: _warnings(log_path), timeout=30)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    line = _warnings(log_path)[0]
    assert line["level"] == "warning"
    assert line["expiring_within_hour"] == 2  # the late build's pipeline and job events
    assert line["reasons"] == []  # not yet waiting BRIDGE_BACKLOG_WARN_HOURS (6)


def _warnings(log_path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "backlog.warning"]


def _expired(client: FlaskClient) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.findall(r'^bridge_outbox_expired_total\{cause="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {cause: float(value) for cause, value in found}


def test_events_expired_waiting_are_counted_apart_from_those_that_arrived_too_old(
    api: DistelliApi, client: FlaskClient, store: Store, intake: IntakeServer
) -> None:
    before = _expired(client)
    api.create_id("buildEvent", sample("create_build_event.json") | {"build_status": "Success"})  # ended in 2016
    late = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=17, minutes=30)).isoformat()
    api.create_id("buildEvent", {"build_status": "Success", "build_start": late, "build_end": late})
    arrived = _expired(client)
    # The sender's first pass comes an hour later: the second build waited past the window.
    Sender(store, HttpIntake(intake.url, intake.api_key)).run_once(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    waited = _expired(client)

    def grew(after: dict[str, float], cause: str) -> float:
        return after.get(cause, 0.0) - before.get(cause, 0.0)

    assert (grew(arrived, "arrived_too_old"), grew(arrived, "waited")) == (2, 0)
    assert (grew(waited, "arrived_too_old"), grew(waited, "waited")) == (2, 2)
    assert intake.requests == []
