"""Reading a JSON object out of a request the way legacy CI clients send it.

Clients omit or mislabel ``Content-Type`` (curl's ``-d`` says form-encoded), so the body is parsed as JSON
whatever the header says, and a leading UTF-8 byte order mark (a JSON file saved on a Windows build agent) is
skipped; everything that is not a JSON object is a clear 400. ``NaN``, ``Infinity`` and numbers
too large for a float are refused too: they are not JSON, and neither the databases nor Datadog accept them.
So is nesting deeper than :data:`MAX_DEPTH`: Distelli bodies are flat, and code that walks a body (scrubbing
secrets, storing it) must not run out of stack on a hostile one.
"""

from __future__ import annotations

import codecs
import json
import math
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from bridge.errors import InvalidInput

MAX_DEPTH = 64


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object() -> dict[str, Any]:
    """The request body as a dict; an empty body counts as ``{}``."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body without Content-Length is cut at the limit rather than refused; refuse it here.
        raise RequestEntityTooLarge()
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_float=_finite_float, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_body")
    if _depth(body) > MAX_DEPTH:
        raise InvalidInput(f"The request body nests deeper than {MAX_DEPTH} levels.", code="invalid_body")
    return body


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest, found without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def load(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """Validate with a marshmallow schema; field errors become one 400 listing every bad field."""
    try:
        values: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise InvalidInput("Some fields are invalid.", fields=fields) from None
    return values
