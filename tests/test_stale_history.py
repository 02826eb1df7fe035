"""Looking for runs to close reads the stale-time window, not the history of finished runs, whatever the statistics.

The stale-run closer (bridge/operations/stale.py) picks running rows of one intake window that have no final row
of their run. On SQLite, which nothing analyzes, the check for a final row read the ``(final, created_at)`` index's
every final row for every candidate: behind 1,000 finished builds one look took 2.8 s, behind 2,000 four times
that, and on SQLite it runs holding the writer lock that every accepted request waits for. On an analyzed
PostgreSQL it hashed every final row of the history. Now the check reads the candidate's own run.

Counts, not times (tests/plan_cost.py): twice the finished history must not make one look cost more, and on
PostgreSQL a look reads a few rows a candidate.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.operations import stale
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.plan_cost import read_cost, statements_sent
from tests.reliability.harness import running_body, success_body
from tests.test_claim_backlog import statistics_held

HISTORY = 200  # finished builds added before each look
OPEN = 60  # builds that sent Running only, inside the window


def _build(client: FlaskClient, number: int, finished: bool) -> None:
    base = f"/{USER}/apps/example/events"
    created = client.put(f"{base}/buildEvent?apiToken={TOKEN}", json=running_body(number))
    assert created.status_code == 200, created.get_data(as_text=True)
    if finished:
        event_id = created.get_json()["event_id"]
        done = client.post(f"{base}/{event_id}?apiToken={TOKEN}", data=json.dumps(success_body()))
        assert done.status_code == 200, done.get_data(as_text=True)


def _age_finished_runs(store: Store, analyze: bool) -> None:
    """Every row of a run with a final row moved two days back and delivered: history outside the window. On
    PostgreSQL a VACUUM then drops the old row versions' index entries, as autovacuum would long before that."""
    two_days_back = "datetime(created_at, '-2 days')" if store.is_sqlite else "created_at - interval '2 days'"
    with store.engine.begin() as connection:
        connection.execute(
            text(
                f"UPDATE outbox SET created_at = {two_days_back}, state = 'delivered'"
                " WHERE unique_id IN (SELECT unique_id FROM outbox WHERE final)"
            )
        )
        if store.is_sqlite and analyze:
            connection.execute(text("ANALYZE"))
    if not store.is_sqlite:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE outbox" if analyze else "VACUUM outbox"))


def _look_cost(store: Store) -> float:
    """What one look for open runs reads: the statement as the closer sends it, captured from the driver, then
    explained (PostgreSQL) or stepped (SQLite)."""
    with store.engine.connect() as connection:
        # Everything so far is older than this look's stale time.
        with statements_sent(connection) as sent, Session(bind=connection) as session:
            found = stale._open_runs(session, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
        assert len(found) == 2 * OPEN, "the look should find each open build's pipeline and job"
        (statement, parameters), *_ = sent
        cost = read_cost(connection, statement, parameters)
        connection.rollback()
        return cost


@pytest.mark.parametrize("statistics", ["none", "analyzed"])
def test_twice_the_finished_history_does_not_make_a_look_for_open_runs_cost_more(
    make_config: Callable[..., Config], database_url: str, statistics: str
) -> None:
    with statistics_held(make_config(DATABASE_URL=database_url)) as (store, client):
        for number in range(HISTORY):
            _build(client, number, finished=True)
        _age_finished_runs(store, analyze=statistics == "analyzed")
        for number in range(10_000, 10_000 + OPEN):
            _build(client, number, finished=False)
        once = _look_cost(store)
        for number in range(HISTORY, 2 * HISTORY):
            _build(client, number, finished=True)
        _age_finished_runs(store, analyze=statistics == "analyzed")
        twice = _look_cost(store)

    assert twice <= 1.5 * once, (once, twice)  # reading the finished history for each candidate: 2 x
    if not store.is_sqlite:  # rows are countable there: each candidate's run read, not the history
        assert twice <= 10 * 2 * OPEN, twice
