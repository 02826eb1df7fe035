"""Reads leave the serialized section: on SQLite a listing or a create's lookups never wait for the writer lock.

ListEvents reads through ``Store.read`` and a create looks up its parent push and the push of its commit through
``Store.lookups``: WAL readers that see the last commit. Before, every read took the writer lock and ``BEGIN
IMMEDIATE`` like a write, so a listing waited behind every write in flight, in every process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.target import CI_PIPELINE
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.reliability.harness import running_body

APP = f"/{USER}/apps/example"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url  # PostgreSQL has no writer lock to leave


@contextlib.contextmanager
def holding_the_writer_lock(store: Store) -> Iterator[threading.Thread]:
    """A write in another thread that holds the writer lock until the block ends."""
    writing, release = threading.Event(), threading.Event()

    def slow(_session: Session) -> None:
        writing.set()
        release.wait(10)

    writer = threading.Thread(target=store.write, args=(slow,))
    writer.start()
    try:
        assert writing.wait(5)
        yield writer
    finally:
        release.set()
        writer.join(10)


def test_a_listing_answers_while_a_slow_write_holds_the_writer_lock(app: Flask, store: Store) -> None:
    client = app.test_client()
    created = client.put(f"{APP}/events/buildEvent?apiToken={TOKEN}", json=running_body(1))
    assert created.status_code == 200
    with holding_the_writer_lock(store) as writer:
        started = time.monotonic()
        listed = client.get(f"{APP}/events?apiToken={TOKEN}")
        took = time.monotonic() - started
        assert listed.status_code == 200
        assert [str(event["event_id"]) for event in listed.get_json()["events"]] == [created.get_json()["event_id"]]
        assert took < 2, f"the listing waited {took:.1f} s for the writer"
        assert writer.is_alive()  # the write was still holding the lock all along


def test_a_create_waiting_for_the_writer_lock_still_links_the_push_stored_before_it(app: Flask, store: Store) -> None:
    client = app.test_client()
    push = {"commit_id": "1234567890123456789012345678901234567890", "repo_url": "https://github.com/jdoe/example"}
    assert client.put(f"{APP}/events/pushEvent?apiToken={TOKEN}", json=push | {"branch": "main"}).status_code == 200
    answers: list[int] = []
    build = threading.Thread(
        target=lambda: answers.append(
            client.put(f"{APP}/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"} | push).status_code
        )
    )
    with holding_the_writer_lock(store):
        build.start()
        time.sleep(0.3)
        assert answers == []  # its write waits for the lock
    build.join(10)
    assert answers == [200]
    with store.read() as session:
        bodies = session.scalars(select(OutboxItem.body).where(OutboxItem.kind == CI_PIPELINE)).all()
    # The branch only the push carried reached the build's pipeline body: the lookup made before the lock found it.
    assert {body["data"]["attributes"]["resource"]["git"]["branch"] for body in bodies} == {"main"}


def _open_descriptors_of(path: str) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    count = 0
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{descriptor}") == path
    return count


def test_each_request_thread_keeps_one_lookup_connection_and_dispose_closes_them(app: Flask, store: Store) -> None:
    database = str(store.engine.url.database)
    client = app.test_client()
    push = {"commit_id": "1234567890123456789012345678901234567890", "repo_url": "https://github.com/jdoe/example"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as threads:
        # Three threads that stay alive, each making creates: their lookups reuse one connection per thread...
        for round_ in range(3):
            branch = f"branch-{round_}"
            assert (
                client.put(f"{APP}/events/pushEvent?apiToken={TOKEN}", json=push | {"branch": branch}).status_code
                == 200
            )
            builds = [
                threads.submit(
                    lambda: client.put(
                        f"{APP}/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"} | push
                    )
                )
                for _ in range(6)
            ]
            assert [build.result(10).status_code for build in builds] == [200] * 6
            with store.read() as session:
                newest = session.scalars(
                    select(OutboxItem.body)
                    .where(OutboxItem.kind == CI_PIPELINE)
                    .order_by(OutboxItem.id.desc())
                    .limit(6)
                ).all()
            # ...and each lookup read the push committed just before it, by another connection.
            assert {body["data"]["attributes"]["resource"]["git"]["branch"] for body in newest} == {branch}
        assert _open_descriptors_of(database) <= 3 + 5 + 1  # a lookup connection per thread, the pool, the checkpointer
        store.dispose()
        # The threads still run, so only dispose can have closed their connections.
        assert _open_descriptors_of(database) == 0
