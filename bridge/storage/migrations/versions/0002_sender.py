"""Indexes for the sender's claim: the pending rows in id order, however long the delivered history grows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    # Partial indexes hold only pending rows, so the claim's ordered scan and its "older row of the same run
    # still pending?" check never walk through delivered rows.
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index(
        "ix_outbox_pending_run", "outbox", ["unique_id", "id"], postgresql_where=PENDING, sqlite_where=PENDING
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_pending_run", "outbox")
    op.drop_index("ix_outbox_pending", "outbox")
