"""Daily cost and quality trends (seed 002) and operational events by category (seed 003).

Cost, bytes and quality scores are the run metrics a sync records with ``record_metrics``
(:mod:`sync_observability.metrics`), stored under ``metrics`` in ``sync_history.metadata``; the
roll-ups are computed by query from the runs, not kept in a second table.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from sync_observability.reports._common import as_of, check_days, frame, parse_day
from sync_observability.reports.maths import quality_trend, start_of_day_window
from sync_observability.storage import report_queries as queries
from sync_observability.storage.rollups import daily_rollups
from sync_observability.storage.store import SyncStore


def cost_trends(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Seed 002's CostTrends: per UTC day and resource, executions, cost, duration and volume.

    Built on :func:`sync_observability.storage.rollups.daily_rollups` (one query over the
    history and its archive; cost and bytes are 0 where no run recorded them).
    ``avg_cost_per_execution`` is the day's cost over its executions, as in the seed
    (25.50 over 3 executions is 8.50).

    Returns:
        ``date``, ``resource``, ``total_executions``, ``successful_executions``,
        ``failed_executions``, ``total_cost_usd``, ``avg_cost_per_execution``,
        ``total_duration_seconds``, ``records_processed``, ``bytes_read``, ``bytes_written``;
        newest day first, then by resource.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    until = now + dt.timedelta(microseconds=1)  # daily_rollups excludes its end; ours is now
    rows = [
        {
            "date": r.day,
            "resource": r.resource,
            "total_executions": r.executions,
            "successful_executions": r.successes,
            "failed_executions": r.failures,
            "total_cost_usd": r.total_cost_usd,
            "avg_cost_per_execution": round(r.total_cost_usd / r.executions, 6),
            "total_duration_seconds": r.total_duration_ms / 1000,
            "records_processed": r.records_processed,
            "bytes_read": r.bytes_read,
            "bytes_written": r.bytes_written,
        }
        for r in daily_rollups(store, since, until)
    ]
    rows.sort(key=lambda r: (-r["date"].toordinal(), r["resource"]))
    return frame(
        rows,
        (
            "date",
            "resource",
            "total_executions",
            "successful_executions",
            "failed_executions",
            "total_cost_usd",
            "avg_cost_per_execution",
            "total_duration_seconds",
            "records_processed",
            "bytes_read",
            "bytes_written",
        ),
    )


def quality_trends(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Seed 002's DataQualityHistory by UTC day: mean scores per resource and their trend.

    Only runs that recorded a quality score count. ``trend`` compares the day's overall score
    with the resource's previous day in the window: ``improving`` or ``declining`` beyond 0.01,
    else ``stable``; None on its first day.

    Returns:
        ``date``, ``resource``, ``runs``, ``completeness``, ``accuracy``, ``overall_quality``,
        ``trend``; newest day first, then by resource.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.daily_quality(store, since=since, until=now)
    for row in rows:
        row["date"] = parse_day(row.pop("day"))
    rows.sort(key=lambda r: (r["resource"], r["date"]))
    previous: dict[str, float | None] = {}
    for row in rows:
        row["trend"] = quality_trend(row["overall_quality"], previous.get(row["resource"]))
        previous[row["resource"]] = row["overall_quality"]
    rows.sort(key=lambda r: (-r["date"].toordinal(), r["resource"]))
    return frame(
        rows,
        ("date", "resource", "runs", "completeness", "accuracy", "overall_quality", "trend"),
    )


def operation_events(
    store: SyncStore, *, days: int = 7, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Operational events (``operation_log``) per category, most frequent first.

    Returns:
        ``category``, ``events``, ``resources`` and ``syncs`` (distinct ones involved),
        ``first_event``, ``last_event``.
    """
    columns = ("category", "events", "resources", "syncs", "first_event", "last_event")
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.operation_events_by_category(store, since=since, until=now)
    rows.sort(key=lambda r: (-r["events"], r["category"]))
    return frame(rows, columns)
