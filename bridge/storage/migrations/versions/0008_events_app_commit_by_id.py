"""The push-of-commit lookup's index ends with the event id, so its newest match is the index's last entry.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

On PostgreSQL a create's statements run on plans made once for any values (bridge/storage/store.py). For "the newest
push of this commit" (ORDER BY id DESC LIMIT 1) such a plan was made while a new table had no statistics yet, and
PostgreSQL chose to walk the primary key backwards, filtering every event, over reading ``ix_events_app_commit``
and sorting what it found: a create cost 1.66 ms of PostgreSQL's CPU instead of 0.6 in the benchmark. With ``id``
last in the index, its entries for one user, app, commit and type are already newest last: reading backwards from
the end is the cheapest plan whatever the statistics say, and it stops at the first entry.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_app_commit", "events")
    op.create_index("ix_events_app_commit", "events", ["username", "app_name", "commit_id", "event_type", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_app_commit", "events")
    op.create_index("ix_events_app_commit", "events", ["username", "app_name", "commit_id", "event_type"])
