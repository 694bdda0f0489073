"""observed syncs: sync_history.observed marks the rows the asset observer wrote

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 22:30:00.000000

The asset observer sensor records syncs from Dagster's event log for assets whose code does not
call ``track()``; ``observed`` tells those rows from tracked ones. A constant default: adding the
column rewrites nothing on PostgreSQL (partitions inherit it from the parent).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("sync_history", "sync_history_archive")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("observed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("observed")
