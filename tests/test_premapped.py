"""A create mapped before its write, on a stand-in for its id (bridge/ingest/premapped.py), stores the outbox rows
that mapping it with the id its INSERT gave would have stored: every body, run uuid and column."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bridge.config import Config
from bridge.ingest.distelli_ingest import _translator, related_events
from bridge.ingest.ingest import mapping_context
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store
from tests.distelli_api import SQLITE_ONLY, sample

pytestmark = SQLITE_ONLY  # PostgreSQL maps inside its write, where the related events are read

_BUILD = sample("create_build_event.json")
_FINISHED = {**_BUILD, "build_status": "Success", "build_end": "2016-08-15T22:30:00.000Z"}
_NO_URL = {key: value for key, value in _BUILD.items() if key != "build_url"}  # the URL is the bridge's, by id
_DEPLOY = {**sample("create_deploy_event.json"), "deployment_status": "Success"}

CASES = [
    pytest.param("buildEvent", _BUILD, id="running build"),
    pytest.param("buildEvent", _FINISHED, id="finished build"),
    pytest.param("buildEvent", _NO_URL, id="build without a build_url"),
    pytest.param("deployEvent", _DEPLOY, id="successful deploy"),
]


def _mapped_with_the_real_id(store: Store, config: Config, event_id: int) -> list[tuple[Any, ...]]:
    with store.read() as session:
        event = session.get(Event, event_id)
        assert event is not None
        related = related_events(session, event)
        outbounds = _translator(lambda _event: related, None, {})(event, mapping_context(config, event.event_time))
    return [(o.unique_id, o.kind, o.level, o.final, o.body, o.end, o.expired_reason) for o in outbounds]


def _stored(store: Store, event_id: int) -> list[tuple[Any, ...]]:
    with store.read() as session:
        rows = session.scalars(select(OutboxItem).where(OutboxItem.event_id == event_id).order_by(OutboxItem.id))
        return [(r.unique_id, r.kind, r.level, r.final, r.body, r.end_time, r.reason) for r in rows]


@pytest.mark.parametrize(("kind", "body"), CASES)
def test_a_create_stores_what_mapping_it_with_its_real_id_gives(
    api: Any, store: Store, config: Config, kind: str, body: dict[str, Any]
) -> None:
    api.create_id("pushEvent", sample("create_push_event.json"))  # a related event, and an id that is not 1
    event_id = int(api.create_id(kind, body))
    expected = _mapped_with_the_real_id(store, config, event_id)
    stored = _stored(store, event_id)
    assert expected, "the mapping queues something for this event"
    assert stored == expected
