"""The template a newcomer copies must itself work: it verifies, parses and maps a build to valid bodies."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import adapters
from adapters import _template
from adapters.base import RequestHeaders
from adapters.registry import as_adapter, load_adapters
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.ddschema import pipeline_problems
from tests.intake_server import IntakeServer
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


def test_a_copy_of_the_template_in_the_package_is_a_working_source_with_no_other_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Config], store: Store
) -> None:
    """Adding a source is its module (and its samples): the template copied as ``adapters/mysource.py`` is found
    by the registry's package scan, enabled by its secret, and its webhooks reach the intake; nothing in
    ``bridge/``, the registry or the test lists was edited."""
    (tmp_path / "mysource.py").write_text(Path(_template.__file__).read_text())
    monkeypatch.setattr(adapters, "__path__", [*adapters.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "adapters.mysource", raising=False)
    assert "mysource" in load_adapters()

    config = make_config(DATABASE_URL=store.database_url, BRIDGE_HOOK_SECRETS="mysource:template-secret")
    client = create_app(config, store).test_client()
    source = load_adapters()["mysource"]
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).isoformat()
    finished = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    answers = []
    with IntakeServer() as intake:
        sender = Sender(store, HttpIntake(intake.url, intake.api_key))
        for update in ({"status": "running"}, {"status": "passed", "finished_at": finished}):
            payload = json.dumps({**BUILD, "started_at": started, **update}).encode()
            headers = source.sign(payload, "template-secret")
            answers.append(client.post("/hooks/mysource", data=payload, headers=headers))
            sender.run_once()
        assert [answer.status_code for answer in answers] == [202, 202], [answer.get_json() for answer in answers]
        assert [resource["status"] for resource in intake.accepted_resources()] == ["running", "success"]
