"""Health colours and the status overview: seed 001's dashboard rules, without a database."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from sync_observability.health import health_indicator, status_overview
from sync_observability.storage.records import SyncState

NOW = dt.datetime(2025, 11, 5, 12, 0, tzinfo=dt.timezone.utc)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
MS = dt.timedelta(milliseconds=1)


def state(resource: str = "accounts", status: str = "success", **fields: Any) -> SyncState:
    """A sync_state row that synced successfully an hour ago, with ``fields`` overridden."""
    base: dict[str, Any] = {
        "resource": resource,
        "source_system": "vantage",
        "target_system": "warehouse",
        "last_sync_time": NOW - HOUR,
        "cursor": None,
        "last_sync_status": status,
        "records_synced": 150,
        "records_created": 10,
        "records_updated": 140,
        "errors": [],
        "started_at": NOW - HOUR,
        "completed_at": NOW - HOUR + 3 * MINUTE,
        "duration_ms": 180_000,
        "consecutive_failures": 0,
        "last_success_at": NOW - HOUR + 3 * MINUTE,
        "current_sync_id": None,
        "dagster_run_id": None,
        "created_at": NOW - 48 * HOUR,
        "updated_at": NOW - HOUR,
    }
    return SyncState(**(base | fields))


def running(started_ago: dt.timedelta, **fields: Any) -> SyncState:
    return state(
        status="running",
        started_at=NOW - started_ago,
        completed_at=None,
        duration_ms=None,
        **fields,
    )


def never_run(**fields: Any) -> SyncState:
    return state(
        status="never_run",
        last_sync_time=None,
        started_at=None,
        completed_at=None,
        duration_ms=None,
        last_success_at=None,
        **fields,
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(state(), "green", id="recent success"),
        pytest.param(
            state(status="failed", last_sync_time=NOW - MINUTE, errors=[{"code": "X"}]),
            "red",
            id="failed but watermark recent",
        ),
        pytest.param(state(status="failed", last_sync_time=None), "red", id="failed first sync"),
        pytest.param(never_run(), "yellow", id="never run"),
        pytest.param(running(29 * MINUTE), "green", id="running just under 30 min"),
        pytest.param(running(30 * MINUTE), "green", id="running exactly 30 min"),
        pytest.param(running(30 * MINUTE + MS), "red", id="running just over 30 min"),
        pytest.param(
            running(31 * MINUTE, last_sync_time=NOW - 72 * HOUR),
            "red",
            id="stuck wins over stale",
        ),
        pytest.param(
            running(5 * MINUTE, last_sync_time=NOW - 25 * HOUR),
            "yellow",
            id="running on a stale watermark",
        ),
        pytest.param(
            running(5 * MINUTE, last_sync_time=None), "green", id="first sync still running"
        ),
        pytest.param(state(last_sync_time=NOW - 24 * HOUR), "green", id="exactly 24h old"),
        pytest.param(state(last_sync_time=NOW - 24 * HOUR - MS), "yellow", id="just over 24h old"),
        pytest.param(
            state(last_sync_time=NOW - 23 * HOUR - 59 * MINUTE), "green", id="just under 24h old"
        ),
    ],
)
def test_health_indicator_follows_the_dashboard_case(row: SyncState, expected: str) -> None:
    assert health_indicator(row, NOW) == expected


def test_thresholds_are_configurable() -> None:
    row = running(10 * MINUTE, last_sync_time=NOW - 2 * HOUR)
    assert health_indicator(row, NOW) == "green"
    assert health_indicator(row, NOW, stuck_after=5 * MINUTE) == "red"
    assert health_indicator(row, NOW, stale_after=HOUR) == "yellow"


def test_health_is_relative_to_now() -> None:
    row = state(last_sync_time=NOW - HOUR)
    assert health_indicator(row, NOW) == "green"
    assert health_indicator(row, NOW + 23 * HOUR + MS) == "yellow"


def test_status_overview_columns_and_values() -> None:
    rows = status_overview(
        [
            state("accounts"),
            running(90 * dt.timedelta(seconds=1), resource="funds"),
            state(
                "cashflows",
                status="failed",
                errors=[{"code": "API_TIMEOUT"}, {"code": "PARSE_ERROR"}],
                consecutive_failures=3,
            ),
            never_run(resource="investors"),
        ],
        NOW,
    )
    by_resource = {row["resource"]: row for row in rows}
    assert list(rows[0]) == [
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
    ]
    assert by_resource["accounts"]["hours_since_sync"] == pytest.approx(1.0)
    assert by_resource["accounts"]["running_seconds"] is None
    assert by_resource["accounts"]["records_synced"] == 150
    assert by_resource["accounts"]["duration_ms"] == 180_000
    assert by_resource["funds"]["running_seconds"] == 90
    assert by_resource["cashflows"]["error_count"] == 2
    assert by_resource["cashflows"]["consecutive_failures"] == 3
    assert by_resource["cashflows"]["status"] == "failed"
    assert by_resource["investors"]["hours_since_sync"] is None
    assert by_resource["investors"]["last_sync_time"] is None
    assert {r: row["health"] for r, row in by_resource.items()} == {
        "accounts": "green",
        "funds": "green",
        "cashflows": "red",
        "investors": "yellow",
    }


def test_status_overview_orders_red_yellow_green_then_resource() -> None:
    rows = status_overview(
        [
            state("a_green"),
            never_run(resource="b_yellow"),
            state("c_red", status="failed"),
            state("a_yellow", last_sync_time=NOW - 30 * HOUR),
            running(45 * MINUTE, resource="a_red"),
            state("b_green"),
        ],
        NOW,
    )
    assert [(row["health"], row["resource"]) for row in rows] == [
        ("red", "a_red"),
        ("red", "c_red"),
        ("yellow", "a_yellow"),
        ("yellow", "b_yellow"),
        ("green", "a_green"),
        ("green", "b_green"),
    ]


def test_status_overview_of_nothing_is_empty() -> None:
    assert status_overview([], NOW) == []


def test_status_overview_passes_thresholds_through() -> None:
    row = dataclasses.replace(state(), last_sync_time=NOW - 2 * HOUR)
    assert status_overview([row], NOW)[0]["health"] == "green"
    assert status_overview([row], NOW, stale_after=HOUR)[0]["health"] == "yellow"
