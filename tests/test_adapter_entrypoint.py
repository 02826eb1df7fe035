"""A third-party adapter installed as a package is found through its entry point and receives webhooks, with no
change in ``bridge/``: the package here is a module plus the ``.dist-info`` directory pip would write."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from adapters.registry import ENTRY_POINT_GROUP, load_adapters
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.models import Event
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.intake_server import IntakeServer

TINY_ADAPTER = '''
"""A tiny CI source: {"run": "7", "state": "passed", "at": "<RFC 3339>"} with a shared token header."""
from adapters.base import MappingContext, SourceRecord, ci_outbound, header, json_object, secrets_match


class TinyCI:
    name = "tinyci"

    def sign(self, body, secret):
        return {"X-Tiny-Token": secret}

    def verify(self, headers, body, secret):
        return None if secrets_match(header(headers, "X-Tiny-Token"), secret) else "bad token"

    def parse(self, headers, body):
        data = json_object(body)
        status = {"passed": "success", "broken": "error"}[data["state"]]
        return SourceRecord("run", f"run:{data['run']}", "tiny-app", data, data["run"], status)

    def map(self, record, history, context: MappingContext):
        resource = {
            "level": "pipeline",
            "unique_id": context.run_uuid("tinyci", record.run_key),
            "name": "tiny-app",
            "url": "https://tiny.example.com/runs/" + record.fields["run"],
            "start": record.fields["at"],
            "end": record.fields["at"],
            "status": record.status,
            "partial_retry": False,
        }
        return [ci_outbound(resource, "custom", context)]


adapter = TinyCI()
'''


def install(root: Path, name: str, entry_points: str, module: str | None = None) -> None:
    """Write what ``pip install`` leaves in site-packages: the module and its dist-info with entry points."""
    if module is not None:
        (root / f"{name}.py").write_text(module)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{textwrap.dedent(entry_points)}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for module in ("tinyci_adapter", "broken_adapter"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return root


def test_an_installed_adapter_receives_a_webhook_and_reaches_the_intake(
    site: Path, make_config: Callable[..., Config], store: Store, intake: IntakeServer
) -> None:
    install(site, "tinyci_adapter", "tinyci = tinyci_adapter:adapter\n", TINY_ADAPTER)
    config = make_config(DATABASE_URL=store.database_url, BRIDGE_HOOK_SECRETS="tinyci:tiny-secret")
    client = create_app(config, store).test_client()
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()

    answer = client.post(
        "/hooks/tinyci", json={"run": "7", "state": "passed", "at": at}, headers={"X-Tiny-Token": "tiny-secret"}
    )
    refused = client.post("/hooks/tinyci", json={"run": "8", "state": "passed", "at": at})

    assert (answer.status_code, refused.status_code) == (202, 401)
    with store.transaction() as session:
        event = session.scalars(select(Event)).one()
        assert (event.source, event.run_key, event.delivery_id) == ("tinyci", "run:7", "7")
    assert Sender(store, HttpIntake(intake.url, intake.api_key)).run_once().delivered == 1
    assert [resource["status"] for resource in intake.accepted_resources()] == ["success"]


def test_a_broken_or_clashing_installed_adapter_is_left_out_and_logged(site: Path) -> None:
    install(site, "broken_adapter", "broken = broken_adapter:missing\ngithub = tinyci_adapter:TinyCI\n", "x = 1\n")
    install(site, "tinyci_adapter", "github2 = tinyci_adapter:adapter\n", TINY_ADAPTER.replace('"tinyci"', '"github"'))

    with capture_logs() as logs:
        registry = load_adapters()

    assert "broken" not in registry and type(registry["github"]).__module__ == "adapters.github"
    assert {entry["event"] for entry in logs} == {"adapter.load_failed", "adapter.name_taken"}
