"""Webhooks through the real ``POST /hooks/<source>`` route, the database and the strict intake server.

Sample payloads are moved to the present (the intake refuses anything that ended over 18 hours ago), signed as
their source signs them, and posted in the order a run sends them.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from structlog.testing import capture_logs

from adapters.payload import read_source_time
from adapters.target import rfc3339
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store
from tests.intake_server import IntakeServer
from tests.test_adapter_samples import NATIVE, SECRET, adapter, body, index, parse, received_at

SECRETS = ",".join(f"{source}:{SECRET}-{source}" for source in NATIVE)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


@pytest.fixture
def config(make_config: Callable[..., Config], database_url: str) -> Config:
    return make_config(DATABASE_URL=database_url, BRIDGE_HOOK_SECRETS=SECRETS)


def secret(source: str) -> str:
    return f"{SECRET}-{source}"


def shift(value: Any, delta: dt.timedelta) -> Any:
    """The payload with every date and time moved by ``delta``, each kept in the form it was written in."""
    if isinstance(value, dict):
        return {
            key: (shift_millis(item, delta) if key == "timestamp" else shift(item, delta))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [shift(item, delta) for item in value]
    if isinstance(value, str) and _DATETIME.match(value):
        moment = read_source_time(value)
        if moment is not None:
            moved = moment + delta
            return moved.strftime("%Y-%m-%d %H:%M:%S UTC") if value.endswith(" UTC") else rfc3339(moved)
    return value


def shift_millis(value: Any, delta: dt.timedelta) -> Any:
    if isinstance(value, int):
        return value + int(delta.total_seconds() * 1000)
    return shift(value, delta)


def fresh(source: str, name: str, now: dt.datetime) -> bytes:
    """The sample as if it had just been sent."""
    return json.dumps(shift(json.loads(body(source, name)), now - received_at(source, name))).encode()


def post(client: FlaskClient, source: str, name: str, payload: bytes, **sign: Any) -> Any:
    headers = {**index(source)["samples"][name]["headers"], **adapter(source).sign(payload, secret(source))}
    headers.update(sign)
    return client.post(f"/hooks/{source}", data=payload, headers=headers)


def count(store: Store, model: Any) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def runs() -> list[tuple[str, list[str]]]:
    return [(source, run) for source in NATIVE for run in index(source)["runs"]]


@pytest.mark.parametrize(("source", "run"), runs())
def test_a_run_reaches_the_intake_running_then_final(
    client: FlaskClient, store: Store, intake: IntakeServer, source: str, run: list[str]
) -> None:
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    for name in run:
        answer = post(client, source, name, fresh(source, name, now))
        assert answer.status_code == 202, answer.get_json()
        sender.run_once()
    statuses = [parse(source, name).status for name in run]  # type: ignore[union-attr]
    final = next(status for status in statuses if status not in ("queued", "running"))
    seen: dict[str, list[str]] = {}
    for resource in intake.accepted_resources():
        seen.setdefault(resource.get("unique_id") or resource["id"], []).append(resource["status"])
    run_statuses, *stage_statuses = seen.values()
    assert run_statuses == (["running", final] if "running" in statuses else [final])
    assert all(len(stage) == 1 and stage != ["running"] for stage in stage_statuses)
    assert count(store, Event) == len(run)


@pytest.mark.parametrize("source", NATIVE)
def test_a_webhook_is_stored_with_its_source_run_and_delivery_before_the_answer(
    client: FlaskClient, store: Store, source: str
) -> None:
    name = index(source)["runs"][0][-1]
    answer = post(client, source, name, fresh(source, name, dt.datetime.now(dt.UTC)))
    assert answer.status_code == 202
    event_id = int(answer.get_json()["event_id"])
    with store.transaction() as session:
        event = session.get(Event, event_id)
        assert event is not None
        assert (event.source, event.username) == (source, source)
        assert event.run_key and event.app_name and event.delivery_id
        assert secret(source) not in event.raw_body + json.dumps(event.fields)
        assert (
            session.scalar(select(func.count()).where(OutboxItem.event_id == event_id)) == answer.get_json()["enqueued"]
        )


@pytest.mark.parametrize("source", NATIVE)
def test_the_same_delivery_twice_is_accepted_once(client: FlaskClient, store: Store, source: str) -> None:
    name = index(source)["runs"][0][-1]
    payload = fresh(source, name, dt.datetime.now(dt.UTC))
    first = post(client, source, name, payload)
    outbox_rows = count(store, OutboxItem)
    again = post(client, source, name, payload)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True, "enqueued": 0}
    assert count(store, Event) == 1 and count(store, OutboxItem) == outbox_rows


def test_copies_of_one_delivery_arriving_together_are_stored_once(app: Any, store: Store) -> None:
    """Eight threads post the same delivery at once: one 202, seven 200 with its id, never a 500."""
    source = "github"
    name = index(source)["runs"][0][-1]
    payload = fresh(source, name, dt.datetime.now(dt.UTC))
    barrier = threading.Barrier(8)

    def send() -> Any:
        client = app.test_client()
        barrier.wait()
        return post(client, source, name, payload)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send(), range(8)))
    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [202]
    assert len({answer.get_json()["event_id"] for answer in answers}) == 1
    assert count(store, Event) == 1


@pytest.mark.parametrize("source", NATIVE)
def test_a_wrong_signature_is_refused_with_401_and_nothing_is_stored(
    client: FlaskClient, store: Store, source: str
) -> None:
    name = index(source)["runs"][0][-1]
    payload = fresh(source, name, dt.datetime.now(dt.UTC))
    forged = adapter(source).sign(payload, "guessed-secret")
    answer = post(client, source, name, payload, **forged)
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "bad_signature"
    assert secret(source) not in answer.get_data(as_text=True)
    assert count(store, Event) == 0


@pytest.mark.parametrize("source", NATIVE)
def test_a_signed_body_that_is_not_json_is_a_400_in_the_shared_error_shape(client: FlaskClient, source: str) -> None:
    answer = post(client, source, index(source)["runs"][0][0], b"{not json")
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_payload"
    assert set(answer.get_json()["error"]) <= {"code", "message", "fields"}


def test_a_payload_missing_required_fields_names_them(client: FlaskClient) -> None:
    payload = json.dumps({"action": "completed", "workflow_run": {"id": 1}}).encode()
    answer = post(client, "github", "workflow_run.completed", payload)
    assert answer.status_code == 400
    fields = answer.get_json()["error"]["fields"]
    assert "repository" in fields and "head_sha" in fields["workflow_run"]


@pytest.mark.parametrize("path", ["/hooks/travis", "/hooks/distelli"])
def test_an_unknown_source_is_a_404(client: FlaskClient, path: str) -> None:
    answer = client.post(path, data=b"{}")
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "unknown_source"


def test_a_source_without_a_secret_is_disabled(make_config: Callable[..., Config], store: Store) -> None:
    from bridge.web.app import create_app

    only_github = make_config(DATABASE_URL=store.database_url, BRIDGE_HOOK_SECRETS=f"github:{secret('github')}")
    client = create_app(only_github, store).test_client()
    name = "completed.success"
    answer = post(client, "jenkins", name, fresh("jenkins", name, dt.datetime.now(dt.UTC)))
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "unknown_source"


def test_a_github_ping_is_answered_202_and_not_stored(client: FlaskClient, store: Store) -> None:
    payload = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    answer = post(client, "github", "workflow_run.completed", payload, **{"X-GitHub-Event": "ping"})
    assert (answer.status_code, answer.get_json()) == (202, {"ignored": True})
    assert count(store, Event) == 0


def test_a_completed_run_that_arrives_before_in_progress_sends_only_the_final(
    client: FlaskClient, store: Store, intake: IntakeServer
) -> None:
    now = dt.datetime.now(dt.UTC)
    for name in ("workflow_run.completed", "workflow_run.in_progress"):
        assert post(client, "github", name, fresh("github", name, now)).status_code == 202
    Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()
    assert [resource["status"] for resource in intake.accepted_resources()] == ["success"]


def test_jenkins_token_in_the_query_is_accepted_and_never_logged(client: FlaskClient, store: Store) -> None:
    token = secret("jenkins")
    payload = fresh("jenkins", "started", dt.datetime.now(dt.UTC))
    with capture_logs() as logs:
        answer = client.post(
            f"/hooks/jenkins?token={token}", data=payload, headers={"Content-Type": "application/json"}
        )
        refused = client.post("/hooks/jenkins?token=wrong", data=payload)
    assert (answer.status_code, refused.status_code) == (202, 401)
    assert logs and token not in json.dumps(logs, default=str)
    with store.transaction() as session:
        stored = session.scalars(select(Event)).one()
        assert token not in stored.raw_body + json.dumps(stored.fields)


def test_a_value_too_long_to_store_is_a_400_not_a_500(client: FlaskClient) -> None:
    payload = json.loads(body("gitlab", "pipeline.running"))
    payload["project"]["path_with_namespace"] = "group/" + "x" * 300
    answer = post(client, "gitlab", "pipeline.running", json.dumps(payload).encode())
    assert answer.status_code == 400
    assert "app_name" in answer.get_json()["error"]["fields"]


@pytest.mark.parametrize(
    ("query", "url"),
    [
        ("", "https://bridge.example.com/job/support/148/"),
        ("&jenkins_url=https://ci.example.com/jenkins", "https://ci.example.com/jenkins/job/support/148/"),
    ],
)
def test_a_jenkins_build_without_full_url_is_linked_absolutely(
    client: FlaskClient, store: Store, intake: IntakeServer, query: str, url: str
) -> None:
    """The oldest Notification plugins send only a ``url`` relative to the Jenkins root; Datadog needs an absolute
    one: under the hook URL's ``jenkins_url`` when given, else under the bridge's public URL."""
    payload = {"name": "support", "url": "job/support/", "build": {"number": 148, "phase": "FINISHED"}}
    payload["build"] |= {"status": "SUCCESS", "url": "job/support/148/"}
    answer = client.post(f"/hooks/jenkins?token={secret('jenkins')}{query}", json=payload)
    assert answer.status_code == 202, answer.get_json()
    Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()
    assert [(resource["url"], resource["status"]) for resource in intake.accepted_resources()] == [(url, "success")]


def test_a_jenkins_url_that_is_not_absolute_is_a_400(client: FlaskClient) -> None:
    payload = {"name": "support", "url": "job/support/", "build": {"number": 1, "phase": "STARTED", "url": "job/1/"}}
    answer = client.post(f"/hooks/jenkins?token={secret('jenkins')}&jenkins_url=ci.example.com", json=payload)
    assert answer.status_code == 400
    assert "jenkins_url" in answer.get_json()["error"]["fields"]
