"""Known sync history for the report tests, written through the store with fixed timestamps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

from sync_observability import SyncOutcome, SyncStore
from sync_observability.metrics import RunMetricsMixin
from sync_observability.storage.operation_store import PendingEvent, insert_operations

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
LONG_PARSE_ERROR = "PARSE_ERROR: invalid JSON in record " + "r" * 120
TIMEOUT = "API_TIMEOUT: timed out after 30s"


def at(text: str) -> dt.datetime:
    """``'06-15 11:30'`` -> 2025-06-15 11:30 UTC."""
    return dt.datetime.strptime(f"2025-{text}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    resource: str
    start: dt.datetime
    seconds: int | None  # None: still running
    status: str = "success"
    records: int = 0
    source: str | None = None
    target: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None  # record_metrics' keyword arguments


def add_runs(store: SyncStore, runs: list[Run]) -> dict[Run, str]:
    """Start and finish each run in start-time order; returns each run's sync_id."""
    ids = {}
    for run in sorted(runs, key=lambda r: r.start):
        sync_id = str(uuid.uuid4())
        ids[run] = sync_id
        store.start_sync(
            sync_id=sync_id,
            resource=run.resource,
            started_at=run.start,
            source_system=run.source,
            target_system=run.target,
        )
        if run.seconds is None:
            continue
        errors = []
        if run.error:
            errors = [{"code": run.error.split(":")[0], "message": run.error}]
        store.finish_sync(
            sync_id=sync_id,
            resource=run.resource,
            started_at=run.start,
            outcome=SyncOutcome(
                status=run.status,
                ended_at=run.start + dt.timedelta(seconds=run.seconds),
                records_processed=run.records,
                error_message=run.error,
                errors=errors,
                metadata={"metrics": run_metrics(**run.metrics)} if run.metrics else {},
            ),
        )
    return ids


def run_metrics(**recorded: Any) -> dict[str, Any]:
    """The ``metrics`` a SyncRun stores after ``record_metrics(**recorded)`` (the real layout)."""
    metrics = RunMetricsMixin()
    metrics._init_run_metrics()
    metrics.record_metrics(**recorded)
    return metrics.run_metrics


def accounts(start: str, seconds: int | None, **kw: Any) -> Run:
    return Run("vantage/accounts", at(start), seconds, source="vantage", target="warehouse", **kw)


def funds(start: str, seconds: int | None, **kw: Any) -> Run:
    return Run("vantage/funds", at(start), seconds, source="vantage", target="warehouse", **kw)


def contacts(start: str, seconds: int | None, **kw: Any) -> Run:
    return Run("crm/contacts", at(start), seconds, source="crm", target="lake", **kw)


# The history most report tests read, at NOW = 2025-06-15 12:30 UTC.
OLD = accounts("05-01 10:00", 10, records=999)  # outside every 30-day window
CONTACTS_0610 = contacts("06-10 09:00", 30, records=60)
FUNDS_0613 = funds("06-13 08:00", 10, status="failed", error=TIMEOUT)
ACCOUNTS_0614 = accounts(
    "06-14 09:00",
    90,
    records=50,
    metrics={
        "total_cost_usd": 1.0,
        "bytes_read": 500,
        "bytes_written": 250,
        "completeness": 0.90,
        "accuracy": 0.88,
        "overall_quality": 0.89,
    },
)
CONTACTS_0615 = contacts("06-15 09:00", 10, records=40)
ACCOUNTS_1000 = accounts(
    "06-15 10:00",
    60,
    records=100,
    metrics={
        "total_cost_usd": 1.5,
        "bytes_read": 1000,
        "bytes_written": 500,
        "completeness": 0.98,
        "accuracy": 0.94,
        "overall_quality": 0.95,
    },
)
ACCOUNTS_1100 = accounts(
    "06-15 11:00",
    120,
    records=300,
    metrics={
        "total_cost_usd": 2.5,
        "bytes_read": 3000,
        "bytes_written": 1500,
        "completeness": 0.96,
        "accuracy": 0.90,
        "overall_quality": 0.93,
    },
)
ACCOUNTS_1130 = accounts(
    "06-15 11:30",
    30,
    status="failed",
    error=LONG_PARSE_ERROR,
    metrics={"total_cost_usd": 0.25},
)
FUNDS_1200 = funds("06-15 12:00", 20, status="failed", error=TIMEOUT)
DEALS_RUNNING = Run("crm/deals", at("06-15 12:20"), None, source="crm", target="lake")

KNOWN_HISTORY = [
    OLD,
    CONTACTS_0610,
    FUNDS_0613,
    ACCOUNTS_0614,
    CONTACTS_0615,
    ACCOUNTS_1000,
    ACCOUNTS_1100,
    ACCOUNTS_1130,
    FUNDS_1200,
    DEALS_RUNNING,
]

# The performance report of KNOWN_HISTORY as of NOW (30 days), slowest system first.
KNOWN_PERFORMANCE = [
    {
        "source_system": "vantage",
        "target_system": "warehouse",
        "sync_count": 3,  # 05-01 is outside the 30 days; failures do not count
        "avg_duration_seconds": 90.0,
        "max_duration_seconds": 120.0,
    },
    {
        "source_system": "crm",
        "target_system": "lake",
        "sync_count": 2,
        "avg_duration_seconds": 20.0,
        "max_duration_seconds": 30.0,
    },
]


def log_events(
    store: SyncStore, run: Run, sync_id: str, events: list[tuple[str, dt.datetime]]
) -> None:
    """Write operational events (category, event_time) of one sync through the store."""
    insert_operations(
        store,
        [
            PendingEvent(
                category=category,
                entity_key=None,
                event_time=when,
                message=f"{category} at {when.isoformat()}",
                details_json=json.dumps({}),
            )
            for category, when in events
        ],
        resource=run.resource,
        sync_id=sync_id,
        written_before=0,
        log_time=max(when for _, when in events),
    )
