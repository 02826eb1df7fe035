"""The WAL is checkpointed by a thread of its own, outside the writer lock (bridge/storage/checkpoints.py): a long
run of writes leaves it a few megabytes, and no commit has to copy it into the database file."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.config import Config
from bridge.storage.checkpoints import AUTOCHECKPOINT_PAGES
from bridge.storage.models import Event, insert_event
from bridge.storage.prepared import Executor
from bridge.storage.store import Store

BODY_BYTES = 100_000
WRITES = 400  # 40 MB of rows: 4 x the WAL's bound below, well under the commits' own autocheckpoint


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def _write_big_event(on: Executor) -> int:
    now = dt.datetime.now(dt.UTC)
    event = Event(
        source="test",
        username="jdoe",
        app_name="example",
        event_type="build",
        fields={},
        state={},
        raw_body="x" * BODY_BYTES,
        event_time=now,
        updated_at=now,
    )
    return insert_event(on, event)


def test_a_long_run_of_writes_leaves_the_wal_small_and_every_row_in_the_database(
    store: Store, config: Config
) -> None:
    database = Path(config.database_url.split("///", 1)[1])
    wal = Path(f"{database}-wal")
    largest = 0
    for _ in range(WRITES):
        store.write_statements(_write_big_event)
        largest = max(largest, wal.stat().st_size)
        time.sleep(0.004)  # about 20 MB a second: several checkpoints' worth of WAL during the run

    assert WRITES * BODY_BYTES >= 4 * 10_000_000
    assert largest < 10_000_000, f"the WAL grew to {largest} bytes"
    assert AUTOCHECKPOINT_PAGES * 4096 > WRITES * BODY_BYTES  # so only the thread can have kept it small
    with sqlite3.connect(database) as reader:
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == WRITES
