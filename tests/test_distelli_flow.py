"""The Distelli mapping end to end: requests through the HTTP routes, bodies through the sender to the strict
stand-in intake, and what ListEvents then shows. The exact bodies are pinned in test_distelli_mapping.py; these
tests check that the core feeds the mapping the right history (earlier states, parent push, release build)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.distelli_api import DistelliApi, sample
from tests.intake_server import DORA_PATH, IntakeServer
from tests.test_distelli_mapping import PUSH, SHA


def _ago(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def _send(store: Store, intake: IntakeServer) -> int:
    return Sender(store, HttpIntake(intake.url, intake.api_key)).run_once().delivered


def _statuses(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(resource["level"], resource["status"]) for resource in resources]


def test_queued_running_success_reaches_the_intake_as_running_then_final_with_the_same_ids(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Queued", "build_id": "41", **PUSH})
    assert _send(store, intake) == 0

    assert api.update(event_id, {"build_status": "Running"}).status_code == 200
    assert _send(store, intake) == 2
    assert api.update(event_id, {"build_status": "Success", "build_end": _ago(seconds=0)}).status_code == 200
    assert _send(store, intake) == 2

    running, job_running, final, job_final = intake.accepted_resources()
    assert _statuses([running, job_running, final, job_final]) == [
        ("pipeline", "running"),
        ("job", "running"),
        ("pipeline", "success"),
        ("job", "success"),
    ]
    assert final["unique_id"] == running["unique_id"] == job_final["pipeline_unique_id"]
    assert job_final["id"] == job_running["id"]
    assert final["start"] == running["start"]
    assert final["queue_time"] == running["queue_time"] >= 0
    assert api.event(event_id)["delivery"]["state"] == "delivered"


def test_a_build_created_terminal_sends_only_final_events(api: DistelliApi, store: Store, intake: IntakeServer) -> None:
    api.create_id("buildEvent", {"build_status": "Failed", "build_start": _ago(minutes=3), "build_id": "7"})

    assert _send(store, intake) == 2
    pipeline, job = intake.accepted_resources()
    assert _statuses([pipeline, job]) == [("pipeline", "error"), ("job", "error")]
    assert pipeline["queue_time"] == 0
    assert pipeline["error"]["domain"] == "provider"


def test_a_parent_push_fills_the_git_facts_of_its_build(api: DistelliApi, store: Store, intake: IntakeServer) -> None:
    push_id = api.create_id("pushEvent", PUSH)
    api.create_id("buildEvent", {"build_status": "Running", "parent_event_id": push_id})

    _send(store, intake)
    pipeline, _ = intake.accepted_resources()
    assert pipeline["git"]["sha"] == SHA
    assert pipeline["git"]["branch"] == "master"
    assert pipeline["git"]["message"] == "Fix the flaky test"
    assert pipeline["git"]["author_email"] == "doct15@users.noreply.github.com"


def test_the_newest_push_of_the_same_commit_fills_a_parentless_build(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    api.create_id("pushEvent", {**PUSH, "commit_msg": "older push"})
    api.create_id("pushEvent", PUSH)
    api.for_app("other-app").create_id("pushEvent", {**PUSH, "commit_msg": "another app"})
    api.create_id("buildEvent", {"build_status": "Running", "commit_id": SHA})

    _send(store, intake)
    pipeline, _ = intake.accepted_resources()
    assert pipeline["git"]["message"] == "Fix the flaky test"
    assert pipeline["git"]["repository_url"] == "https://github.com/doct15/example-node"


def test_a_build_that_ended_19_hours_ago_is_stored_listed_and_expired_never_sent(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id(
        "buildEvent", {"build_status": "Success", "build_start": _ago(hours=19.5), "build_end": _ago(hours=19)}
    )

    assert _send(store, intake) == 0
    assert intake.requests == []
    listed = api.event(event_id)
    assert listed["build_status"] == "Success"
    assert listed["delivery"]["state"] == "expired"
    assert "18 hours" in listed["delivery"]["reason"]


def test_an_update_to_a_final_state_the_intake_would_refuse_answers_with_the_expired_delivery(
    api: DistelliApi,
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running", "build_start": _ago(hours=20)})

    response = api.update(event_id, {"build_status": "Failed", "build_end": _ago(hours=19)})

    assert response.status_code == 200
    event = response.get_json()["event"]
    assert event["build_status"] == "Failed"
    assert event["delivery"]["state"] == "expired"
    assert "18 hours" in event["delivery"]["reason"]


def test_a_successful_deploy_becomes_a_dora_deployment_with_git_from_its_release_build(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    push_id = api.create_id("pushEvent", PUSH)
    api.create_id(
        "buildEvent",
        {"build_status": "Success", "parent_event_id": push_id, "release_version": "v5", "commit_id": SHA},
    )
    deploy = {**sample("create_deploy_event.json"), "deployment_status": "Success", "commit_id": None}
    deploy_id = api.create_id("deployEvent", deploy)

    _send(store, intake)
    (deployment,) = intake.accepted_events(DORA_PATH)
    attributes = deployment["attributes"]
    assert attributes["service"] == "example-node"
    assert attributes["env"] == "ej-dev" and attributes["version"] == "v5"
    assert attributes["git"] == {"commit_sha": SHA, "repository_url": "https://github.com/doct15/example-node"}
    assert [event["event_id"] for event in api.events(filter_name="Env", filter_env="ej-dev")] == [int(deploy_id)]


def test_the_id_datadog_returns_for_a_deployment_is_kept_and_shown(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    deploy_id = api.create_id("deployEvent", {**sample("create_deploy_event.json"), "deployment_status": "Success"})

    _send(store, intake)
    with store.transaction() as session:
        (row,) = session.scalars(select(OutboxItem).where(OutboxItem.event_id == int(deploy_id))).all()
        kept = row.remote_id
    delivery = api.event(deploy_id)["delivery"]
    assert kept and delivery["state"] == "delivered"
    assert delivery["remote_id"] == kept


def test_a_failed_deploy_is_stored_but_sends_nothing(api: DistelliApi, store: Store, intake: IntakeServer) -> None:
    deploy_id = api.create_id("deployEvent", sample("create_deploy_event.json"))

    assert _send(store, intake) == 0
    assert api.event(deploy_id)["deployment_status"] == "Failed"
