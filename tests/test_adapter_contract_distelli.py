"""The Distelli source against the same contract as the webhook adapters, through its own routes.

Distelli is not a ``/hooks`` adapter (its clients call the Events API), so the contract is checked where its
clients meet it: the spec's samples are accepted, every body its mapping queues is valid for the official models
(or stored as expired with the reason the intake would refuse it), a wrong ``apiToken`` is refused and stores
nothing, and the same requests always queue the same bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapters.base import DORA_DEPLOYMENT
from bridge.config import Config
from bridge.storage import migrate
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.ddschema import dora_problems, pipeline_problems

SAMPLES = Path(__file__).parent / "samples" / "distelli"
CREATES = {
    "buildEvent": "create_build_event.json",
    "pushEvent": "create_push_event.json",
    "pullRequestEvent": "create_pull_request_event.json",
    "deployEvent": "create_deploy_event.json",
}


def replay(client: FlaskClient, token: str = TOKEN) -> list[int]:
    """Every spec sample through its route, then the sample update of the build; the status codes."""
    statuses, build_id = [], None
    for path, sample in CREATES.items():
        answer = client.put(f"/{USER}/apps/example-node/events/{path}?apiToken={token}", data=_read(sample))
        statuses.append(answer.status_code)
        if path == "buildEvent" and answer.status_code == 200:
            build_id = answer.get_json()["event_id"]
    update = client.post(
        f"/{USER}/apps/example-node/events/{build_id or 1}?apiToken={token}", data=_read("update_build_event.json")
    )
    return [*statuses, update.status_code]


def _read(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def outbox(store: Store) -> list[dict[str, Any]]:
    with store.transaction() as session:
        rows = session.scalars(select(OutboxItem).order_by(OutboxItem.id)).all()
        return [{"kind": r.kind, "state": r.state, "reason": r.reason, "body": r.body} for r in rows]


def fresh_app(make_config: Callable[..., Config], path: Path) -> tuple[FlaskClient, Store]:
    store = Store(f"sqlite:///{path}")
    migrate.upgrade(store)
    return create_app(make_config(DATABASE_URL=store.database_url), store).test_client(), store


def test_the_spec_samples_are_accepted(client: FlaskClient) -> None:
    assert replay(client) == [200, 200, 200, 200, 200]


def test_every_queued_body_is_valid_and_every_refusable_one_is_expired(client: FlaskClient, store: Store) -> None:
    replay(client)
    rows = outbox(store)
    assert rows
    for row in rows:
        problems = dora_problems(row["body"]) if row["kind"] == DORA_DEPLOYMENT else pipeline_problems(row["body"])
        if row["state"] == "expired":
            assert problems and row["reason"]
        else:
            assert problems == []


def test_a_wrong_token_is_refused_and_stores_nothing(client: FlaskClient, store: Store) -> None:
    assert replay(client, token="not-the-token") == [401] * 5
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_the_same_requests_queue_the_same_bodies(make_config: Callable[..., Config], tmp_path: Path) -> None:
    first, first_store = fresh_app(make_config, tmp_path / "a.db")
    second, second_store = fresh_app(make_config, tmp_path / "b.db")
    replay(first)
    replay(second)
    bodies = [json.dumps(row, sort_keys=True) for row in outbox(first_store)]
    assert bodies and bodies == [json.dumps(row, sort_keys=True) for row in outbox(second_store)]
