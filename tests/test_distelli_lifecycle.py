"""A build that goes back to Waiting or Queued after it ran, or repeats Running: stored and listed, but the intake
sees one running event (more only when a Running adds fields) and one final event."""

from __future__ import annotations

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from tests.distelli_api import DistelliApi
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all
from tests.test_distelli_mapping import PUSH


def _deliver(store: Store, intake: IntakeServer) -> None:
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)


def _seen(intake: IntakeServer) -> list[tuple[str, str]]:
    return [(resource["level"], resource["status"]) for resource in intake.accepted_resources()]


def test_running_waiting_running_queued_running_sends_the_running_pipeline_once(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_id": "5", **PUSH})
    _deliver(store, intake)
    listed = []
    for status in ("Waiting", "Running", "Queued", "Running"):
        response = api.update(event_id, {"build_status": status})
        assert response.status_code == 200
        listed.append(api.event(event_id)["build_status"])
        _deliver(store, intake)

    assert listed == ["Waiting", "Running", "Queued", "Running"]
    assert _seen(intake) == [("pipeline", "running"), ("job", "running")]

    api.update(event_id, {"build_status": "Success"})
    _deliver(store, intake)
    resources = intake.accepted_resources()
    assert _seen(intake)[2:] == [("pipeline", "success"), ("job", "success")]
    running, final = resources[0], resources[2]
    assert final["start"] == running["start"]
    assert final["queue_time"] == running["queue_time"] == 0


def test_a_repeated_running_that_adds_a_field_sends_a_running_event_with_it(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})
    _deliver(store, intake)

    api.update(event_id, {"build_status": "Running"})
    _deliver(store, intake)
    sent_after_repeat = len(intake.accepted_resources())
    api.update(event_id, {"build_status": "Running", "build_url": "https://ci.example.com/job/7/"})
    _deliver(store, intake)

    assert sent_after_repeat == 2
    first, _, second, second_job = intake.accepted_resources()
    assert first["status"] == second["status"] == second_job["status"] == "running"
    assert second["unique_id"] == first["unique_id"]
    assert second["url"] == "https://ci.example.com/job/7/" and second["start"] == first["start"]


def test_a_running_that_changes_a_value_but_adds_no_field_sends_nothing(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_url": "https://ci.example.com/1"})
    _deliver(store, intake)

    api.update(event_id, {"build_status": "Running", "build_url": "https://ci.example.com/2"})
    _deliver(store, intake)

    assert len(intake.accepted_resources()) == 2
    assert api.event(event_id)["build_url"] == "https://ci.example.com/2"
