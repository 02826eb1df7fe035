"""Shared fixtures: a config and store per test (SQLite file or a fresh PostgreSQL schema), the app, and the
stand-in intake server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from bridge.config import Config, load_config
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.intake_server import IntakeServer

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
USER, TOKEN = "jdoe", "abcdefghijklmnopqrstuvwxyz0123456789z"
OTHER_USER, OTHER_TOKEN = "asmith", "zyxwvutsrqponmlkjihgfedcba9876543210a"


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except OperationalError as exc:
        return f"no PostgreSQL answers at {POSTGRES_ADMIN_URL} ({type(exc.orig).__name__})"
    return None


_PG_PROBLEM: list[str | None] = []


def require_postgres() -> None:
    """Skip with the reason when PostgreSQL is down, except under CI=true where that is a failure."""
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_postgres_available())
    problem = _PG_PROBLEM[0]
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {problem}")
    pytest.skip(problem)


# Whole process trees (gunicorn, workers, fresh interpreters), beside tests/reliability/: left out of the quick loop.
SLOW_MODULES = frozenset({"test_worker_processes.py", "test_ops_gunicorn.py", "test_lean_imports.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the declared markers where they are true, so nobody has to remember them: ``postgres`` on every test
    that takes the PostgreSQL fixtures (itself or as database_url's postgresql case), ``slow`` on the reliability
    runs and SLOW_MODULES. A module marks its own other ``slow`` tests (the Docker image, the Heroku dynos)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
        if on_postgres or "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if "reliability" in item.path.parts or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    require_postgres()
    schema = f"pb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_ADMIN_URL else "?"
    yield f"{POSTGRES_ADMIN_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each storage test runs on both databases."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_config(tmp_path: Any, sqlite_url: str) -> Callable[..., Config]:
    """Build a Config from environment-style overrides, on a per-test SQLite file by default."""

    def build(**env: str) -> Config:
        base = {
            "DATABASE_URL": sqlite_url,
            "BRIDGE_TOKENS": f"{USER}:{TOKEN},{OTHER_USER}:{OTHER_TOKEN}",
            "BRIDGE_SINK_PATH": str(tmp_path / "sink.jsonl"),
            "BRIDGE_PUBLIC_URL": "https://bridge.example.com",
        }
        return load_config({**base, **env})

    return build


@pytest.fixture
def config(make_config: Callable[..., Config], database_url: str) -> Config:
    return make_config(DATABASE_URL=database_url)


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    store = Store(config.database_url)
    migrate.upgrade(store)
    yield store
    store.dispose()


@pytest.fixture
def app(config: Config, store: Store) -> Flask:
    return create_app(config, store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def intake() -> Iterator[IntakeServer]:
    with IntakeServer() as server:
        yield server


@pytest.fixture
def api(client: FlaskClient) -> Any:
    """The Distelli Events API as jdoe calls it for app example-node (see tests/distelli_api.py)."""
    from tests.distelli_api import DistelliApi

    return DistelliApi(client)
