"""``/readyz`` costs the same behind a backlog of any size: platforms call it every few seconds, outages included.

Its backlog warning needs the age of the oldest pending row. ``min(created_at)`` over the pending rows read the whole
backlog on every call (45-58 ms behind 100,000 rows on SQLite, in proportion beyond), just when an intake outage
makes the backlog grow and a health check's timeout is closest. Rows are numbered as they are queued, so the lowest
pending id's row is the oldest, one step in the pending-only index (bridge/storage/outbox.py
``oldest_pending_queued_at``, which the metrics and the console read too).

Every SELECT one ``/readyz`` sends is captured from the driver and explained (PostgreSQL: rows fetched) or stepped
(SQLite: VM steps) afterwards: counts, not times.
"""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy import text

from bridge.config import Config
from bridge.storage.store import Store
from tests.plan_cost import read_cost, statements_sent
from tests.test_claim_backlog import BACKLOG, _create, statistics_held


def _readiness_cost(store: Store, client: FlaskClient) -> float:
    with statements_sent(store.engine, selects_only=True) as sent:
        response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "degraded", "the backlog's age should be reported"
    with store.engine.connect() as connection:
        cost = sum(read_cost(connection, statement, parameters) for statement, parameters in sent)
        connection.rollback()
    return cost


def _age_backlog(store: Store) -> None:
    """Every row queued two days ago: older than the backlog warning's hours."""
    two_days_back = "datetime(created_at, '-2 days')" if store.is_sqlite else "created_at - interval '2 days'"
    with store.engine.begin() as connection:
        connection.execute(text(f"UPDATE outbox SET created_at = {two_days_back}"))


def test_twice_the_backlog_does_not_make_readiness_read_more(
    make_config: Callable[..., Config], database_url: str
) -> None:
    with statistics_held(make_config(DATABASE_URL=database_url)) as (store, client):
        _create(client, range(BACKLOG))
        _age_backlog(store)
        once = _readiness_cost(store, client)
        _create(client, range(BACKLOG, 3 * BACKLOG))
        _age_backlog(store)
        twice = _readiness_cost(store, client)

    assert twice <= 1.25 * once, (once, twice)  # reading the backlog: about 3 x, with three times the rows
