"""One request's attempt is stored for every row it carried, with the request's own values, on both databases.

On PostgreSQL the rows of one request go in as one statement over an array of outbox ids (bridge/delivery/attempts.py);
a statement that dropped, repeated or mixed up ids, or lost the time's zone, fails here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from adapters.target import Outbound
from bridge.delivery import attempts
from bridge.storage.models import OutboxItem
from bridge.storage.outbox import enqueue
from bridge.storage.store import Store
from tests.distelli_api import sample

_SENT = dt.datetime(2026, 12, 3, 12, 0, 0, 123000, tzinfo=dt.UTC)
_RETRIED = _SENT + dt.timedelta(seconds=30)


def _outbox_ids(api: Any, store: Store, count: int) -> list[int]:
    event_id = int(api.create_id("pushEvent", sample("create_push_event.json")))
    outbounds = [
        Outbound(kind="pipeline", unique_id=f"run-{number}", level="pipeline", final=True, body={"n": number})
        for number in range(count)
    ]
    store.write(lambda session: enqueue(session, event_id, outbounds, _SENT))
    with store.read() as session:
        return list(session.scalars(select(OutboxItem.id).where(OutboxItem.event_id == event_id)).all())[-count:]


def test_each_row_a_request_carried_gets_that_requests_attempt(api: Any, store: Store) -> None:
    carried, left_out = (ids := _outbox_ids(api, store, 40))[:39], ids[39]

    store.write(lambda session: attempts.record(session, carried, _SENT, "https://intake.test/api", 202, "{}"))

    with store.read() as session:
        stored = attempts.of_rows(session, ids)
    assert sorted(attempt.outbox_id for attempt in stored) == sorted(carried)
    assert {(a.attempted_at, a.endpoint, a.status, a.answer) for a in stored} == {
        (_SENT, "https://intake.test/api", 202, "{}")
    }
    assert left_out not in {attempt.outbox_id for attempt in stored}


def test_a_later_failed_request_is_each_rows_latest_attempt(api: Any, store: Store) -> None:
    ids = _outbox_ids(api, store, 3)
    store.write(lambda session: attempts.record(session, ids, _SENT, "https://intake.test/api", 503, "busy"))
    answer = "x" * (attempts.ANSWER_CHARS + 100)
    store.write(lambda session: attempts.record(session, ids[:2], _RETRIED, "https://intake.test/api", 500, answer))

    with store.read() as session:
        latest = attempts.latest_attempts(session, ids)
        kept = attempts.of_rows(session, ids)
    assert {outbox_id: (a.attempted_at, a.status) for outbox_id, a in latest.items()} == {
        ids[0]: (_RETRIED, 500),
        ids[1]: (_RETRIED, 500),
        ids[2]: (_SENT, 503),
    }
    assert latest[ids[0]].answer == "x" * attempts.ANSWER_CHARS
    assert len(kept) == 5
