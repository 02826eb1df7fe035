"""One index fewer on the outbox: the claim's "older row of the same run still pending?" uses ix_outbox_unique.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Every create wrote its pages: a run's ``unique_id`` is a random UUID, so each of a create's two outbox rows landed
on a page of its own in this index as in ix_outbox_unique (2.45 of a create's 24.5 WAL pages, one create per
transaction), and every delivery removed them again. ix_outbox_unique holds the same columns for every row, and a
run has a handful of rows, so the check reads as few index entries without it (SQLite's plan: ``SEARCH outbox_1
USING INDEX ix_outbox_unique (unique_id=? AND id<?)``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_outbox_pending_run", "outbox")


def downgrade() -> None:
    op.create_index(
        "ix_outbox_pending_run", "outbox", ["unique_id", "id"], postgresql_where=PENDING, sqlite_where=PENDING
    )
