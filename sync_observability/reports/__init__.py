"""Reports over the sync tables as pandas DataFrames: one function per report.

Every report is ``report(store, *, days=..., now=None) -> pandas.DataFrame`` and answers the
same on SQLite and PostgreSQL. ``REPORTS`` maps the names ``sync-obs report NAME`` takes to them.

Examples:
    .. code-block:: python

        from sync_observability import SyncStore
        from sync_observability.reports import REPORTS, dashboard

        store = SyncStore.from_url("sqlite:///sync.db")
        print(dashboard(store))
        print(REPORTS["failures"](store, days=1))

:func:`cold_history` is not one of them: it reads the cold archive's Parquet files (a folder
or ``s3://...``), not a store.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pandas as pd

from sync_observability.reports.cold import cold_history
from sync_observability.reports.dashboard import dashboard, hourly_volume, status, volume_anomalies
from sync_observability.reports.ddl import ddl_history, ddl_impact, user_activity
from sync_observability.reports.history import (
    daily_operations,
    daily_volume,
    failures,
    performance,
    top_errors,
)
from sync_observability.reports.trends import cost_trends, operation_events, quality_trends
from sync_observability.storage.store import SyncStore


class Report(Protocol):
    """The shape of every report function."""

    def __call__(
        self, store: SyncStore, *, days: int = ..., now: dt.datetime | None = None
    ) -> pd.DataFrame: ...


REPORTS: dict[str, Report] = {
    "status": status,
    "dashboard": dashboard,
    "failures": failures,
    "performance": performance,
    "daily-volume": daily_volume,
    "daily-operations": daily_operations,
    "hourly-volume": hourly_volume,
    "volume-anomalies": volume_anomalies,
    "top-errors": top_errors,
    "operation-events": operation_events,
    "cost-trends": cost_trends,
    "quality-trends": quality_trends,
    "ddl-history": ddl_history,
    "ddl-impact": ddl_impact,
    "user-activity": user_activity,
}
"""Report name (as ``sync-obs report`` takes it) -> report function."""

__all__ = [
    "REPORTS",
    "Report",
    "cold_history",
    "cost_trends",
    "daily_operations",
    "daily_volume",
    "dashboard",
    "ddl_history",
    "ddl_impact",
    "failures",
    "hourly_volume",
    "operation_events",
    "performance",
    "quality_trends",
    "status",
    "top_errors",
    "user_activity",
    "volume_anomalies",
]
