"""The template a newcomer copies must itself work: it verifies, parses and maps a build to valid bodies."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from adapters import _template
from adapters.base import RequestHeaders
from adapters.registry import as_adapter, load_adapters
from tests.ddschema import pipeline_problems
from tests.test_adapter_samples import context

NOW = dt.datetime(2026, 11, 20, 10, 5, tzinfo=dt.UTC)
BUILD = {
    "id": "42",
    "pipeline": "shop-api",
    "url": "https://ci.example.com/shop-api/42",
    "started_at": "2026-11-20T10:00:00Z",
    "repository_url": "https://github.com/example/shop-api",
    "commit": "c6d86dc7b6a1e3f5c2d4e6f8a0b2c4d6e8f0a2b4",
    "branch": "main",
    "author": "jdoe",
}


def test_the_template_is_not_registered_but_keeps_the_contract() -> None:
    assert "mysource" not in load_adapters()
    assert as_adapter(_template) is _template.adapter


def test_the_template_maps_a_running_then_passed_build_to_valid_bodies() -> None:
    adapter = _template.adapter
    running = json.dumps({**BUILD, "status": "running"}).encode()
    passed = json.dumps({**BUILD, "status": "passed", "finished_at": "2026-11-20T10:04:00Z"}).encode()
    assert adapter.verify(RequestHeaders(adapter.sign(running, "s")), running, "s") is None
    assert adapter.verify(RequestHeaders(adapter.sign(running, "t")), running, "s")

    first = adapter.parse({}, running)
    second = adapter.parse({}, passed)
    assert first is not None and second is not None
    first = dataclasses.replace(first, received_at=NOW)
    outbounds = adapter.map(first, [], context(NOW)) + adapter.map(second, [first], context(NOW))

    assert [(o.final, o.body["data"]["attributes"]["resource"]["status"]) for o in outbounds] == [
        (False, "running"),
        (True, "success"),
    ]
    assert all(pipeline_problems(o.body, now=NOW) == [] for o in outbounds)
