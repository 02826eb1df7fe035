"""Indexes for upkeep: events by last change (retention) and running rows by age (stale runs).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Retention walks the events whose last change is past the cutoff, oldest first, a batch at a time.
    op.create_index("ix_events_updated", "events", ["updated_at", "id"])
    # The stale-run check looks at running rows queued within one window of time, never the whole history.
    op.create_index("ix_outbox_final_created", "outbox", ["final", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_final_created", "outbox")
    op.drop_index("ix_events_updated", "events")
