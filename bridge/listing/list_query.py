"""ListEvents: its query string validated into a :class:`ListQuery`, and the page of events it selects.

The filter names and event-type spellings are the Distelli API's (matched without regard to case); what a
branch filter matches is the branch as :func:`adapters.distelli.normalise_branch` stores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from adapters import distelli
from bridge.listing.markers import decode_marker, encode_marker, parse_id
from bridge.storage.models import Event
from bridge.web.errors import InvalidInput

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
_FILTER_PARAMETERS = (("branch", "filter_branch"), ("env", "filter_env"), ("event_type", "filter_event_type"))
DEFAULT_PAGE, MAX_PAGE = 10, 100


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
        _parse_filter(args, filter_name, problems, values)
    if problems:
        raise InvalidInput("Invalid ListEvents query.", fields=problems, code="invalid_query")
    return ListQuery(**values)


def _parse_filter(
    args: Mapping[str, str], filter_name: str, problems: dict[str, list[str]], values: dict[str, Any]
) -> None:
    """The parameters ``filter_name`` requires, into ``values``; what is wrong with them, into ``problems``."""
    wanted = FILTER_NAMES.get(filter_name.lower())
    if wanted is None:
        problems["filter_name"] = ["Must be one of: Branch, EventType, BranchAndEventType, Env, EnvAndBranch."]
        return
    for part, parameter in _FILTER_PARAMETERS:
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
                problems[parameter] = ["Must be one of: build, push, pullrequest, deploy, release, dockerimage."]
            elif EVENT_TYPE_FILTERS[key] is None:
                values["type_matches_nothing"] = True
            else:
                values["event_type"] = EVENT_TYPE_FILTERS[key]
        elif part == "branch":
            values["branch"] = distelli.normalise_branch(given)[0] or given
        else:
            values["env"] = given


def list_events(session: Session, username: str, app_name: str, query: ListQuery) -> tuple[list[Event], str | None]:
    """One page of an app's events and the marker of the next page, or None on the last page."""
    if query.type_matches_nothing:
        return [], None
    statement: Select[Event] = select(Event).where(
        Event.username == username, Event.app_name == app_name, Event.source == distelli.SOURCE
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
