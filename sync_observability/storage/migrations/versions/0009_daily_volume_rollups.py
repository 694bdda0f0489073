"""roll-ups: syncs per resource and day, volume-anomalies baselines, runs still running

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 18:30:00.000000

``sync_history_daily`` holds the syncs per resource of every whole UTC day the hourly roll-ups
hold, ``sync_volume_baseline`` each resource's days, syncs and squared daily syncs over a range
of those days. Both are filled by query from ``sync_history`` (history_rollup.refresh_rollups).
``sync_rollup_pending`` lists the runs still running when their hour was rolled up (an hour no
longer waits for them to close).
The hourly roll-ups are emptied here, so that the next refresh rolls every closed hour again and
fills the daily counts for the same days (one pass over the history, as on a first upgrade).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_history_daily",
        sa.Column("day", TS, nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("operations", COUNT, nullable=False),
        sa.PrimaryKeyConstraint("day", "resource", name=op.f("pk_sync_history_daily")),
    )
    op.create_table(
        "sync_volume_baseline",
        sa.Column("from_day", TS, nullable=False),
        sa.Column("until_day", TS, nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("days", COUNT, nullable=False),
        sa.Column("operations", COUNT, nullable=False),
        sa.Column("squares", COUNT, nullable=False),
        sa.PrimaryKeyConstraint(
            "from_day", "until_day", "resource", name=op.f("pk_sync_volume_baseline")
        ),
    )
    op.create_table(
        "sync_rollup_pending",
        sa.Column("sync_id", sa.String(length=36), nullable=False),
        sa.Column("sync_start_time", TS, nullable=False),
        sa.Column("finished", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("sync_id", name=op.f("pk_sync_rollup_pending")),
    )
    for table in ("sync_rollup_state", "sync_history_hourly", "sync_history_hourly_errors"):
        op.execute(sa.text(f"DELETE FROM {table}"))


def downgrade() -> None:
    op.drop_table("sync_rollup_pending")
    op.drop_table("sync_volume_baseline")
    op.drop_table("sync_history_daily")
