"""Health reports: seed 001's status overview and seed 004's dashboard, hourly volume, anomalies.

The dashboard and the hourly volume look back ``days`` x 24 hours from ``now`` (seed 004's
``CURRENT_TIMESTAMP - INTERVAL '24 hours'``); the anomaly baseline looks back ``days`` x 24
hours too and "today" is ``now``'s UTC date. Seeds 001 and 004: docs/seeds.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from sync_observability.health import HEALTH_ORDER, STALE_AFTER, STUCK_AFTER
from sync_observability.reports import maths
from sync_observability.reports._common import (
    as_of,
    check_days,
    frame,
    frame_from_columns,
    parse_hour,
)
from sync_observability.storage.reporting import queries
from sync_observability.storage.store import SyncStore

STATUS_COLUMNS = (
    "resource",
    "status",
    "last_sync_time",
    "hours_since_sync",
    "running_seconds",
    "records_synced",
    "duration_ms",
    "error_count",
    "consecutive_failures",
    "health",
)


def status(
    store: SyncStore,
    *,
    days: int = 1,
    now: dt.datetime | None = None,
    include_healthy: bool = False,
) -> pd.DataFrame:
    """The resources that need attention (seed 001's red and yellow), red first.

    The troubleshooting question is "which resources are red or yellow?": by default only those
    are listed (read through the ``sync_state`` indexes, not every row). ``include_healthy``
    lists every resource, green ones last (``sync-obs report status --all``). The colour is
    computed in SQL with :func:`sync_observability.health.health_indicator`'s rules (the CLI's
    ``sync-obs status`` and the health checks use the same). ``days`` is accepted for a uniform
    signature and unused: the state is the latest one whatever the window.

    Returns:
        ``resource``, ``status``, ``last_sync_time``, ``hours_since_sync``, ``running_seconds``,
        ``records_synced``, ``duration_ms``, ``error_count``, ``consecutive_failures``,
        ``health``; by colour, then resource.
    """
    check_days(days)
    now = as_of(now)
    columns = queries.state_health(
        store,
        now=now,
        include_healthy=include_healthy,
        stuck_after=STUCK_AFTER,
        stale_after=STALE_AFTER,
    )
    columns["hours_since_sync"] = [
        None if last is None else (now - last).total_seconds() / 3600
        for last in columns["last_sync_time"]
    ]
    columns["running_seconds"] = [
        round((now - started).total_seconds())
        if status == "running" and started is not None
        else None
        for status, started in zip(columns["status"], columns.pop("started_at"), strict=True)
    ]
    health, resources = columns["health"], columns["resource"]
    order = sorted(range(len(resources)), key=lambda i: (HEALTH_ORDER[health[i]], resources[i]))
    return frame_from_columns(
        {name: [values[i] for i in order] for name, values in columns.items()}, STATUS_COLUMNS
    )


def dashboard(store: SyncStore, *, days: int = 1, now: dt.datetime | None = None) -> pd.DataFrame:
    """Seed 004's enterprise dashboard: one labelled metric per row.

    Metrics (``{w}`` is the window: ``24h`` for one day, else ``{days}d``):

    - ``total_operations_{w}``: syncs started in the window. NORMAL, or WARNING when none.
    - ``success_rate_{w}``: percent of the finished ones that succeeded. EXCELLENT from 99,
      GOOD from 95, WARNING from 90, else CRITICAL.
    - ``avg_duration_ms``: mean duration of the finished ones, in seed 004's speed bands:
      GOOD up to 1 s, NORMAL to 10 s, WARNING to 60 s, else CRITICAL.
    - ``failed_operations_{w}``: NORMAL at 0, CRITICAL above 10 % of the finished, else WARNING.
    - ``running_operations``: syncs of the window still running (NORMAL; stuck ones turn their
      resource red).
    - ``red_resources`` / ``yellow_resources``: resources by seed 001's colour, now.
    - ``system_health_score``: 70 % success rate + 30 % resource colours (green 100, yellow 50,
      red 0). EXCELLENT from 95, GOOD from 85, WARNING from 70, else CRITICAL.

    A metric without data (no finished syncs) has no value and the status ``NO_DATA``.

    Returns:
        ``metric_name``, ``metric_value``, ``metric_unit``, ``status``.
    """
    now = as_of(now)
    days = check_days(days)
    w = "24h" if days == 1 else f"{days}d"
    summary = queries.window_summary(store, since=maths.rolling_window(now, days), until=now)
    finished = summary["successful"] + summary["failed"]
    rate = maths.percent(summary["successful"], finished)
    avg = summary["avg_duration_ms"]
    counts = queries.colour_counts(store, now=now, stuck_after=STUCK_AFTER, stale_after=STALE_AFTER)
    score = maths.health_score(rate, maths.resource_health_from_counts(counts))
    rows: list[dict[str, Any]] = [
        _metric(
            f"total_operations_{w}",
            summary["operations"],
            "count",
            maths.operations_label(summary["operations"]),
        ),
        _metric(f"success_rate_{w}", rate, "percentage", maths.success_rate_label(rate)),
        _metric(
            "avg_duration_ms",
            None if avg is None else round(avg, 2),
            "milliseconds",
            maths.duration_label(avg),
        ),
        _metric(
            f"failed_operations_{w}",
            summary["failed"],
            "count",
            maths.failures_label(summary["failed"], finished),
        ),
        _metric("running_operations", summary["running"], "count", "NORMAL"),
        _metric(
            "red_resources", counts["red"], "count", maths.colour_count_label("red", counts["red"])
        ),
        _metric(
            "yellow_resources",
            counts["yellow"],
            "count",
            maths.colour_count_label("yellow", counts["yellow"]),
        ),
        _metric("system_health_score", score, "percentage", maths.health_score_label(score)),
    ]
    return frame(rows, ("metric_name", "metric_value", "metric_unit", "status"))


def _metric(name: str, value: Any, unit: str, label: str) -> dict[str, Any]:
    return {"metric_name": name, "metric_value": value, "metric_unit": unit, "status": label}


def hourly_volume(
    store: SyncStore, *, days: int = 1, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Syncs per UTC hour with seed 004's spike and drop detection, newest hour first.

    Every hour of the window is listed, an hour without syncs as 0: the seed's ``GROUP BY``
    would skip it, hiding the sharpest drop of all. An hour is a SPIKE_DETECTED above twice the
    previous hour's syncs, a DROP_DETECTED below half of them, else NORMAL.

    Returns:
        ``hour`` (its start, aware UTC), ``operations``, ``records_processed``,
        ``previous_hour`` (the previous hour's operations; None for the first hour),
        ``trend_analysis``.
    """
    now = as_of(now)
    since = maths.rolling_window(now, check_days(days))
    by_hour = {
        parse_hour(row["hour"]): row for row in queries.hourly_counts(store, since=since, until=now)
    }
    hour = since.replace(minute=0, second=0, microsecond=0)
    last = now.replace(minute=0, second=0, microsecond=0)
    rows: list[dict[str, Any]] = []
    previous: int | None = None
    while hour <= last:
        found = by_hour.get(hour)
        operations = found["operations"] if found else 0
        rows.append(
            {
                "hour": hour,
                "operations": operations,
                "records_processed": found["records_processed"] if found else 0,
                "previous_hour": previous,
                "trend_analysis": maths.hourly_trend(operations, previous),
            }
        )
        previous = operations
        hour += dt.timedelta(hours=1)
    rows.reverse()
    return frame(
        rows, ("hour", "operations", "records_processed", "previous_hour", "trend_analysis")
    )


def volume_anomalies(
    store: SyncStore,
    *,
    days: int = 30,
    now: dt.datetime | None = None,
    include_normal: bool = False,
) -> pd.DataFrame:
    """Resources syncing unusually often or rarely today: seed 004's 2 sigma rule.

    As in the seed, per resource: the daily number of syncs over the window's UTC days *with*
    syncs (today included) gives a mean and a sample standard deviation; today's count above
    mean + 2 sd is ANOMALY_HIGH, below mean - 2 sd ANOMALY_LOW (decided on the exact integer
    counts, see :func:`maths.count_anomaly`). By default only those anomalies are listed;
    ``include_normal`` lists, as the seed's query does, every resource that synced today and
    whose count varies (sd > 0), NORMAL ones included (``sync-obs report volume-anomalies
    --all``). Most syncs today first, then by resource.

    Today is compared with the *same hours* of earlier days, not with whole days (a partial
    day against whole ones made every resource look quiet until evening): the hours are those
    of ``now``'s UTC day that have ended (at 14:35, 00:00 to 14:00), and the window is today
    plus the ``days`` UTC days before it, each counted over those hours. In the first hour of
    a UTC day no hour has ended: nothing is assessed (no rows).

    Returns:
        ``resource``, ``today_operations``, ``avg_daily_operations``,
        ``stddev_daily_operations``, ``active_days``, ``activity_assessment``.
    """
    now = as_of(now)
    found = queries.daily_volume_stats(
        store,
        until=now,
        days=check_days(days),
        beyond_sigmas=None if include_normal else maths.ANOMALY_SIGMAS,
    )
    rows = []
    for row in found:
        mean, stddev = maths.count_stats(row["days"], row["operations"], row["squares"])
        rows.append(
            {
                "resource": row["resource"],
                "today_operations": row["today"],
                "avg_daily_operations": round(mean, 2),
                "stddev_daily_operations": None if stddev is None else round(stddev, 2),
                "active_days": row["days"],
                "activity_assessment": maths.count_anomaly(
                    row["today"], row["days"], row["operations"], row["squares"]
                ),
            }
        )
    return frame(
        rows,
        (
            "resource",
            "today_operations",
            "avg_daily_operations",
            "stddev_daily_operations",
            "active_days",
            "activity_assessment",
        ),
    )
