"""operation_log: a BRIN index on event_time (PostgreSQL) for the operational events report

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 17:00:00.000000
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Events are appended in time order, so block ranges hold narrow time ranges: a BRIN index
    # finds a window's blocks for almost nothing per insert. SQLite has no BRIN: no index there.
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_operation_log_event_time_brin",
            "operation_log",
            ["event_time"],
            postgresql_using="brin",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_operation_log_event_time_brin", table_name="operation_log")
