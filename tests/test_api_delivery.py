"""ListEvents' ``delivery`` tells the truth: it describes an event's newest translation (a finished build's final
events, not its running ones), through the real sender and the strict stand-in intake."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import select

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.distelli_api import RFC3339_MS, DistelliApi
from tests.intake_server import IntakeServer
from tests.test_distelli_mapping import PUSH

NOTHING = {
    "state": "none",
    "reason": None,
    "delivered_at": None,
    "attempts": 0,
    "next_attempt_at": None,
    "last_attempt": None,
}


def _sender(store: Store, intake: IntakeServer) -> Sender:
    return Sender(store, HttpIntake(intake.url, intake.api_key))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_a_finished_build_lists_when_its_final_events_were_delivered_not_its_running_ones(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    sender = _sender(store, intake)
    event_id = api.create_id("buildEvent", {"build_status": "Running", **PUSH})
    sender.run_once()
    running = api.event(event_id)["delivery"]
    time.sleep(0.05)
    finished_at = _now()

    after_update = api.update(event_id, {"build_status": "Success"}).get_json()["event"]["delivery"]
    sender.run_once()
    final = api.event(event_id)["delivery"]

    assert running["state"] == "delivered" and RFC3339_MS.match(running["delivered_at"])
    assert after_update["state"] == "pending" and after_update["delivered_at"] is None
    assert final["state"] == "delivered"
    assert _time(final["delivered_at"]) >= finished_at.replace(microsecond=finished_at.microsecond // 1000 * 1000)
    assert _time(final["delivered_at"]) > _time(running["delivered_at"])
    assert final == {**final, "reason": None, "attempts": 0, "next_attempt_at": None}


def test_a_pending_retry_lists_its_attempts_the_next_attempt_and_the_last_failure(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Success", "build_id": "9"})
    intake.then(503, body='{"errors": ["Service Unavailable"]}')
    before = _now()

    _sender(store, intake).run_once()
    delivery = api.event(event_id)["delivery"]

    assert intake.statuses() == [503]
    assert delivery["state"] == "pending"
    assert delivery["attempts"] == 1
    assert _time(delivery["next_attempt_at"]) > before + dt.timedelta(seconds=1)
    assert "503" in delivery["reason"]
    assert delivery["delivered_at"] is None
    assert delivery["last_attempt"]["status"] == 503
    assert "Service Unavailable" in delivery["last_attempt"]["answer"]
    assert _time(delivery["last_attempt"]["at"]) >= before.replace(microsecond=before.microsecond // 1000 * 1000)


def test_a_delivered_build_lists_its_last_attempt_and_an_untried_one_lists_none(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Success", "build_id": "10"})
    untried = api.event(event_id)["delivery"]

    _sender(store, intake).run_once()
    delivered = api.event(event_id)["delivery"]

    assert untried["state"] == "pending" and untried["last_attempt"] is None
    assert delivered["state"] == "delivered"
    assert delivered["last_attempt"]["status"] == 202


def test_an_expired_build_lists_the_reason_and_nothing_is_sent(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    end = _now() - dt.timedelta(hours=19)
    event_id = api.create_id(
        "buildEvent",
        {
            "build_status": "Failed",
            "build_start": (end - dt.timedelta(minutes=5)).isoformat(),
            "build_end": end.isoformat(),
        },
    )

    _sender(store, intake).run_once()
    delivery = api.event(event_id)["delivery"]

    assert intake.requests == []
    assert delivery["state"] == "expired"
    assert "18 hours" in delivery["reason"]
    assert delivery["delivered_at"] is None and delivery["next_attempt_at"] is None


def test_a_build_the_intake_refuses_lists_dead_with_the_intakes_answer(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Running"})
    with store.transaction() as session:
        intake.reject.add(
            session.scalars(
                select(OutboxItem.unique_id).where(OutboxItem.event_id == int(event_id), OutboxItem.level == "pipeline")
            ).one()
        )
    sender = _sender(store, intake)

    for _ in range(4):  # the 400 is bisected down to each refused event
        sender.run_once()
    delivery = api.event(event_id)["delivery"]

    assert 400 in intake.statuses()
    assert delivery["state"] == "dead"
    assert "poison event refused" in delivery["reason"]
    assert delivery["delivered_at"] is None and delivery["next_attempt_at"] is None


def test_events_that_send_nothing_list_state_none(api: DistelliApi, store: Store, intake: IntakeServer) -> None:
    push = api.create_id("pushEvent", PUSH)
    queued = api.create_id("buildEvent", {"build_status": "Queued"})
    failed_deploy = api.create_id("deployEvent", {"deployment_status": "Failed"})

    _sender(store, intake).run_once()

    assert intake.requests == []
    for event_id in (push, queued, failed_deploy):
        assert api.event(event_id)["delivery"] == NOTHING
