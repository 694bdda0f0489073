"""Health colours and the status overview: seed 001's dashboard query as pure functions.

Seed 001 is the ``vantage_sync_state`` design described in docs/seeds.md.

No SQL and no Dagster here: rows from ``SyncStore.list_states()`` plus ``now`` in, plain data out,
so the rules are tested without a database and the CLI, reports and sensors agree on them. The
default limits are the alert rules' (:class:`~sync_observability.alerts.rules.Thresholds`), and
the reports hand the same ones to the SQL that colours resources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Literal

from sync_observability.alerts.rules import Thresholds
from sync_observability.storage.records import SyncState

Health = Literal["red", "yellow", "green"]

STUCK_AFTER: dt.timedelta = Thresholds().stuck_after
"""A running sync older than this is stuck (red): the stuck-run rule's default, 30 minutes."""
STALE_AFTER: dt.timedelta = Thresholds().stale_after
"""A watermark older than this is stale (yellow): the stale rule's default, 24 hours."""
HEALTH_ORDER: dict[str, int] = {"red": 0, "yellow": 1, "green": 2}


def health_indicator(
    state: SyncState,
    now: dt.datetime,
    *,
    stuck_after: dt.timedelta = STUCK_AFTER,
    stale_after: dt.timedelta = STALE_AFTER,
) -> Health:
    """The red/yellow/green health of one resource, exactly as seed 001's dashboard CASE.

    The first matching rule wins:

    1. ``failed`` -> red;
    2. ``running`` and started before ``now - stuck_after`` -> red (stuck);
    3. ``last_sync_time`` before ``now - stale_after`` -> yellow (stale; this also applies to a
       sync that is running, but not yet stuck, on an old watermark);
    4. ``never_run`` -> yellow;
    5. otherwise green.

    The comparisons are strict, as in the SQL: a sync started exactly ``stuck_after`` ago is not
    yet stuck, and a watermark exactly ``stale_after`` old is not yet stale. A NULL time never
    matches, as SQL's NULL comparison is never true.

    Args:
        state: the resource's ``sync_state`` row.
        now: the current time (timezone-aware).
        stuck_after: how long a sync may run before it counts as stuck.
        stale_after: how old the watermark may get before it counts as stale.

    Examples:
        .. code-block:: python

            health_indicator(store.get_state("accounts"), datetime.now(timezone.utc))  # "green"
    """
    status = state.last_sync_status
    if status == "failed":
        return "red"
    if (
        status == "running"
        and state.started_at is not None
        and state.started_at < now - stuck_after
    ):
        return "red"
    if state.last_sync_time is not None and state.last_sync_time < now - stale_after:
        return "yellow"
    if status == "never_run":
        return "yellow"
    return "green"


def status_overview(
    states: Iterable[SyncState],
    now: dt.datetime,
    *,
    stuck_after: dt.timedelta = STUCK_AFTER,
    stale_after: dt.timedelta = STALE_AFTER,
) -> list[dict[str, Any]]:
    """Seed 001's status overview (query 1 and the monitoring dashboard), one dict per resource.

    Keys: ``resource``, ``status``, ``last_sync_time``, ``hours_since_sync`` (float, None before
    the first success), ``running_seconds`` (int, only while running), ``records_synced``,
    ``duration_ms``, ``error_count``, ``consecutive_failures`` and ``health``. Rows come red
    first, then yellow, then green, each by resource name (the dashboard's ORDER BY).

    Args:
        states: ``sync_state`` rows, e.g. ``store.list_states()``.
        now: the current time (timezone-aware).
        stuck_after: passed to :func:`health_indicator`.
        stale_after: passed to :func:`health_indicator`.
    """
    rows = []
    for state in states:
        hours_since_sync = None
        if state.last_sync_time is not None:
            hours_since_sync = (now - state.last_sync_time).total_seconds() / 3600
        running_seconds = None
        if state.last_sync_status == "running" and state.started_at is not None:
            running_seconds = round((now - state.started_at).total_seconds())
        rows.append(
            {
                "resource": state.resource,
                "status": state.last_sync_status,
                "last_sync_time": state.last_sync_time,
                "hours_since_sync": hours_since_sync,
                "running_seconds": running_seconds,
                "records_synced": state.records_synced,
                "duration_ms": state.duration_ms,
                "error_count": len(state.errors),
                "consecutive_failures": state.consecutive_failures,
                "health": health_indicator(
                    state, now, stuck_after=stuck_after, stale_after=stale_after
                ),
            }
        )
    rows.sort(key=lambda row: (HEALTH_ORDER[row["health"]], row["resource"]))
    return rows
