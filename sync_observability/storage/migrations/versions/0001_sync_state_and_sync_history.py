"""sync_state and sync_history

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:59:39.263244
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _errors_is_array(table: str) -> sa.CheckConstraint:
    is_pg = op.get_bind().dialect.name == "postgresql"
    rule = "jsonb_typeof(errors) = 'array'" if is_pg else "json_type(errors) = 'array'"
    return sa.CheckConstraint(rule, name=op.f(f"ck_{table}_errors_is_array"))


def upgrade() -> None:
    op.create_table(
        "sync_history",
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
        _errors_is_array("sync_history"),
        sa.CheckConstraint(
            "sync_status != 'running' OR sync_end_time IS NULL",
            name=op.f("ck_sync_history_running_open"),
        ),
        sa.CheckConstraint(
            "sync_status IN ('running', 'success', 'failed')",
            name=op.f("ck_sync_history_sync_status"),
        ),
        sa.CheckConstraint(
            "sync_type IN ('full', 'incremental')", name=op.f("ck_sync_history_sync_type")
        ),
        sa.CheckConstraint("duration_ms >= 0", name=op.f("ck_sync_history_duration_ms")),
        sa.CheckConstraint(
            "records_processed >= 0 AND records_created >= 0 AND records_updated >= 0 "
            "AND records_failed >= 0",
            name=op.f("ck_sync_history_record_counts"),
        ),
        sa.CheckConstraint(
            "sync_end_time IS NULL OR sync_end_time >= sync_start_time",
            name=op.f("ck_sync_history_valid_sync_timerange"),
        ),
        sa.PrimaryKeyConstraint("sync_id", name=op.f("pk_sync_history")),
    )
    op.create_index(
        "ix_sync_history_resource_time",
        "sync_history",
        ["resource", "sync_start_time"],
        unique=False,
    )
    op.create_index(
        "ix_sync_history_source_time",
        "sync_history",
        ["source_system", "sync_start_time"],
        unique=False,
    )
    op.create_index(
        "ix_sync_history_status_time",
        "sync_history",
        ["sync_status", "sync_start_time"],
        unique=False,
    )
    op.create_index(
        "ix_sync_history_sync_start_time", "sync_history", ["sync_start_time"], unique=False
    )
    op.create_table(
        "sync_state",
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("source_system", sa.String(length=255), nullable=True),
        sa.Column("target_system", sa.String(length=255), nullable=True),
        sa.Column("last_sync_time", TS, nullable=True),
        sa.Column("cursor", JSON, nullable=True),
        sa.Column(
            "last_sync_status", sa.String(length=16), server_default="never_run", nullable=False
        ),
        sa.Column("records_synced", COUNT, server_default="0", nullable=False),
        sa.Column("records_created", COUNT, server_default="0", nullable=False),
        sa.Column("records_updated", COUNT, server_default="0", nullable=False),
        sa.Column("errors", JSON, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("duration_ms", COUNT, nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("current_sync_id", sa.String(length=36), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.current_timestamp()),
        _errors_is_array("sync_state"),
        sa.CheckConstraint(
            "last_sync_status != 'running' OR completed_at IS NULL",
            name=op.f("ck_sync_state_running_incomplete"),
        ),
        sa.CheckConstraint(
            "last_sync_status IN ('never_run', 'running', 'success', 'failed')",
            name=op.f("ck_sync_state_last_sync_status"),
        ),
        sa.CheckConstraint(
            "completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at",
            name=op.f("ck_sync_state_valid_sync_timerange"),
        ),
        sa.CheckConstraint(
            "consecutive_failures >= 0", name=op.f("ck_sync_state_consecutive_failures")
        ),
        sa.CheckConstraint("duration_ms >= 0", name=op.f("ck_sync_state_duration_ms")),
        sa.CheckConstraint("records_created >= 0", name=op.f("ck_sync_state_records_created")),
        sa.CheckConstraint("records_synced >= 0", name=op.f("ck_sync_state_records_synced")),
        sa.CheckConstraint("records_updated >= 0", name=op.f("ck_sync_state_records_updated")),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_sync_state")),
    )
    op.create_index(
        "ix_sync_state_duration",
        "sync_state",
        [sa.literal_column("duration_ms DESC")],
        unique=False,
        postgresql_where=sa.text("duration_ms IS NOT NULL"),
        sqlite_where=sa.text("duration_ms IS NOT NULL"),
    )
    nulls_last = " NULLS LAST" if op.get_bind().dialect.name == "postgresql" else ""
    op.create_index(
        "ix_sync_state_last_sync_time",
        "sync_state",
        [sa.literal_column(f"last_sync_time DESC{nulls_last}")],
        unique=False,
    )
    op.create_index(
        "ix_sync_state_not_success",
        "sync_state",
        ["last_sync_status"],
        unique=False,
        postgresql_where=sa.text("last_sync_status != 'success'"),
        sqlite_where=sa.text("last_sync_status != 'success'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_sync_state_not_success",
        table_name="sync_state",
        postgresql_where=sa.text("last_sync_status != 'success'"),
        sqlite_where=sa.text("last_sync_status != 'success'"),
    )
    op.drop_index("ix_sync_state_last_sync_time", table_name="sync_state")
    op.drop_index(
        "ix_sync_state_duration",
        table_name="sync_state",
        postgresql_where=sa.text("duration_ms IS NOT NULL"),
        sqlite_where=sa.text("duration_ms IS NOT NULL"),
    )
    op.drop_table("sync_state")
    op.drop_index("ix_sync_history_sync_start_time", table_name="sync_history")
    op.drop_index("ix_sync_history_status_time", table_name="sync_history")
    op.drop_index("ix_sync_history_source_time", table_name="sync_history")
    op.drop_index("ix_sync_history_resource_time", table_name="sync_history")
    op.drop_table("sync_history")
