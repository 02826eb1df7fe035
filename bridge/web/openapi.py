"""The OpenAPI 3 document of the bridge's HTTP API, built by apispec from the schemas the routes use.

Request bodies come from ``adapters.distelli``'s marshmallow schemas, the event fields a response shows from
``distelli.FIELDS_BY_TYPE``, the ListEvents filters from ``bridge.listing.list_query``, the delivery states from
``bridge.storage.outbox`` and the paths from the routes' own table, so the document changes when the code does
and cannot drift from it. Beside the Distelli API it describes the webhook route and the health checks.
"""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

from adapters import distelli
from bridge.listing import list_query
from bridge.storage import outbox
from bridge.web.routes.events import CREATE_ROUTES, MAX_APP_NAME

OPENAPI_VERSION = "3.0.3"
# ListEvents' filter names as the Distelli documentation spells them (CamelCase, "And" between the fields each
# needs), from the table the API parses them with; matched without regard to case.
FILTER_NAME_SPELLINGS = tuple(
    "And".join(name.title().replace("_", "") for name in needed) for needed in list_query.FILTER_NAMES.values()
)
EVENT_TYPE_SPELLINGS = tuple(list_query.EVENT_TYPE_FILTERS)
# What ListEvents shows as an event's delivery: "none" before any outbox row, a superseded row as delivered.
DELIVERY_STATES = ("none", *(state for state in outbox.STATES if state != outbox.SUPERSEDED))
SECURITY: list[dict[str, list[str]]] = [{"apiToken": []}]


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"description": "Machine-readable error code."})
    message = fields.String(required=True)
    # Named so to keep clear of Schema.fields; shown to clients as "fields".
    fields_ = fields.Dict(
        keys=fields.String(),
        data_key="fields",
        metadata={"description": "Each bad field or parameter with what is wrong with it."},
    )


class ErrorSchema(Schema):
    """Every 4xx and 5xx answer has this shape."""

    error = fields.Nested(ErrorBodySchema, required=True)


class CreatedSchema(Schema):
    event_id = fields.String(required=True, metadata={"description": "Id for UpdateBuildEvent and ListEvents."})


class HookAnswerSchema(Schema):
    """A stored webhook (202; 200 when its delivery id was seen before) or one the source adapter ignores."""

    event_id = fields.String(metadata={"description": "The stored event's id."})
    duplicate = fields.Boolean()
    enqueued = fields.Integer(metadata={"description": "How many Datadog events it queued."})
    ignored = fields.Boolean(metadata={"description": "True for a kind of webhook that maps to nothing."})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok",)))


class ReadinessSchema(Schema):
    """``/readyz``: ready, or unavailable with the reason (no apiToken, database down, migrations pending)."""

    status = fields.String(required=True, validate=validate.OneOf(("ready", "unavailable")))
    reason = fields.String()
    database = fields.String()
    migrations = fields.String()
    tokens = fields.String()
    delivery = fields.Dict(metadata={"description": "paused (with status, reason, since) while the key is refused"})


class LastAttemptSchema(Schema):
    at = fields.DateTime(required=True)
    status = fields.Integer(required=True, allow_none=True, metadata={"description": "Null: no connection."})
    answer = fields.String(required=True, metadata={"description": "The first characters of the intake's answer."})


class ClosedByBridgeSchema(Schema):
    closed_at = fields.String(required=True)
    reason = fields.String(required=True)
    final_status_arrived = fields.Boolean(required=True)


class DeliverySchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATES))
    reason = fields.String(required=True, allow_none=True)
    delivered_at = fields.DateTime(required=True, allow_none=True)
    attempts = fields.Integer(required=True, metadata={"description": "Failed attempts so far."})
    next_attempt_at = fields.DateTime(required=True, allow_none=True, metadata={"description": "While pending."})
    last_attempt = fields.Nested(LastAttemptSchema, required=True, allow_none=True)
    remote_id = fields.String(metadata={"description": "The id Datadog answered with, once it gave one (DORA)."})


def _stored_field(name: str) -> fields.Field:
    """A response field typed like the request field it was stored from (every one may be null)."""
    for schema in distelli.SCHEMAS.values():
        declared = schema._declared_fields.get(name)
        if isinstance(declared, fields.Boolean):
            return fields.Boolean(allow_none=True)
    return fields.String(allow_none=True)


@functools.cache
def event_schema() -> type[Schema]:
    """An event as ListEvents and UpdateBuildEvent show it: the common keys plus every field of its kind."""
    names = sorted({name for names in distelli.FIELDS_BY_TYPE.values() for name in names})
    declared: dict[str, fields.Field] = {
        "app_name": fields.String(required=True),
        "event_id": fields.Integer(required=True),
        "event_time": fields.String(required=True),
        "event_type": fields.String(required=True, validate=validate.OneOf(sorted(distelli.FIELDS_BY_TYPE))),
        "delivery": fields.Nested(DeliverySchema, required=True),
        "closed_by_bridge": fields.Nested(
            ClosedByBridgeSchema, metadata={"description": "Set when no final status came in time (stale run)."}
        ),
    }
    declared.update({name: _stored_field(name) for name in names})
    return Schema.from_dict(declared, name="Event")


class ListQuerySchema(Schema):
    max_results = fields.Integer(validate=validate.Range(1, list_query.MAX_PAGE))
    order = fields.String(validate=validate.OneOf(("asc", "desc")))
    marker = fields.String(metadata={"description": "The marker of the previous page's answer."})
    filter_name = fields.String(validate=validate.OneOf(FILTER_NAME_SPELLINGS))
    filter_branch = fields.String()
    filter_env = fields.String()
    filter_event_type = fields.String(validate=validate.OneOf(EVENT_TYPE_SPELLINGS))


def _state_enum(_converter: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    """Build and deploy states are validated by a custom field; show their values (any case is accepted)."""
    allowed = getattr(field, "allowed", None)
    return {"enum": [*allowed, None] if field.allow_none else list(allowed)} if allowed else {}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid JSON, body, field, path or query parameter",
        401: "Missing or invalid apiToken for this user, or a webhook whose signature or token is wrong",
        404: "No such event, no such route, or no webhook source of that name is enabled",
        405: "Method not allowed",
        409: "The build is finished and can no longer be updated",
        413: "The request body is larger than 1 MiB",
        500: "Unexpected failure; nothing was stored",
    }
    return {str(status): {"description": reasons[status], "content": _json("Error")} for status in statuses}


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path_parameters(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"in": "path", "name": "username", "required": True, "schema": {"type": "string", "minLength": 1}},
        {
            "in": "path",
            "name": "app_name",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_APP_NAME},
        },
        *extra,
    ]


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document as a dict, built once per process."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="pipeline-bridge: Distelli-compatible Events API",
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": "Accepts Puppet Pipelines (Distelli) events and webhooks and forwards them to Datadog."},
    )
    plugin.converter.add_attribute_function(_state_enum)  # type: ignore[union-attr]
    _add_components(spec)
    _add_create_paths(spec)
    _add_update_path(spec)
    _add_list_path(spec)
    _add_hook_path(spec)
    _add_health_paths(spec)
    return spec.to_dict()


def _request_schema_name(event_type: str) -> str:
    return f"{event_type.title().replace('_', '')}EventRequest"


def _add_components(spec: APISpec) -> None:
    spec.components.security_scheme("apiToken", {"type": "apiKey", "in": "query", "name": "apiToken"})
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("Event", schema=event_schema())
    for event_type, schema in distelli.SCHEMAS.items():
        spec.components.schema(_request_schema_name(event_type), schema=schema)


def _add_create_paths(spec: APISpec) -> None:
    for path, event_type in CREATE_ROUTES.items():
        spec.path(
            path=f"/{{username}}/apps/{{app_name}}/events/{path}",
            parameters=_path_parameters(),
            operations={
                "put": {
                    "operationId": f"Create{path[0].upper()}{path[1:]}",
                    "summary": f"Record a {event_type} event",
                    "security": SECURITY,
                    "requestBody": {"required": False, "content": _json(_request_schema_name(event_type))},
                    "responses": {
                        "200": {
                            "description": "Stored; delivery follows (200: Jenkinsfile clients accept only 200)",
                            "content": _json(CreatedSchema),
                        },
                        **_errors(400, 401, 413, 500),
                    },
                }
            },
        )


def _add_update_path(spec: APISpec) -> None:
    event_id = {"in": "path", "name": "event_id", "required": True, "schema": {"type": "string", "minLength": 1}}
    spec.path(
        path="/{username}/apps/{app_name}/events/{event_id}",
        parameters=_path_parameters(event_id),
        operations={
            "post": {
                "operationId": "UpdateBuildEvent",
                "summary": "Change a build's status or times until it finishes",
                "security": SECURITY,
                "requestBody": {"required": False, "content": _json(_request_schema_name(distelli.BUILD))},
                "responses": {
                    "200": {
                        "description": "The event as stored now",
                        "content": _json({"type": "object", "required": ["event"], "properties": {"event": "Event"}}),
                    },
                    **_errors(400, 401, 404, 409, 413, 500),
                },
            }
        },
    )


def _add_list_path(spec: APISpec) -> None:
    page = {
        "type": "object",
        "required": ["app_name", "events"],
        "properties": {
            "app_name": {"type": "string"},
            "events": {"type": "array", "items": "Event"},
            "marker": {"type": "string"},
        },
    }
    spec.path(
        path="/{username}/apps/{app_name}/events",
        parameters=_path_parameters(),
        operations={
            "get": {
                "operationId": "ListEvents",
                "summary": "An app's events, newest first, a page at a time",
                "security": SECURITY,
                "parameters": [{"in": "query", "schema": ListQuerySchema}],
                "responses": {
                    "200": {"description": "One page; marker is present when there is another", "content": _json(page)},
                    **_errors(400, 401, 500),
                },
            }
        },
    )


def _add_hook_path(spec: APISpec) -> None:
    source = {
        "in": "path",
        "name": "name",
        "required": True,
        "description": "The webhook source (adapter) name, enabled by its secret in BRIDGE_HOOK_SECRETS.",
        "schema": {"type": "string", "minLength": 1},
    }
    answer = {"content": _json(HookAnswerSchema)}
    spec.path(
        path="/hooks/{name}",
        parameters=[source],
        operations={
            "post": {
                "operationId": "ReceiveWebhook",
                "summary": "A native webhook (GitHub, GitLab, CircleCI, Jenkins...), verified by the source's secret",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
                "responses": {
                    "200": {"description": "A delivery seen before: the original event, nothing new", **answer},
                    "202": {"description": "Stored and queued, or a kind of webhook that maps to nothing", **answer},
                    **_errors(400, 401, 404, 413, 500),
                },
            }
        },
    )


def _add_health_paths(spec: APISpec) -> None:
    spec.path(
        path="/healthz",
        operations={
            "get": {
                "operationId": "Healthz",
                "summary": "The process is up (touches nothing)",
                "responses": {"200": {"description": "Up", "content": _json(HealthSchema)}},
            }
        },
    )
    readiness = {"content": _json(ReadinessSchema)}
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "operationId": "Readyz",
                "summary": "Ready to accept: a user has an apiToken, the database answers and is migrated",
                "responses": {
                    "200": {"description": "Ready (a paused delivery is shown, not fatal)", **readiness},
                    "503": {"description": "Not ready, with the reason", **readiness},
                },
            }
        },
    )
