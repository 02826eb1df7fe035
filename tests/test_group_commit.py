"""Concurrent writes share transactions (bridge/storage/groupcommit.py: every write on SQLite, creates on PostgreSQL)
and stay each request's own.

What a client sees must not change: every accepted request is stored before it is answered, a request that fails
fails alone, and on SQLite the concurrent writes of one process cost fewer commits than writes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from bridge.storage import migrate
from bridge.storage.models import Event, OutboxItem, insert_event
from bridge.storage.prepared import Executor
from bridge.storage.store import Store
from bridge.web.errors import NotFound
from tests.conftest import TOKEN, USER
from tests.reliability.harness import running_body

APP = f"/{USER}/apps/example"


def _event(name: str) -> Event:
    return Event(
        source="test",
        username="jdoe",
        app_name=name,
        event_type="build",
        fields={},
        state={},
        raw_body="[]",
        event_time=dt.datetime.now(dt.UTC),
        updated_at=dt.datetime.now(dt.UTC),
    )


def _add(session: Session, name: str) -> int:
    row = _event(name)
    session.add(row)
    session.flush()
    return row.id


def _insert(on: Executor, name: str) -> int:
    """A write of prepared statements only, as a create is (``Store.write_statements``)."""
    return insert_event(on, _event(name))


def _in_threads(count: int, target: Any) -> list[Any]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            results[index] = target(index)
        except Exception as exc:  # the test looks at what each thread got
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _until_queued(store: Store, count: int, grouped: bool) -> None:
    """Returns once ``count`` writes wait in ``store``'s queue for the next group (or after 30 s). A fixed sleep
    let a thread on a loaded machine arrive after the slow write had ended, and lead a group of its own (CI, once:
    three commits where the test counted two). Writes that are not ``grouped`` (session writes on PostgreSQL)
    never queue: the others are given a fixed 0.3 s to be waiting for their own transactions."""
    if not grouped:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 30
    while len(store._group_commit._queue) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _app_names(store: Store) -> list[str]:
    with store.transaction() as session:
        return sorted(session.scalars(select(Event.app_name).where(Event.source == "test")))


def test_writes_queued_behind_a_busy_one_commit_together_and_each_gets_its_own_result(store: Store) -> None:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _connection: commits.append(1))
    first_running = threading.Event()

    def slow_first(session: Session) -> int:
        first_running.set()
        _until_queued(store, 6, grouped=store.is_sqlite)
        return _add(session, "first")

    leader = threading.Thread(target=store.write, args=(slow_first,))
    leader.start()
    first_running.wait(5)
    ids = _in_threads(6, lambda index: store.write(lambda session: _add(session, f"app-{index}")))
    leader.join(10)

    if store.is_sqlite:
        assert len(commits) == 2  # the slow one, then the six that queued behind it
    assert all(isinstance(value, int) for value in ids)
    assert len(set(ids)) == 6
    assert _app_names(store) == sorted(["first", *(f"app-{index}" for index in range(6))])


def _queued_behind_a_slow_one(store: Store, write: Any, add: Any, kind: str) -> list[Any]:
    """Six writes of ``add`` queued while a slow first one runs; what each got."""
    first_running = threading.Event()

    def slow_first(on: Any) -> int:
        first_running.set()
        _until_queued(store, 6, grouped=write == store.write_statements)
        return int(add(on, f"{kind}-first"))

    leader = threading.Thread(target=write, args=(slow_first,))
    leader.start()
    first_running.wait(5)
    results = _in_threads(6, lambda index: write(lambda on: add(on, f"{kind}-{index}")))
    leader.join(10)
    return results


def test_on_postgresql_creates_queued_behind_a_busy_one_share_a_transaction_and_updates_do_not(
    postgres_url: str,
) -> None:
    """Rows one PostgreSQL transaction wrote carry its id (``xmin``): the six creates that queued behind a slow one
    are one transaction, and six session writes queued the same way are six."""
    store = Store(postgres_url)
    migrate.upgrade(store)
    try:
        creates = _queued_behind_a_slow_one(store, store.write_statements, _insert, "create")
        sessions = _queued_behind_a_slow_one(store, store.write, _add, "session")
        with store.transaction() as session:
            written = dict(session.execute(text("SELECT app_name, xmin::text FROM events WHERE source = 'test'")).all())
    finally:
        store.dispose()

    assert all(isinstance(value, int) for value in creates + sessions), creates + sessions
    assert len(written) == 14
    assert len({written[f"create-{index}"] for index in range(6)}) == 1
    assert written["create-first"] != written["create-0"]
    assert len({written[f"session-{index}"] for index in range(6)}) == 6


@pytest.mark.parametrize("kind", ["session", "statements", "mixed"])
def test_a_write_that_fails_in_a_group_fails_alone_and_leaves_nothing(store: Store, kind: str) -> None:
    """Writes through the session's unit of work, writes of prepared statements alone (a create: the group then
    runs without a session), and both in one group."""
    first_running = threading.Event()

    def by_session(index: int) -> bool:
        return kind == "session" or (kind == "mixed" and index == 4)

    def written(index: int, name: str) -> Any:
        def add(on: Any) -> int:
            new_id = _add(on, name) if by_session(index) else _insert(on, name)
            if index == 2:
                raise NotFound("no such thing")  # after its insert: the insert must be undone too
            if index < 0:
                first_running.set()
                behind = [other for other in range(5) if store.is_sqlite or not by_session(other)]
                _until_queued(store, len(behind), grouped=store.is_sqlite or not by_session(index))
            return new_id

        return (store.write if by_session(index) else store.write_statements)(add)

    leader = threading.Thread(target=written, args=(-1, "first"))
    leader.start()
    first_running.wait(5)
    results = _in_threads(5, lambda index: written(index, f"app-{index}"))
    leader.join(10)

    assert isinstance(results[2], NotFound)
    assert all(isinstance(value, int) for index, value in enumerate(results) if index != 2)
    assert len({value for index, value in enumerate(results) if index != 2}) == 4
    assert _app_names(store) == sorted(["first", "app-0", "app-1", "app-3", "app-4"])


def test_concurrent_builds_and_updates_through_the_api_are_all_stored_and_answered_alone(
    app: Flask, store: Store
) -> None:
    def create(index: int) -> Any:
        return app.test_client().put(f"{APP}/events/buildEvent?apiToken={TOKEN}", json=running_body(index))

    created = _in_threads(40, create)
    assert [response.status_code for response in created] == [200] * 40
    ids = [response.get_json()["event_id"] for response in created]
    assert len(set(ids)) == len(ids)

    def update(index: int) -> Any:
        target = ids[index] if index % 4 else "999999"  # every fourth names no event
        return app.test_client().post(f"{APP}/events/{target}?apiToken={TOKEN}", json={"build_status": "Success"})

    updated = _in_threads(len(ids), update)
    for index, response in enumerate(updated):
        if index % 4:
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["event"]["build_status"] == "Success"
        else:
            assert response.status_code == 404
            assert response.get_json()["error"]["code"] == "not_found"

    with store.transaction() as session:
        statuses = dict(session.execute(select(Event.id, Event.status).where(Event.source == "distelli")).all())
        finals = session.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.final.is_(True)))
    assert sorted(statuses) == sorted(int(value) for value in ids)
    assert sorted(statuses[int(ids[index])] for index in range(len(ids)) if index % 4) == ["Success"] * 30
    assert sorted(statuses[int(ids[index])] for index in range(len(ids)) if not index % 4) == ["Running"] * 10
    assert finals == 30 * 2  # a final pipeline and a final job for each finished build


def test_a_failed_update_in_the_same_group_as_a_good_one_of_the_same_build_leaves_the_good_one_answered(
    app: Flask, store: Store
) -> None:
    """Two updates of one build share a group; the second changes the build and then fails validation, so its
    savepoint is rolled back and the build's row object expired: the first must still get its 200."""
    client = app.test_client()
    created = client.put(f"{APP}/events/buildEvent?apiToken={TOKEN}", json=running_body(1) | {"build_status": "Queued"})
    event_id = created.get_json()["event_id"]
    first_running = threading.Event()

    def slow_first(session: Session) -> int:
        first_running.set()
        _until_queued(store, 2, grouped=store.is_sqlite)  # both updates queue meanwhile, the good one first
        return _add(session, "first")

    def update(index: int) -> Any:
        time.sleep(0.05 * index)
        body = (
            {"build_status": "Running"}
            if index == 0
            else {"build_status": "Success", "build_end": "2001-01-01T00:00:00Z"}
        )
        return app.test_client().post(f"{APP}/events/{event_id}?apiToken={TOKEN}", json=body)

    leader = threading.Thread(target=store.write, args=(slow_first,))
    leader.start()
    first_running.wait(5)
    good, bad = _in_threads(2, update)
    leader.join(10)

    assert good.status_code == 200, good.get_data(as_text=True)
    assert good.get_json()["event"]["build_status"] == "Running"
    assert bad.status_code == 400
    listed = client.get(f"{APP}/events?apiToken={TOKEN}").get_json()["events"][0]
    assert listed["build_status"] == "Running"
    assert listed["build_end"] is None  # the refused update's end was undone with its savepoint
