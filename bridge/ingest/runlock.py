"""The lock every write to one webhook run takes, shared by the webhook path and the stale-run closer.

In a module of its own so the delivery worker, which closes stale runs, can take it without loading Flask.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_run(session: Session, source: str, run_key: str) -> None:
    """Serialise the webhooks of one run until the transaction ends.

    Without it, two deliveries of one run arriving together on PostgreSQL would both read the same history (and
    both send a final event), and two copies of one delivery would race to the unique index. SQLite needs nothing:
    every transaction there already starts with BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"{source}/{run_key}"})
