"""Delivery attempts (the audit trail the console shows) and the indexes its pages read by.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bridge.storage.models import BigId, UTCDateTime

DEAD = sa.text("state = 'dead'")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per outbox row per request that carried it; bounded per row by bridge/delivery/attempts.py, and gone with
    # its outbox row (a retention prune deletes outbox rows without knowing this table).
    op.create_table(
        "delivery_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", BigId, sa.ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempted_at", UTCDateTime, nullable=False),
        sa.Column("endpoint", sa.String(300), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
    )
    op.create_index("ix_delivery_attempts_outbox", "delivery_attempts", ["outbox_id", "id"])
    # The console's counts and per-minute chart read a time range; search by commit works without the app.
    op.create_index("ix_events_time", "events", ["event_time"])
    op.create_index("ix_events_commit", "events", ["commit_id", "id"])
    op.create_index("ix_outbox_delivered", "outbox", ["delivered_at"])
    # The dead-letter list pages newest first through the dead rows only, however long the delivered history.
    op.create_index("ix_outbox_dead", "outbox", ["id"], postgresql_where=DEAD, sqlite_where=DEAD)


def downgrade() -> None:
    op.drop_index("ix_outbox_dead", "outbox")
    op.drop_index("ix_outbox_delivered", "outbox")
    op.drop_index("ix_events_commit", "events")
    op.drop_index("ix_events_time", "events")
    op.drop_index("ix_delivery_attempts_outbox", "delivery_attempts")
    op.drop_table("delivery_attempts")
