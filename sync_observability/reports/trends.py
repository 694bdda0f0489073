"""Daily cost and quality trends (seed 002) and operational events by category (seed 003).

Cost, bytes and quality scores are the run metrics a sync records with ``record_metrics``
(:mod:`sync_observability.metrics`), stored under ``metrics`` in ``sync_history.metadata``; the
roll-ups are computed by query from the runs, not kept in a second table. Seeds 002 and 003:
docs/seeds.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from sync_observability.reports._common import as_of, check_days, frame, parse_day
from sync_observability.reports.maths import quality_trend, start_of_day_window
from sync_observability.storage.reporting import queries
from sync_observability.storage.reporting.daily_costs import daily_rollups
from sync_observability.storage.store import SyncStore

COST_COLUMNS = (
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
)


def cost_trends(
    store: SyncStore,
    *,
    days: int = 30,
    now: dt.datetime | None = None,
    resource: str | None = None,
    per_resource: bool = False,
) -> pd.DataFrame:
    """Seed 002's CostTrends: per UTC day, executions, cost, duration and volume.

    Seed 002 keys CostTrends by (date, job) and reads it as "the cost trend of a job over a date
    range". By default the report shows the budget view: one row per day over every resource
    (``resource`` is None), from the hourly roll-ups. ``resource`` gives that resource's days
    (``sync-obs report cost-trends --resource NAME``); ``per_resource`` gives one row per day and
    resource for every resource (``--all``: 300,000 rows a month at 10,000 resources).

    Cost and bytes are 0 where no run recorded them; runs moved to the archive count.
    ``avg_cost_per_execution`` is the day's cost over its executions, as in the seed (25.50
    over 3 executions is 8.50).

    Returns:
        ``date``, ``resource``, ``total_executions``, ``successful_executions``,
        ``failed_executions``, ``total_cost_usd``, ``avg_cost_per_execution``,
        ``total_duration_seconds``, ``records_processed``, ``bytes_read``, ``bytes_written``;
        newest day first, then by resource.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    if resource is None and not per_resource:
        totals = queries.daily_totals(store, since=since, until=now)
        rows = [
            _cost_row(
                parse_day(t["day"]),
                None,
                t["executions"],
                t["successes"],
                t["failures"],
                t["total_cost_usd"],
                t["total_duration_ms"],
                t["records_processed"],
                t["bytes_read"],
                t["bytes_written"],
            )
            for t in totals
        ]
        rows.sort(key=lambda r: -r["date"].toordinal())
        return frame(rows, COST_COLUMNS)
    until = now + dt.timedelta(microseconds=1)  # daily_rollups excludes its end; ours is now
    rows = [
        _cost_row(
            r.day,
            r.resource,
            r.executions,
            r.successes,
            r.failures,
            r.total_cost_usd,
            r.total_duration_ms,
            r.records_processed,
            r.bytes_read,
            r.bytes_written,
        )
        for r in daily_rollups(store, since, until, resource=resource)
    ]
    rows.sort(key=lambda r: (-r["date"].toordinal(), r["resource"]))
    return frame(rows, COST_COLUMNS)


def _cost_row(
    day: dt.date,
    resource: str | None,
    executions: int,
    successes: int,
    failures: int,
    cost: float,
    duration_ms: int,
    records: int,
    bytes_read: int,
    bytes_written: int,
) -> dict[str, Any]:
    return {
        "date": day,
        "resource": resource,
        "total_executions": executions,
        "successful_executions": successes,
        "failed_executions": failures,
        "total_cost_usd": cost,
        "avg_cost_per_execution": round(cost / executions, 6),
        "total_duration_seconds": duration_ms / 1000,
        "records_processed": records,
        "bytes_read": bytes_read,
        "bytes_written": bytes_written,
    }


QUALITY_DECIMALS = 6  # means of 4-decimal scores; rounding hides summation order


def quality_trends(
    store: SyncStore,
    *,
    days: int = 30,
    now: dt.datetime | None = None,
    resource: str | None = None,
    per_resource: bool = False,
) -> pd.DataFrame:
    """Seed 002's DataQualityHistory by UTC day: mean scores and their trend.

    Seed 002 reads it per job over a time range ("Get Quality Trend"). By default one row per
    day over every resource (``resource`` None), from the hourly roll-ups; ``resource`` gives
    that resource's days, ``per_resource`` one row per day and resource for all of them. Only
    runs that recorded a quality score count. ``trend`` compares the day's overall score with
    the previous day in the window (of the same resource): ``improving`` or ``declining``
    beyond 0.01, else ``stable``; None on the first day. Means are rounded to 6 places.

    Returns:
        ``date``, ``resource``, ``runs``, ``completeness``, ``accuracy``, ``overall_quality``,
        ``trend``; newest day first, then by resource.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    if resource is None and not per_resource:
        rows = [
            {
                "day": t["day"],
                "resource": None,
                "runs": t["quality_runs"],
                "completeness": t["completeness"],
                "accuracy": t["accuracy"],
                "overall_quality": t["overall_quality"],
            }
            for t in queries.daily_totals(store, since=since, until=now)
            if t["quality_runs"]
        ]
    else:
        rows = queries.daily_quality(store, since=since, until=now, resource=resource)
    for row in rows:
        row["date"] = parse_day(row.pop("day"))
        for key in ("completeness", "accuracy", "overall_quality"):
            if row[key] is not None:
                row[key] = round(row[key], QUALITY_DECIMALS)
    rows.sort(key=lambda r: (r["resource"] or "", r["date"]))
    previous: dict[str | None, float | None] = {}
    for row in rows:
        row["trend"] = quality_trend(row["overall_quality"], previous.get(row["resource"]))
        previous[row["resource"]] = row["overall_quality"]
    rows.sort(key=lambda r: (-r["date"].toordinal(), r["resource"] or ""))
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
