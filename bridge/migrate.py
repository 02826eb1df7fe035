"""Schema migrations through Alembic, run from code so no alembic.ini has to sit in the working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bridge.store import Store

MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(store: Store) -> None:
    """Bring the database to the newest revision; safe to run on every start and from a release phase."""
    config = _alembic_config()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def pending_revision(store: Store) -> str | None:
    """The newest revision when the database is behind it, else None (used by /readyz)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with store.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return None if current == head else head
