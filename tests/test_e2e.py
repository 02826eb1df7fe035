"""One event the whole way: PUT buildEvent, stored, translated, delivered to a strict local intake."""

from __future__ import annotations

import datetime as dt

from flask.testing import FlaskClient

from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_build_from_running_to_success_reaches_the_intake_as_running_then_final(
    client: FlaskClient, store: Store, config: Config, intake: IntakeServer
) -> None:
    created = client.put(
        f"/{USER}/apps/example-node/events/buildEvent?apiToken={TOKEN}",
        json={
            "build_status": "Running",
            "build_start": _now(),
            "build_id": "J23465",
            "build_provider": "jenkins",
            "build_url": "http://jenkins.example.com/job/1",
            "repo_url": "https://github.com/jdoe/example-node",
            "commit_id": "1234567890123456789012345678901234567890",
            "author_username": "jdoe",
            "branch": "origin/master",
        },
    )
    assert created.status_code == 200
    event_id = created.get_json()["event_id"]
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))

    assert sender.run_once().delivered == 2
    running = intake.accepted_resources()
    assert [(r["level"], r["status"]) for r in running] == [("pipeline", "running"), ("job", "running")]
    assert running[0]["git"]["branch"] == "master"

    updated = client.post(
        f"/{USER}/apps/example-node/events/{event_id}?apiToken={TOKEN}",
        json={"build_status": "Success", "build_end": _now()},
    )
    assert updated.status_code == 200
    assert sender.run_once().delivered == 2

    resources = intake.accepted_resources()
    assert [(r["level"], r["status"]) for r in resources[2:]] == [("pipeline", "success"), ("job", "success")]
    assert resources[2]["unique_id"] == resources[0]["unique_id"]
    listed = client.get(f"/{USER}/apps/example-node/events?apiToken={TOKEN}").get_json()
    assert listed["events"][0]["delivery"]["state"] == "delivered"
