"""Three indexes keep only the rows they are read for: those whose column holds a value.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Every lookup through these indexes compares the column with a value: a webhook's delivery id and run key
(bridge/ingest/hooks.py), and the console's delivered-per-minute range (bridge/web/console/queries.py). A NULL
never matches such a comparison, yet both databases index NULLs, so each Distelli create (no delivery id, no run
key) wrote two entries that no query can read, and each outbox row one more (``delivered_at`` is NULL until it
is delivered) when inserted and again at every update that moved it to a new row version. Both SQLite and
PostgreSQL use a partial index ``WHERE column IS NOT NULL`` for a comparison of that column with a value, and a
unique index so restricted still refuses a second delivery with the same id (NULLs never conflicted).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (index, table, columns, unique, column that must hold a value)
INDEXES = (
    ("ix_events_run", "events", ["source", "run_key"], False, "run_key"),
    ("uq_events_delivery", "events", ["source", "delivery_id"], True, "delivery_id"),
    ("ix_outbox_delivered", "outbox", ["delivered_at"], False, "delivered_at"),
)


def upgrade() -> None:
    for name, table, columns, unique, valued in INDEXES:
        op.drop_index(name, table)
        where = sa.text(f"{valued} IS NOT NULL")
        op.create_index(name, table, columns, unique=unique, postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, table, columns, unique, _valued in INDEXES:
        op.drop_index(name, table)
        op.create_index(name, table, columns, unique=unique)
