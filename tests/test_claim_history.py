"""A claim costs the same however many finished runs the store holds: months of history must not slow delivery.

Before it sends a running row, the claim asks for the newest final row of the row's run (a running row whose final
is already pending or delivered is superseded, never sent). SQLite, which nothing analyzes, answered that through
the ``(final, created_at)`` index: every final row of the history for each claim, inside the writer lock that
every accepted request waits for. The question now reads only the claimed runs' rows (bridge/storage/outbox.py,
``_newest_final_ids``).

Every SELECT one claim sends is captured from the driver and explained (PostgreSQL: rows fetched) or stepped
(SQLite: VM steps) afterwards, in a transaction rolled back: counts, not times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.storage import outbox
from bridge.storage.store import Store
from tests.plan_cost import read_cost, statements_sent
from tests.test_claim_backlog import deliver_and_analyze, statistics_held
from tests.test_stale_history import _build

HISTORY = 300  # finished builds, delivered, before each claim
BACKLOG = 40  # builds that sent Running only, waiting for delivery


def _claim_cost(store: Store) -> float:
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    with store.engine.connect() as connection:
        with statements_sent(connection, selects_only=True) as sent, Session(bind=connection) as session:
            claimed = outbox.claim(
                session, "test", now, now + dt.timedelta(minutes=1), 1_000, [outbox.CI_PIPELINE], not store.is_sqlite
            )
        assert len(claimed.to_send) == 2 * BACKLOG, "each waiting build's pipeline and job should be claimed"
        connection.rollback()
        cost = sum(read_cost(connection, statement, parameters) for statement, parameters in sent)
        connection.rollback()
        return cost


def _twice_the_history(config: Config, analyze: bool) -> tuple[float, float]:
    """What a claim of a fresh backlog reads behind a finished history, and behind twice that history."""
    with statistics_held(config) as (store, client):
        for number in range(HISTORY):
            _build(client, number, finished=True)
        deliver_and_analyze(store, analyze=analyze)
        for number in range(10_000, 10_000 + BACKLOG):
            _build(client, number, finished=False)
        once = _claim_cost(store)
        for number in range(HISTORY, 2 * HISTORY):
            _build(client, number, finished=True)
        deliver_and_analyze(store, analyze=analyze)  # the backlog too: claim a fresh one
        for number in range(20_000, 20_000 + BACKLOG):
            _build(client, number, finished=False)
        return once, _claim_cost(store)


def test_on_sqlite_without_statistics_twice_the_finished_history_does_not_make_a_claim_cost_more(
    make_config: Callable[..., Config],
) -> None:
    """Every SQLite store: nothing analyzes it."""
    once, twice = _twice_the_history(make_config(), analyze=False)
    assert twice <= 1.5 * once, (once, twice)  # reading the history's final rows for each claim: about 2 x


def test_with_statistics_twice_the_finished_history_does_not_make_a_claim_cost_more(
    make_config: Callable[..., Config], database_url: str
) -> None:
    """PostgreSQL as autovacuum keeps it (without any statistics, a new table's first minute, it reads the table
    for the lookup's list of runs), and SQLite had it been analyzed."""
    once, twice = _twice_the_history(make_config(DATABASE_URL=database_url), analyze=True)
    assert twice <= 1.5 * once, (once, twice)
