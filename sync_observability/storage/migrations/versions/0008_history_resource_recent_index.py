"""sync_history: the resource/time index covers the slow-sync and volume reads (PostgreSQL)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 19:00:00.000000

``ix_sync_history_resource_time (resource, sync_start_time)`` becomes ``(resource,
sync_start_time DESC) INCLUDE (sync_status, sync_id, duration_ms, records_processed)``: the
slow-sync and volume sensors read each resource's recent successful runs from the index alone
(an index-only scan, on pages vacuumed since their last change) instead of one heap page per
run. It serves every query the old index served. SQLite has no INCLUDE: unchanged there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INCLUDE = ["sync_status", "sync_id", "duration_ms", "records_processed"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_sync_history_resource_time", table_name="sync_history")
    op.create_index(
        "ix_sync_history_resource_time",
        "sync_history",
        ["resource", sa.text("sync_start_time DESC")],
        postgresql_include=_INCLUDE,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_sync_history_resource_time", table_name="sync_history")
    op.create_index(
        "ix_sync_history_resource_time", "sync_history", ["resource", "sync_start_time"]
    )
