"""Reports over ``sync_history``: seed 000's query patterns, daily operations and top errors.

Seeds 000 and 004 are described in docs/seeds.md.

Windows of whole days start at midnight UTC, as the seeds' ``CURRENT_DATE - INTERVAL 'N days'``
does (with the session in UTC), and end at ``now``: syncs started after ``now`` are left out,
so a report for a past ``now`` reads as it would have then.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from sync_observability.reports._common import as_of, check_days, frame, parse_day
from sync_observability.reports.maths import percent, start_of_day_window
from sync_observability.storage.reporting import queries
from sync_observability.storage.store import SyncStore

FAILURES_LIMIT = 50  # seed 000's failed-syncs query
TOP_ERRORS_LIMIT = 20


def failures(store: SyncStore, *, days: int = 7, now: dt.datetime | None = None) -> pd.DataFrame:
    """Recent failed syncs with their errors, newest first (seed 000's failed-syncs query).

    At most 50 rows, like the seed's ``LIMIT 50``.

    Args:
        store: the store to read.
        days: from midnight UTC this many days before today.
        now: the report's time (default: the current time).

    Returns:
        One row per failed sync: ``sync_id``, ``resource``, ``source_system``,
        ``target_system``, ``sync_start_time``, ``sync_end_time``, ``error_message``,
        ``error_count`` (entries in ``errors``) and ``error_codes`` (their codes, comma-joined).

    Examples:
        .. code-block:: python

            failures(store, days=1)
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.failed_syncs(store, since=since, until=now, limit=FAILURES_LIMIT)
    for row in rows:
        errors = row.pop("errors") or []
        row["error_count"] = len(errors)
        codes = [str(e["code"]) for e in errors if isinstance(e, dict) and e.get("code")]
        row["error_codes"] = ",".join(dict.fromkeys(codes))
    return frame(
        rows,
        (
            "sync_id",
            "resource",
            "source_system",
            "target_system",
            "sync_start_time",
            "sync_end_time",
            "error_message",
            "error_count",
            "error_codes",
        ),
    )


def performance(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Successful syncs' duration by source and target system, slowest first (seed 000).

    Returns:
        ``source_system``, ``target_system``, ``sync_count``, ``avg_duration_seconds``,
        ``max_duration_seconds``; ties by system names, missing names last.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.performance_by_system(store, since=since, until=now)
    for row in rows:
        row["avg_duration_seconds"] = _seconds(row.pop("avg_duration_ms"))
        row["max_duration_seconds"] = _seconds(row.pop("max_duration_ms"))
    rows.sort(
        key=lambda r: (
            -(r["avg_duration_seconds"] or 0.0),
            _name_key(r["source_system"]),
            _name_key(r["target_system"]),
        )
    )
    return frame(
        rows,
        (
            "source_system",
            "target_system",
            "sync_count",
            "avg_duration_seconds",
            "max_duration_seconds",
        ),
    )


def daily_volume(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Records processed by successful syncs per UTC day and source system (seed 000).

    Returns:
        ``sync_date`` (a date), ``source_system``, ``sync_count``, ``total_records``; newest day
        first, then the largest volume.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.daily_volume_by_source(store, since=since, until=now)
    for row in rows:
        row["sync_date"] = parse_day(row.pop("day"))
    rows.sort(
        key=lambda r: (
            -r["sync_date"].toordinal(),
            -r["total_records"],
            _name_key(r["source_system"]),
        )
    )
    return frame(rows, ("sync_date", "source_system", "sync_count", "total_records"))


def daily_operations(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Every UTC day of the window: syncs, failures, success rate, duration, records.

    Seed 004's "custom performance analysis" (``daily_stats``), over all syncs. Days without a
    sync are included with zeros (and no duration or rate), so the days form a continuous axis.

    Returns:
        ``operation_date``, ``operations``, ``failed_operations``, ``success_rate_pct``
        (non-failed share, 2 places), ``avg_duration_ms`` (2 places), ``records_processed``;
        newest day first.
    """
    now = as_of(now)
    days = check_days(days)
    since = start_of_day_window(now, days)
    by_day = {
        parse_day(row["day"]): row
        for row in queries.daily_operations(store, since=since, until=now)
    }
    rows = []
    for offset in range(days + 1):
        day = now.date() - dt.timedelta(days=offset)
        found = by_day.get(day)
        operations = found["operations"] if found else 0
        failed = found["failed"] if found else 0
        avg = found["avg_duration_ms"] if found else None
        rows.append(
            {
                "operation_date": day,
                "operations": operations,
                "failed_operations": failed,
                "success_rate_pct": percent(operations - failed, operations),
                "avg_duration_ms": None if avg is None else round(avg, 2),
                "records_processed": found["records_processed"] if found else 0,
            }
        )
    return frame(
        rows,
        (
            "operation_date",
            "operations",
            "failed_operations",
            "success_rate_pct",
            "avg_duration_ms",
            "records_processed",
        ),
    )


def top_errors(store: SyncStore, *, days: int = 7, now: dt.datetime | None = None) -> pd.DataFrame:
    """The most frequent failures by resource and message (seed 004's error analysis).

    Messages are grouped by their first 100 characters, as the seed's
    ``LEFT(error_message, 100)``. At most 20 rows, most frequent first, then most recent.

    Returns:
        ``resource``, ``error_summary``, ``error_count``, ``first_occurrence``,
        ``last_occurrence``, ``avg_duration_before_failure_ms``.
    """
    now = as_of(now)
    since = start_of_day_window(now, check_days(days))
    rows = queries.error_groups(store, since=since, until=now, limit=TOP_ERRORS_LIMIT)
    return frame(
        rows,
        (
            "resource",
            "error_summary",
            "error_count",
            "first_occurrence",
            "last_occurrence",
            "avg_duration_before_failure_ms",
        ),
    )


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _name_key(name: str | None) -> tuple[bool, str]:
    """Sorts names alphabetically with missing ones last, the same on both engines."""
    return (name is None, name or "")
