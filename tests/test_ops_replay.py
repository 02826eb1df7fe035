"""Replay and backfill (issue 16): stored events mapped again and queued with their own unique_ids, only what is
still inside the intake's 18-hour window; the rest reported, never sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bridge.cli import main
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.operations.replay import ReplayFilter, replay
from bridge.storage import migrate
from bridge.storage.models import Event
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.distelli_api import DistelliApi
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all, rows
from tests.test_adapter_samples import NATIVE, index
from tests.test_distelli_mapping import PUSH
from tests.test_hooks_http import SECRETS, fresh, post


def _ago(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def _ids(resources: list[dict[str, Any]]) -> list[str]:
    return [resource.get("unique_id") or resource["id"] for resource in resources]


def test_replay_resends_only_what_is_inside_the_window_with_the_same_unique_ids(
    api: DistelliApi, store: Store, intake: IntakeServer, config: Config
) -> None:
    nearly_late = api.create_id(
        "buildEvent", {"build_status": "Success", "build_start": _ago(hours=17.6), "build_end": _ago(hours=17.5)}
    )
    recent = api.create_id(
        "buildEvent", {"build_status": "Failed", "build_start": _ago(hours=2), "build_end": _ago(hours=1), **PUSH}
    )
    api.create_id("pushEvent", PUSH)
    api.for_app("other-app").create_id("buildEvent", {"build_status": "Success", "build_id": "elsewhere"})
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    deliver_all(sender, store)
    first = intake.accepted_resources()
    recent_ids = {row.unique_id for row in rows(store) if str(row.event_id) == recent}
    late_ids = {row.unique_id for row in rows(store) if str(row.event_id) == nearly_late}
    an_hour_on = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # the first build is now past the window

    dry = replay(store, config, ReplayFilter("example-node"), dry_run=True, now=an_hour_on)
    report = replay(store, config, ReplayFilter("example-node"), now=an_hour_on)
    deliver_all(sender, store)

    resent = intake.accepted_resources()[len(first) :]
    assert set(_ids(resent)) == recent_ids and len(resent) == 2
    assert [(r["level"], r["status"]) for r in resent] == [("pipeline", "error"), ("job", "error")]
    before = {(r["level"], r.get("unique_id") or r["id"]): r for r in first}
    for body in resent:  # the same pipeline, as Datadog will update it
        original = before[(body["level"], body.get("unique_id") or body["id"])]
        assert (body["start"], body["end"], body["git"]) == (original["start"], original["end"], original["git"])
    for result in (dry, report):
        assert (result.events, result.queued_events, result.queued_bodies) == (3, 1, 2)
        assert result.nothing_to_send == 1
        assert [(late["event_id"], late["unique_id"] in late_ids) for late in result.outside_window] == [
            (int(nearly_late), True)
        ]
        assert "18 hours" in result.outside_window[0]["reason"]
    assert api.event(recent)["delivery"]["state"] == "delivered"


def test_replay_skips_events_still_pending_and_filters_by_user_and_time(
    api: DistelliApi, store: Store, config: Config
) -> None:
    api.create_id("buildEvent", {"build_status": "Success", "build_id": "1"})
    wanted_all = ReplayFilter("example-node")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    pending = replay(store, config, wanted_all, dry_run=True)
    nobody = replay(store, config, ReplayFilter("example-node", username="asmith"), dry_run=True)
    too_late = replay(store, config, ReplayFilter("example-node", since=later), dry_run=True)
    too_early = replay(store, config, ReplayFilter("example-node", until=later - dt.timedelta(hours=1)))

    assert (pending.events, pending.still_pending, pending.queued_bodies) == (1, 1, 0)
    assert nobody.events == too_late.events == too_early.events == 0


def _cli(config: Config, *arguments: str) -> Any:
    environ = {"DATABASE_URL": config.database_url, "BRIDGE_TOKENS": f"{USER}:{TOKEN}"}
    return CliRunner().invoke(main, ["replay", *arguments], env=environ, catch_exceptions=False)


def test_the_replay_command_reports_and_queues(
    api: DistelliApi, store: Store, intake: IntakeServer, config: Config
) -> None:
    old = api.create_id("buildEvent", {"build_status": "Success", "build_start": "2016-08-15T22:22:22.111Z"})
    api.create_id("buildEvent", {"build_status": "Success", "build_id": "2"})
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()

    dry = _cli(config, "--app", "example-node", "--user", USER, "--since", since, "--dry-run")
    real = _cli(config, "--app", "example-node")
    bad = _cli(config, "--app", "example-node", "--until", "yesterday")

    assert dry.exit_code == real.exit_code == 0
    assert dry.stdout.splitlines()[-1] == (
        "2 event(s) matched; would queue 2 body(ies) of 1 event(s); 1 outside the intake's window (not sent);"
        " 0 still pending; 0 send nothing"
    )
    assert dry.stdout.splitlines()[0].startswith(f"not sent: event {old} (")
    assert real.stdout.splitlines()[-1].startswith("2 event(s) matched; queued 2 body(ies) of 1 event(s)")
    assert sum(row.state == "pending" for row in rows(store)) == 2
    assert bad.exit_code == 2 and "must be an ISO 8601 time" in bad.output


@pytest.fixture
def hooks_client(make_config: Callable[..., Config], database_url: str) -> Any:
    config = make_config(DATABASE_URL=database_url, BRIDGE_HOOK_SECRETS=SECRETS)
    store = Store(config.database_url)
    migrate.upgrade(store)
    yield config, store, create_app(config, store).test_client()
    store.dispose()


@pytest.mark.parametrize("source", NATIVE)
def test_a_webhook_run_is_replayed_from_its_stored_records(
    hooks_client: Any, intake: IntakeServer, source: str
) -> None:
    config, store, client = hooks_client
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    run = index(source)["runs"][0]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    for name in run:
        assert post(client, source, name, fresh(source, name, now)).status_code == 202
        deliver_all(sender, store)
    first = intake.accepted_resources()
    with store.transaction() as session:
        app_name = session.scalars(select(Event.app_name)).first()

    report = replay(store, config, ReplayFilter(str(app_name), username=source))
    deliver_all(sender, store)

    resent = intake.accepted_resources()[len(first) :]
    finals = [(r["level"], _ids([r])[0], r["status"]) for r in first if r["status"] != "running"]
    assert report.outside_window == []
    assert sorted(finals) == sorted((r["level"], _ids([r])[0], r["status"]) for r in resent if r["status"] != "running")
