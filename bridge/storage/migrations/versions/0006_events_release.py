"""The release of an event as a column, indexed: a deploy finds the build of its release without reading the others.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A deploy's git facts come from the newest build of its app with the deploy's ``release_version``
(bridge/ingest/distelli_ingest.py). That value lived only inside the ``fields`` JSON, so the lookup walked the app's
builds newest first and decoded each one's JSON until one matched: a deploy of a release no build reported read
every build of the app (80 ms at 100,000 builds on SQLite, growing with the table). The column holds the same
value (adapters/distelli.py ``index_columns``); the index is partial, so events without a release cost it nothing.
Existing events get their value from their fields here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HAS_RELEASE = sa.text("release_version IS NOT NULL")


def upgrade() -> None:
    op.add_column("events", sa.Column("release_version", sa.String(200), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE events SET release_version = fields ->> 'release_version'"
            " WHERE source = 'distelli' AND fields ->> 'release_version' <> ''"
        )
    else:
        op.execute(
            "UPDATE events SET release_version = CAST(json_extract(fields, '$.release_version') AS TEXT)"
            " WHERE source = 'distelli' AND CAST(json_extract(fields, '$.release_version') AS TEXT) <> ''"
        )
    op.create_index(
        "ix_events_release",
        "events",
        ["username", "app_name", "release_version", "id"],
        postgresql_where=HAS_RELEASE,
        sqlite_where=HAS_RELEASE,
    )


def downgrade() -> None:
    op.drop_index("ix_events_release", "events")
    op.drop_column("events", "release_version")
