"""What the Datadog intake would refuse, checked with the official client's models plus the intake's rules.

Used by the stand-in intake server and by the mapping tests, so a body the tests accept is one Datadog accepts.
Beyond the models it applies what the spec states in prose: RFC 3339 times with a zone, the 18-hour window, end
after start, runs shorter than a year, ``key:value`` tags, numeric metrics, ``branch`` or ``tag`` but not both, and
DORA ids of 16-128 safe characters. It also refuses keys no model declares, since the intake would drop them
silently and a misspelt field is a mapping bug.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from datadog_api_client.configuration import Configuration
from datadog_api_client.exceptions import OpenApiException
from datadog_api_client.model_utils import ModelComposed, OpenApiModel, validate_and_convert_types
from datadog_api_client.v2.model.ci_app_create_pipeline_event_request import CIAppCreatePipelineEventRequest
from datadog_api_client.v2.model.dora_deployment_request import DORADeploymentRequest

WINDOW = dt.timedelta(hours=18)
YEAR = dt.timedelta(days=365)
MAX_BATCH = 1000
MAX_DORA_TAGS = 100
_CONFIG = Configuration()
_TAG = re.compile(r"^[^:\s][^:]*:.+$")
_METRIC = re.compile(r"^[^:\s][^:]*:-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_DORA_ID = re.compile(r"^[A-Za-z0-9\-_.:]{16,128}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def _model_walk(value: Any, where: str) -> list[str]:
    """Problems inside a parsed model: an unmatched oneOf, or keys the matched model does not declare."""
    if isinstance(value, ModelComposed):
        if value._unparsed:
            return [f"schema: {where} matched no branch of the model"]
        return [problem for part in value._composed_instances for problem in _model_walk(part, where)]
    if isinstance(value, OpenApiModel):
        if value._unparsed:
            return [f"schema: {where} matched no branch of the model"]
        problems = []
        if value.attribute_map:
            problems = [
                f"schema: {where}.{key} is not a field of {type(value).__name__}"
                for key in sorted(set(value._data_store) - set(value.attribute_map))
            ]
        for key, child in value._data_store.items():
            problems.extend(_model_walk(child, f"{where}.{key}"))
        return problems
    if isinstance(value, list | tuple):
        return [problem for index, child in enumerate(value) for problem in _model_walk(child, f"{where}[{index}]")]
    return []


def _model_problems(body: Any, model: type) -> list[str]:
    try:
        parsed = validate_and_convert_types(body, (model,), ["body"], True, True, _CONFIG)
    except (OpenApiException, TypeError, ValueError, KeyError) as exc:
        return [f"schema: {exc}"]
    return _model_walk(parsed, "body")


def _time(value: Any) -> dt.datetime | None:
    """The moment an RFC 3339 string with a zone names, or None for anything else."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return None


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
        problems.extend(f"[{index}] {problem}" for problem in _resource_problems(item["attributes"]["resource"], now))
    return problems


def _resource_problems(resource: dict[str, Any], now: dt.datetime) -> list[str]:
    problems = []
    start, end = _time(resource.get("start")), _time(resource.get("end"))
    if start is None:
        problems.append("start is not RFC 3339 with a zone")
    if "end" in resource and end is None:
        problems.append("end is not RFC 3339 with a zone")
    if end is not None:
        if end < now - WINDOW:
            problems.append("end is more than 18 hours in the past")
        if start is not None and end < start:
            problems.append("end is before start")
        if start is not None and end - start > YEAR:
            problems.append("duration over a year")
    for tag in resource.get("tags") or []:
        if not _TAG.match(tag):
            problems.append(f"tag {tag!r} is not key:value")
    for metric in resource.get("metrics") or []:
        if not _METRIC.match(metric):
            problems.append(f"metric {metric!r} is not key:number")
    git = resource.get("git")
    if git is not None:
        if not git.get("author_email"):
            problems.append("git without author_email")
        if git.get("branch") and git.get("tag"):
            problems.append("git has both branch and tag")
        for name in ("author_time", "commit_time"):
            if name in git and _time(git[name]) is None:
                problems.append(f"git.{name} is not RFC 3339 with a zone")
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
    tags = attributes.get("custom_tags") or []
    if len(tags) > MAX_DORA_TAGS:
        problems.append(f"{len(tags)} custom tags; at most {MAX_DORA_TAGS}")
    for tag in tags:
        if not _TAG.match(tag):
            problems.append(f"custom tag {tag!r} is not key:value")
    return problems
