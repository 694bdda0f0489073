"""same-hours daily counts: each day's syncs per resource before every hour of the day

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 01:30:00.000000

The volume-anomalies report compares today's syncs with the *same hours* of earlier days (a
partial day against whole days made every resource look quiet in the morning). So that it still
reads one value per resource and day, ``sync_history_daily`` gains ``before_01`` to
``before_23``: the day's syncs that started before 01:00, ..., 23:00 UTC (``operations`` is all
of them). ``sync_volume_baseline`` is keyed by the hour too (``hours``: each day counted before
that hour; 24 for whole days); it is a cache, recreated empty.

``sync_error_group_sums`` caches the top-errors report's failure groups summed over its window's
rolled hours, once per window, so that the report reads only the groups that can reach its top
rows.

The roll-ups are emptied, so that the next refresh rolls every closed hour again and fills the
new columns (one pass over the history, as on a first upgrade).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
ROW_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
HOURS = range(1, 24)

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _baseline(*, with_hours: bool) -> None:
    keys = ["from_day", "until_day", *(["hours"] if with_hours else []), "resource"]
    op.create_table(
        "sync_volume_baseline",
        sa.Column("from_day", TS, nullable=False),
        sa.Column("until_day", TS, nullable=False),
        *([sa.Column("hours", sa.Integer(), nullable=False)] if with_hours else []),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("days", COUNT, nullable=False),
        sa.Column("operations", COUNT, nullable=False),
        sa.Column("squares", COUNT, nullable=False),
        sa.PrimaryKeyConstraint(*keys, name=op.f("pk_sync_volume_baseline")),
    )


def upgrade() -> None:
    for table in (
        "sync_rollup_state",
        "sync_rollup_pending",
        "sync_history_hourly",
        "sync_history_hourly_errors",
        "sync_history_daily",
    ):
        op.execute(sa.text(f"DELETE FROM {table}"))
    for hour in HOURS:
        op.add_column(
            "sync_history_daily",
            sa.Column(f"before_{hour:02d}", COUNT, server_default="0", nullable=False),
        )
    op.drop_table("sync_volume_baseline")
    _baseline(with_hours=True)
    op.create_table(
        "sync_error_group_sums",
        sa.Column("row_id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("from_hour", TS, nullable=False),
        sa.Column("until_hour", TS, nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("error_summary", sa.Text(), nullable=True),
        sa.Column("failures", COUNT, nullable=False),
        sa.Column("durations", COUNT, nullable=False),
        sa.Column("duration_ms_sum", COUNT, nullable=False),
        sa.Column("first_start", TS, nullable=False),
        sa.Column("last_start", TS, nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_sync_error_group_sums")),
    )
    for name, column in (("failures", "failures"), ("resource", "resource")):
        op.create_index(
            f"ix_sync_error_group_sums_{name}",
            "sync_error_group_sums",
            ["from_hour", "until_hour", column],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("sync_error_group_sums")
    op.drop_table("sync_volume_baseline")
    _baseline(with_hours=False)
    with op.batch_alter_table("sync_history_daily") as batch:
        for hour in HOURS:
            batch.drop_column(f"before_{hour:02d}")
