"""What the Datadog intake would refuse, checked with the official client's models plus the intake's time rules.

Used by the stand-in intake server and by the mapping tests, so a body the tests accept is one Datadog accepts.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from datadog_api_client.configuration import Configuration
from datadog_api_client.exceptions import OpenApiException
from datadog_api_client.model_utils import OpenApiModel, validate_and_convert_types
from datadog_api_client.v2.model.ci_app_create_pipeline_event_request import CIAppCreatePipelineEventRequest
from datadog_api_client.v2.model.dora_deployment_request import DORADeploymentRequest

WINDOW = dt.timedelta(hours=18)
YEAR = dt.timedelta(days=365)
MAX_BATCH = 1000
_CONFIG = Configuration()
_TAG = re.compile(r"^[^:\s][^:]*:.+$")
_DORA_ID = re.compile(r"^[A-Za-z0-9\-_.:]{16,128}$")


def _unparsed(value: Any) -> bool:
    if isinstance(value, OpenApiModel):
        if value._unparsed:
            return True
        return any(_unparsed(child) for child in value._data_store.values())
    if isinstance(value, list | tuple):
        return any(_unparsed(child) for child in value)
    return False


def _model_problems(body: Any, model: type) -> list[str]:
    try:
        parsed = validate_and_convert_types(body, (model,), ["body"], True, True, _CONFIG)
    except (OpenApiException, TypeError, ValueError, KeyError) as exc:
        return [f"schema: {exc}"]
    if _unparsed(parsed):
        return ["schema: a part of the body matched no branch of the model"]
    return []


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def pipeline_problems(body: Any, now: dt.datetime | None = None) -> list[str]:
    """Every reason the pipeline intake would refuse ``body`` (a single event or a batch)."""
    now = now or dt.datetime.now(dt.UTC)
    problems = _model_problems(body, CIAppCreatePipelineEventRequest)
    if problems:
        return problems
    data = body["data"]
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_BATCH:
        return [f"batch of {len(items)} is over {MAX_BATCH}"]
    for index, item in enumerate(items):
        resource = item["attributes"]["resource"]
        start, end = _time(resource.get("start")), _time(resource.get("end"))
        if start is None:
            problems.append(f"[{index}] start is not RFC 3339 with a zone")
        if "end" in resource and end is None:
            problems.append(f"[{index}] end is not RFC 3339 with a zone")
        if end is not None:
            if end < now - WINDOW:
                problems.append(f"[{index}] end is more than 18 hours in the past")
            if start is not None and end < start:
                problems.append(f"[{index}] end is before start")
            if start is not None and end - start > YEAR:
                problems.append(f"[{index}] duration over a year")
        for tag in resource.get("tags") or []:
            if not _TAG.match(tag):
                problems.append(f"[{index}] tag {tag!r} is not key:value")
        git = resource.get("git")
        if git is not None and not git.get("author_email"):
            problems.append(f"[{index}] git without author_email")
    return problems


def dora_problems(body: Any) -> list[str]:
    """Every reason the DORA deployment intake would refuse ``body``."""
    problems = _model_problems(body, DORADeploymentRequest)
    if problems:
        return problems
    attributes = body["data"]["attributes"]
    if "id" in attributes and not _DORA_ID.match(attributes["id"]):
        problems.append("id must be 16-128 characters of A-Za-z0-9-_.:")
    if attributes["finished_at"] < attributes["started_at"]:
        problems.append("finished_at before started_at")
    for tag in attributes.get("custom_tags") or []:
        if not _TAG.match(tag):
            problems.append(f"custom tag {tag!r} is not key:value")
    return problems
