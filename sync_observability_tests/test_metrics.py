"""Run metrics (validation, layout) and the daily roll-up query, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import InvalidInputError, SyncOutcome, SyncRun, SyncStore, SyncTracker
from sync_observability.metrics import RunMetricsMixin
from sync_observability.storage.reporting.daily_costs import DailyRollup, daily_rollups
from sync_observability.storage.schema import sync_history_archive
from sync_observability_tests.test_operations import start_host

UTC = dt.timezone.utc
DAY1 = dt.datetime(2024, 1, 21, tzinfo=UTC)
DAY2 = DAY1 + dt.timedelta(days=1)


class Metrics(RunMetricsMixin):
    def __init__(self) -> None:
        self._init_run_metrics()


# -- record_metrics --------------------------------------------------------------------------


def test_seed_002_metrics_are_kept_in_its_layout() -> None:
    m = Metrics()
    assert m.run_metrics == {}
    m.record_metrics(
        total_cost_usd=8.50,
        cost_parts={"compute_cost_usd": 6.20, "storage_cost_usd": 1.80},
        bytes_read=250 * 2**30,
        bytes_written=180 * 2**30,
        peak_memory_mb=5120,
        completeness=0.98,
        accuracy=0.94,
        overall_quality=0.95,
        tags={"environment": "production", "team": "data-engineering"},
    )
    m.record_metrics(cost_parts={"network_cost_usd": 0.5}, tags={"priority": "high"})
    assert m.run_metrics == {
        "total_cost_usd": 8.5,
        "cost_breakdown": {
            "compute_cost_usd": 6.2,
            "storage_cost_usd": 1.8,
            "network_cost_usd": 0.5,
        },
        "bytes_read": 250 * 2**30,
        "bytes_written": 180 * 2**30,
        "peak_memory_mb": 5120.0,
        "data_quality": {"completeness_score": 0.98, "accuracy_score": 0.94, "overall_score": 0.95},
        "tags": {"environment": "production", "team": "data-engineering", "priority": "high"},
    }
    assert json.loads(json.dumps(m.run_metrics, allow_nan=False)) == m.run_metrics


def test_later_values_replace_earlier_ones_and_total_defaults_to_the_parts() -> None:
    m = Metrics()
    m.record_metrics(cost_parts={"compute_cost_usd": 1.25, "storage_cost_usd": 0.5})
    assert m.run_metrics["total_cost_usd"] == 1.75
    m.record_metrics(cost_parts={"compute_cost_usd": 2.0}, bytes_read=10, completeness=0)
    m.record_metrics(bytes_read=12, accuracy=1)
    assert m.run_metrics == {
        "total_cost_usd": 2.5,
        "cost_breakdown": {"compute_cost_usd": 2.0, "storage_cost_usd": 0.5},
        "bytes_read": 12,
        "data_quality": {"completeness_score": 0.0, "accuracy_score": 1.0},
    }
    m.record_metrics(total_cost_usd=3)  # an explicit total wins over the parts
    assert m.run_metrics["total_cost_usd"] == 3.0
    run_metrics = m.run_metrics
    run_metrics["tags"] = {"x": "y"}  # a copy: changing it changes nothing recorded
    assert "tags" not in m.run_metrics


BAD_METRICS: list[tuple[dict[str, Any], str, Any]] = [
    ({"total_cost_usd": -0.01}, "total_cost_usd", -0.01),
    ({"total_cost_usd": math.inf}, "total_cost_usd", math.inf),
    ({"total_cost_usd": "8.50"}, "total_cost_usd", "8.50"),
    ({"total_cost_usd": True}, "total_cost_usd", True),
    ({"peak_memory_mb": -1}, "peak_memory_mb", -1),
    ({"bytes_read": 1.5}, "bytes_read", 1.5),
    ({"bytes_written": -3}, "bytes_written", -3),
    ({"completeness": 95}, "completeness", 95),
    ({"accuracy": -0.1}, "accuracy", -0.1),
    ({"overall_quality": 1.0000001}, "overall_quality", 1.0000001),
    ({"cost_parts": [1.0]}, "cost_parts", [1.0]),
    ({"cost_parts": {"compute_cost_usd": -1}}, "cost_parts['compute_cost_usd']", -1),
    ({"cost_parts": {"": 1}}, "cost_parts key", ""),
    ({"cost_parts": {3: 1}}, "cost_parts key", 3),
    ({"tags": {"team": 7}}, "tags['team']", 7),
    ({"tags": {"": "x"}}, "tags key", ""),
    ({"tags": ["team"]}, "tags", ["team"]),
]


def test_bad_metrics_name_field_and_value_and_record_nothing() -> None:
    m = Metrics()
    m.record_metrics(bytes_read=1, tags={"team": "a"})
    before = m.run_metrics
    for kwargs, field, value in BAD_METRICS:
        # A valid field in the same call must not be recorded either.
        with pytest.raises(InvalidInputError) as raised:
            m.record_metrics(**({"peak_memory_mb": 99, "tags": {"team": "b"}} | kwargs))
        assert (raised.value.field, raised.value.value) == (field, value), kwargs
        assert f"invalid {field}=" in str(raised.value)
        assert m.run_metrics == before, kwargs
    nan = float("nan")
    with pytest.raises(InvalidInputError, match="finite"):
        m.record_metrics(completeness=nan)
    assert m.run_metrics == before


def test_quality_scores_are_fractions_the_message_says_so() -> None:
    with pytest.raises(InvalidInputError, match=r"between 0 and 1 \(a fraction"):
        Metrics().record_metrics(overall_quality=95.0)


# -- daily roll-ups ----------------------------------------------------------------------------


def run(
    store: SyncStore,
    resource: str,
    started_at: dt.datetime,
    *,
    seconds: float,
    status: str = "success",
    processed: int = 0,
    **metrics: Any,
) -> SyncRun:
    """One finished sync, with its metrics in metadata as the tracker stores them."""
    host = start_host(store, resource, started_at)
    host.record_metrics(**metrics)
    host._flush_operation_log()
    store.finish_sync(
        sync_id=host.sync_id,
        resource=resource,
        started_at=started_at,
        outcome=_outcome(status, started_at + dt.timedelta(seconds=seconds), processed, host),
    )
    return host


def _outcome(status: str, ended_at: dt.datetime, processed: int, host: SyncRun) -> SyncOutcome:
    return SyncOutcome(
        status=status,
        ended_at=ended_at,
        records_processed=processed,
        metadata={"metrics": host.run_metrics, "operations": host.operation_counts},
    )


def _archive_row(store: SyncStore, resource: str, started_at: dt.datetime) -> None:
    """A sync that retention already moved to the archive."""
    row = {
        "sync_id": str(uuid.uuid4()),
        "resource": resource,
        "sync_type": "incremental",
        "sync_start_time": started_at,
        "sync_end_time": started_at + dt.timedelta(seconds=4),
        "sync_status": "failed",
        "records_processed": 5,
        "duration_ms": 4000,
        "metadata": {"metrics": {"total_cost_usd": 0.4, "bytes_read": 7}},
        "archived_at": started_at + dt.timedelta(days=100),
    }

    def write(conn: sa.Connection) -> None:
        conn.execute(sa.insert(sync_history_archive), row)

    store.db.write(write, "archive a row")


@pytest.fixture
def history(store: SyncStore) -> SyncStore:
    """Two days of two resources, with floats that SQLite and PostgreSQL sum differently."""
    prices, accounts = "vendor/prices", "crm/accounts"
    run(store, prices, DAY1, seconds=1.5, processed=100, total_cost_usd=0.1, bytes_read=1000)
    run(
        store,
        prices,
        DAY1 + dt.timedelta(hours=6),
        seconds=2,
        processed=50,
        cost_parts={"compute_cost_usd": 0.15, "network_cost_usd": 0.05},
        bytes_read=2**40,
        bytes_written=512,
    )
    run(store, prices, DAY1 + dt.timedelta(hours=12), seconds=0.25, status="failed")
    # The last microsecond of DAY1 in UTC, given in another time zone.
    plus2 = dt.timezone(dt.timedelta(hours=2))
    last = (DAY2 - dt.timedelta(microseconds=1)).astimezone(plus2)
    run(store, prices, last, seconds=1, processed=1, total_cost_usd=0.7)
    run(store, accounts, DAY1 + dt.timedelta(hours=1), seconds=60, processed=7)
    run(store, prices, DAY2, seconds=3, processed=9, total_cost_usd=8.5, bytes_written=10)
    store.start_sync(  # still running: an execution, neither success nor failure
        sync_id=str(uuid.uuid4()), resource=accounts, started_at=DAY2 + dt.timedelta(hours=3)
    )
    _archive_row(store, accounts, DAY1 + dt.timedelta(hours=2))
    _archive_row(store, accounts, DAY1 - dt.timedelta(seconds=1))  # the day before: excluded
    return store


def test_daily_rollups_give_exact_figures(history: SyncStore) -> None:
    assert daily_rollups(history, DAY1) == [
        DailyRollup(
            day=DAY1.date(),
            resource="crm/accounts",
            executions=2,
            successes=1,
            failures=1,
            total_cost_usd=0.4,
            total_duration_ms=64_000,
            records_processed=12,
            bytes_read=7,
            bytes_written=0,
        ),
        DailyRollup(
            day=DAY1.date(),
            resource="vendor/prices",
            executions=4,
            successes=3,
            failures=1,
            total_cost_usd=1.0,  # 0.1 + (0.15 + 0.05) + 0.7
            total_duration_ms=1500 + 2000 + 250 + 1000,
            records_processed=151,
            bytes_read=1000 + 2**40,
            bytes_written=512,
        ),
        DailyRollup(
            day=DAY2.date(),
            resource="crm/accounts",
            executions=1,
            successes=0,
            failures=0,
            total_cost_usd=0.0,
            total_duration_ms=0,
            records_processed=0,
            bytes_read=0,
            bytes_written=0,
        ),
        DailyRollup(
            day=DAY2.date(),
            resource="vendor/prices",
            executions=1,
            successes=1,
            failures=0,
            total_cost_usd=8.5,
            total_duration_ms=3000,
            records_processed=9,
            bytes_read=0,
            bytes_written=10,
        ),
    ]


def test_daily_rollups_filter_by_range_and_resource(history: SyncStore) -> None:
    day1_only = daily_rollups(history, DAY1, DAY2)
    assert [(r.day, r.resource) for r in day1_only] == [
        (DAY1.date(), "crm/accounts"),
        (DAY1.date(), "vendor/prices"),
    ]
    earlier = daily_rollups(history, DAY1 - dt.timedelta(days=1), DAY1)
    assert [(r.day, r.executions, r.failures) for r in earlier] == [
        (DAY1.date() - dt.timedelta(days=1), 1, 1)
    ]
    prices = daily_rollups(history, DAY1, resource="vendor/prices")
    assert [(r.day, r.executions) for r in prices] == [(DAY1.date(), 4), (DAY2.date(), 1)]
    assert daily_rollups(history, DAY2 + dt.timedelta(days=1)) == []


def test_daily_rollups_validate_their_arguments(store: SyncStore) -> None:
    with pytest.raises(InvalidInputError, match="since"):
        daily_rollups(store, dt.datetime(2024, 1, 1))
    with pytest.raises(InvalidInputError, match="until"):
        daily_rollups(store, DAY1, "2024-02-01")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="resource"):
        daily_rollups(store, DAY1, resource="")


# -- end to end through the tracker ------------------------------------------------------------


def test_metrics_recorded_in_a_tracked_sync_reach_history_and_rollups(
    tracker: SyncTracker,
) -> None:
    with tracker.track(None, resource="vendor/prices") as sync:
        sync.record(processed=10)
        sync.record_metrics(
            cost_parts={"compute_cost_usd": 0.25}, bytes_read=2048, overall_quality=0.9
        )
    record = tracker.store.get_sync(sync.sync_id)
    assert (
        record.metadata["metrics"]
        == sync.run_metrics
        == {
            "total_cost_usd": 0.25,
            "cost_breakdown": {"compute_cost_usd": 0.25},
            "bytes_read": 2048,
            "data_quality": {"overall_score": 0.9},
        }
    )
    (day,) = daily_rollups(tracker.store, sync.started_at - dt.timedelta(seconds=1))
    assert (day.resource, day.executions, day.successes, day.total_cost_usd, day.bytes_read) == (
        "vendor/prices",
        1,
        1,
        0.25,
        2048,
    )
    assert day.records_processed == 10
