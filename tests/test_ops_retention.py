"""Retention (issue 16): settled events past the retention are pruned in batches, nothing pending ever is, dead
letters stay longer, and ListEvents, markers and the build lookups stay right across a pruned history."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from bridge.cli import main
from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.operations.retention import RetentionPolicy, prune
from bridge.storage import migrate, outbox
from bridge.storage.models import Event
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.distelli_api import DistelliApi, sample
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all, rows, start_worker, wait_until
from tests.test_distelli_mapping import PUSH, SHA

DAY = dt.timedelta(days=1)
OTHER_SHA = "1234567890123456789012345678901234567890"


def _ago(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


def _sender(store: Store, intake: IntakeServer) -> Sender:
    return Sender(store, HttpIntake(intake.url, intake.api_key))


def _event_ids(store: Store) -> list[int]:
    with store.transaction() as session:
        return list(session.scalars(select(Event.id).order_by(Event.id)))


def _outbox_event_ids(store: Store) -> set[int]:
    return {row.event_id for row in rows(store)}


def _success(**extra: Any) -> dict[str, Any]:
    return {"build_status": "Success", "build_start": _ago(minutes=3), "build_end": _ago(minutes=1), **extra}


def test_prune_deletes_exactly_the_settled_events_past_retention_and_never_a_pending_one(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    push = int(api.create_id("pushEvent", PUSH))
    delivered = int(api.create_id("buildEvent", _success(build_id="1")))
    expired = int(api.create_id("buildEvent", sample("create_build_event.json") | {"build_status": "Success"}))
    dead = int(api.create_id("buildEvent", _success(build_id="2")))
    intake.reject |= {row.unique_id for row in rows(store) if row.event_id == dead}
    deliver_all(_sender(store, intake), store)
    retrying = int(api.create_id("buildEvent", _success(build_id="3")))
    intake.then(503)
    assert _sender(store, intake).run_once().retried == 2
    newest = int(api.create_id("pushEvent", PUSH))
    assert {row.event_id: row.state for row in rows(store)} == {
        delivered: outbox.DELIVERED,
        expired: outbox.EXPIRED,
        dead: outbox.DEAD,
        retrying: outbox.PENDING,
    }
    policy = RetentionPolicy(keep=30 * DAY, keep_dead=90 * DAY, batch_size=2)

    young = prune(store, policy, now=dt.datetime.now(dt.UTC) + 29 * DAY)
    month = prune(store, policy, now=dt.datetime.now(dt.UTC) + 31 * DAY)

    assert young.events == 0
    assert (month.events, dict(month.outbox)) == (3, {"delivered": 2, "expired": 2})
    assert month.batches == 2  # two events per transaction
    assert _event_ids(store) == [dead, retrying, newest]
    assert [event["event_id"] for event in api.events(order="asc")] == [dead, retrying, newest]
    assert push not in _outbox_event_ids(store)

    quarter = prune(store, policy, now=dt.datetime.now(dt.UTC) + 91 * DAY)
    years = prune(store, policy, now=dt.datetime.now(dt.UTC) + 3650 * DAY)

    assert (quarter.events, dict(quarter.outbox)) == (1, {"dead": 2})
    assert years.events == 0
    assert _event_ids(store) == [retrying, newest]  # retrying is pending: never deleted; newest: see below
    assert {row.state for row in rows(store)} == {outbox.PENDING}


def test_a_dry_run_counts_what_prune_would_delete_and_deletes_nothing(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    for build_id in ("1", "2"):
        api.create_id("buildEvent", _success(build_id=build_id))
    api.create_id("pushEvent", PUSH)
    deliver_all(_sender(store, intake), store)
    policy = RetentionPolicy(keep=DAY, keep_dead=DAY)
    later = dt.datetime.now(dt.UTC) + 2 * DAY

    dry = prune(store, policy, now=later, dry_run=True)
    assert len(_event_ids(store)) == 3
    real = prune(store, policy, now=later)

    # The second build is kept too: it owns the newest outbox row (ids are never reused, see below).
    assert (dry.events, dict(dry.outbox)) == (real.events, dict(real.outbox)) == (1, {"delivered": 2})
    assert dry.summary() == "would delete 1 event(s) and 2 outbox row(s) (delivered 2)"
    assert real.summary().startswith("deleted 1 event(s) and 2 outbox row(s) (delivered 2)")


def test_ids_are_never_handed_out_twice_after_everything_old_is_pruned(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    # SQLite reuses the largest id still present plus one, so the newest event must survive any prune: otherwise
    # a new build would get the id, the Datadog unique_id and the markers of one that existed before.
    first = [int(api.create_id("buildEvent", _success(build_id=str(n)))) for n in range(3)]
    deliver_all(_sender(store, intake), store)
    old_unique_ids = {row.unique_id for row in rows(store)}

    prune(store, RetentionPolicy(keep=DAY, keep_dead=DAY), now=dt.datetime.now(dt.UTC) + 2 * DAY)
    new = int(api.create_id("buildEvent", _success(build_id="new")))

    assert _event_ids(store) == [first[-1], new]
    assert new > max(first)
    assert not {row.unique_id for row in rows(store) if row.event_id == new} & old_unique_ids


def test_listing_markers_and_lookups_stay_right_across_a_pruned_history(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    old_push = api.create_id("pushEvent", PUSH)
    api.create_id("buildEvent", _success(release_version="v1", **PUSH))
    old = [int(api.create_id("pushEvent", {"commit_id": OTHER_SHA, "branch": "old"})) for _ in range(4)]
    marker = api.list(order="asc", max_results=3).get_json()["marker"]  # handed out before the prune
    deliver_all(_sender(store, intake), store)
    time.sleep(1.2)
    new_push = int(api.create_id("pushEvent", PUSH | {"commit_id": OTHER_SHA, "branch": "main"}))
    new_build = int(api.create_id("buildEvent", _success(release_version="v2", **PUSH)))
    deliver_all(_sender(store, intake), store)

    report = prune(store, RetentionPolicy(keep=dt.timedelta(seconds=1), keep_dead=dt.timedelta(seconds=1)))

    assert report.events == 6
    assert [event["event_id"] for event in api.events(order="asc")] == [new_push, new_build]
    walked = [event["event_id"] for page in api.walk(max_results=1) for event in page["events"]]
    assert walked == [new_build, new_push]
    assert [event["event_id"] for event in api.events(order="asc", marker=marker)] == [new_push, new_build]
    assert max(old) < new_push

    # A build naming a pruned parent push keeps its own facts (no error, nothing from another event) ...
    orphan = api.create_id("buildEvent", _success(parent_event_id=old_push, build_id="orphan"))
    # ... and one of the newer commit takes them from the push that is still there.
    sibling = api.create_id("buildEvent", _success(commit_id=OTHER_SHA, build_id="sibling"))
    # A deploy of the pruned release finds no build; one of the kept release finds its build.
    lost = api.create_id("deployEvent", {"deployment_status": "Success", "release_version": "v1", "env_name": "prod"})
    kept = api.create_id("deployEvent", {"deployment_status": "Success", "release_version": "v2", "env_name": "prod"})
    bodies = {str(row.event_id): row.body for row in rows(store) if row.level in ("pipeline", "deployment")}

    assert "git" not in bodies[orphan]["data"]["attributes"]["resource"]
    sibling_git = bodies[sibling]["data"]["attributes"]["resource"]["git"]
    assert (sibling_git["sha"], sibling_git["branch"]) == (OTHER_SHA, "main")
    assert "git" not in bodies[lost]["data"]["attributes"]
    assert bodies[kept]["data"]["attributes"]["git"]["commit_sha"] == SHA


def _cli(config: Config, *arguments: str, **env: str) -> str:
    environ = {"DATABASE_URL": config.database_url, "BRIDGE_TOKENS": f"{USER}:{TOKEN}", **env}
    result = CliRunner().invoke(main, list(arguments), env=environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_prune_command_prints_what_it_would_delete_then_deletes_it(
    api: DistelliApi, store: Store, intake: IntakeServer, config: Config
) -> None:
    for build_id in ("1", "2", "3"):
        api.create_id("buildEvent", _success(build_id=build_id))
    deliver_all(_sender(store, intake), store)
    time.sleep(1.0)
    retention = {"BRIDGE_RETENTION_DAYS": "0.00001"}  # 0.864 s: fractions are allowed

    dry = _cli(config, "prune", "--dry-run", **retention)
    real = _cli(config, "prune", **retention)
    again = _cli(config, "prune", **retention)

    assert dry.splitlines() == [
        "would delete 2 event(s) and 4 outbox row(s) (delivered 4)",
        "kept 3 event(s) and 6 outbox row(s)",
    ]
    assert real.splitlines()[0].startswith("deleted 2 event(s) and 4 outbox row(s) (delivered 4)")
    assert real.splitlines()[-1] == "kept 1 event(s) and 2 outbox row(s)"
    assert again.splitlines()[0] == "deleted 0 event(s) and 0 outbox row(s) (none)"


def test_a_bad_retention_value_stops_the_command_naming_it(config: Config) -> None:
    result = CliRunner().invoke(
        main, ["prune"], env={"DATABASE_URL": config.database_url, "BRIDGE_RETENTION_DAYS": "soon"}
    )

    assert result.exit_code == 2
    assert "BRIDGE_RETENTION_DAYS: must be a number above 0" in result.output


def test_the_worker_prunes_by_itself(
    api: DistelliApi, store: Store, intake: IntakeServer, config: Config, tmp_path: Path
) -> None:
    for build_id in ("1", "2", "3"):
        api.create_id("buildEvent", _success(build_id=build_id))
    worker = start_worker(
        config.database_url,
        intake.url,
        tmp_path / "worker.log",
        BRIDGE_RETENTION_DAYS="0.00002",  # 1.7 s
        BRIDGE_UPKEEP_MINUTES="0.01",
    )
    try:
        wait_until(lambda: len(_event_ids(store)) == 1, timeout=30)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert len(intake.accepted_resources()) == 6  # delivered first, then pruned
    assert "retention.pruned" in (tmp_path / "worker.log").read_text()


def test_a_new_sqlite_file_gives_space_back_after_a_prune(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate.upgrade(store)
    freed = _fill_and_prune(store)
    with store.transaction() as session:
        connection = session.connection()
        mode = connection.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar()
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
    store.dispose()

    assert mode == 2  # INCREMENTAL
    assert freed > 0
    assert free <= pages // 10  # a tenth of the file is kept free for the rows that come next


def test_an_existing_sqlite_file_is_switched_once_by_the_prune_command(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # a file made before incremental vacuum: a table exists already
        old.execute("CREATE TABLE before_upgrade (x)")
    url = f"sqlite:///{path}"
    store = Store(url)
    migrate.upgrade(store)
    freed = _fill_and_prune(store)
    with store.transaction() as session:
        assert session.connection().exec_driver_sql("PRAGMA auto_vacuum").scalar() == 0
        free_before = session.connection().exec_driver_sql("PRAGMA freelist_count").scalar()

    output = (
        CliRunner()
        .invoke(main, ["prune", "--enable-incremental-vacuum"], env={"DATABASE_URL": url}, catch_exceptions=False)
        .stdout
    )

    with store.transaction() as session:
        mode = session.connection().exec_driver_sql("PRAGMA auto_vacuum").scalar()
        free_after = session.connection().exec_driver_sql("PRAGMA freelist_count").scalar()
    store.dispose()
    assert freed == 0 and free_before > 0
    assert "auto_vacuum=INCREMENTAL" in output
    assert (mode, free_after) == (2, 0)  # the VACUUM rewrote the file without its free pages


def _fill_and_prune(store: Store) -> int:
    """Store and prune 300 pushes with 5 KB bodies; returns the pages the prune gave back."""
    now = dt.datetime.now(dt.UTC)
    with store.transaction() as session:
        for number in range(300):
            event = Event(
                source="distelli",
                username="jdoe",
                app_name="example-node",
                event_type="PUSH",
                fields={"commit_msg": "x" * 5000, "n": number},
                state={},
                raw_body="[]",
                event_time=now,
                updated_at=now,
            )
            session.add(event)
    report = prune(store, RetentionPolicy(keep=DAY, keep_dead=DAY), now=now + 2 * DAY)
    assert report.events == 299
    return report.pages_freed
