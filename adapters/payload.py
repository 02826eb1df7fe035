"""Reading a webhook's body: JSON objects, marshmallow schemas, the times sources write, and the refusal.

Everything here turns bytes a CI tool sent into checked values or a :class:`Rejected` naming what is wrong, so
each adapter's ``parse`` is its schema and nothing else.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from adapters.target import rfc3339

_SPACED_UTC = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ?(UTC|[+-]\d{2}:?\d{2})$")


class Rejected(Exception):
    """Raised by ``parse`` when a payload is not one the adapter accepts; carries per-field messages."""

    def __init__(
        self, message: str, fields: Mapping[str, Any] | None = None, status: int = 400, code: str = "invalid_payload"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields) if fields else None
        self.status = status
        self.code = code


# Bodies from CI tools are shallow; code that walks one must not run out of stack on a hostile one.
MAX_DEPTH = 64


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`Rejected`.

    A leading UTF-8 byte order mark (a JSON file saved on a Windows build agent) is skipped. ``NaN``,
    ``Infinity``, numbers too large for a float and nesting deeper than :data:`MAX_DEPTH` are refused: they are
    not JSON, or not storable, and neither the databases nor Datadog accept them.
    """
    try:
        data = json.loads(body.removeprefix(codecs.BOM_UTF8), parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Rejected("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise Rejected("The request body must be a JSON object.", code="invalid_body")
    if _depth(data) > MAX_DEPTH:
        raise Rejected(f"The request body nests deeper than {MAX_DEPTH} levels.", code="invalid_body")
    return data


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate with a marshmallow schema; field errors become one :class:`Rejected` naming every bad field."""
    try:
        values: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise Rejected("Some fields are invalid.", fields=fields) from None
    return values


def kind_name(value: Any, field: str) -> str | None:
    """A body's kind as its source names it (``object_kind``, ``type``), None when absent, :class:`Rejected` when
    it is not a string (an object or a list there is no event type)."""
    if value is None or isinstance(value, str):
        return value
    raise Rejected("Some fields are invalid.", fields={field: ["Not a valid string."]})


def read_source_time(value: Any) -> dt.datetime | None:
    """An aware datetime from ISO 8601 (``Z`` allowed), GitLab's ``2016-08-12 15:23:28 UTC``, or epoch millis."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    spaced = _SPACED_UTC.match(text)
    if spaced:
        zone = "+00:00" if spaced[3] == "UTC" else spaced[3]
        text = f"{spaced[1]}T{spaced[2]}{zone}"
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class PayloadSchema(Schema):
    """A schema for a source's webhook payload: sources add fields all the time, so unknown keys are ignored."""

    class Meta:
        unknown = EXCLUDE


def optional_text(**kwargs: Any) -> fields.String:
    """A string field that may be missing or null."""
    return fields.String(allow_none=True, **kwargs)


# Times a run can have: a year inside the calendar's ends once in UTC, so adding a queue time or a duration (at
# most a year, see MAX_DURATION) can never leave the calendar.
EARLIEST = dt.datetime(2, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9998, 12, 31, tzinfo=dt.UTC)
# Go's and .NET's zero time: what their clients send for "not set".
ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


class SourceTime(fields.Field):
    """A time in any form :func:`read_source_time` reads, kept as the source wrote it so stored fields stay raw.

    A zero time (year 1, midnight UTC) is read as missing; any other time outside :data:`EARLIEST` ..
    :data:`LATEST` once in UTC is refused, so no later arithmetic on it can overflow into a 500.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        text = fields.String()._deserialize(value, attr, data, **kwargs)
        moment = read_source_time(text)
        if moment is None:
            raise ValidationError("Not a date and time.")
        try:
            in_utc = moment.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            raise ValidationError("Not a date and time the calendar can hold in UTC.") from None
        if in_utc == ZERO_TIME:
            return None
        if not EARLIEST <= in_utc <= LATEST:
            raise ValidationError(f"Not between {EARLIEST.year} and {LATEST.year}.")
        return text


def rfc3339_or_none(value: Any) -> str | None:
    """A time in any form :func:`read_source_time` reads as RFC 3339 in UTC, or None when it is missing or unusable."""
    moment = read_source_time(value)
    try:
        return rfc3339(moment) if moment else None
    except (OverflowError, ValueError):
        return None
