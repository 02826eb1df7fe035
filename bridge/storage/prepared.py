"""Statements the accept paths run on the DBAPI connection directly: compiled once, converted by the columns' own types.

Through SQLAlchemy Core, one INSERT of an event cost about 0.6 ms of CPU on the accept path (cache-key lookup,
parameter processing, the execution context, the result wrapper): more than SQLite took to run it, and all of it
inside the serialized write. A :class:`Prepared` statement is compiled by SQLAlchemy once per dialect; each
execution converts its values with the same bind processors Core would use (so a row written here reads back like
any other), replaces what neither driver can store (:func:`bridge.storage.store.storable_row`), and hands the text and
values to the driver's cursor, which caches its own prepared statement. The statements run in the caller's
transaction: the session's connection is the same DBAPI connection.

Driver errors are raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` subclasses, as Core would raise them,
so a unique conflict or a full disk is answered the same whichever path met it; the values are never quoted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from bridge.storage.store import DriverConnection, driver_error, storable_row

Processor = Callable[[Any], Any]
# What a prepared statement runs on: a session's transaction, or a pooled DBAPI connection.
Executor = Session | DriverConnection
# The key in a session's ``info`` of the (root transaction, DBAPI connection) its statements last ran on.
_DRIVER_CONNECTION = "bridge_driver_connection"


class Prepared:
    """One statement compiled for one dialect, with the bind processor of each parameter and the result processor
    of each column it returns. ``column_keys`` (for an INSERT) names the columns given a parameter each."""

    def __init__(self, statement: Executable, dialect: Dialect, column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("an IN of bound values is expanded per execution; write it as OR of equalities")
        self.dialect = dialect
        self.sql: str = compiled.string
        self._names: list[str] | None = list(compiled.positiontup or ()) if compiled.positional else None
        binds = {name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()}
        self._binds = {name: process for name, process in binds.items() if process is not None}
        # Values the statement carries itself (a literal source, LIMIT 1, a JSON path), converted with the rest.
        literal = {name for name, bind in compiled.binds.items() if not bind.required}
        self._defaults = {
            name: value for name, value in compiled.params.items() if name in literal and value is not None
        }
        columns = statement.exported_columns  # type: ignore[attr-defined]
        self._results = [_result_processor(column.type, dialect) for column in columns]

    def execute(self, on: Executor, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with one set of values in the session's (or connection's) transaction; the rows, converted."""
        return self.execute_converted(on, self.convert(values))

    def execute_converted(self, on: Executor, parameters: Any) -> list[tuple[Any, ...]]:
        """:meth:`execute` with values :meth:`convert` gave, converted before the caller's write began."""
        cursor = _cursor(on)
        try:
            cursor.execute(self.sql, parameters)
            rows = cursor.fetchall() if cursor.description else []
        except self.dialect.loaded_dbapi.Error as exc:
            raise driver_error(self.sql, exc, self.dialect.loaded_dbapi.Error) from None
        finally:
            cursor.close()
        return [self._converted(row) for row in rows]

    def execute_many_converted(self, on: Executor, rows: Sequence[Any]) -> None:
        """Run once per row of parameters :meth:`convert` gave (no result rows), in one driver call."""
        cursor = _cursor(on)
        try:
            cursor.executemany(self.sql, rows)
        except self.dialect.loaded_dbapi.Error as exc:
            raise driver_error(self.sql, exc, self.dialect.loaded_dbapi.Error) from None
        finally:
            cursor.close()

    def key_of(self, name: str) -> int | str:
        """Where the value of parameter ``name`` is in what :meth:`convert` returns: its position, or its name."""
        return name if self._names is None else self._names.index(name)

    def convert(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for ``values``: each converted by its column's bind processor."""
        converted = {**self._defaults, **values}
        for name, process in self._binds.items():
            value = converted.get(name)
            if value is not None:
                converted[name] = process(value)
        if self._names is None:
            return storable_row(converted)
        return storable_row(tuple([converted[name] for name in self._names]))

    def _converted(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(self._results, row, strict=True)
        )


@functools.lru_cache(maxsize=256)
def prepared(statement: Executable, dialect: Dialect) -> Prepared:
    """``statement`` compiled for the dialect of one engine (its JSON serializer is part of the conversion)."""
    return Prepared(statement, dialect)


@functools.lru_cache(maxsize=256)
def prepared_insert(
    table: Table, dialect: Dialect, columns: tuple[str, ...], returning: tuple[str, ...] = ()
) -> Prepared:
    """``INSERT INTO table (columns) VALUES (...)``, with ``RETURNING`` those columns; every row gives each column."""
    statement = insert(table)
    if returning:
        statement = statement.returning(*(table.c[name] for name in returning))
    return Prepared(statement, dialect, column_keys=columns)


def dialect_of(on: Executor) -> Dialect:
    """The dialect a statement run ``on`` this session or connection is compiled for: a session's bind's, which asks
    it for no connection (``Session.connection()`` walks the transaction's state machine each time)."""
    if isinstance(on, DriverConnection):
        return on.dialect
    return on.bind.dialect if on.bind is not None else on.connection().dialect


def _cursor(on: Executor) -> Any:
    return _driver_connection(on).cursor()


def _driver_connection(on: Executor) -> Any:
    """The DBAPI connection under ``on``. A session's is remembered with the root transaction it belongs to, so
    the statements of one transaction ask the session for its connection once, and a later transaction of the same
    session (which may hold another connection) asks again."""
    if isinstance(on, DriverConnection):
        return on.driver
    transaction = on.get_transaction()
    remembered = on.info.get(_DRIVER_CONNECTION)
    if remembered is not None and transaction is not None and remembered[0] is transaction:
        return remembered[1]
    driver = on.connection().connection.driver_connection
    on.info[_DRIVER_CONNECTION] = (on.get_transaction(), driver)
    return driver


def _bind_processor(type_: Any, dialect: Dialect) -> Processor | None:
    processor: Processor | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _result_processor(type_: Any, dialect: Dialect) -> Processor | None:
    processor: Processor | None = type_.dialect_impl(dialect).result_processor(dialect, None)
    return processor
