"""Dead letters as a user meets them: ListEvents' delivery state, and the ``dead-letters`` commands."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner
from flask.testing import FlaskClient

from bridge.cli import main
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all, rows

EVENTS = f"/{USER}/apps/example-node/events"


def _build(client: FlaskClient) -> int:
    created = client.put(
        f"{EVENTS}/buildEvent?apiToken={TOKEN}",
        json={
            "build_status": "Running",
            "build_start": dt.datetime.now(dt.UTC).isoformat(),
            "build_id": "J1",
            "build_provider": "jenkins",
            "build_url": "http://jenkins.example.com/job/1",
            "repo_url": "https://github.com/jdoe/example-node",
            "commit_id": "1234567890123456789012345678901234567890",
            "author_username": "jdoe",
            "branch": "master",
        },
    )
    assert created.status_code == 200
    return int(created.get_json()["event_id"])


def _delivery(client: FlaskClient) -> dict[str, object]:
    (event,) = client.get(f"{EVENTS}?apiToken={TOKEN}").get_json()["events"]
    return dict(event["delivery"])


def _cli(config: Config, *args: str) -> list[str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": config.database_url})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_a_refused_event_is_shown_listed_and_redriven(
    client: FlaskClient, store: Store, config: Config, intake: IntakeServer
) -> None:
    _build(client)
    pipeline_row, job_row = rows(store)
    intake.reject.add(pipeline_row.unique_id)  # the job row carries it too, as pipeline_unique_id
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))

    sender.run_once()

    delivery = _delivery(client)
    assert delivery["state"] == "dead"
    assert "poison event refused" in str(delivery["reason"])
    listed = [json.loads(line) for line in _cli(config, "dead-letters", "list")]
    assert [(entry["id"], entry["level"]) for entry in listed] == [(pipeline_row.id, "pipeline"), (job_row.id, "job")]
    assert all("400: poison event refused" in entry["reason"] for entry in listed)

    intake.reject.clear()
    assert _cli(config, "dead-letters", "redrive", "--id", str(pipeline_row.id)) == ["1 dead letter(s) queued again"]
    deliver_all(sender, store)
    assert [json.loads(line)["id"] for line in _cli(config, "dead-letters", "list")] == [job_row.id]

    assert _cli(config, "dead-letters", "redrive") == ["1 dead letter(s) queued again"]
    deliver_all(sender, store)
    assert _cli(config, "dead-letters", "list") == ["no dead letters"]  # said on stderr; stdout stays JSON lines
    assert [r["level"] for r in intake.accepted_resources()] == ["pipeline", "job"]
    assert _delivery(client)["state"] == "delivered"


def test_a_running_event_redriven_after_its_final_was_delivered_is_not_sent(
    client: FlaskClient, store: Store, config: Config, intake: IntakeServer
) -> None:
    event_id = _build(client)
    intake.reject.add(rows(store)[0].unique_id)
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    sender.run_once()
    intake.reject.clear()
    finished = client.post(
        f"{EVENTS}/{event_id}?apiToken={TOKEN}",
        json={"build_status": "Success", "build_end": dt.datetime.now(dt.UTC).isoformat()},
    )
    assert finished.status_code == 200
    deliver_all(sender, store)

    _cli(config, "dead-letters", "redrive")
    deliver_all(sender, store)

    assert [(r["level"], r["status"]) for r in intake.accepted_resources()] == [
        ("pipeline", "success"),
        ("job", "success"),
    ]
    assert [row.state for row in rows(store)] == ["superseded", "superseded", "delivered", "delivered"]
    assert _delivery(client)["state"] == "delivered"
