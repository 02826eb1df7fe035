"""A create's related-events lookups read the events they look for, not the table, however long the bridge runs.

Each create asks for the newest push of its commit (adapters/distelli.py takes the git facts a build lacks from it).
On PostgreSQL the driver prepares that statement on the server after its fifth run, and a create's transaction
lets PostgreSQL plan it once for any values (bridge/storage/store.py). With the table's statistics saying the
events share one commit (a build rerun, a busy branch, every benchmark run), such a plan of the lookup with its
event type bound walked the primary key backwards and filtered every event: a create then cost PostgreSQL's CPU
in proportion to the table (1.85 ms at 3,000 events). With its constants in its text (bridge/ingest/distelli_ingest.py)
PostgreSQL sees that a push is rare among builds, and the one plan reads the commit's index entries only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.ingest.distelli_ingest import _BUILD_OF_RELEASE
from bridge.storage import migrate
from bridge.storage.prepared import prepared
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.distelli_api import DistelliApi, sample
from tests.intake_server import DORA_PATH, IntakeServer
from tests.plan_cost import postgres_rows_read, rows_read, sqlite_steps
from tests.reliability.harness import running_body
from tests.test_distelli_mapping import SHA

_CREATE = f"/{USER}/apps/example/events/buildEvent?apiToken={TOKEN}"
_REPO = {"repo_url": "https://github.com/doct15/example-node", "repo_provider": "github"}
_REPO_URL = "https://github.com/doct15/example-node"
SHA_OF_RUNNING_BODY = running_body(1)["commit_id"]


def _create(client: FlaskClient, number: int) -> None:
    response = client.put(_CREATE, data=json.dumps(running_body(number)), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("analyzed", [True, False], ids=["analyzed", "no-statistics-yet"])
def test_on_postgresql_the_push_of_commit_lookup_reads_no_other_events_after_hundreds_of_builds_of_one_commit(
    make_config: Callable[..., Config], postgres_url: str, analyzed: bool
) -> None:
    config = make_config(DATABASE_URL=postgres_url)
    store = Store(config.database_url)
    migrate.upgrade(store)
    try:
        with store.engine.begin() as connection:  # statistics only when the test makes them
            connection.execute(text("ALTER TABLE events SET (autovacuum_enabled = false)"))
        client = create_app(config, store).test_client()
        for number in range(1, 301):  # every build of running_body has the same commit
            _create(client, number)
        if analyzed:
            with store.engine.connect() as connection:
                connection.execute(text("ANALYZE events"))  # what autovacuum does as the table grows
                connection.commit()
        for number in range(301, 321):  # the lookup's statement, prepared on the server by now, runs again
            _create(client, number)

        # The creates ran on this process's one pooled connection (the test client sends one request at a time),
        # which is the session holding the driver's prepared statements.
        with store.engine.connect() as connection:
            statements = connection.execute(
                text(
                    "SELECT name, generic_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%events.commit_id = %' AND statement LIKE '%LIMIT%'"
                )
            ).all()
            assert statements, "the lookup was not prepared on the connection the creates used"
            (name, generic_plans), *_ = statements
            assert generic_plans > 0, "the creates planned the lookup for each value: no plan made once was used"
            connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            values = f"'{USER}', 'example', '{SHA_OF_RUNNING_BODY}'"
            explained = connection.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({values})")).scalar()
            plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
            assert rows_read(plan) == 0, json.dumps(plan, indent=1)
    finally:
        store.dispose()


# --- a deploy's build of its release ------------------------------------------------------------------------------


def _deploy_git(api: DistelliApi, store: Store, intake: IntakeServer, release: str) -> dict[str, Any] | None:
    """The git facts of the DORA deployment a successful deploy of ``release`` sends (the release build's)."""
    api.create_id(
        "deployEvent",
        {
            **sample("create_deploy_event.json"),
            "deployment_status": "Success",
            "commit_id": None,
            "release_version": release,
        },
    )
    Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()
    deployments = [event for event in intake.accepted_events(DORA_PATH) if event["attributes"]["version"] == release]
    git: dict[str, Any] | None = deployments[-1]["attributes"].get("git")
    return git


def test_a_deploy_finds_the_build_whose_update_named_its_release(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    build_id = api.create_id("buildEvent", {"build_status": "Running", "commit_id": SHA, **_REPO})
    assert api.update(build_id, {"build_status": "Success", "release_version": "v7"}).status_code == 200

    assert _deploy_git(api, store, intake, "v7") == {"commit_sha": SHA, "repository_url": _REPO_URL}
    assert _deploy_git(api, store, intake, "v8") is None  # no build named it


def test_builds_stored_before_migration_0006_are_found_by_their_release(
    api: DistelliApi, store: Store, intake: IntakeServer
) -> None:
    api.create_id("buildEvent", {"build_status": "Success", "commit_id": SHA, "release_version": "v3", **_REPO})
    _migrate(store, "downgrade", "0005")  # the release back in the fields alone, as 0005's bridge stored it
    _migrate(store, "upgrade", "head")

    assert _deploy_git(api, store, intake, "v3") == {"commit_sha": SHA, "repository_url": _REPO_URL}


def test_the_release_lookup_reads_no_more_with_thousands_of_other_builds_in_the_app(
    store: Store, api: DistelliApi
) -> None:
    api.create_id("buildEvent", {"build_status": "Success", "release_version": "v1", **_REPO})
    few = _release_lookup_cost(store, "v-unknown")
    with store.engine.begin() as connection:  # 4,000 more builds of the app, each with its own release
        connection.execute(
            text(
                "INSERT INTO events (source, username, app_name, event_type, status, release_version, fields, state,"
                " raw_body, event_time, updated_at)"
                " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)"
                " SELECT source, username, app_name, event_type, status,"
                " release_version || '-' || CAST(n.i AS VARCHAR),"
                " fields, state, raw_body, event_time, updated_at FROM events, n WHERE event_type = 'BUILD'"
            )
        )
    many = _release_lookup_cost(store, "v-unknown")

    assert many <= few * 2 + 20, (few, many)
    assert _release_lookup_cost(store, "v1-3999") <= few * 2 + 40


def _release_lookup_cost(store: Store, release: str) -> int:
    """What the deploy's lookup of the build of ``release`` reads: rows fetched on PostgreSQL (EXPLAIN ANALYZE),
    virtual-machine steps on SQLite (its progress handler, called every step): counts, not times."""
    statement = prepared(_BUILD_OF_RELEASE, store.engine.dialect)
    parameters = statement.convert({"username": USER, "app_name": "example-node", "release": release})
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "postgresql":
            return int(postgres_rows_read(connection, statement.sql, parameters))
        return sqlite_steps(connection, statement.sql, parameters)


def _migrate(store: Store, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(migrate.MIGRATIONS))
    with store.engine.begin() as connection:
        alembic.attributes["connection"] = connection
        getattr(command, direction)(alembic, revision)
