"""Daily cost and volume per resource (seed 002's CostTrends): a read-only query, no table.

Seed 002 is the ETL-tracking design described in docs/seeds.md.

Each call computes its days from the history; unlike :mod:`.hourly_rollups`, nothing is kept.
Executions, successes, failures, duration and records come from ``sync_history`` (and
``sync_history_archive``, where retention moved older rows), cost and data volume from the run
metrics the tracker stores in ``metadata["metrics"]`` (see ``sync_observability/metrics.py``).
A day is a UTC calendar day of the sync's start time.

The JSON is read with each dialect's functions (``->``/``->>`` on PostgreSQL, ``json_extract`` on
SQLite); cost is rounded to micro-dollars in SQL so both engines return the same figure (SQLite
sums floats, PostgreSQL sums ``numeric``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from sync_observability.storage.schema import UTCDateTime
from sync_observability.storage.store import SyncStore
from sync_observability.validation import check_aware, check_name

COST_DECIMALS = 6


@dataclasses.dataclass(frozen=True, kw_only=True)
class DailyRollup:
    """One resource's syncs that started on one UTC day.

    ``executions`` counts every sync, running ones included; ``successes`` and ``failures``
    the finished ones. Sums skip syncs that did not record the figure (0 when none did).
    """

    day: dt.date
    resource: str
    executions: int
    successes: int
    failures: int
    total_cost_usd: float
    total_duration_ms: int
    records_processed: int
    bytes_read: int
    bytes_written: int


def _query(dialect: str, *, bounded: bool, one_resource: bool) -> sa.TextClause:
    if dialect == "postgresql":
        day = "CAST(sync_start_time AT TIME ZONE 'UTC' AS date)"

        def metric(name: str, sql_type: str) -> str:
            return f"CAST(metadata -> 'metrics' ->> '{name}' AS {sql_type})"

        cost = f"ROUND(SUM({metric('total_cost_usd', 'numeric')}), {COST_DECIMALS})"
    else:
        day = "date(sync_start_time)"

        def metric(name: str, sql_type: str) -> str:
            return f"json_extract(metadata, '$.metrics.{name}')"

        cost = f"ROUND(SUM({metric('total_cost_usd', 'real')}), {COST_DECIMALS})"
    where = "sync_start_time >= :since"
    if bounded:
        where += " AND sync_start_time < :until"
    if one_resource:
        where += " AND resource = :resource"
    runs = f"""
        SELECT resource, sync_start_time, sync_status, duration_ms, records_processed, metadata
        FROM {{table}} WHERE {where}
    """
    return (
        sa.text(
            f"""
            WITH runs AS (
                {runs.format(table="sync_history")}
                UNION ALL
                {runs.format(table="sync_history_archive")}
            )
            SELECT {day} AS day,
                resource,
                COUNT(*) AS executions,
                SUM(CASE WHEN sync_status = 'success' THEN 1 ELSE 0 END) AS successes,
                SUM(CASE WHEN sync_status = 'failed' THEN 1 ELSE 0 END) AS failures,
                COALESCE({cost}, 0) AS total_cost_usd,
                COALESCE(SUM(duration_ms), 0) AS total_duration_ms,
                COALESCE(SUM(records_processed), 0) AS records_processed,
                COALESCE(SUM({metric("bytes_read", "bigint")}), 0) AS bytes_read,
                COALESCE(SUM({metric("bytes_written", "bigint")}), 0) AS bytes_written
            FROM runs
            GROUP BY {day}, resource
            ORDER BY day, resource
            """
        )
        .bindparams(
            sa.bindparam("since", type_=UTCDateTime()),
            *([sa.bindparam("until", type_=UTCDateTime())] if bounded else []),
        )
        .columns(
            day=sa.String() if dialect == "sqlite" else sa.Date(),
            resource=sa.String(),
        )
    )


def daily_rollups(
    store: SyncStore,
    since: dt.datetime,
    until: dt.datetime | None = None,
    *,
    resource: str | None = None,
) -> list[DailyRollup]:
    """Per UTC day and resource: executions, successes, failures, cost, duration, volume.

    Args:
        store: the store to read.
        since: first sync start time included (timezone-aware).
        until: first sync start time excluded; None for no upper bound.
        resource: only this resource.

    Returns:
        One row per (day, resource) that had a sync, ordered by day then resource.
    """
    since = check_aware("since", since)
    params: dict[str, Any] = {"since": since}
    if until is not None:
        params["until"] = check_aware("until", until)
    if resource is not None:
        params["resource"] = check_name("resource", resource)
    query = _query(store.dialect, bounded=until is not None, one_resource=resource is not None)

    def read(conn: sa.Connection) -> list[DailyRollup]:
        return [_row(row) for row in conn.execute(query, params).mappings()]

    return store.db.read(read, "compute daily roll-ups")


def _row(row: Any) -> DailyRollup:
    day = row["day"]
    return DailyRollup(
        day=dt.date.fromisoformat(day) if isinstance(day, str) else day,
        resource=row["resource"],
        executions=int(row["executions"]),
        successes=int(row["successes"]),
        failures=int(row["failures"]),
        total_cost_usd=float(row["total_cost_usd"]),
        total_duration_ms=int(row["total_duration_ms"]),
        records_processed=int(row["records_processed"]),
        bytes_read=int(row["bytes_read"]),
        bytes_written=int(row["bytes_written"]),
    )
