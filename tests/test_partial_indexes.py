"""The indexes of migration 0007 hold only rows whose column has a value, and the lookups still read through them.

A Distelli event has no delivery id and no run key, and an outbox row no ``delivered_at`` until it is delivered;
entries for those NULLs cost every create index writes that no lookup could read. The lookups that remain (a
webhook's delivery and run, the console's delivered-per-minute range) must still be answered from the index, not
from a scan of every event, however many Distelli events the table holds: the planner uses a partial index only
where it can prove the query's condition implies the index's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from bridge.ingest import hooks
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from bridge.web.console.queries import _per_minute
from tests.test_related_lookups import _migrate

PARTIAL = {
    "ix_events_run": "run_key IS NOT NULL",
    "uq_events_delivery": "delivery_id IS NOT NULL",
    "ix_outbox_delivered": "delivered_at IS NOT NULL",
}


def _index_definitions(store: Store) -> dict[str, str]:
    """Each index's definition as the database keeps it: CREATE INDEX text, WHERE clause included."""
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "postgresql":
            rows = connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
            )
        else:
            rows = connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            )
        return {name: definition for name, definition in rows}


def _conditions_missing(store: Store) -> list[str]:
    """The indexes of :data:`PARTIAL` whose definition lacks its condition (PostgreSQL adds parentheses)."""
    definitions = _index_definitions(store)
    return [
        definitions[name]
        for name, condition in PARTIAL.items()
        if condition not in re.sub(r"[()]", "", definitions[name])
    ]


def _fill(store: Store, distelli_events: int) -> None:
    """``distelli_events`` Distelli builds, each with a pending outbox row; one webhook event with its delivered row."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    day_ago = now - dt.timedelta(days=2)
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO events (source, username, app_name, event_type, fields, state, raw_body, event_time,"
                " updated_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
                " SELECT 'distelli', 'jdoe', 'example', 'BUILD', '{}', '{}', '[]', :at, :at FROM n"
            ),
            {"count": distelli_events, "at": day_ago},
        )
        connection.execute(
            text(
                "INSERT INTO events (source, username, app_name, event_type, run_key, delivery_id, fields, state,"
                " raw_body, event_time, updated_at)"
                " VALUES ('github', 'github', 'o/r', 'workflow_run', 'o/r#7', 'd-1', '{}', '{}', '[]', :at, :at)"
            ),
            {"at": now},
        )
        connection.execute(
            text(
                "INSERT INTO outbox (event_id, kind, unique_id, level, final, body, state, attempts, next_attempt_at,"
                " created_at, delivered_at) SELECT id, 'ci_pipeline', 'u-' || CAST(id AS VARCHAR), 'pipeline',"
                " source = 'github', '{}', CASE WHEN source = 'github' THEN 'delivered' ELSE 'pending' END, 0,"
                " event_time, event_time, CASE WHEN source = 'github' THEN event_time END FROM events"
            )
        )
        connection.execute(text("ANALYZE"))


@pytest.fixture
def statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters of every statement the store runs while the test holds this list."""
    seen: list[tuple[str, Any]] = []

    def record(_connection: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((sql, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    event.remove(store.engine, "before_cursor_execute", record)


def _plan(store: Store, sql: str, parameters: Any) -> str:
    """The database's plan of one statement with its parameters, as text naming the indexes it reads."""
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "postgresql":
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, parameters).scalar()
            return json.dumps(plan)
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters).all()
        return " | ".join(str(row[-1]) for row in rows)


def test_the_indexes_keep_only_rows_with_a_value(store: Store) -> None:
    assert _conditions_missing(store) == []


@pytest.mark.parametrize(
    ("lookup", "index"),
    [
        (lambda session: hooks.find_delivery(session, "github", "d-1"), "uq_events_delivery"),
        (lambda session: hooks.history(session, "github", "o/r#7"), "ix_events_run"),
        (
            lambda session: _per_minute(
                session, OutboxItem.delivered_at, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            ),
            "ix_outbox_delivered",
        ),
    ],
    ids=["delivery", "run", "delivered-per-minute"],
)
def test_a_lookup_by_value_reads_its_partial_index_among_thousands_of_distelli_events(
    store: Store, statements: list[tuple[str, Any]], lookup: Callable[[Any], Any], index: str
) -> None:
    _fill(store, 3000)
    statements.clear()
    with store.read() as session:
        found = lookup(session)

    assert found, "the lookup found nothing: the test's rows are not what it reads"
    (sql, parameters), *_ = [(sql, parameters) for sql, parameters in statements if sql.lstrip().startswith("SELECT")]
    assert index in _plan(store, sql, parameters)


def test_the_same_delivery_id_is_still_refused_by_the_database_and_events_without_one_are_not(store: Store) -> None:
    _fill(store, 3)
    row = (
        "INSERT INTO events (source, username, app_name, event_type, delivery_id, fields, state, raw_body, event_time,"
        " updated_at) VALUES ('github', 'github', 'o/r', 'workflow_run', :delivery, '{}', '{}', '[]', :at, :at)"
    )
    at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with store.engine.begin() as connection:
        connection.execute(text(row), {"delivery": None, "at": at})
        connection.execute(text(row), {"delivery": None, "at": at})

    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(text(row), {"delivery": "d-1", "at": at})


def test_a_store_migrated_from_0006_keeps_its_events_and_gets_the_partial_indexes(store: Store) -> None:
    _migrate(store, "downgrade", "0006")
    assert "WHERE" not in _index_definitions(store)["uq_events_delivery"].upper()
    _fill(store, 10)

    _migrate(store, "upgrade", "head")

    assert _conditions_missing(store) == []
    with store.read() as session:
        assert hooks.find_delivery(session, "github", "d-1") is not None
        assert len(hooks.history(session, "github", "o/r#7")) == 1
