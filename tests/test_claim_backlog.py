"""The sender's claim reads in proportion to the backlog, not its square, whatever the database's statistics say.

A row may be sent only when no older row of its run is still pending, so the claim checks each due row for one.
On PostgreSQL that check was planned as a join: with statistics saying that few rows are pending (a new table that
autovacuum has not analyzed yet, or a table analyzed before an intake outage left a backlog), the planner took the
pending rows for a handful and compared every due row with every pending one. 1,500 creates' rows then took the
claim 516 ms, a backlog of 3,000 rows behind 20,000 delivered ones 656 ms, and a backlog ten times larger a
hundred times that, each claim again (bench/RESULTS.md, 2026-12-04). The check is now a subquery run for each due
row, which can read only the run's own rows (bridge/storage/outbox.py, ``_due_rows``).

Counts, not times: rows the plan fetched on PostgreSQL (EXPLAIN ANALYZE), virtual-machine steps on SQLite. Twice
the backlog must cost about twice as much, and on PostgreSQL each pending row be read a few times at most.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from bridge.config import Config
from bridge.storage import migrate, outbox
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.plan_cost import read_cost, statements_sent
from tests.test_related_lookups import _create as create_one

BACKLOG = 150  # creates: two pending outbox rows each


def _create(client: FlaskClient, numbers: range) -> None:
    for number in numbers:
        create_one(client, number)


def _claim_cost(store: Store, limit: int = 100_000) -> float:
    """What the sender's claim statement reads over the whole backlog (no batch limit unless ``limit``): the
    statement as the sender sends it, captured from the driver, then explained (PostgreSQL) or stepped (SQLite),
    and rolled back."""
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    due = outbox._due_rows(now, limit, [outbox.CI_PIPELINE], in_due_order=store.is_sqlite)
    if not store.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=outbox.OutboxItem.__table__)
    with store.engine.connect() as connection:
        with statements_sent(connection) as sent:
            assert connection.execute(due).all(), "the claim found nothing to send"
        (statement, parameters), *_ = sent
        cost = read_cost(connection, statement, parameters)
        connection.rollback()
        return cost


@contextlib.contextmanager
def statistics_held(config: Config) -> Iterator[tuple[Store, FlaskClient]]:
    """A migrated store and a client of its app; on PostgreSQL autovacuum is off for both tables, so the
    statistics are only what the test makes."""
    store = Store(config.database_url)
    migrate.upgrade(store)
    try:
        if not store.is_sqlite:
            with store.engine.begin() as connection:
                for table in ("events", "outbox"):
                    connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        yield store, create_app(config, store).test_client()
    finally:
        store.dispose()


def deliver_and_analyze(store: Store, analyze: bool = True) -> None:
    """Every outbox row delivered and the tables analyzed: the statistics a running bridge has before an outage
    (without ``analyze``, those of a SQLite store, which nothing analyzes; on PostgreSQL a VACUUM then drops the
    old row versions' index entries, as autovacuum would, and leaves the columns without statistics)."""
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE outbox SET state = 'delivered'"))
        if analyze:
            connection.execute(text("ANALYZE"))
    if not analyze and not store.is_sqlite:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM outbox"))


@pytest.mark.parametrize("statistics", ["none-yet", "from-before-the-backlog"])
def test_twice_the_backlog_costs_the_claim_about_twice_as_much(
    make_config: Callable[..., Config], database_url: str, statistics: str
) -> None:
    with statistics_held(make_config(DATABASE_URL=database_url)) as (store, client):
        if statistics == "from-before-the-backlog":  # delivered history, analyzed, then the intake goes away
            _create(client, range(1_000, 1_000 + 4 * BACKLOG))
            deliver_and_analyze(store)
        _create(client, range(BACKLOG))
        once = _claim_cost(store)
        _create(client, range(BACKLOG, 2 * BACKLOG))
        twice = _claim_cost(store)

    assert twice <= 3 * once, (once, twice)  # a plan comparing every due row with every pending one: about 4 x
    if not store.is_sqlite:  # rows are countable there: each pending row read a few times, not once per other row
        assert once <= 10 * 2 * BACKLOG, once
        assert twice <= 10 * 4 * BACKLOG, twice


@pytest.mark.parametrize("statistics", ["none", "of-the-backlog"])
def test_a_claim_of_one_batch_reads_about_the_batch_behind_any_backlog(
    make_config: Callable[..., Config], database_url: str, statistics: str
) -> None:
    """Claimed in id order, every due row was read and sorted before the batch's limit applied: a claim of 1,000
    behind 100,000 due rows took 97-118 ms on SQLite (which has no statistics, ever), inside the writer lock, and a
    drain was quadratic in the backlog. In due order the claim reads the due-time index as it is sorted and stops
    at the limit.

    PostgreSQL keeps the id order, which with statistics from before a backlog walks the pending-only index and
    stops at the limit; with no statistics at all (a new table's first minute) it reads the pending rows either
    way, once each."""
    with statistics_held(make_config(DATABASE_URL=database_url)) as (store, client):
        _create(client, range(1_000, 1_000 + BACKLOG))
        deliver_and_analyze(store, analyze=False)
        _create(client, range(BACKLOG))
        if statistics == "of-the-backlog":
            with store.engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        once = _claim_cost(store, limit=20)
        _create(client, range(BACKLOG, 3 * BACKLOG))
        thrice = _claim_cost(store, limit=20)

    if store.is_sqlite or statistics != "none":
        assert thrice <= 1.5 * once, (once, thrice)  # reading every due row: about 3 x
    else:  # PostgreSQL's first minute: each pending row read once, not once per other row
        assert thrice <= 4 * once, (once, thrice)
