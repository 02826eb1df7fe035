"""Events, outbox and sender state.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bridge.storage.models import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("app_name", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("status", sa.String(40)),
        sa.Column("branch", sa.String(400)),
        sa.Column("env_name", sa.String(200)),
        sa.Column("commit_id", sa.String(200)),
        sa.Column("run_key", sa.String(400)),
        sa.Column("delivery_id", sa.String(200)),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("raw_body", sa.Text, nullable=False),
        sa.Column("event_time", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_events_app", "events", ["username", "app_name", "id"])
    op.create_index("ix_events_app_type", "events", ["username", "app_name", "event_type", "id"])
    op.create_index("ix_events_app_commit", "events", ["username", "app_name", "commit_id", "event_type"])
    op.create_index("ix_events_run", "events", ["source", "run_key"])
    op.create_index("uq_events_delivery", "events", ["source", "delivery_id"], unique=True)

    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", BigId, sa.ForeignKey("events.id"), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("unique_id", sa.String(200), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("end_time", UTCDateTime),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("reason", sa.Text),
        sa.Column("remote_id", sa.String(200)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
    )
    op.create_index("ix_outbox_event_id", "outbox", ["event_id"])
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at", "id"])
    op.create_index("ix_outbox_unique", "outbox", ["unique_id", "id"])

    op.create_table(
        "sender_state",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sender_state")
    op.drop_table("outbox")
    op.drop_table("events")
