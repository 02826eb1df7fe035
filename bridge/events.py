"""Storing Distelli events: create, update and list, each in one transaction with its outbox rows.

The routes hand in already-validated values; this module owns the bookkeeping (history lookups, immutability,
ids, pagination) and leaves what the values mean to ``adapters.distelli``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from adapters import distelli
from adapters.base import MappingContext, rfc3339
from bridge import outbox, stale
from bridge.config import Config
from bridge.errors import Conflict, InvalidInput, NotFound
from bridge.models import Event, insert_event

SOURCE = "distelli"
SECRET_KEYS = frozenset({"apitoken", "api_token", "token", "password", "secret", "dd_api_key", "dd-api-key"})

EVENT_TYPE_FILTERS = {
    "build": distelli.BUILD,
    "push": distelli.PUSH,
    "pullrequest": distelli.PULL_REQUEST,
    "deploy": distelli.DEPLOY,
    "release": None,
    "dockerimage": None,
}
FILTER_NAMES = {
    "branch": ("branch",),
    "eventtype": ("event_type",),
    "branchandeventtype": ("branch", "event_type"),
    "env": ("env",),
    "envandbranch": ("env", "branch"),
}
DEFAULT_PAGE, MAX_PAGE = 10, 100
# Ids are BIGINT; anything larger names no event (and would overflow SQLite's INTEGER in a query).
MAX_EVENT_ID = 2**63 - 1
_ASCII_NUMBER = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """An event id or marker position from text: ASCII digits only (``str.isdigit`` also accepts "²")."""
    if not _ASCII_NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_EVENT_ID else None


def mapping_context(config: Config, received_at: dt.datetime) -> MappingContext:
    return MappingContext(
        installation_id=config.installation_id,
        public_url=config.public_url,
        received_at=received_at,
        author_emails=config.author_emails,
        author_email_template=config.author_email_template,
        service_names=config.service_names,
    )


def scrub(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as stored: keys that carry credentials are dropped, at any depth, so no stored row holds a secret."""
    return {key: _scrub_value(value) for key, value in body.items() if key.lower() not in SECRET_KEYS}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, list):
        return [_scrub_value(item) for item in value]
    return value


def create_event(
    session: Session,
    config: Config,
    username: str,
    app_name: str,
    event_type: str,
    values: Mapping[str, Any],
    body: Mapping[str, Any],
    received_at: dt.datetime,
) -> Event:
    """Store a new event and its translation; the returned event (not attached to the session) has its id."""
    state: dict[str, Any] = {}
    if event_type == distelli.BUILD:
        stored, state = distelli.advance_build(None, None, values, received_at)
    else:
        stored = distelli.to_stored(values)
    event = Event(
        source=SOURCE,
        username=username,
        app_name=app_name,
        event_type=event_type,
        fields=stored,
        state=state,
        raw_body=json.dumps([scrub(body)]),
        event_time=received_at,
        updated_at=received_at,
    )
    _index_columns(event)
    insert_event(session, event)
    _translate(session, config, event, prior_status=None, received_at=received_at)
    return event


def update_build(
    session: Session,
    config: Config,
    username: str,
    app_name: str,
    event_id: str,
    values: Mapping[str, Any],
    body: Mapping[str, Any],
    received_at: dt.datetime,
) -> Event:
    """Apply UpdateBuildEvent; a build in a terminal state is immutable and answers 409."""
    event = find_event(session, username, app_name, event_id, lock=True)
    if event is None or event.event_type != distelli.BUILD:
        raise NotFound(f"No build event {event_id} in app {app_name}.")
    if distelli.is_terminal(event.status):
        raise Conflict(f"Build event {event_id} is {event.status}: a finished build can no longer be updated.")
    if values.get("build_start") and event.fields.get("build_end") and not values.get("build_end"):
        end = distelli.parse_time(event.fields["build_end"])
        if end is not None and values["build_start"] > end:
            raise InvalidInput(
                "build_start is after the stored build_end.",
                fields={"build_start": ["Must not be after build_end."]},
            )
    prior_status = event.status
    event.fields, event.state = distelli.advance_build(event.fields, event.state, values, received_at)
    start, end = (
        distelli.parse_time(event.fields.get("build_start")),
        distelli.parse_time(event.fields.get("build_end")),
    )
    if start and end and end < start:
        raise InvalidInput(
            "build_end is before build_start.", fields={"build_end": ["Must not be before build_start."]}
        )
    # Appended as text: the stored list is ``json.dumps`` output, so this equals a decode and re-encode of it.
    event.raw_body = f"{event.raw_body[:-1]}, {json.dumps(scrub(body))}]"
    event.updated_at = received_at
    _index_columns(event)
    _translate(session, config, event, prior_status=prior_status, received_at=received_at)
    return event


def find_event(session: Session, username: str, app_name: str, event_id: str, lock: bool = False) -> Event | None:
    number = parse_id(event_id)
    if number is None:
        return None
    query = select(Event).where(
        Event.id == number,
        Event.username == username,
        Event.app_name == app_name,
        Event.source == SOURCE,
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _index_columns(event: Event) -> None:
    fields = event.fields
    event.status = fields.get("build_status") or fields.get("deployment_status")
    event.branch = distelli.normalise_branch(fields.get("branch"))[0] or fields.get("branch")
    event.env_name = fields.get("env_name")
    event.commit_id = fields.get("commit_id")


def _translate(
    session: Session, config: Config, event: Event, prior_status: str | None, received_at: dt.datetime
) -> None:
    outbounds = distelli.translate(
        event.id,
        event.username,
        event.app_name,
        event.event_type,
        event.fields,
        event.state,
        prior_status,
        _related(session, event),
        mapping_context(config, received_at),
    )
    outbox.enqueue(session, event.id, outbounds, received_at)


def _related(session: Session, event: Event) -> list[dict[str, Any]]:
    """Where the git facts an event lacks live, nearest first: its parent push or pull request; for a deploy, the
    build of its release and that build's parent; then the newest push of the same commit in the app."""
    related = [parent for parent in (_parent(session, event, event.fields),) if parent is not None]
    release = event.fields.get("release_version")
    if event.event_type == distelli.DEPLOY and release:
        build = _newest(session, _BUILD_OF_RELEASE, event, release=str(release))
        if build is not None:
            related += [found for found in (build, _parent(session, event, build.fields)) if found is not None]
    commit = event.commit_id or next((other.commit_id for other in related if other.commit_id), None)
    if commit:
        push = _newest(session, _PUSH_OF_COMMIT, event, commit=commit)
        if push is not None and push.id not in {other.id for other in related}:
            related.append(push)
    return [other.fields for other in related]


class _Other(NamedTuple):
    """The columns of another event that ``_related`` reads: a plain row, cheaper than loading an ``Event``."""

    id: int
    event_type: str
    commit_id: str | None
    fields: dict[str, Any]


# The newest event of one user and app meeting each statement's conditions.
_NEWEST = (
    select(Event.id, Event.event_type, Event.commit_id, Event.fields)
    .where(Event.username == bindparam("username"), Event.app_name == bindparam("app_name"), Event.source == SOURCE)
    .order_by(Event.id.desc())
    .limit(1)
)
_PARENT = _NEWEST.where(Event.id == bindparam("id"), Event.event_type.in_((distelli.PUSH, distelli.PULL_REQUEST)))
_PUSH_OF_COMMIT = _NEWEST.where(Event.event_type == distelli.PUSH, Event.commit_id == bindparam("commit"))
_BUILD_OF_RELEASE = _NEWEST.where(
    Event.event_type == distelli.BUILD, Event.fields["release_version"].as_string() == bindparam("release")
)


def _parent(session: Session, event: Event, fields: Mapping[str, Any]) -> _Other | None:
    """The push or pull request ``fields`` name as their parent, if it exists in the event's app."""
    number = parse_id(str(fields.get("parent_event_id") or ""))
    return None if number is None else _newest(session, _PARENT, event, id=number)


def _newest(session: Session, statement: Select[Any], event: Event, **values: object) -> _Other | None:
    parameters = {"username": event.username, "app_name": event.app_name, **values}
    row = session.connection().execute(statement, parameters).first()
    return None if row is None else _Other(*row)


@dataclasses.dataclass(frozen=True)
class ListQuery:
    """ListEvents' query string, validated."""

    max_results: int = DEFAULT_PAGE
    descending: bool = True
    after_id: int | None = None
    event_type: str | None = None
    type_matches_nothing: bool = False
    branch: str | None = None
    env: str | None = None


def parse_list_query(args: Mapping[str, str]) -> ListQuery:
    """Validate ListEvents' filters, order, page size and marker; every problem is a 400 naming its parameter."""
    problems: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    raw_max = args.get("max_results")
    if raw_max is not None:
        size = parse_id(raw_max.strip())
        if size is None or not 1 <= size <= MAX_PAGE:
            problems["max_results"] = [f"Must be a whole number from 1 to {MAX_PAGE}."]
        else:
            values["max_results"] = size
    order = args.get("order")
    if order is not None:
        if order.lower() not in ("asc", "desc"):
            problems["order"] = ["Must be asc or desc."]
        else:
            values["descending"] = order.lower() == "desc"
    marker = args.get("marker")
    if marker:
        after = decode_marker(marker)
        if after is None:
            problems["marker"] = ["Not a marker this bridge handed out."]
        else:
            values["after_id"] = after
    filter_name = args.get("filter_name")
    if filter_name:
        wanted = FILTER_NAMES.get(filter_name.lower())
        if wanted is None:
            problems["filter_name"] = ["Must be one of: Branch, EventType, BranchAndEventType, Env, EnvAndBranch."]
        else:
            for part, parameter in (
                ("branch", "filter_branch"),
                ("env", "filter_env"),
                ("event_type", "filter_event_type"),
            ):
                if part not in wanted:
                    continue
                given = (args.get(parameter) or "").strip()
                if not given:
                    problems[parameter] = [f"Required by filter_name={filter_name}."]
                elif not distelli.is_storable(given):
                    problems[parameter] = ["Must not contain NUL characters or unpaired surrogates."]
                elif part == "event_type":
                    key = given.lower().replace("_", "").replace("-", "")
                    if key not in EVENT_TYPE_FILTERS:
                        problems[parameter] = [
                            "Must be one of: build, push, pullrequest, deploy, release, dockerimage."
                        ]
                    elif EVENT_TYPE_FILTERS[key] is None:
                        values["type_matches_nothing"] = True
                    else:
                        values["event_type"] = EVENT_TYPE_FILTERS[key]
                elif part == "branch":
                    values["branch"] = distelli.normalise_branch(given)[0] or given
                else:
                    values["env"] = given
    if problems:
        raise InvalidInput("Invalid ListEvents query.", fields=problems, code="invalid_query")
    return ListQuery(**values)


def list_events(session: Session, username: str, app_name: str, query: ListQuery) -> tuple[list[Event], str | None]:
    """One page of an app's events and the marker of the next page, or None on the last page."""
    if query.type_matches_nothing:
        return [], None
    statement: Select[Event] = select(Event).where(
        Event.username == username, Event.app_name == app_name, Event.source == SOURCE
    )
    if query.event_type:
        statement = statement.where(Event.event_type == query.event_type)
    if query.branch:
        statement = statement.where(Event.branch == query.branch)
    if query.env:
        statement = statement.where(Event.env_name == query.env)
    if query.after_id is not None:
        statement = statement.where(Event.id < query.after_id if query.descending else Event.id > query.after_id)
    order = Event.id.desc() if query.descending else Event.id.asc()
    rows = list(session.scalars(statement.order_by(order).limit(query.max_results + 1)))
    page = rows[: query.max_results]
    marker = encode_marker(page[-1].id) if len(rows) > query.max_results else None
    return page, marker


def encode_marker(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{event_id}".encode()).decode().rstrip("=")


def decode_marker(marker: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return parse_id(text[2:]) if text.startswith("e:") else None


def event_view(event: Event, delivery: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An event as ListEvents and UpdateBuildEvent show it: every field of its kind, null when unset."""
    view: dict[str, Any] = {
        "app_name": event.app_name,
        "event_id": event.id,
        "event_time": rfc3339(event.event_time),
        "event_type": event.event_type,
    }
    for name in distelli.FIELDS_BY_TYPE.get(event.event_type, ()):
        view[name] = event.fields.get(name)
    shown = delivery or {"state": "none", "reason": None, "delivered_at": None}
    delivered_at = shown.get("delivered_at")
    view["delivery"] = {
        "state": shown["state"],
        "reason": shown.get("reason"),
        "delivered_at": rfc3339(delivered_at) if isinstance(delivered_at, dt.datetime) else None,
    }
    if shown.get("remote_id"):
        view["delivery"]["remote_id"] = shown["remote_id"]
    closed = stale.listing(event.state, distelli.is_terminal(event.status))
    if closed:
        view["closed_by_bridge"] = closed
    return view
