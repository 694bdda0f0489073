"""operation_log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
EVENT_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CATEGORIES = (
    "data_quality_error",
    "dedup_conflict",
    "authority_conflict",
    "cast_error",
    "upsert_failure",
    "concurrency_issue",
    "backup",
    "maintenance",
    "migration",
    "data_import",
    "export",
)


def upgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    json_type = "jsonb_typeof" if is_pg else "json_type"
    categories = ", ".join(f"'{c}'" for c in CATEGORIES)
    op.create_table(
        "operation_log",
        sa.Column("event_id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("sync_id", sa.String(length=36), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=True),
        sa.Column("event_time", TS, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("log_time", TS, server_default=sa.func.current_timestamp(), nullable=False),
        sa.CheckConstraint(f"category IN ({categories})", name=op.f("ck_operation_log_category")),
        sa.CheckConstraint(
            f"{json_type}(details) = 'object'", name=op.f("ck_operation_log_details_is_object")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_operation_log")),
    )
    op.create_index(
        "ix_operation_log_category_time", "operation_log", ["category", "event_time"], unique=False
    )
    op.create_index(
        "ix_operation_log_resource_time", "operation_log", ["resource", "event_time"], unique=False
    )
    op.create_index("ix_operation_log_sync_id", "operation_log", ["sync_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_operation_log_sync_id", table_name="operation_log")
    op.drop_index("ix_operation_log_resource_time", table_name="operation_log")
    op.drop_index("ix_operation_log_category_time", table_name="operation_log")
    op.drop_table("operation_log")
