"""The DDL reports (seed 004): ddl-history, ddl-impact and user-activity, from ``ddl_events``.

``ddl_events`` is filled by the PostgreSQL event triggers of ``sync-obs ddl enable``
(:mod:`sync_observability.storage.ddl`); on SQLite these reports are empty.

user-activity's 2 sigma rule compares the *same hours* of each day: at 14:37 UTC, today's DDL
from 00:00 to 14:00 against the DDL from 00:00 to 14:00 of each earlier day, not a partial day
against whole days (which would call every morning ANOMALY_LOW). Whole hours only: the hour under
way is left out (the roll-up counts per hour). In the first hour of a UTC day the assessed day is
yesterday, whole.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pandas as pd

from sync_observability.reports import maths
from sync_observability.reports._common import as_of, check_days, frame
from sync_observability.storage.reporting import ddl as queries
from sync_observability.storage.store import SyncStore

HISTORY_COLUMNS = (
    "event_time",
    "db_session_user",
    "command_tag",
    "object_type",
    "object_identity",
    "schema_name",
    "client_address",
    "application_name",
    "statement",
    "event_id",
)
IMPACT_COLUMNS = (
    "schema_name",
    "object_type",
    "object_identity",
    "changes",
    "creates",
    "alters",
    "drops",
    "grants",
    "users",
    "last_change",
    "last_command",
    "last_by",
)
ACTIVITY_COLUMNS = (
    "db_session_user",
    "ddl_operations",
    "creates",
    "alters",
    "drops",
    "grants",
    "client_addresses",
    "last_activity",
    "day",
    "hours",
    "day_operations",
    "avg_operations",
    "stddev_operations",
    "baseline_days",
    "activity_assessment",
)
DEFAULT_LIMIT = 200


def ddl_history(
    store: SyncStore, *, days: int = 7, now: dt.datetime | None = None, limit: int = DEFAULT_LIMIT
) -> pd.DataFrame:
    """Seed 004's "automatic DDL history": the DDL of the last ``days`` x 24 hours, newest
    first, at most ``limit`` events.

    Returns:
        ``event_time``, ``db_session_user``, ``command_tag``, ``object_type``,
        ``object_identity``, ``schema_name``, ``client_address``, ``application_name``,
        ``statement`` (the client's query, up to 10,000 characters), ``event_id``.
    """
    now = as_of(now)
    since = maths.rolling_window(now, check_days(days))
    return frame(queries.history(store, since=since, until=now, limit=limit), HISTORY_COLUMNS)


def ddl_impact(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None, limit: int = 50
) -> pd.DataFrame:
    """Seed 004's DDL impact analysis, per object: the ``limit`` objects changed most in the
    last ``days`` x 24 hours, with their creates, alters, drops and grants (GRANT and REVOKE),
    how many session users changed them, and the last change (when, which command, by whom).

    GRANT and REVOKE do not name their objects (PostgreSQL reports no identity): they are one
    row per object type with an empty identity.

    Returns:
        ``schema_name``, ``object_type``, ``object_identity``, ``changes``, ``creates``,
        ``alters``, ``drops``, ``grants``, ``users``, ``last_change``, ``last_command``,
        ``last_by``; most changes first.
    """
    now = as_of(now)
    since = maths.rolling_window(now, check_days(days))
    return frame(queries.impact(store, since=since, until=now, limit=limit), IMPACT_COLUMNS)


def assessed_hours(now: dt.datetime) -> tuple[dt.datetime, int]:
    """The day user-activity assesses (its midnight UTC) and how many of its first hours.

    Examples:
        14:37 UTC: today, 14 hours (00:00 to 14:00). 00:20 UTC: yesterday, 24 hours.
    """
    now = now.astimezone(dt.timezone.utc)
    midnight = dt.datetime.combine(now.date(), dt.time(), tzinfo=dt.timezone.utc)
    if now.hour == 0:
        return midnight - dt.timedelta(days=1), 24
    return midnight, now.hour


def user_activity(
    store: SyncStore, *, days: int = 30, now: dt.datetime | None = None
) -> pd.DataFrame:
    """Seed 004's user activity tracking and security anomaly detection, per session user.

    Activity: the user's DDL from ``days`` UTC days before the assessed day up to ``now``, by
    kind, the distinct client addresses it came from (a local socket counts as one) and its
    last DDL. Anomaly (seed 004's 2 sigma): the user's DDL in the assessed day's first
    ``hours`` hours (see :func:`assessed_hours`) against the same hours of each of the ``days``
    earlier days on which the user ran DDL in them (seed 004 averages days with activity):
    above mean + 2 sd is ANOMALY_HIGH, below mean - 2 sd ANOMALY_LOW (exact integer test,
    :func:`maths.count_anomaly`), NO_DATA with fewer than 2 such days, else NORMAL.

    Reads the hourly roll-up (``ddl_events_hourly``) and the events after it.

    Returns:
        ``db_session_user``, ``ddl_operations``, ``creates``, ``alters``, ``drops``, ``grants``,
        ``client_addresses``, ``last_activity``, ``day``, ``hours``, ``day_operations``,
        ``avg_operations``, ``stddev_operations``, ``baseline_days``, ``activity_assessment``;
        most DDL on the assessed day first, then most DDL overall, then by user.
    """
    now = as_of(now)
    days = check_days(days)
    day_start, hours = assessed_hours(now)
    since = day_start - dt.timedelta(days=days)
    found = queries.user_days(store, since=since, until=now, same_hours=hours)
    assessed = day_start.date().isoformat()
    users: dict[str, dict[str, Any]] = {}
    early: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in found:
        user = row["db_session_user"]
        totals = users.setdefault(
            user,
            {"ddl_operations": 0, "creates": 0, "alters": 0, "drops": 0, "grants": 0}
            | {"addresses": set(), "last_activity": None},
        )
        totals["ddl_operations"] += row["events"]
        for kind in ("creates", "alters", "drops", "grants"):
            totals[kind] += row[kind]
        totals["addresses"].add(row["client_address"])
        if totals["last_activity"] is None or row["last_event_time"] > totals["last_activity"]:
            totals["last_activity"] = row["last_event_time"]
        early[user][row["day"]] += row["early"]
    rows = []
    for user, totals in users.items():
        today = early[user].get(assessed, 0)
        baseline = [n for day, n in early[user].items() if day < assessed and n > 0]
        n, total, squares = len(baseline), sum(baseline), sum(x * x for x in baseline)
        mean, stddev = maths.count_stats(n, total, squares) if n else (None, None)
        rows.append(
            {
                "db_session_user": user,
                **{k: totals[k] for k in ("ddl_operations", "creates", "alters", "drops")},
                "grants": totals["grants"],
                "client_addresses": len(totals["addresses"]),
                "last_activity": totals["last_activity"],
                "day": day_start.date(),
                "hours": hours,
                "day_operations": today,
                "avg_operations": None if mean is None else round(mean, 2),
                "stddev_operations": None if stddev is None else round(stddev, 2),
                "baseline_days": n,
                "activity_assessment": "NO_DATA"
                if n < 2
                else maths.count_anomaly(today, n, total, squares),
            }
        )
    rows.sort(key=lambda r: (-r["day_operations"], -r["ddl_operations"], r["db_session_user"]))
    return frame(rows, ACTIVITY_COLUMNS)


__all__ = ["assessed_hours", "ddl_history", "ddl_impact", "user_activity"]
