"""An answered write is on disk: SQLite commits without fsync and the WAL is flushed before the answer
(bridge/storage/durability.py), outside the writer lock.

These tests watch the real ``os.fdatasync`` calls of the app's process: which file each one flushed and what a
separate connection to the database could read at that moment.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from bridge.config import Config
from tests.conftest import TOKEN, USER
from tests.reliability.harness import running_body

CREATE = f"/{USER}/apps/example/events/buildEvent?apiToken={TOKEN}"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url  # the WAL and its flush are SQLite's; PostgreSQL fsyncs its own log at COMMIT


@pytest.fixture
def database(config: Config) -> Path:
    return Path(config.database_url.split("///", 1)[1])


def _events_seen(database: Path) -> int:
    """How many events a connection of its own reads now: what is committed, whether or not it is flushed."""
    with sqlite3.connect(database) as reader:
        return int(reader.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch, database: Path) -> Iterator[list[tuple[str, int]]]:
    """Every fdatasync of this process: the file it flushed, and how many events were committed at that moment."""
    seen: list[tuple[str, int]] = []
    real = os.fdatasync

    def recording(descriptor: int) -> None:
        seen.append((os.readlink(f"/proc/self/fd/{descriptor}"), _events_seen(database)))
        real(descriptor)

    monkeypatch.setattr(os, "fdatasync", recording)
    yield seen


def test_an_answered_create_was_flushed_to_disk_after_its_commit(
    app: Flask, database: Path, flushes: list[tuple[str, int]]
) -> None:
    client = app.test_client()
    for number in range(3):
        before = len(flushes)
        response = client.put(CREATE, json=running_body(number))
        assert response.status_code == 200
        # Before the answer: a flush of the database's WAL, made once the event could be read (committed).
        assert (str(database) + "-wal", number + 1) in flushes[before:]


def test_a_read_flushes_nothing(app: Flask, flushes: list[tuple[str, int]]) -> None:
    client = app.test_client()
    assert client.put(CREATE, json=running_body(1)).status_code == 200
    before = len(flushes)
    assert client.get(f"/{USER}/apps/example/events?apiToken={TOKEN}").status_code == 200
    assert flushes[before:] == []


def test_a_flush_the_disk_refuses_is_answered_503_and_reported_until_writes_pass(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    real = os.fdatasync

    def refusing(_descriptor: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", refusing)
    response = client.put(CREATE, json=running_body(1))
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "storage_unavailable"
    assert "write back" in error["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "write back" in ready.get_data(as_text=True)

    monkeypatch.setattr(os, "fdatasync", real)
    time.sleep(1.1)  # the store probes a refused disk at most once a second
    again = client.get("/readyz")
    assert again.status_code == 200, again.get_data(as_text=True)
    assert client.put(CREATE, json=running_body(2)).status_code == 200


def test_a_slow_flush_does_not_hold_the_writer_lock(
    app: Flask, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request waits for the disk, the next request's write commits: only its own answer waits."""
    real = os.fdatasync
    first_flushing, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_first(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 1:
            first_flushing.set()
            release.wait(10)
        real(descriptor)

    monkeypatch.setattr(os, "fdatasync", slow_first)
    answers: dict[str, Any] = {}

    def put(name: str, number: int) -> Callable[[], None]:
        def run() -> None:
            answers[name] = app.test_client().put(CREATE, json=running_body(number))

        return run

    first = threading.Thread(target=put("first", 1))
    first.start()
    assert first_flushing.wait(10)
    second = threading.Thread(target=put("second", 2))
    second.start()
    second.join(10)
    try:
        assert "second" in answers and answers["second"].status_code == 200
        assert _events_seen(database) == 2
        assert "first" not in answers  # still waiting for its own flush
    finally:
        release.set()
        first.join(10)
    assert answers["first"].status_code == 200
