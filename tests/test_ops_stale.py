"""Runs that never finish (issue 16): after BRIDGE_STALE_RUN_HOURS the bridge closes them once with an error, the
stored build keeps its status and ListEvents says so, and a real final status arriving later still goes out."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from adapters.payload import read_source_time
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.operations.stale import CLOSED_TAG, close_stale_runs
from bridge.storage.store import Store
from tests.distelli_api import DistelliApi
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all, start_worker, wait_until
from tests.test_adapter_samples import NATIVE, index, parse
from tests.test_distelli_mapping import PUSH
from tests.test_hooks_http import SECRETS, fresh, post

STALE_HOURS = "0.0005"  # 1.8 s
REASON = "No final status arrived from the CI tool within 0.0005 hours; pipeline-bridge closed the run."


def _statuses(intake: IntakeServer) -> list[tuple[str, str]]:
    return [(resource["level"], resource["status"]) for resource in intake.accepted_resources()]


def test_the_worker_closes_a_silent_build_once_and_a_late_final_still_goes_out(
    api: DistelliApi, store: Store, intake: IntakeServer, config: Config, tmp_path: Path
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_id": "J9", **PUSH})
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)  # the running events went out
    worker = start_worker(
        config.database_url,
        intake.url,
        tmp_path / "worker.log",
        BRIDGE_STALE_RUN_HOURS=STALE_HOURS,
        BRIDGE_UPKEEP_MINUTES="0.005",  # 0.3 s
    )
    try:
        wait_until(lambda: len(intake.accepted_resources()) == 4, timeout=30)
        time.sleep(2.0)  # several more upkeep rounds: nothing is closed twice
        closed = api.event(event_id)

        assert api.update(event_id, {"build_status": "Success"}).status_code == 200
        wait_until(lambda: len(intake.accepted_resources()) == 6, timeout=30)
        time.sleep(1.0)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    resources = intake.accepted_resources()
    assert _statuses(intake) == [
        ("pipeline", "running"),
        ("job", "running"),
        ("pipeline", "error"),
        ("job", "error"),
        ("pipeline", "success"),
        ("job", "success"),
    ]
    running, job_running, error, job_error, success, job_success = resources
    assert error["unique_id"] == running["unique_id"] == success["unique_id"]
    assert job_error["id"] == job_running["id"] == job_success["id"]
    for body in (error, job_error):
        assert body["error"] == {"domain": "unknown", "type": "no_final_status", "message": REASON}
        assert CLOSED_TAG in body["tags"]
        assert set(running["tags"]) < set(body["tags"])
        assert body["start"] == running["start"]
        seconds = (read_source_time(body["end"]) - read_source_time(body["start"])).total_seconds()  # type: ignore[operator]
        assert 1.8 <= seconds < 10
    assert CLOSED_TAG not in success["tags"] and "error" not in success

    assert closed["build_status"] == "Running"  # the stored build keeps its status
    assert closed["closed_by_bridge"]["reason"] == REASON
    assert closed["closed_by_bridge"]["final_status_arrived"] is False
    assert closed["delivery"]["state"] == "delivered"
    finished = api.event(event_id)
    assert finished["build_status"] == "Success"
    assert finished["closed_by_bridge"]["final_status_arrived"] is True
    assert finished["closed_by_bridge"]["closed_at"] == closed["closed_by_bridge"]["closed_at"]
    assert finished["delivery"]["state"] == "delivered"


def test_only_runs_that_sent_running_and_no_final_are_closed(
    api: DistelliApi, store: Store, intake: IntakeServer, make_config: Callable[..., Config], config: Config
) -> None:
    stale_config = make_config(DATABASE_URL=config.database_url, BRIDGE_STALE_RUN_HOURS=STALE_HOURS)
    silent = api.create_id("buildEvent", {"build_status": "Running", "build_id": "1"})
    api.create_id("buildEvent", {"build_status": "Queued", "build_id": "2"})  # sent nothing: nothing to close
    finished = api.create_id("buildEvent", {"build_status": "Running", "build_id": "3"})
    api.update(finished, {"build_status": "Failed"})
    recent_config = make_config(DATABASE_URL=config.database_url, BRIDGE_STALE_RUN_HOURS="1")

    assert close_stale_runs(store, stale_config) == []  # not silent for long enough yet
    time.sleep(2.0)
    assert close_stale_runs(store, recent_config) == []
    closed = close_stale_runs(store, stale_config)
    again = close_stale_runs(store, stale_config)
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)

    assert sorted((item.event_id, item.level) for item in closed) == [(int(silent), "job"), (int(silent), "pipeline")]
    assert again == []
    assert ("pipeline", "error") in _statuses(intake)
    assert sum(CLOSED_TAG in resource["tags"] for resource in intake.accepted_resources()) == 2
    assert close_stale_runs(store, stale_config, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=19)) == []


def _runs_with_a_running_step() -> list[tuple[str, list[str]]]:
    found = []
    for source in NATIVE:
        for run in index(source)["runs"]:
            statuses = [parse(source, name).status for name in run]  # type: ignore[union-attr]
            if "running" in statuses:
                found.append((source, run[: statuses.index("running") + 1]))
                break
    return found


@pytest.mark.parametrize(("source", "run"), _runs_with_a_running_step())
def test_a_webhook_run_that_stops_after_running_is_closed_with_the_intakes_consent(
    make_config: Callable[..., Config], database_url: str, intake: IntakeServer, source: str, run: list[str]
) -> None:
    from bridge.storage import migrate
    from bridge.web.app import create_app

    config = make_config(DATABASE_URL=database_url, BRIDGE_HOOK_SECRETS=SECRETS, BRIDGE_STALE_RUN_HOURS=STALE_HOURS)
    store = Store(config.database_url)
    migrate.upgrade(store)
    client: FlaskClient = create_app(config, store).test_client()
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    try:
        for name in run:
            assert post(client, source, name, fresh(source, name, now)).status_code == 202
        deliver_all(sender, store)
        running: list[Any] = [r for r in intake.accepted_resources() if r["status"] == "running"]
        time.sleep(2.0)

        closed = close_stale_runs(store, config)
        deliver_all(sender, store)
    finally:
        store.dispose()

    errors = [r for r in intake.accepted_resources() if r["status"] == "error"]
    assert running and len(closed) == len(running) == len(errors)
    assert {r.get("unique_id") or r["id"] for r in errors} == {r.get("unique_id") or r["id"] for r in running}
    assert all(CLOSED_TAG in r["tags"] and r["error"]["type"] == "no_final_status" for r in errors)
