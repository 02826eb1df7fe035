"""Retention reads in proportion to what it looks at, not to the backlog times the batch, whatever the statistics.

A prune keeps every event that still has a pending row (or a dead letter younger than its own window). Asked as
``NOT EXISTS`` checks inside the statement that picks the batch, PostgreSQL planned them from its statistics, and
with statistics from before an intake outage's backlog it read every pending row for every event of a batch: 112 ms
a batch of 500 with 3,000 pending rows, and a whole dry run of 4,500 events 0.85-0.94 s of PostgreSQL's CPU against
0.07-0.08 now (bench/RESULTS.md, 2026-12-04). Now the batch's events are picked first, and then one statement asks
which of those events have such rows (bridge/operations/retention.py). On SQLite without statistics (every SQLite
store: nothing analyzes it) that statement first took the state-led index and read the whole backlog for each batch
of 50 events; its state tests now go through ``outbox.state_is``, which no index covers.

Every statement of a dry-run prune is captured from the driver and explained (PostgreSQL: rows fetched) or stepped
(SQLite: VM steps) afterwards, in a transaction rolled back: counts, not times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select

from bridge.config import Config
from bridge.operations.retention import BATCH_SIZE, RetentionPolicy, _deletable, prune
from bridge.storage.models import Event
from bridge.storage.store import Store
from tests.plan_cost import read_cost, statements_sent
from tests.test_claim_backlog import BACKLOG, _create, deliver_and_analyze, statistics_held

HISTORY = 300  # creates delivered before the backlog, all of them past retention


def _prune_cost(store: Store) -> float:
    """What one dry-run prune of everything past retention reads, summed over its statements."""
    policy = RetentionPolicy(keep=dt.timedelta(days=1), keep_dead=dt.timedelta(days=1), batch_size=100)
    with statements_sent(store.engine, selects_only=True) as sent:
        report = prune(store, policy, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2), dry_run=True)
    assert report.events == HISTORY, report  # the backlog's events are all kept: their rows are pending
    with store.engine.connect() as connection:
        cost = sum(read_cost(connection, statement, parameters) for statement, parameters in sent)
        connection.rollback()
    return cost


def test_twice_the_backlog_costs_a_prune_at_most_twice_as_much(
    make_config: Callable[..., Config], database_url: str
) -> None:
    with statistics_held(make_config(DATABASE_URL=database_url)) as (store, client):
        _create(client, range(10_000, 10_000 + HISTORY))
        deliver_and_analyze(store)  # then the intake goes away
        _create(client, range(BACKLOG))
        once = _prune_cost(store)
        _create(client, range(BACKLOG, 2 * BACKLOG))
        twice = _prune_cost(store)

    # The history costs the same both times; the backlog's events are looked at once each: well under 2 x.
    assert twice <= 2 * once, (once, twice)
    if not store.is_sqlite:  # rows are countable there: a few reads per event and outbox row, not one per pair
        assert twice <= 30 * (HISTORY + 2 * BACKLOG), twice


def _keep_check_cost(store: Store, candidates: list[tuple[dt.datetime, int]]) -> float:
    """What the check of which of ``candidates`` to keep reads (one batch's statement, as a prune sends it)."""
    with statements_sent(store.engine) as sent, store.read() as session:
        kept_none = _deletable(session, candidates, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert len(kept_none) == len(candidates), "the history's events have nothing pending"
    (statement, parameters), *_ = sent
    with store.engine.connect() as connection:
        cost = read_cost(connection, statement, parameters)
        connection.rollback()
    return cost


@pytest.mark.parametrize("statistics", ["none", "from-before-the-backlog"])
def test_on_sqlite_a_batch_asks_its_own_events_rows_whether_to_keep_them_not_the_backlog(
    make_config: Callable[..., Config], statistics: str
) -> None:
    """Every SQLite store is without statistics (nothing analyzes it); there the check took the state-led index and
    read every pending row for each batch of 50 events, inside the writer lock. (PostgreSQL plans it from the
    statistics autovacuum keeps, and reads the events' rows at any size worth an index; the prune above covers its
    backlog.)"""
    with statistics_held(make_config()) as (store, client):
        _create(client, range(10_000, 10_000 + BATCH_SIZE))
        deliver_and_analyze(store, analyze=statistics != "none")
        with store.read() as session:
            batch = [(moment, event_id) for moment, event_id in session.execute(select(Event.updated_at, Event.id))]
        _create(client, range(BACKLOG))
        once = _keep_check_cost(store, batch)
        _create(client, range(BACKLOG, 3 * BACKLOG))
        thrice = _keep_check_cost(store, batch)

    assert thrice <= 1.25 * once, (once, thrice)  # reading the backlog: about 3 x
