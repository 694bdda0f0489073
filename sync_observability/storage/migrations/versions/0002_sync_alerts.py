"""sync_alerts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OPEN = "status = 'open'"
_RESOLVED = "resolved_at IS NOT NULL"
_UNANNOUNCED = "resolution_notified_at IS NULL"


def upgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    json_type = "jsonb_typeof" if is_pg else "json_type"
    op.create_table(
        "sync_alerts",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("fingerprint", sa.String(length=320), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("last_notified_at", TS, nullable=True),
        sa.Column("notify_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("since", TS, nullable=True),
        sa.Column("sync_id", sa.String(length=36), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("resolution_message", sa.Text(), nullable=True),
        sa.Column("resolution_notified_at", TS, nullable=True),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("delivery_kind", sa.String(length=16), nullable=True),
        sa.Column("delivered_sinks", JSON, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("last_delivery_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('open', 'resolved')", name=op.f("ck_sync_alerts_status")),
        sa.CheckConstraint(
            "severity IN ('critical', 'warning')", name=op.f("ck_sync_alerts_severity")
        ),
        sa.CheckConstraint(
            "delivery_kind IS NULL OR delivery_kind IN ('opened', 'reminder', 'resolved')",
            name=op.f("ck_sync_alerts_delivery_kind"),
        ),
        sa.CheckConstraint("notify_count >= 0", name=op.f("ck_sync_alerts_notify_count")),
        sa.CheckConstraint(
            "(status = 'open' AND resolved_at IS NULL) "
            "OR (status = 'resolved' AND resolved_at IS NOT NULL)",
            name=op.f("ck_sync_alerts_resolved_at_matches_status"),
        ),
        sa.CheckConstraint(
            f"{json_type}(delivered_sinks) = 'array'",
            name=op.f("ck_sync_alerts_delivered_sinks_is_array"),
        ),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_sync_alerts")),
    )
    op.create_index(
        "ix_sync_alerts_open_fingerprint",
        "sync_alerts",
        ["fingerprint"],
        unique=True,
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    op.create_index(
        "ix_sync_alerts_status_opened_at", "sync_alerts", ["status", "opened_at"], unique=False
    )
    op.create_index(
        "ix_sync_alerts_resource_opened_at",
        "sync_alerts",
        ["resource", "opened_at"],
        unique=False,
    )
    op.create_index(
        "ix_sync_alerts_resolved_at",
        "sync_alerts",
        ["resolved_at"],
        unique=False,
        postgresql_where=sa.text(_RESOLVED),
        sqlite_where=sa.text(_RESOLVED),
    )
    op.create_index(
        "ix_sync_alerts_undelivered",
        "sync_alerts",
        ["opened_at"],
        unique=False,
        postgresql_where=sa.text(_UNANNOUNCED),
        sqlite_where=sa.text(_UNANNOUNCED),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_alerts_undelivered", table_name="sync_alerts")
    op.drop_index("ix_sync_alerts_resolved_at", table_name="sync_alerts")
    op.drop_index("ix_sync_alerts_resource_opened_at", table_name="sync_alerts")
    op.drop_index("ix_sync_alerts_status_opened_at", table_name="sync_alerts")
    op.drop_index("ix_sync_alerts_open_fingerprint", table_name="sync_alerts")
    op.drop_table("sync_alerts")
