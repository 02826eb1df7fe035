"""Schema migrations through Alembic, run from code so no alembic.ini has to sit in the working directory.

Alembic is imported only where migrations run. Importing any part of it loads all of it, Mako included: about
7 MB in every process that does. The web processes only need to know, for /readyz, whether the database is at
the newest revision, and both sides of that comparison are cheap to read without Alembic: the newest revision
from the revision files' own ``revision`` / ``down_revision`` assignments, and the current one from Alembic's
one-row version table.
"""

from __future__ import annotations

import ast
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bridge.storage.store import StorageUnavailable, Store, write_refusal

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"  # Alembic's default, which bridge/storage/migrations/env.py keeps
# What a request that failed on an old schema is answered, and what the worker logs: the fix, not the symptom.
MIGRATIONS_PENDING = "migrations pending: run pipeline-bridge db upgrade"


def _quiet_alembic() -> None:
    """Silence what Alembic logs at INFO on every run, migrated or not: one line per plugin it registers, and the
    two naming the dialect and its DDL mode. Its "Running upgrade ..." lines stay."""
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_not_context_line)  # added once, however often called


def _not_context_line(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Context impl", "Will assume"))


def _alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(store: Store) -> None:
    """Bring the database to the newest revision; safe to run on every start and from a release phase."""
    _quiet_alembic()  # before the import: Alembic registers (and logs) its plugins as it is imported
    from alembic import command

    config = _alembic_config()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@functools.cache
def head_revision() -> str:
    """The newest revision in ``migrations/versions``: the one no other revision names as its ``down_revision``.

    The same answer as Alembic's ``ScriptDirectory.get_current_head()`` (a test holds them together), read from
    the files' top-level assignments once per process.
    """
    parents: dict[str, set[str]] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        values = {
            target.id: ast.literal_eval(node.value)
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision")
        }
        if "revision" in values:
            down = values.get("down_revision")
            parents[values["revision"]] = set(down) if isinstance(down, tuple | list) else {down} if down else set()
    heads = set(parents) - set().union(*parents.values())
    if len(heads) != 1:
        raise RuntimeError(f"expected one head revision in {MIGRATIONS / 'versions'}, found {sorted(heads)}")
    return heads.pop()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, from Alembic's version table; None before the first migration."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revision: str | None = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608
    return revision


def pending_revision(store: Store) -> str | None:
    """The newest revision when the database is behind it, else None (used by /readyz)."""
    head = head_revision()
    with store.engine.connect() as connection:
        current = current_revision(connection)
    return None if current == head else head


def migrations_pending(store: Store) -> bool:
    """Whether the database is behind the code, asked after a statement failed (a missing table or column is how an
    old schema shows); False when that cannot be told either, so the original error stands."""
    try:
        return pending_revision(store) is not None
    except SQLAlchemyError:
        return False


def database_problem(store: Store, error: Exception) -> str | None:
    """What an operator should read about a failed database call: pending migrations, a file deleted under the
    bridge or a disk that refuses writes; None when it is none of these (a restart, a network blip)."""
    if isinstance(error, StorageUnavailable):
        return error.reason
    if migrations_pending(store):
        return MIGRATIONS_PENDING
    return write_refusal(error) if isinstance(error, DBAPIError) else None
