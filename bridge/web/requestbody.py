"""Reading a JSON object out of a request the way legacy CI clients send it.

Clients omit or mislabel ``Content-Type`` (curl's ``-d`` says form-encoded), so the body is parsed as JSON
whatever the header says. The parsing rules themselves are the adapters' (:func:`adapters.base.json_object`), so
Distelli routes and webhooks refuse the same bodies; this module turns their refusals into 400s.
"""

from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import Schema
from werkzeug.exceptions import RequestEntityTooLarge

from adapters import base
from bridge.web.errors import InvalidInput


def json_object() -> dict[str, Any]:
    """The request body as a dict; an empty body counts as ``{}``."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body without Content-Length is cut at the limit rather than refused; refuse it here.
        raise RequestEntityTooLarge()
    if not raw.strip():
        return {}
    try:
        return base.json_object(raw)
    except base.Rejected as exc:
        raise InvalidInput(exc.message, code=exc.code) from None


def load(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """Validate with a marshmallow schema; field errors become one 400 listing every bad field."""
    try:
        return base.load(schema, body)
    except base.Rejected as exc:
        raise InvalidInput(exc.message, fields=exc.fields) from None
