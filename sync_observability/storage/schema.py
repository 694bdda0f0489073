"""The tables, as SQLAlchemy Core. Table and column names are contract (docs/contract.md).

The tables carry no schema name: on PostgreSQL the engine's ``search_path`` points at the
configured schema (``sync_observability`` by default), so the same definitions, the Alembic
migrations and users' unqualified SQL all land in it; on SQLite they live in the main database.
"Seed 00N" below: the document a table or index comes from (docs/seeds.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

# The limits and value sets that code without SQLAlchemy checks against too (validation).
from sync_observability.storage.constants import (
    ALERT_SEVERITIES,
    MAX_NAME_LENGTH,
    MAX_RULE_LENGTH,
    OPERATION_CATEGORIES,
    SYNC_TYPES,
)

SYNC_STATUSES = ("never_run", "running", "success", "failed")
RUN_STATUSES = ("running", "success", "failed")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on both engines.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type, so values are stored as naive
    UTC text in one fixed format, which keeps lexical order equal to time order; they come back
    aware. Naive datetimes are refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given; sync_observability stores UTC")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None or value.tzinfo is dt.timezone.utc:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# JSONB on PostgreSQL: the seeds' SQL calls jsonb_array_length(errors). none_as_null keeps
# Python None as SQL NULL instead of the JSON literal 'null'.
JSONType = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
# 64-bit counters on PostgreSQL; SQLite's INTEGER is already 64-bit.
Count = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
# A 64-bit key the database assigns: BIGSERIAL on PostgreSQL; on SQLite an INTEGER primary key
# is the rowid (a BIGINT one would not be).
AssignedKey = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _json_array_check(column: str, name: str) -> list[sa.CheckConstraint]:
    """The same 'is a JSON array' rule, spelled in each dialect's JSON functions."""
    return [
        sa.CheckConstraint(f"jsonb_typeof({column}) = 'array'", name=name).ddl_if(
            dialect="postgresql"
        ),
        sa.CheckConstraint(f"json_type({column}) = 'array'", name=name).ddl_if(dialect="sqlite"),
    ]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), primary_key=True),
    sa.Column("source_system", sa.String(MAX_NAME_LENGTH)),
    sa.Column("target_system", sa.String(MAX_NAME_LENGTH)),
    # The time watermark: start time (or advanced value) of the last successful sync.
    sa.Column("last_sync_time", UTCDateTime()),
    # A non-time watermark (an id, a page token, a dict of them), when the source needs one.
    sa.Column("cursor", JSONType),
    sa.Column("last_sync_status", sa.String(16), nullable=False, server_default="never_run"),
    sa.Column("records_synced", Count, nullable=False, server_default="0"),
    sa.Column("records_created", Count, nullable=False, server_default="0"),
    sa.Column("records_updated", Count, nullable=False, server_default="0"),
    sa.Column("errors", JSONType, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("completed_at", UTCDateTime()),
    sa.Column("duration_ms", Count),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_success_at", UTCDateTime()),
    sa.Column("current_sync_id", sa.String(36)),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column(
        "created_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()
    ),
    sa.Column(
        "updated_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()
    ),
    # Issue 6: when the watermark (time or cursor) last changed, and how many successful syncs
    # have finished since without changing it; the "not moving" rule reads both. Kept by the
    # finish UPDATE itself, in SQL.
    sa.Column("watermark_advanced_at", UTCDateTime()),
    sa.Column("syncs_since_advance", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(_in("last_sync_status", SYNC_STATUSES), name="last_sync_status"),
    sa.CheckConstraint("syncs_since_advance >= 0", name="syncs_since_advance"),
    sa.CheckConstraint("records_synced >= 0", name="records_synced"),
    sa.CheckConstraint("records_created >= 0", name="records_created"),
    sa.CheckConstraint("records_updated >= 0", name="records_updated"),
    sa.CheckConstraint("duration_ms >= 0", name="duration_ms"),
    sa.CheckConstraint("consecutive_failures >= 0", name="consecutive_failures"),
    sa.CheckConstraint(
        "completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at",
        name="valid_sync_timerange",
    ),
    sa.CheckConstraint(
        "last_sync_status != 'running' OR completed_at IS NULL", name="running_incomplete"
    ),
    *_json_array_check("errors", "errors_is_array"),
)

# Seed 001's indexes: current failures/running (partial), staleness, slowest syncs (partial).
sa.Index(
    "ix_sync_state_not_success",
    sync_state.c.last_sync_status,
    postgresql_where=sync_state.c.last_sync_status != "success",
    sqlite_where=sync_state.c.last_sync_status != "success",
)
# SQLite sorts NULLs last under DESC already, and rejects NULLS LAST in an index.
sa.Index("ix_sync_state_last_sync_time", sync_state.c.last_sync_time.desc().nulls_last()).ddl_if(
    dialect="postgresql"
)
sa.Index("ix_sync_state_last_sync_time", sync_state.c.last_sync_time.desc()).ddl_if(
    dialect="sqlite"
)
sa.Index(
    "ix_sync_state_duration",
    sync_state.c.duration_ms.desc(),
    postgresql_where=sync_state.c.duration_ms.is_not(None),
    sqlite_where=sync_state.c.duration_ms.is_not(None),
)


def _history_columns() -> list[sa.Column[Any]]:
    """Columns shared by sync_history and sync_history_archive."""
    return [
        sa.Column("sync_id", sa.String(36), primary_key=True),
        sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
        sa.Column("source_system", sa.String(MAX_NAME_LENGTH)),
        sa.Column("target_system", sa.String(MAX_NAME_LENGTH)),
        sa.Column("sync_type", sa.String(16), nullable=False),
        sa.Column("sync_start_time", UTCDateTime(), nullable=False),
        sa.Column("sync_end_time", UTCDateTime()),
        sa.Column("sync_status", sa.String(16), nullable=False),
        sa.Column("records_processed", Count, nullable=False, server_default="0"),
        sa.Column("records_created", Count, nullable=False, server_default="0"),
        sa.Column("records_updated", Count, nullable=False, server_default="0"),
        sa.Column("records_failed", Count, nullable=False, server_default="0"),
        sa.Column("error_message", sa.Text),
        sa.Column("errors", JSONType, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("watermark_before", UTCDateTime()),
        sa.Column("watermark_after", UTCDateTime()),
        sa.Column("cursor_before", JSONType),
        sa.Column("cursor_after", JSONType),
        sa.Column("duration_ms", Count),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("asset_key", sa.Text),
        sa.Column("partition_key", sa.Text),
        sa.Column("retry_number", sa.Integer, nullable=False, server_default="0"),
        sa.Column("metadata", JSONType, nullable=False, server_default=sa.text("'{}'")),
        # Written by the asset observer from Dagster's event log, not by track().
        sa.Column("observed", sa.Boolean, nullable=False, server_default=sa.false()),
    ]


sync_history = sa.Table(
    "sync_history",
    metadata,
    *_history_columns(),
    sa.CheckConstraint(_in("sync_status", RUN_STATUSES), name="sync_status"),
    sa.CheckConstraint(_in("sync_type", SYNC_TYPES), name="sync_type"),
    sa.CheckConstraint(
        "records_processed >= 0 AND records_created >= 0 AND records_updated >= 0 "
        "AND records_failed >= 0",
        name="record_counts",
    ),
    sa.CheckConstraint("duration_ms >= 0", name="duration_ms"),
    sa.CheckConstraint(
        "sync_end_time IS NULL OR sync_end_time >= sync_start_time", name="valid_sync_timerange"
    ),
    sa.CheckConstraint("sync_status != 'running' OR sync_end_time IS NULL", name="running_open"),
    *_json_array_check("errors", "errors_is_array"),
)

# Seed 000's query patterns: recent syncs by time, failed syncs by time (and the alert queries),
# one resource's recent runs (the tracker, slow and volume rules), system-specific history.
sa.Index("ix_sync_history_sync_start_time", sync_history.c.sync_start_time)
sa.Index("ix_sync_history_status_time", sync_history.c.sync_status, sync_history.c.sync_start_time)
# PostgreSQL: covering, so the slow-sync and volume reads are index-only scans (SQLite has no
# INCLUDE).
sa.Index(
    "ix_sync_history_resource_time",
    sync_history.c.resource,
    sync_history.c.sync_start_time.desc(),
    postgresql_include=["sync_status", "sync_id", "duration_ms", "records_processed"],
).ddl_if(dialect="postgresql")
sa.Index(
    "ix_sync_history_resource_time", sync_history.c.resource, sync_history.c.sync_start_time
).ddl_if(dialect="sqlite")
sa.Index(
    "ix_sync_history_source_time", sync_history.c.source_system, sync_history.c.sync_start_time
)


# -- sync_alerts (issue 3) -------------------------------------------------------------------

ALERT_STATUSES = ("open", "resolved")
NOTIFICATION_KINDS = ("opened", "reminder", "resolved")

sync_alerts = sa.Table(
    "sync_alerts",
    metadata,
    sa.Column("alert_id", sa.String(36), primary_key=True),
    sa.Column("rule", sa.String(MAX_RULE_LENGTH), nullable=False),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    # "rule:resource"; at most one open alert per fingerprint (the partial unique index below).
    sa.Column("fingerprint", sa.String(MAX_RULE_LENGTH + 1 + MAX_NAME_LENGTH), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", JSONType, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("opened_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime()),
    # Delivered notifications of any kind; NULL / 0 until the "opened" one got out.
    sa.Column("last_notified_at", UTCDateTime()),
    sa.Column("notify_count", sa.Integer, nullable=False, server_default="0"),
    # The finding's own context, kept for readable notifications (since when, error, run link).
    sa.Column("since", UTCDateTime()),
    sa.Column("sync_id", sa.String(36)),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("last_error", sa.Text),
    sa.Column("resolution_message", sa.Text),
    sa.Column("resolution_notified_at", UTCDateTime()),
    # At-least-once delivery: a tick claims a due notification (token + expiry) before sending,
    # so a racing tick skips it; a crashed tick's claim expires. delivered_sinks remembers which
    # sinks already accepted the notification of kind delivery_kind when another sink failed,
    # so a retry does not send it to them twice.
    sa.Column("claim_token", sa.String(36)),
    sa.Column("claimed_until", UTCDateTime()),
    sa.Column("delivery_kind", sa.String(16)),
    sa.Column("delivered_sinks", JSONType, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("last_delivery_error", sa.Text),
    sa.CheckConstraint(_in("status", ALERT_STATUSES), name="status"),
    sa.CheckConstraint(_in("severity", ALERT_SEVERITIES), name="severity"),
    sa.CheckConstraint(
        f"delivery_kind IS NULL OR {_in('delivery_kind', NOTIFICATION_KINDS)}",
        name="delivery_kind",
    ),
    sa.CheckConstraint("notify_count >= 0", name="notify_count"),
    sa.CheckConstraint(
        "(status = 'open' AND resolved_at IS NULL) "
        "OR (status = 'resolved' AND resolved_at IS NOT NULL)",
        name="resolved_at_matches_status",
    ),
    *_json_array_check("delivered_sinks", "delivered_sinks_is_array"),
)

# One open alert per rule and resource, enforced by the database: two racing ticks open one.
sa.Index(
    "ix_sync_alerts_open_fingerprint",
    sync_alerts.c.fingerprint,
    unique=True,
    postgresql_where=sync_alerts.c.status == "open",
    sqlite_where=sync_alerts.c.status == "open",
)
# Listing: open alerts and each rule's open alerts (every tick), recent alerts, one resource's.
sa.Index("ix_sync_alerts_status_opened_at", sync_alerts.c.status, sync_alerts.c.opened_at)
sa.Index("ix_sync_alerts_resource_opened_at", sync_alerts.c.resource, sync_alerts.c.opened_at)
sa.Index(
    "ix_sync_alerts_resolved_at",
    sync_alerts.c.resolved_at,
    postgresql_where=sync_alerts.c.resolved_at.is_not(None),
    sqlite_where=sync_alerts.c.resolved_at.is_not(None),
)
# Delivery candidates: open alerts plus resolved ones whose resolution is not announced yet;
# already-announced history never enters the per-tick scan.
sa.Index(
    "ix_sync_alerts_undelivered",
    sync_alerts.c.opened_at,
    postgresql_where=sync_alerts.c.resolution_notified_at.is_(None),
    sqlite_where=sync_alerts.c.resolution_notified_at.is_(None),
)


# -- sync_history_archive (issue 4) ----------------------------------------------------------

# sync_history's columns plus when retention moved the row. No CHECK constraints: every row was
# checked on its way into sync_history, and the archive must accept whatever history held. The
# primary key on sync_id is the last line of defence against archiving a row twice.
sync_history_archive = sa.Table(
    "sync_history_archive",
    metadata,
    *_history_columns(),
    sa.Column("archived_at", UTCDateTime(), nullable=False),
)

# The purge walks the archive by keyset (sync_start_time, sync_id), oldest first.
sa.Index(
    "ix_sync_history_archive_start_id",
    sync_history_archive.c.sync_start_time,
    sync_history_archive.c.sync_id,
)


# -- operation_log (issue 5) -----------------------------------------------------------------

MAX_CATEGORY_LENGTH = 32

operation_log = sa.Table(
    "operation_log",
    metadata,
    # An integer key the database assigns (BIGSERIAL / SQLite rowid): a batch of events is one
    # multi-row INSERT with nothing to generate per row on the client.
    sa.Column("event_id", AssignedKey, primary_key=True),
    sa.Column("category", sa.String(MAX_CATEGORY_LENGTH), nullable=False),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
    # No foreign key to sync_history: retention moves history rows to the archive.
    sa.Column("sync_id", sa.String(36), nullable=False),
    # What the event is about, e.g. seed 003's (symbol, ts) as "AAPL|2024-01-02T15:30:00Z".
    sa.Column("entity_key", sa.Text),
    # When it happened (the moment it was logged unless given); log_time is when it was written.
    sa.Column("event_time", UTCDateTime(), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", JSONType, nullable=False, server_default=sa.text("'{}'")),
    sa.Column(
        "log_time", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()
    ),
    sa.CheckConstraint(_in("category", OPERATION_CATEGORIES), name="category"),
    sa.CheckConstraint("jsonb_typeof(details) = 'object'", name="details_is_object").ddl_if(
        dialect="postgresql"
    ),
    sa.CheckConstraint("json_type(details) = 'object'", name="details_is_object").ddl_if(
        dialect="sqlite"
    ),
)

# Reports: events of a category over time, one resource's events over time, one sync's events.
sa.Index("ix_operation_log_category_time", operation_log.c.category, operation_log.c.event_time)
sa.Index("ix_operation_log_resource_time", operation_log.c.resource, operation_log.c.event_time)
sa.Index("ix_operation_log_sync_id", operation_log.c.sync_id)
# A time window over every category (the operational events report). Events are appended in
# time order, so a BRIN index (a summary per block range) finds the window's blocks and costs
# almost nothing per insert, unlike a B-tree (bench/bench_operations.py). PostgreSQL only.
sa.Index(
    "ix_operation_log_event_time_brin", operation_log.c.event_time, postgresql_using="brin"
).ddl_if(dialect="postgresql")


# -- watermark_changes (issue 6) -------------------------------------------------------------

WATERMARK_CHANGE_KINDS = ("advance", "set", "rewind", "refused")

# Every change of a resource's watermark, and every refused one: written in the transaction
# that made (or refused) the change. sync_id is NULL for manual changes, which carry who and why.
watermark_changes = sa.Table(
    "watermark_changes",
    metadata,
    sa.Column("change_id", AssignedKey, primary_key=True),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
    # No foreign key to sync_history: retention moves history rows to the archive.
    sa.Column("sync_id", sa.String(36)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("watermark_before", UTCDateTime()),
    sa.Column("watermark_after", UTCDateTime()),
    sa.Column("cursor_before", JSONType),
    sa.Column("cursor_after", JSONType),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
    sa.Column("changed_by", sa.String(MAX_NAME_LENGTH)),
    # Why: the operator's reason for a manual change, the refusal's code and message otherwise.
    sa.Column("reason", sa.Text),
    sa.CheckConstraint(_in("kind", WATERMARK_CHANGE_KINDS), name="kind"),
)

# `watermark show`: one resource's recent changes; rewinds look up the changes of one sync.
sa.Index(
    "ix_watermark_changes_resource_time",
    watermark_changes.c.resource,
    watermark_changes.c.changed_at,
)
sa.Index("ix_watermark_changes_sync_id", watermark_changes.c.sync_id)


# -- roll-ups of sync_history (reports) ------------------------------------------------------

# Hourly aggregates of the closed hours of sync_history, derived from it by query (see
# storage/reporting/hourly_rollups.py): never written by the tracker. Grain (hour, source, target,
# status): a few thousand rows per month whatever the number of resources. NULL names are
# kept as NULL, hence a surrogate key.
Float = sa.Float().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
sync_history_hourly = sa.Table(
    "sync_history_hourly",
    metadata,
    sa.Column("row_id", AssignedKey, primary_key=True),
    sa.Column("hour", UTCDateTime(), nullable=False),
    sa.Column("source_system", sa.String(MAX_NAME_LENGTH)),
    sa.Column("target_system", sa.String(MAX_NAME_LENGTH)),
    sa.Column("sync_status", sa.String(16), nullable=False),
    sa.Column("operations", Count, nullable=False),
    sa.Column("durations", Count, nullable=False),  # rows with a duration_ms
    sa.Column("duration_ms_sum", Count, nullable=False),
    sa.Column("duration_ms_max", Count),
    sa.Column("records_processed", Count, nullable=False),
    # Run metrics (metadata["metrics"]): sums of the runs that recorded them.
    sa.Column("cost_usd", sa.Numeric().with_variant(sa.Float(), "sqlite")),
    sa.Column("bytes_read", Count, nullable=False),
    sa.Column("bytes_written", Count, nullable=False),
    sa.Column("quality_runs", Count, nullable=False),
    sa.Column("completeness_sum", Float),
    sa.Column("completeness_n", Count, nullable=False),
    sa.Column("accuracy_sum", Float),
    sa.Column("accuracy_n", Count, nullable=False),
    sa.Column("overall_sum", Float),
    sa.Column("overall_n", Count, nullable=False),
)
sa.Index("ix_sync_history_hourly_hour", sync_history_hourly.c.hour)

# The failed runs of the closed hours per (hour, resource, first 100 characters of the
# message): seed 004's error analysis (the top-errors report).
sync_history_hourly_errors = sa.Table(
    "sync_history_hourly_errors",
    metadata,
    sa.Column("row_id", AssignedKey, primary_key=True),
    sa.Column("hour", UTCDateTime(), nullable=False),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("error_summary", sa.Text),
    sa.Column("failures", Count, nullable=False),
    sa.Column("durations", Count, nullable=False),
    sa.Column("duration_ms_sum", Count, nullable=False),
    sa.Column("first_start", UTCDateTime(), nullable=False),
    sa.Column("last_start", UTCDateTime(), nullable=False),
)
sa.Index("ix_sync_history_hourly_errors_hour", sync_history_hourly_errors.c.hour)

# Syncs started per resource and UTC day, for the whole days the hourly roll-ups hold: the
# daily counts the volume-anomalies report compares (see hourly_rollups.refresh_rollups).
# before_HH: those that started before HH:00 UTC (the same hours of earlier days as today's).
sync_history_daily = sa.Table(
    "sync_history_daily",
    metadata,
    sa.Column("day", UTCDateTime(), primary_key=True),  # midnight UTC
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), primary_key=True),
    sa.Column("operations", Count, nullable=False),
    *(
        sa.Column(f"before_{hour:02d}", Count, nullable=False, server_default="0")
        for hour in range(1, 24)
    ),
)

# Per resource, over the days [from_day, until_day) of sync_history_daily, each counted before
# ``hours``:00 UTC (24: whole days): the number of days with syncs, their syncs and the sum of
# the squared daily counts (the mean and the deviation of the volume-anomalies baseline).
# Computed once per range and hour; dropped with the days it covers.
sync_volume_baseline = sa.Table(
    "sync_volume_baseline",
    metadata,
    sa.Column("from_day", UTCDateTime(), primary_key=True),
    sa.Column("until_day", UTCDateTime(), primary_key=True),
    sa.Column("hours", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), primary_key=True),
    sa.Column("days", Count, nullable=False),
    sa.Column("operations", Count, nullable=False),
    sa.Column("squares", Count, nullable=False),
)

# The failure groups of sync_history_hourly_errors summed over one range of rolled hours
# [from_hour, until_hour) (the top-errors report's window), once per range: the report then
# reads only the groups that can reach its top rows. Dropped with the hours it covers.
sync_error_group_sums = sa.Table(
    "sync_error_group_sums",
    metadata,
    sa.Column("row_id", AssignedKey, primary_key=True),
    sa.Column("from_hour", UTCDateTime(), nullable=False),
    sa.Column("until_hour", UTCDateTime(), nullable=False),
    sa.Column("resource", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("error_summary", sa.Text),
    sa.Column("failures", Count, nullable=False),
    sa.Column("durations", Count, nullable=False),
    sa.Column("duration_ms_sum", Count, nullable=False),
    sa.Column("first_start", UTCDateTime(), nullable=False),
    sa.Column("last_start", UTCDateTime(), nullable=False),
)
sa.Index(
    "ix_sync_error_group_sums_failures",
    sync_error_group_sums.c.from_hour,
    sync_error_group_sums.c.until_hour,
    sync_error_group_sums.c.failures,
)
sa.Index(
    "ix_sync_error_group_sums_resource",
    sync_error_group_sums.c.from_hour,
    sync_error_group_sums.c.until_hour,
    sync_error_group_sums.c.resource,
)

# The runs that were still running when their hour was rolled up: left out of
# sync_history_hourly(_errors), read from sync_history by the reports, and added to the roll-ups
# by a later refresh once they have finished.
sync_rollup_pending = sa.Table(
    "sync_rollup_pending",
    metadata,
    sa.Column("sync_id", sa.String(36), primary_key=True),
    sa.Column("sync_start_time", UTCDateTime(), nullable=False),
    sa.Column("finished", sa.Boolean(), nullable=False, server_default=sa.false()),
)

# One row: the roll-ups hold exactly the hours in [rolled_from, rolled_until).
sync_rollup_state = sa.Table(
    "sync_rollup_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rolled_from", UTCDateTime(), nullable=False),
    sa.Column("rolled_until", UTCDateTime(), nullable=False),
    sa.Column("refreshed_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)


# -- ddl_events (issue 16) -------------------------------------------------------------------

MAX_STATEMENT_LENGTH = 10_000  # as operation events' messages: a migration script stays readable

# DDL recorded by the PostgreSQL event triggers `sync-obs ddl enable` installs (storage/ddl.py),
# one row per object a CREATE/ALTER/DROP/GRANT/REVOKE touched; seed 004's automatic DDL tracking.
# Written only by the triggers' functions, in the DDL's own transaction: rolled back with it.
# On SQLite the table exists and stays empty.
ddl_events = sa.Table(
    "ddl_events",
    metadata,
    sa.Column("event_id", AssignedKey, primary_key=True),
    sa.Column("event_time", UTCDateTime(), nullable=False),
    # 'CREATE TABLE', 'ALTER TABLE', 'DROP TABLE', 'GRANT', ...: PostgreSQL's command tag.
    sa.Column("command_tag", sa.String(64), nullable=False),
    # 'table', 'index', 'table column', ...; identity and schema are NULL for GRANT/REVOKE,
    # for which PostgreSQL does not name the objects.
    sa.Column("object_type", sa.String(64)),
    sa.Column("object_identity", sa.Text),
    sa.Column("schema_name", sa.String(MAX_NAME_LENGTH)),
    # The client's whole query text (current_query()), capped at MAX_STATEMENT_LENGTH.
    sa.Column("statement", sa.Text),
    sa.Column("db_session_user", sa.String(MAX_NAME_LENGTH), nullable=False),
    # NULL for a Unix-socket connection (inet_client_addr()).
    sa.Column("client_address", sa.String(64)),
    sa.Column("application_name", sa.String(MAX_NAME_LENGTH)),
    # The DDL's transaction (pg_current_xact_id()); the roll-ups and the schema-changes sensor
    # read events below the oldest running transaction, so a late commit is never skipped.
    sa.Column("transaction_id", Count, nullable=False),
)
# ddl-history and ddl-impact read a time window; user-activity one user's events; the sensor
# and the roll-up refresh the transactions since their last read.
sa.Index("ix_ddl_events_event_time", ddl_events.c.event_time)
sa.Index("ix_ddl_events_user_time", ddl_events.c.db_session_user, ddl_events.c.event_time)
sa.Index("ix_ddl_events_transaction_id", ddl_events.c.transaction_id)

# DDL events per hour, session user and client address, rolled up from ddl_events by query
# (storage/reporting/ddl.py): user-activity reads at most days x 24 x users x addresses rows
# instead of every event. client_address '' stands for a local (Unix-socket) connection.
ddl_events_hourly = sa.Table(
    "ddl_events_hourly",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("db_session_user", sa.String(MAX_NAME_LENGTH), primary_key=True),
    sa.Column("client_address", sa.String(64), primary_key=True),
    sa.Column("events", Count, nullable=False),
    sa.Column("creates", Count, nullable=False),
    sa.Column("alters", Count, nullable=False),
    sa.Column("drops", Count, nullable=False),
    sa.Column("grants", Count, nullable=False),  # GRANT and REVOKE
    sa.Column("last_event_time", UTCDateTime(), nullable=False),
)

# One row: ddl_events_hourly holds exactly the events whose rollup key (transaction_id on
# PostgreSQL, event_id on SQLite, whose writers commit in id order) is below rolled_below.
ddl_rollup_state = sa.Table(
    "ddl_rollup_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rolled_below", Count, nullable=False),
    sa.Column("refreshed_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)
