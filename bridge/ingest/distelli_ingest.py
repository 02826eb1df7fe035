"""The Distelli write path: CreateBuildEvent and the other creates, and UpdateBuildEvent.

The routes hand in already-validated values; this module owns the bookkeeping around them (history lookups for
the git facts an event lacks, immutability, the kept request bodies) and leaves what the values mean to
``adapters.distelli``. Each write stores the event and enqueues its translation through
:func:`bridge.ingest.ingest.ingest`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, bindparam, literal_column, or_, select
from sqlalchemy.orm import Session, configure_mappers

from adapters import distelli
from adapters.base import MappingContext, Outbound
from bridge.config import Config
from bridge.ingest.ingest import FinishedEvent, InvalidRecord, Translate, UnknownEvent, ingest
from bridge.ingest.premapped import Premapped
from bridge.listing.markers import parse_id
from bridge.storage.models import Event, EventInsert
from bridge.storage.prepared import Executor, dialect_of, prepared
from bridge.storage.store import Store

# Mapped before the first new event, which bypasses the constructor that would otherwise configure the mappers.
configure_mappers()
_EVENT_CLASS = Event.__mapper__.class_manager
SECRET_KEYS = frozenset({"apitoken", "api_token", "token", "password", "secret", "dd_api_key", "dd-api-key"})
# What one build keeps of its request bodies (see kept_bodies): a bound on the row, whatever a client sends.
MAX_KEPT_BODIES = 50
MAX_KEPT_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class DistelliRequest:
    """One validated Distelli request: whose app, the schema's values, the body as sent, and when it arrived."""

    username: str
    app_name: str
    values: Mapping[str, Any]
    body: Mapping[str, Any]
    received_at: dt.datetime


def scrub(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as stored: keys that carry credentials are dropped, at any depth, so no stored row holds a secret."""
    return {key: _scrub_value(value) for key, value in body.items() if key.lower() not in SECRET_KEYS}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_value(item) for item in value]
    return value


def new_event(request: DistelliRequest, event_type: str) -> Event:
    """The event a create stores, built before the write: nothing in it depends on what is stored, so the
    lifecycle step, the scrubbed body's JSON and the index columns cost no time in the serialized section."""
    state: dict[str, Any] = {}
    if event_type == distelli.BUILD:
        stored, state = distelli.advance_build(None, None, request.values, request.received_at)
    else:
        stored = distelli.to_stored(request.values)
    return _transient_event(
        source=distelli.SOURCE,
        username=request.username,
        app_name=request.app_name,
        event_type=event_type,
        fields=stored,
        state=state,
        raw_body=json.dumps([scrub(request.body)]),
        event_time=request.received_at,
        updated_at=request.received_at,
        **_index_values(stored),
    )


def _transient_event(**values: Any) -> Event:
    """A new ``Event`` holding ``values``, made without the ORM's instrumented constructor.

    A new event never joins a session: :class:`bridge.storage.models.EventInsert` writes it with one prepared
    INSERT that reads its attributes, so the attribute events the constructor fires for each value (most of the
    cost of building it) buy nothing. The values go where the ORM keeps an instance's loaded attributes.
    """
    event: Event = _EVENT_CLASS.new_instance()
    vars(event).update(values)
    return event


def store_new_event(store: Store, config: Config, event: Event) -> Event:
    """Store a new event of :func:`new_event` and its translation; the returned event (attached to no session) has
    its id, the insert's.

    On SQLite, where writes are serialized, the related events are read before the write, outside the writer lock:
    a push stored while this request waited for the lock arrived at the same moment as it, and either order would
    have been right. On PostgreSQL the lookups stay in the write's transaction, which saves a round trip.
    """
    if not store.is_sqlite:
        insert = EventInsert(store.engine.dialect, event)  # its values converted here, before the write
        return store.write_statements(lambda on: _create(on, config, insert, related_events(on, event)))
    related = related_events(store.lookups(), event)
    # Mapped and converted here too, so the serialized write only runs the two INSERTs (ingest/premapped.py).
    premapped = Premapped(store.engine.dialect, config, event, _created(related))
    store.write_statements(premapped.write)
    return event


def _create(on: Executor, config: Config, insert: EventInsert, related: list[dict[str, Any]]) -> Event:
    event = insert.event
    ingest(on, config, event, _created(related), event.event_time, insert)
    return event


def update_build(session: Session, config: Config, request: DistelliRequest, event_id: str) -> Event:
    """Apply UpdateBuildEvent; a build in a terminal state is immutable (:class:`FinishedEvent`)."""
    event = find_event(session, request.username, request.app_name, event_id, lock=True)
    if event is None or event.event_type != distelli.BUILD:
        raise UnknownEvent(f"No build event {event_id} in app {request.app_name}.")
    if distelli.is_terminal(event.status):
        raise FinishedEvent(f"Build event {event_id} is {event.status}: a finished build can no longer be updated.")
    merged, state = distelli.advance_build(event.fields, event.state, request.values, request.received_at)
    problem = distelli.order_problem(event.fields, request.values, merged)
    if problem is not None:
        raise InvalidRecord(*problem)
    prior_status, prior_state = event.status, dict(event.state)
    event.fields, event.state = merged, state
    event.raw_body = kept_bodies(event.raw_body, scrub(request.body))
    event.updated_at = request.received_at
    _index_columns(event)
    related = functools.partial(related_events, session)
    ingest(session, config, event, _translator(related, prior_status, prior_state), request.received_at)
    return event


def kept_bodies(stored: str, body: Mapping[str, Any]) -> str:
    """The stored list of a build's request bodies with ``body`` added, bounded.

    The create's body (the build's first facts) and the newest body are always kept; update bodies in between are
    dropped oldest first while the list holds more than :data:`MAX_KEPT_BODIES` bodies or :data:`MAX_KEPT_BYTES`
    bytes, so a build updated a hundred times with a megabyte each stays a few megabytes, not a hundred.
    """
    texts = [json.dumps(kept) for kept in json.loads(stored)] + [json.dumps(body)]
    size = sum(len(text) + 2 for text in texts)
    while len(texts) > 2 and (len(texts) > MAX_KEPT_BODIES or size > MAX_KEPT_BYTES):
        size -= len(texts.pop(1)) + 2
    return f"[{', '.join(texts)}]"


def find_event(session: Session, username: str, app_name: str, event_id: str, lock: bool = False) -> Event | None:
    number = parse_id(event_id)
    if number is None:
        return None
    query = select(Event).where(
        Event.id == number,
        Event.username == username,
        Event.app_name == app_name,
        Event.source == distelli.SOURCE,
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _index_columns(event: Event) -> None:
    for name, value in _index_values(event.fields).items():
        setattr(event, name, value)


def _index_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The event's index columns (status, branch, env, commit) by column name, from its stored fields (a copy of
    the dataclass's attributes: ``dataclasses.asdict`` deep-copies each value, five calls for four strings)."""
    return dict(vars(distelli.index_columns(fields)))


def _translator(
    related_of: Callable[[Event], list[dict[str, Any]]], prior_status: str | None, prior_state: Mapping[str, Any]
) -> Translate:
    """How :func:`bridge.ingest.ingest.ingest` maps this request's event: as a record with what it was before."""

    def translate(event: Event, context: MappingContext) -> list[Outbound]:
        related = related_of(event)
        identity = (event.id, event.username, event.app_name, event.event_type)
        record = distelli.DistelliRecord(*identity, event.fields, event.state, prior_status, prior_state, related)
        return distelli.translate(record, context)

    return translate


def _created(related: list[dict[str, Any]]) -> Translate:
    """How a new event is mapped: with the related events already read, and nothing before it."""
    return _translator(lambda _event: related, None, {})


def related_events(on: Executor, event: Event) -> list[dict[str, Any]]:
    """Where the git facts an event lacks live, nearest first: its parent push or pull request; for a deploy, the
    build of its release and that build's parent; then the newest push of the same commit in the app."""
    related = [parent for parent in (_parent(on, event, event.fields),) if parent is not None]
    release = event.fields.get("release_version")
    if event.event_type == distelli.DEPLOY and release:
        build = _newest(on, _BUILD_OF_RELEASE, event, release=str(release))
        if build is not None:
            related += [found for found in (build, _parent(on, event, build.fields)) if found is not None]
    commit = event.commit_id or next((other.commit_id for other in related if other.commit_id), None)
    if commit:
        push = _newest(on, _PUSH_OF_COMMIT, event, commit=commit)
        if push is not None and push.id not in {other.id for other in related}:
            related.append(push)
    return [other.fields for other in related]


class _RelatedRow(NamedTuple):
    """The columns of another event that :func:`related_events` reads: a plain row, cheaper than an ``Event``."""

    id: int
    event_type: str
    commit_id: str | None
    fields: dict[str, Any]


def _constant(value: str) -> ColumnElement[Any]:
    """``value`` written into the statement's text, not bound. On PostgreSQL a create's statements run on plans made
    once for any values (:meth:`bridge.storage.store.Store.driver_transaction`); PostgreSQL costs such a plan with
    what it knows of the text's constants, so "event type PUSH" is seen to be rare in a table of builds and the
    lookup reads the commit's index entries, where a bound value would be costed as a typical one and the plan walk
    the whole table by id (``tests/test_related_lookups.py``)."""
    assert "'" not in value
    return literal_column(f"'{value}'")


# The newest event of one user and app meeting each statement's conditions.
_NEWEST = (
    select(Event.id, Event.event_type, Event.commit_id, Event.fields)
    .where(
        Event.username == bindparam("username"),
        Event.app_name == bindparam("app_name"),
        Event.source == _constant(distelli.SOURCE),
    )
    .order_by(Event.id.desc())
    .limit(literal_column("1"))
)
# OR rather than IN: a prepared statement (bridge/storage/prepared.py) is compiled once, without expanding an IN.
_PARENT = _NEWEST.where(
    Event.id == bindparam("id"),
    or_(Event.event_type == _constant(distelli.PUSH), Event.event_type == _constant(distelli.PULL_REQUEST)),
)
_PUSH_OF_COMMIT = _NEWEST.where(Event.event_type == _constant(distelli.PUSH), Event.commit_id == bindparam("commit"))
_BUILD_OF_RELEASE = _NEWEST.where(
    Event.event_type == _constant(distelli.BUILD), Event.release_version == bindparam("release")
)


def _parent(on: Executor, event: Event, fields: Mapping[str, Any]) -> _RelatedRow | None:
    """The push or pull request ``fields`` name as their parent, if it exists in the event's app."""
    number = parse_id(str(fields.get("parent_event_id") or ""))
    return None if number is None else _newest(on, _PARENT, event, id=number)


def _newest(on: Executor, statement: Select[Any], event: Event, **values: object) -> _RelatedRow | None:
    parameters = {"username": event.username, "app_name": event.app_name, **values}
    rows = prepared(statement, dialect_of(on)).execute(on, parameters)
    return _RelatedRow(*rows[0]) if rows else None
