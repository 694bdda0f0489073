"""ddl_events: DDL recorded by PostgreSQL event triggers, with its hourly roll-up

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 01:30:00.000000

The tables only: ``sync-obs ddl enable`` installs the trigger functions and event triggers
(they need a superuser, which a migration must not). On SQLite the tables exist and stay empty.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

# Types frozen as they were at this revision (migrations never import the live schema).
TS = sa.DateTime(timezone=True)
KEY = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
COUNT = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ddl_events",
        sa.Column("event_id", KEY, autoincrement=True, nullable=False),
        sa.Column("event_time", TS, nullable=False),
        sa.Column("command_tag", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=True),
        sa.Column("object_identity", sa.Text(), nullable=True),
        sa.Column("schema_name", sa.String(length=255), nullable=True),
        sa.Column("statement", sa.Text(), nullable=True),
        sa.Column("db_session_user", sa.String(length=255), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("application_name", sa.String(length=255), nullable=True),
        sa.Column("transaction_id", COUNT, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_ddl_events")),
    )
    op.create_index("ix_ddl_events_event_time", "ddl_events", ["event_time"], unique=False)
    op.create_index(
        "ix_ddl_events_user_time", "ddl_events", ["db_session_user", "event_time"], unique=False
    )
    op.create_index("ix_ddl_events_transaction_id", "ddl_events", ["transaction_id"], unique=False)
    op.create_table(
        "ddl_events_hourly",
        sa.Column("hour", TS, nullable=False),
        sa.Column("db_session_user", sa.String(length=255), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("events", COUNT, nullable=False),
        sa.Column("creates", COUNT, nullable=False),
        sa.Column("alters", COUNT, nullable=False),
        sa.Column("drops", COUNT, nullable=False),
        sa.Column("grants", COUNT, nullable=False),
        sa.Column("last_event_time", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "db_session_user", "client_address", name=op.f("pk_ddl_events_hourly")
        ),
    )
    op.create_table(
        "ddl_rollup_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rolled_below", COUNT, nullable=False),
        sa.Column("refreshed_at", TS, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ddl_rollup_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ddl_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("ddl_rollup_state")
    op.drop_table("ddl_events_hourly")
    op.drop_index("ix_ddl_events_transaction_id", table_name="ddl_events")
    op.drop_index("ix_ddl_events_user_time", table_name="ddl_events")
    op.drop_index("ix_ddl_events_event_time", table_name="ddl_events")
    op.drop_table("ddl_events")
