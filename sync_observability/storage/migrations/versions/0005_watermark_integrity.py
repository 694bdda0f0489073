"""watermark integrity: sync_state's not-moving columns and the watermark_changes trail

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
CHANGE_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CHECK = "syncs_since_advance >= 0"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # A plain ADD COLUMN: a batch "move and copy" of sync_state would have to carry its
        # partial indexes and JSON CHECK constraints over by reflection.
        op.execute("ALTER TABLE sync_state ADD COLUMN watermark_advanced_at DATETIME")
        op.execute(
            "ALTER TABLE sync_state ADD COLUMN syncs_since_advance INTEGER DEFAULT '0' NOT NULL "
            f"CONSTRAINT ck_sync_state_syncs_since_advance CHECK ({_CHECK})"
        )
    else:
        op.add_column("sync_state", sa.Column("watermark_advanced_at", TS, nullable=True))
        op.add_column(
            "sync_state",
            sa.Column("syncs_since_advance", sa.Integer(), server_default="0", nullable=False),
        )
        op.create_check_constraint(op.f("ck_sync_state_syncs_since_advance"), "sync_state", _CHECK)
    # When a watermark last moved is unknown for rows written before this revision; the last
    # success is the latest it can have been.
    op.execute(
        "UPDATE sync_state SET watermark_advanced_at = last_success_at "
        "WHERE last_sync_time IS NOT NULL OR cursor IS NOT NULL"
    )
    op.create_table(
        "watermark_changes",
        sa.Column("change_id", CHANGE_ID, autoincrement=True, nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("sync_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("watermark_before", TS, nullable=True),
        sa.Column("watermark_after", TS, nullable=True),
        sa.Column("cursor_before", JSON, nullable=True),
        sa.Column("cursor_after", JSON, nullable=True),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("changed_by", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('advance', 'set', 'rewind', 'refused')",
            name=op.f("ck_watermark_changes_kind"),
        ),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_watermark_changes")),
    )
    op.create_index(
        "ix_watermark_changes_resource_time",
        "watermark_changes",
        ["resource", "changed_at"],
        unique=False,
    )
    op.create_index("ix_watermark_changes_sync_id", "watermark_changes", ["sync_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_watermark_changes_sync_id", table_name="watermark_changes")
    op.drop_index("ix_watermark_changes_resource_time", table_name="watermark_changes")
    op.drop_table("watermark_changes")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column unless a constraint names it: drop that first by
        # rebuilding is out of scope here; the columns stay (harmless to older code).
        return
    op.drop_constraint(op.f("ck_sync_state_syncs_since_advance"), "sync_state", type_="check")
    op.drop_column("sync_state", "syncs_since_advance")
    op.drop_column("sync_state", "watermark_advanced_at")
