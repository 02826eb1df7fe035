"""Accepted events survive an app restart on the same database, and event ids only ever increase."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bridge.config import Config
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import OTHER_TOKEN, OTHER_USER
from tests.distelli_api import DistelliApi, assert_error, sample, stored_events


@pytest.fixture
def restart(config: Config, store: Store) -> Iterator[Callable[[], DistelliApi]]:
    """Call it to drop the current app's connections and get a new app and Store on the same database URL."""
    stores: list[Store] = []

    def restarted() -> DistelliApi:
        store.dispose()
        for old in stores:
            old.dispose()
        fresh = Store(config.database_url)
        stores.append(fresh)
        return DistelliApi(create_app(config, fresh).test_client())

    yield restarted
    for fresh in stores:
        fresh.dispose()


def test_events_are_listed_the_same_after_a_restart(api: DistelliApi, restart: Callable[[], DistelliApi]) -> None:
    for kind, name in [("pushEvent", "create_push_event.json"), ("buildEvent", "create_build_event.json")]:
        api.create_id(kind, sample(name))
    api.create_id("deployEvent", sample("create_deploy_event.json"))
    before = api.events()

    after = restart().events()

    assert after == before and len(after) == 3


def test_running_build_can_be_finished_after_a_restart(api: DistelliApi, restart: Callable[[], DistelliApi]) -> None:
    event_id = api.create_id("buildEvent", sample("create_build_event.json"))

    restarted = restart()
    response = restarted.update(event_id, sample("update_build_event.json"))

    assert response.status_code == 200
    assert response.get_json()["event"]["build_status"] == "Success"
    assert response.get_json()["event"]["build_id"] == "J23465"


def test_finished_build_stays_immutable_after_a_restart(api: DistelliApi, restart: Callable[[], DistelliApi]) -> None:
    event_id = api.create_id("buildEvent", {"build_status": "Failed"})

    restarted = restart()

    assert_error(restarted.update(event_id, {"build_status": "Success"}), 409, "immutable_event")
    assert restarted.event(event_id)["build_status"] == "Failed"


def test_ids_keep_increasing_across_restarts(api: DistelliApi, restart: Callable[[], DistelliApi]) -> None:
    first = [int(api.create_id("pushEvent", {})) for _ in range(3)]

    restarted = restart()
    second = [int(restarted.create_id("buildEvent", {})) for _ in range(3)]
    third = [int(restart().create_id("deployEvent", {})) for _ in range(3)]

    ids = first + second + third
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_accepted_event_is_committed_before_the_response(api: DistelliApi, config: Config) -> None:
    event_id = api.create_id("buildEvent", sample("create_build_event.json"))

    reader = Store(config.database_url)  # another engine: sees only what was committed
    try:
        stored = stored_events(reader)
    finally:
        reader.dispose()

    assert [str(event.id) for event in stored] == [event_id]
    assert stored[0].fields["build_id"] == "J23465"


def test_event_ids_increase_monotonically_across_kinds_apps_users_and_refusals(api: DistelliApi) -> None:
    other_app = api.for_app("other-app")
    other_user = api.as_user(OTHER_USER, OTHER_TOKEN)
    ids = []
    for round_number in range(4):
        ids.append(int(api.create_id("buildEvent", {"build_status": "Running"})))
        api.create("buildEvent", {"build_status": "Exploded"})  # refused: takes no id
        ids.append(int(other_app.create_id("pushEvent", {})))
        api.update(str(ids[-2]), {"build_status": "Success"})
        ids.append(int(other_user.create_id("pullRequestEvent", {})))
        ids.append(int(api.create_id("deployEvent", {"env_name": f"env{round_number}"})))

    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # ListEvents orders by id, so "newest first" is the order of creation
    assert [event["event_id"] for event in api.events(max_results=100)] == sorted(
        [i for n, i in enumerate(ids) if n % 4 in (0, 3)], reverse=True
    )
