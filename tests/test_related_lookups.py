"""A create's related-events lookups read the events they look for, not the table, however long the bridge runs.

Each create asks for the newest push of its commit (adapters/distelli.py takes the git facts a build lacks from it).
On PostgreSQL the driver prepares that statement on the server after its fifth run, and PostgreSQL may then plan it
once for any values. With the table's statistics saying the events share one commit (a build rerun, a busy
branch, every benchmark run), that generic plan walks the primary key backwards and filters every event: a create
then cost PostgreSQL's CPU in proportion to the table (1.85 ms at 3,000 events). The bridge's connections plan each
statement for its values (bridge/storage/store.py), which reads the commit's index entries only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import text

from bridge.config import Config
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.reliability.harness import running_body

_CREATE = f"/{USER}/apps/example/events/buildEvent?apiToken={TOKEN}"


def _create(client: FlaskClient, number: int) -> None:
    response = client.put(_CREATE, data=json.dumps(running_body(number)), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows a plan node and its children fetched, those their filters then dropped included."""
    own = int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
    return own + sum(_rows_read(child) for child in plan.get("Plans", ()))


def test_on_postgresql_the_push_of_commit_lookup_reads_no_other_events_after_hundreds_of_builds_of_one_commit(
    make_config: Callable[..., Config], postgres_url: str
) -> None:
    config = make_config(DATABASE_URL=postgres_url)
    store = Store(config.database_url)
    migrate.upgrade(store)
    try:
        client = create_app(config, store).test_client()
        for number in range(1, 301):  # every build of running_body has the same commit
            _create(client, number)
        with store.engine.connect() as connection:
            connection.execute(text("ANALYZE events"))  # what autovacuum does as the table grows
            connection.commit()
        for number in range(301, 321):  # the lookup's statement, prepared on the server by now, runs again
            _create(client, number)

        # The creates ran on this process's one pooled connection (the test client sends one request at a time),
        # which is the session holding the driver's prepared statements.
        with store.engine.connect() as connection:
            statements = connection.execute(
                text(
                    "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%events.commit_id = %' AND statement LIKE '%LIMIT%'"
                )
            ).all()
            assert statements, "the lookup was not prepared on the connection the creates used"
            for name, generic_plans, custom_plans in statements:
                assert generic_plans == 0, f"{name} was run on a generic plan {generic_plans} times"
                assert custom_plans > 0
            name = statements[0][0]
            values = "'jdoe', 'example', 'distelli', 'push', '1234567890123456789012345678901234567890', 1"
            explained = connection.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({values})")).scalar()
            plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
            assert _rows_read(plan) == 0, json.dumps(plan, indent=1)
    finally:
        store.dispose()
