"""The worker's upkeep round (issue 16): on PostgreSQL one worker at a time, the others skip that round."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bridge.config import Config
from bridge.operations.upkeep import ADVISORY_KEY, Upkeep, exclusive
from bridge.storage.store import Store


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_second_worker_skips_the_round_while_one_runs_it(store: Store, config: Config) -> None:
    upkeep = Upkeep(store, config)
    other = Store(config.database_url)
    try:
        with exclusive(other) as first:
            skipped = upkeep.run_once()
            with store.engine.connect() as connection:
                held = connection.execute(
                    text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :low"),
                    {"low": ADVISORY_KEY & 0xFFFFFFFF},
                ).scalar()
        ran = upkeep.run_once()
    finally:
        other.dispose()

    assert first is True
    assert (skipped, held, ran) == (False, 1, True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_every_worker_may_run_it(store: Store, config: Config) -> None:
    with exclusive(store) as first, exclusive(store) as second:
        assert (first, second) == (True, True)
    assert Upkeep(store, config).run_once() is True
