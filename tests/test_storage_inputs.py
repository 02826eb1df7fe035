"""Characters the databases cannot store, through HTTP on both databases: accepted with U+FFFD, never a 500.

Neither SQLite nor psycopg can encode a lone surrogate (``\\udfff``, which JSON's ``\\u`` escapes can spell) to
UTF-8, and PostgreSQL text and JSON refuse NUL. Every place a webhook or Distelli field lands is tried: the string
columns (app name, branch, commit, delivery id), the fields JSON, the raw body and ListEvents reading them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bridge.config import Config
from bridge.storage.models import Event
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.reliability.harness import APP, running_body
from tests.test_adapter_samples import NATIVE, SECRET, adapter, body, index, parse

UNSTORABLE = {"lone_surrogate": "\udfff", "nul": "\x00"}
SECRETS = ",".join(f"{source}:{SECRET}" for source in NATIVE)
# One sample per source that the adapter turns into a stored event.
SAMPLE = {"github": "workflow_run.in_progress", "gitlab": "pipeline.pending", "circleci": "job-completed.success"}
SAMPLE["jenkins"] = "started"
COLUMNS = ("app_name", "branch", "commit_id", "run_key", "delivery_id")


@pytest.fixture
def config(make_config: Callable[..., Config], database_url: str) -> Config:
    return make_config(DATABASE_URL=database_url, BRIDGE_HOOK_SECRETS=SECRETS)


def poisoned(value: Any, targets: set[str], bad: str) -> Any:
    """``value`` with ``bad`` inserted into every string that one of the event's columns is made of."""
    if isinstance(value, dict):
        return {key: poisoned(item, targets, bad) for key, item in value.items()}
    if isinstance(value, list):
        return [poisoned(item, targets, bad) for item in value]
    if isinstance(value, str) and value in targets:
        return value[:1] + bad + value[1:]
    return value


def column_sources(source: str) -> set[str]:
    record = parse(source, SAMPLE[source])
    assert record is not None
    values = {str(getattr(record, name)) for name in COLUMNS if getattr(record, name)}
    # Column values are often built from payload strings ("owner/repo", "url#number"): poison their parts too.
    parts = {part for value in values for part in value.replace("#", "/").split("/") if len(part) > 2}
    # Not the enumerations the adapter checks (a poisoned status is a 400, not a storage question).
    enumerations = {str(record.event_type), str(record.status), *map(str, record.fields.get("build", {}).values())}
    return (values | parts) - enumerations


def stored(store: Store, event_id: str) -> Event:
    with store.transaction() as session:
        event = session.scalars(select(Event).where(Event.id == int(event_id))).one()
        session.expunge(event)
        return event


@pytest.mark.parametrize("bad", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize("source", NATIVE)
def test_a_webhook_with_unstorable_characters_in_its_columns_is_stored_with_them_replaced(
    client: FlaskClient, store: Store, source: str, bad: str
) -> None:
    payload = json.dumps(poisoned(json.loads(body(source, SAMPLE[source])), column_sources(source), bad)).encode()
    assert b"\\udfff" in payload or b"\\u0000" in payload
    headers = {**index(source)["samples"][SAMPLE[source]]["headers"], **adapter(source).sign(payload, SECRET)}  # type: ignore[attr-defined]

    response = client.post(f"/hooks/{source}", data=payload, headers=headers)

    assert response.status_code == 202, response.get_data(as_text=True)
    event = stored(store, response.get_json()["event_id"])
    assert "\ufffd" in event.app_name
    assert bad not in json.dumps(event.fields, ensure_ascii=False)
    # The raw body is kept as sent: its escapes are plain ASCII text.
    assert event.raw_body == payload.decode()
    again = client.post(f"/hooks/{source}", data=payload, headers=headers)
    assert again.status_code in (200, 202), again.get_data(as_text=True)


@pytest.mark.parametrize("bad", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_a_distelli_field_with_unstorable_characters_is_a_400_naming_it(client: FlaskClient, bad: str) -> None:
    base = f"/{USER}/apps/{APP}/events"
    for kind, name in (("buildEvent", "branch"), ("pushEvent", "commit_id"), ("deployEvent", "env_name")):
        body = {**running_body(7), "deploy_status": "Success", name: f"x{bad}y"}

        response = client.put(f"{base}/{kind}?apiToken={TOKEN}", json=body)

        assert response.status_code == 400, response.get_data(as_text=True)
        assert name in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("bad", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_a_distelli_build_with_unstorable_characters_in_extra_keys_is_stored_updated_and_listed(
    client: FlaskClient, store: Store, bad: str
) -> None:
    base = f"/{USER}/apps/{APP}/events"
    build = {**running_body(7), f"extra{bad}": f"x{bad}y", "nested": {f"k{bad}": [bad]}}

    created = client.put(f"{base}/buildEvent?apiToken={TOKEN}", json=build)

    assert created.status_code == 200, created.get_data(as_text=True)
    event_id = created.get_json()["event_id"]
    event = stored(store, event_id)
    assert bad not in json.dumps(event.fields, ensure_ascii=False) + json.dumps(event.state, ensure_ascii=False)
    assert bad not in event.raw_body
    update = {"build_status": "Success", "build_end": running_body(7)["build_start"], f"more{bad}": bad}
    updated = client.post(f"{base}/{event_id}?apiToken={TOKEN}", json=update)
    assert updated.status_code == 200, updated.get_data(as_text=True)
    listed = client.get(f"{base}?apiToken={TOKEN}")
    assert listed.status_code == 200, listed.get_data(as_text=True)
    assert [str(item["event_id"]) for item in listed.get_json()["events"]] == [event_id]
