"""An event's outbox rows are stored as its mapping gave them, in that order, however many there are.

The sender delivers a run's rows in id order (a job's running body before its final one), so a way of inserting
them that reorders rows (a multi-row INSERT split in chunks was tried for issue 17) must fail here; on both
databases, with counts around 83 rows, where a statement of 12 values a row would reach SQLite's oldest limit of 999.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from adapters.target import Outbound
from bridge.storage.models import OutboxItem
from bridge.storage.outbox import enqueue
from bridge.storage.store import Store
from tests.distelli_api import sample

_NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _outbounds(count: int) -> list[Outbound]:
    return [
        Outbound(
            kind="pipeline",
            unique_id=f"run-{number % 3}",
            level="job" if number % 2 else "pipeline",
            final=number == count - 1,
            body={"number": number, "text": f"body {number} ü ✓"},
            expired_reason="too old" if number == 5 else None,
        )
        for number in range(count)
    ]


@pytest.mark.parametrize("count", [1, 2, 83, 84, 200])
def test_an_events_outbox_rows_are_stored_in_the_mappings_order(api: Any, store: Store, count: int) -> None:
    event_id = int(api.create_id("pushEvent", sample("create_push_event.json")))
    with store.read() as session:
        before = session.scalar(select(OutboxItem.id).order_by(OutboxItem.id.desc()).limit(1)) or 0
    expected = _outbounds(count)

    store.write(lambda session: enqueue(session, event_id, expected, _NOW))

    with store.read() as session:
        rows = session.scalars(select(OutboxItem).where(OutboxItem.id > before).order_by(OutboxItem.id)).all()
    stored = [(row.event_id, row.unique_id, row.level, row.final, row.body, row.state, row.reason) for row in rows]
    assert stored == [
        (
            event_id,
            outbound.unique_id,
            outbound.level,
            outbound.final,
            outbound.body,
            "expired" if outbound.expired_reason else "pending",
            outbound.expired_reason,
        )
        for outbound in expected
    ]
    assert all(row.created_at == _NOW and row.next_attempt_at == _NOW for row in rows)
