"""The Distelli-compatible Events API: CreateBuildEvent, CreatePushEvent, CreatePullRequestEvent, PutDeployEvent,
UpdateBuildEvent and ListEvents, under the paths legacy CI tools already call."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import structlog
from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema
from sqlalchemy.orm import Session

from adapters import distelli
from bridge.config import Config
from bridge.ingest import distelli_ingest
from bridge.listing import list_query
from bridge.listing.delivery_view import delivery_views
from bridge.listing.event_view import event_view
from bridge.operations import logs, metrics
from bridge.storage.models import event_column_length
from bridge.storage.store import Store
from bridge.web.auth import check_token
from bridge.web.errors import InvalidInput, NotFound
from bridge.web.requestbody import json_object, load
from bridge.web.routes.ingest_errors import answer_ingest_errors

log = structlog.get_logger(__name__)
blueprint = Blueprint("events", __name__)
answer_ingest_errors(blueprint)

CREATE_ROUTES = {
    "buildEvent": distelli.BUILD,
    "pushEvent": distelli.PUSH,
    "pullRequestEvent": distelli.PULL_REQUEST,
    "deployEvent": distelli.DEPLOY,
}
SCHEMAS = {event_type: schema() for event_type, schema in distelli.SCHEMAS.items()}
UPDATE_SCHEMA = distelli.BuildEventSchema()
# What the events table holds; control characters and undecodable bytes (which arrive as U+FFFD) would make two
# names collide or be refused by PostgreSQL.
MAX_APP_NAME = event_column_length("app_name")
_BAD_NAME_CHARACTERS = re.compile("[\x00-\x1f\x7f\ufffd]")


def _config() -> Config:
    config: Config = current_app.extensions["bridge.config"]
    return config


def _store() -> Store:
    store: Store = current_app.extensions["bridge.storage.store"]
    return store


@blueprint.before_request
def _authenticate() -> None:
    args = request.view_args or {}
    username, app_name = args.get("username"), args.get("app_name")
    logs.bind_context(user=username, app=app_name)
    check_token(_config().tokens, str(username), request.args.get("apiToken"))
    _check_app_name(str(app_name))


def _check_app_name(app_name: str) -> None:
    if len(app_name) > MAX_APP_NAME or _BAD_NAME_CHARACTERS.search(app_name):
        raise InvalidInput(
            "The app name in the path is not one the bridge can store.",
            fields={"app_name": [f"At most {MAX_APP_NAME} characters, no control characters, valid UTF-8."]},
            code="invalid_path",
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read(username: str, app_name: str, schema: Schema) -> distelli_ingest.DistelliRequest:
    """This request's body, validated by ``schema``, stamped with its receipt time."""
    body = json_object()
    return distelli_ingest.DistelliRequest(username, app_name, load(schema, body), body, _now())


def _create(username: str, app_name: str, event_type: str) -> tuple[Response, int]:
    sent = _read(username, app_name, SCHEMAS[event_type])
    config = _config()
    event = distelli_ingest.store_new_event(_store(), config, distelli_ingest.new_event(sent, event_type))
    log.info("event.accepted", event_id=event.id, event_type=event_type, status=event.status)
    metrics.count_accepted(distelli.SOURCE, event_type)
    return jsonify({"event_id": str(event.id)}), 200


for _path, _event_type in CREATE_ROUTES.items():

    def _view(username: str, app_name: str, _event_type: str = _event_type) -> tuple[Response, int]:
        return _create(username, app_name, _event_type)

    blueprint.add_url_rule(
        f"/<username>/apps/<app_name>/events/{_path}",
        endpoint=f"create_{_path}",
        view_func=_view,
        methods=["PUT"],
    )


@blueprint.put("/<username>/apps/<app_name>/events/<kind>")
def create_unknown_kind(username: str, app_name: str, kind: str) -> tuple[Response, int]:
    """A PUT to an event kind that does not exist: say so, rather than the 405 the update route would give."""
    raise NotFound(f"No event kind {kind!r}; PUT one of: {', '.join(CREATE_ROUTES)}.", code="unknown_event_kind")


@blueprint.post("/<username>/apps/<app_name>/events/<event_id>")
def update_build_event(username: str, app_name: str, event_id: str) -> tuple[Response, int]:
    sent = _read(username, app_name, UPDATE_SCHEMA)
    config = _config()

    def update(session: Session) -> dict[str, Any]:
        # Plain values only leave the transaction: with group commit the whole group can be rolled back and run
        # again after another write failed, which expires this build's row object before the route reads it.
        event = distelli_ingest.update_build(session, config, sent, event_id)
        return event_view(event, delivery_views(session, [event.id]).get(event.id))

    view = _store().write(update)
    log.info("event.updated", event_id=view["event_id"], status=view["build_status"])
    return jsonify({"event": view}), 200


@blueprint.get("/<username>/apps/<app_name>/events")
def list_events(username: str, app_name: str) -> tuple[Response, int]:
    query = list_query.parse_list_query(request.args)
    with _store().read() as session:
        page, marker = list_query.list_events(session, username, app_name, query)
        deliveries = delivery_views(session, [event.id for event in page])
        body: dict[str, Any] = {
            "app_name": app_name,
            "events": [event_view(event, deliveries.get(event.id)) for event in page],
        }
    if marker:
        body["marker"] = marker
    return jsonify(body), 200
