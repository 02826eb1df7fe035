"""The bridge's tables: accepted events, the outbox of intake bodies, delivery attempts, and shared sender state.

The schema itself is owned by the Alembic migrations in ``bridge/migrations``; these classes mirror it so the
code can query it. Times are stored as naive UTC and handed out timezone-aware, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from adapters.base import SourceRecord
from bridge.storage.prepared import Executor, dialect_of, prepared_insert
from bridge.storage.store import replace_unstorable, storable

# SQLite only makes INTEGER PRIMARY KEY an autoincrementing rowid; PostgreSQL wants a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always UTC and always timezone-aware in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def _only_where(condition: str) -> dict[str, Any]:
    """The keywords of an index that keeps only the rows meeting ``condition`` (SQL), on both databases."""
    where = text(condition)
    return {"postgresql_where": where, "sqlite_where": where}


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


class Event(Base):
    """One accepted event as its source sent it, with the normalised fields ListEvents shows."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(40))
    username: Mapped[str] = mapped_column(String(200))
    app_name: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(40))
    branch: Mapped[str | None] = mapped_column(String(400))
    env_name: Mapped[str | None] = mapped_column(String(200))
    commit_id: Mapped[str | None] = mapped_column(String(200))
    release_version: Mapped[str | None] = mapped_column(String(200))  # migration 0006
    run_key: Mapped[str | None] = mapped_column(String(400))
    delivery_id: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]
    raw_body: Mapped[str] = mapped_column(Text)
    event_time: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        Index("ix_events_app", "username", "app_name", "id"),
        Index("ix_events_app_type", "username", "app_name", "event_type", "id"),
        # Migration 0008: id last, so the newest push of a commit is one backward step whatever the statistics say.
        Index("ix_events_app_commit", "username", "app_name", "commit_id", "event_type", "id"),
        # Migration 0007: these two and ix_outbox_delivered hold only the rows whose column has a value, the only
        # rows a lookup by that value can read; Distelli events have neither a run key nor a delivery id.
        Index("ix_events_run", "source", "run_key", **_only_where("run_key IS NOT NULL")),
        Index("uq_events_delivery", "source", "delivery_id", unique=True, **_only_where("delivery_id IS NOT NULL")),
        Index("ix_events_updated", "updated_at", "id"),  # migration 0004: retention
        # Migration 0003, for the console: counts and charts by time, and search by commit without the app.
        Index("ix_events_time", "event_time"),
        Index("ix_events_commit", "commit_id", "id"),
        # Migration 0006: a deploy's build of its release, without reading the app's other builds.
        Index(
            "ix_events_release",
            "username",
            "app_name",
            "release_version",
            "id",
            **_only_where("release_version IS NOT NULL"),
        ),
    )


_EVENTS = Event.metadata.tables[Event.__tablename__]
_EVENT_COLUMNS = tuple(column.name for column in _EVENTS.columns if column.name != "id")


def event_column_length(name: str) -> int:
    """How many characters a string column of the events table holds, for checks that must refuse longer values."""
    length: int = _EVENTS.c[name].type.length  # type: ignore[attr-defined]
    return length


# JSON escapes that spell a NUL or a surrogate, and a raw NUL: a body without any holds nothing unstorable.
_UNSTORABLE_IN_BODY = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00")
_RECORD_COLUMNS = ("event_type", "run_key", "app_name", "delivery_id", "status", "branch", "commit_id")


def storable_record(record: SourceRecord, body: bytes) -> SourceRecord:
    """``record`` with NUL and lone surrogates replaced in its columns and fields, before it is mapped or stored.

    They are replaced before the adapter maps the record, not only when binding, because a mapping hashes and
    encodes the same strings (a uuid5 of the app name cannot encode a lone surrogate either). Only a body whose
    text can spell one is walked.
    """
    if not _UNSTORABLE_IN_BODY.search(body):
        return record
    columns: dict[str, Any] = {
        name: storable(value) for name in _RECORD_COLUMNS if isinstance(value := getattr(record, name), str)
    }
    return dataclasses.replace(record, fields=replace_unstorable(record.fields), **columns)


class EventInsert:
    """The prepared INSERT (:mod:`bridge.storage.prepared`) of one new, unattached event, its values converted
    when this is made: a create makes it before its write, so the serialized section only runs it (converting the
    JSON columns took longer than SQLite's insert, and on SQLite every writer waits for that section).

    On the accept paths the ORM unit of work, and then Core's execution, cost more than the insert itself; nothing
    reads the row back in the same transaction.
    """

    def __init__(self, dialect: Dialect, event: Event) -> None:
        self.event = event
        self._statement = prepared_insert(_EVENTS, dialect, _EVENT_COLUMNS, ("id",))
        # Read where the ORM keeps an instance's loaded values: an unset column is None either way, and each
        # attribute read through the instrumented descriptor cost more than converting its value.
        loaded = vars(event)
        self._parameters = self._statement.convert({column: loaded.get(column) for column in _EVENT_COLUMNS})

    def run(self, on: Executor) -> int:
        """Insert the event in ``on``'s transaction and set its id; run again (its group's transaction was rolled
        back and run again), it inserts it again."""
        ((self.event.id,),) = self._statement.execute_converted(on, self._parameters)
        return self.event.id


def insert_event(on: Executor, event: Event) -> int:
    """Write a new, unattached event (see :class:`EventInsert`) and set its id."""
    return EventInsert(dialect_of(on), event).run(on)


class OutboxItem(Base):
    """One body waiting for, or done with, delivery to the intake. Written in the event's own transaction."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("events.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    unique_id: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20))
    final: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[dict[str, Any]]
    end_time: Mapped[dt.datetime | None]
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at", "id"),
        Index("ix_outbox_unique", "unique_id", "id"),
        # Pending rows only (migration 0002): the sender's claim stays fast however long the history grows. Its
        # check for an older pending row of the same run reads ix_outbox_unique (migration 0005 dropped the
        # pending-only copy, whose pages every create and every delivery wrote).
        Index("ix_outbox_pending", "id", **_only_where("state = 'pending'")),
        Index("ix_outbox_final_created", "final", "created_at"),  # migration 0004: stale runs
        # Migration 0003: the console's delivered-per-minute chart and counts read a time range, not the table,
        # and its dead-letter list pages through the dead rows alone.
        Index("ix_outbox_delivered", "delivered_at", **_only_where("delivered_at IS NOT NULL")),
        Index("ix_outbox_dead", "id", **_only_where("state = 'dead'")),
    )


class DeliveryAttempt(Base):
    """One request that carried an outbox row to the intake, and what came back (migration 0003).

    The audit trail of an event's delivery: when, to which endpoint, the status (0: no connection) and the first
    characters of the answer. ``bridge/delivery/attempts.py`` writes and bounds it; the row goes with its outbox row.
    """

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(BigId, ForeignKey("outbox.id", ondelete="CASCADE"))
    attempted_at: Mapped[dt.datetime]
    endpoint: Mapped[str] = mapped_column(String(300))
    status: Mapped[int] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_delivery_attempts_outbox", "outbox_id", "id"),)


class SenderState(Base):
    """Named values every process must agree on, such as "delivery paused: the API key was refused"."""

    __tablename__ = "sender_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime]
