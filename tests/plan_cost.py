"""What a statement reads, as counts rather than times: rows PostgreSQL's plan fetched, SQLite's VM steps.

Tests of lookups that must stay cheap however large a table grows compare these between table sizes or against a
bound; a timed assertion would fail on a slow machine and pass a bad plan on a fast one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, event


def rows_read(plan: dict[str, Any]) -> float:
    """Rows a plan node and its children fetched in all their loops, those their filters dropped included
    (EXPLAIN shows each count as a mean over the node's loops)."""
    counts = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter")
    own = sum(float(plan.get(key, 0)) for key in counts) * float(plan.get("Actual Loops", 1))
    return own + sum(rows_read(child) for child in plan.get("Plans", ()))


def postgres_rows_read(connection: Connection, statement: str, parameters: Any) -> float:
    """:func:`rows_read` of ``statement`` run once under EXPLAIN ANALYZE on ``connection``."""
    plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar()
    return rows_read((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def sqlite_steps(connection: Connection, statement: str, parameters: Any) -> int:
    """Virtual-machine steps SQLite takes to run ``statement`` to its last row (its progress handler, every step)."""
    driver = connection.connection.driver_connection
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    driver.set_progress_handler(count, 1)
    try:
        driver.execute(statement, parameters).fetchall()
    finally:
        driver.set_progress_handler(None, 1)
    return steps


@contextlib.contextmanager
def statements_sent(target: Engine | Connection, selects_only: bool = False) -> Iterator[list[tuple[str, Any]]]:
    """What ``target`` sent to the driver while the block ran: each statement's text and parameters (only the
    SELECTs with ``selects_only``, which a later :func:`read_cost` can run again without changing anything)."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not selects_only or statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(target, "before_cursor_execute", capture)
    try:
        yield sent
    finally:
        event.remove(target, "before_cursor_execute", capture)


def read_cost(connection: Connection, statement: str, parameters: Any) -> float:
    """:func:`sqlite_steps` or :func:`postgres_rows_read` of ``statement``, by the database ``connection`` is on."""
    if connection.dialect.name == "sqlite":
        return sqlite_steps(connection, statement, parameters)
    return postgres_rows_read(connection, statement, parameters)
