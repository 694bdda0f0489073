"""sync_history_archive

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_history_archive",
        sa.Column("sync_id", sa.String(length=36), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("source_system", sa.String(length=255), nullable=True),
        sa.Column("target_system", sa.String(length=255), nullable=True),
        sa.Column("sync_type", sa.String(length=16), nullable=False),
        sa.Column("sync_start_time", TS, nullable=False),
        sa.Column("sync_end_time", TS, nullable=True),
        sa.Column("sync_status", sa.String(length=16), nullable=False),
        sa.Column("records_processed", COUNT, server_default="0", nullable=False),
        sa.Column("records_created", COUNT, server_default="0", nullable=False),
        sa.Column("records_updated", COUNT, server_default="0", nullable=False),
        sa.Column("records_failed", COUNT, server_default="0", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("errors", JSON, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("watermark_before", TS, nullable=True),
        sa.Column("watermark_after", TS, nullable=True),
        sa.Column("cursor_before", JSON, nullable=True),
        sa.Column("cursor_after", JSON, nullable=True),
        sa.Column("duration_ms", COUNT, nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("asset_key", sa.Text(), nullable=True),
        sa.Column("partition_key", sa.Text(), nullable=True),
        sa.Column("retry_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("metadata", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("archived_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("sync_id", name=op.f("pk_sync_history_archive")),
    )
    op.create_index(
        "ix_sync_history_archive_start_id",
        "sync_history_archive",
        ["sync_start_time", "sync_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_sync_history_archive_start_id", table_name="sync_history_archive")
    op.drop_table("sync_history_archive")
