"""history roll-ups: hourly aggregates of closed hours for the reports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
FLOAT = sa.Float().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
MONEY = sa.Numeric().with_variant(sa.Float(), "sqlite")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty: the first report (or refresh_rollups) fills them from sync_history.
    op.create_table(
        "sync_history_hourly",
        sa.Column("row_id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("source_system", sa.String(length=255), nullable=True),
        sa.Column("target_system", sa.String(length=255), nullable=True),
        sa.Column("sync_status", sa.String(length=16), nullable=False),
        sa.Column("operations", COUNT, nullable=False),
        sa.Column("durations", COUNT, nullable=False),
        sa.Column("duration_ms_sum", COUNT, nullable=False),
        sa.Column("duration_ms_max", COUNT, nullable=True),
        sa.Column("records_processed", COUNT, nullable=False),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("bytes_read", COUNT, nullable=False),
        sa.Column("bytes_written", COUNT, nullable=False),
        sa.Column("quality_runs", COUNT, nullable=False),
        sa.Column("completeness_sum", FLOAT, nullable=True),
        sa.Column("completeness_n", COUNT, nullable=False),
        sa.Column("accuracy_sum", FLOAT, nullable=True),
        sa.Column("accuracy_n", COUNT, nullable=False),
        sa.Column("overall_sum", FLOAT, nullable=True),
        sa.Column("overall_n", COUNT, nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_sync_history_hourly")),
    )
    op.create_index("ix_sync_history_hourly_hour", "sync_history_hourly", ["hour"], unique=False)
    op.create_table(
        "sync_history_hourly_errors",
        sa.Column("row_id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("error_summary", sa.Text(), nullable=True),
        sa.Column("failures", COUNT, nullable=False),
        sa.Column("durations", COUNT, nullable=False),
        sa.Column("duration_ms_sum", COUNT, nullable=False),
        sa.Column("first_start", TS, nullable=False),
        sa.Column("last_start", TS, nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_sync_history_hourly_errors")),
    )
    op.create_index(
        "ix_sync_history_hourly_errors_hour", "sync_history_hourly_errors", ["hour"], unique=False
    )
    op.create_table(
        "sync_rollup_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rolled_from", TS, nullable=False),
        sa.Column("rolled_until", TS, nullable=False),
        sa.Column("refreshed_at", TS, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_sync_rollup_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("sync_rollup_state")
    op.drop_index("ix_sync_history_hourly_errors_hour", table_name="sync_history_hourly_errors")
    op.drop_table("sync_history_hourly_errors")
    op.drop_index("ix_sync_history_hourly_hour", table_name="sync_history_hourly")
    op.drop_table("sync_history_hourly")
