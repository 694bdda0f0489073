"""Every report against known history, on SQLite and PostgreSQL, with exact numbers."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterator

import pytest

from sync_observability import InvalidInputError, SyncStore
from sync_observability.reports import (
    REPORTS,
    cost_trends,
    daily_operations,
    daily_volume,
    dashboard,
    failures,
    hourly_volume,
    operation_events,
    performance,
    quality_trends,
    status,
    top_errors,
    volume_anomalies,
)
from sync_observability_tests.reports.history import (
    ACCOUNTS_1000,
    FUNDS_1200,
    KNOWN_HISTORY,
    KNOWN_PERFORMANCE,
    LONG_PARSE_ERROR,
    NOW,
    TIMEOUT,
    Run,
    add_runs,
    at,
    log_events,
)


@pytest.fixture
def known(store: SyncStore) -> dict[Run, str]:
    return add_runs(store, KNOWN_HISTORY)


def records(frame) -> list[dict]:
    return frame.to_dict(orient="records")


def test_status_is_seed_001_health_red_first(store, known):
    rows = records(status(store, now=NOW, include_healthy=True))
    assert [(r["resource"], r["status"], r["health"]) for r in rows] == [
        ("vantage/accounts", "failed", "red"),
        ("vantage/funds", "failed", "red"),
        ("crm/contacts", "success", "green"),
        ("crm/deals", "running", "green"),
    ]
    accounts, funds, contacts, deals = rows
    assert accounts["last_sync_time"] == at("06-15 11:00")  # last success's start
    assert accounts["hours_since_sync"] == pytest.approx(1.5)
    assert accounts["error_count"] == 1
    assert accounts["consecutive_failures"] == 1
    assert funds["consecutive_failures"] == 2
    assert funds["last_sync_time"] is None
    assert contacts["records_synced"] == 40
    assert contacts["duration_ms"] == 10_000
    assert deals["running_seconds"] == 600
    # Forty minutes later the running sync is stuck: red.
    later = records(status(store, now=NOW + dt.timedelta(minutes=40), include_healthy=True))
    assert {r["resource"]: r["health"] for r in later}["crm/deals"] == "red"


def test_dashboard_metrics_and_labels(store, known):
    rows = {r["metric_name"]: r for r in records(dashboard(store, now=NOW))}
    values = {name: row["metric_value"] for name, row in rows.items()}
    labels = {name: row["status"] for name, row in rows.items()}
    # Window 06-14 12:30 .. 06-15 12:30: 3 successes, 2 failures, 1 running.
    assert values == {
        "total_operations_24h": 6,
        "success_rate_24h": 60.0,
        "avg_duration_ms": 48_000.0,  # (10 + 60 + 120 + 30 + 20) s / 5
        "failed_operations_24h": 2,
        "running_operations": 1,
        "red_resources": 2,
        "yellow_resources": 0,
        "system_health_score": 57.0,  # 0.7 * 60 + 0.3 * (2 green of 4 = 50)
    }
    assert labels == {
        "total_operations_24h": "NORMAL",
        "success_rate_24h": "CRITICAL",
        "avg_duration_ms": "WARNING",
        "failed_operations_24h": "CRITICAL",
        "running_operations": "NORMAL",
        "red_resources": "CRITICAL",
        "yellow_resources": "NORMAL",
        "system_health_score": "CRITICAL",
    }
    assert set(rows["success_rate_24h"].values()) >= {"percentage"}


def test_dashboard_with_a_wider_window_and_an_empty_one(store, known):
    week = {r["metric_name"]: r["metric_value"] for r in records(dashboard(store, days=7, now=NOW))}
    # 06-08 12:30 onwards adds 06-10 (success), 06-13 (failed), 06-14 (success).
    assert week["total_operations_7d"] == 9
    assert week["success_rate_7d"] == 62.5  # 5 of 8 finished
    assert week["failed_operations_7d"] == 3
    empty = records(dashboard(store, now=at("06-01 00:00")))
    by_name = {r["metric_name"]: r for r in empty}
    assert by_name["total_operations_24h"]["metric_value"] == 0
    assert by_name["total_operations_24h"]["status"] == "WARNING"
    assert by_name["success_rate_24h"]["metric_value"] is None
    assert by_name["success_rate_24h"]["status"] == "NO_DATA"
    assert by_name["avg_duration_ms"]["status"] == "NO_DATA"


def test_failures_newest_first_with_errors(store, known):
    rows = records(failures(store, now=NOW))
    assert [(r["resource"], r["sync_start_time"], r["error_codes"]) for r in rows] == [
        ("vantage/funds", at("06-15 12:00"), "API_TIMEOUT"),
        ("vantage/accounts", at("06-15 11:30"), "PARSE_ERROR"),
        ("vantage/funds", at("06-13 08:00"), "API_TIMEOUT"),
    ]
    assert rows[0]["sync_id"] == known[FUNDS_1200]
    assert rows[0]["error_message"] == TIMEOUT
    assert rows[1]["error_message"] == LONG_PARSE_ERROR
    assert rows[0]["sync_end_time"] == at("06-15 12:00") + dt.timedelta(seconds=20)
    assert [r["error_count"] for r in rows] == [1, 1, 1]
    assert len(failures(store, days=1, now=NOW)) == 2  # from 06-14 00:00


def test_failures_leave_out_syncs_after_now(store, known):
    assert len(failures(store, now=at("06-15 11:45"))) == 2
    assert len(failures(store, now=at("06-13 07:59"))) == 0


def test_performance_by_system_slowest_first(store, known):
    rows = records(performance(store, now=NOW))
    assert rows == KNOWN_PERFORMANCE


def test_daily_volume_per_day_and_source(store, known):
    rows = records(daily_volume(store, now=NOW))
    assert [
        (r["sync_date"], r["source_system"], r["sync_count"], r["total_records"]) for r in rows
    ] == [
        (dt.date(2025, 6, 15), "vantage", 2, 400),
        (dt.date(2025, 6, 15), "crm", 1, 40),
        (dt.date(2025, 6, 14), "vantage", 1, 50),
        (dt.date(2025, 6, 10), "crm", 1, 60),
    ]


def test_daily_operations_fill_every_day(store, known):
    rows = records(daily_operations(store, days=3, now=NOW))
    assert rows == [
        {
            "operation_date": dt.date(2025, 6, 15),
            "operations": 6,
            "failed_operations": 2,
            "success_rate_pct": 66.67,
            "avg_duration_ms": 48_000.0,  # the running sync has no duration yet
            "records_processed": 440,
        },
        {
            "operation_date": dt.date(2025, 6, 14),
            "operations": 1,
            "failed_operations": 0,
            "success_rate_pct": 100.0,
            "avg_duration_ms": 90_000.0,
            "records_processed": 50,
        },
        {
            "operation_date": dt.date(2025, 6, 13),
            "operations": 1,
            "failed_operations": 1,
            "success_rate_pct": 0.0,
            "avg_duration_ms": 10_000.0,
            "records_processed": 0,
        },
        {
            "operation_date": dt.date(2025, 6, 12),
            "operations": 0,
            "failed_operations": 0,
            "success_rate_pct": None,
            "avg_duration_ms": None,
            "records_processed": 0,
        },
    ]


def test_hourly_volume_spikes_and_drops(store, known):
    later = NOW + dt.timedelta(hours=1)  # 13:30: the 13:00 hour is empty
    rows = records(hourly_volume(store, now=later))
    assert len(rows) == 25  # 06-14 13:00 .. 06-15 13:00
    by_hour = {r["hour"]: r for r in rows}
    assert rows[0]["hour"] == at("06-15 13:00")
    assert rows[-1]["hour"] == at("06-14 13:00")
    assert rows[-1]["previous_hour"] is None
    assert rows[-1]["trend_analysis"] == "NORMAL"
    summary = [
        (
            h,
            by_hour[at(h)]["operations"],
            by_hour[at(h)]["records_processed"],
            by_hour[at(h)]["previous_hour"],
            by_hour[at(h)]["trend_analysis"],
        )
        for h in (
            "06-15 08:00",
            "06-15 09:00",
            "06-15 10:00",
            "06-15 11:00",
            "06-15 12:00",
            "06-15 13:00",
        )
    ]
    assert summary == [
        ("06-15 08:00", 0, 0, 0, "NORMAL"),
        ("06-15 09:00", 1, 40, 0, "SPIKE_DETECTED"),
        ("06-15 10:00", 1, 100, 1, "NORMAL"),
        ("06-15 11:00", 2, 300, 1, "NORMAL"),  # not above twice
        ("06-15 12:00", 2, 0, 2, "NORMAL"),
        ("06-15 13:00", 0, 0, 2, "DROP_DETECTED"),
    ]
    assert sum(r["operations"] for r in rows) == 6


def test_volume_anomalies_two_sigma(store):
    steady = [Run("hr/steady", at(f"06-{d:02d} 06:00"), 1) for d in range(5, 15)]
    busy = steady + [Run("hr/steady", at(f"06-15 {h:02d}:00"), 1) for h in range(5)]
    quiet = [
        Run("hr/quiet", at(f"06-{d:02d} {h:02d}:00"), 1) for d in range(5, 15) for h in range(5)
    ] + [Run("hr/quiet", at("06-15 07:00"), 1)]
    normal = [Run("hr/normal", at("06-14 06:00"), 1)] + [
        Run("hr/normal", at(f"06-15 {h:02d}:00"), 1) for h in range(3)
    ]
    flat = [Run("hr/flat", at(f"06-{d:02d} 06:00"), 1) for d in (13, 14, 15)]
    add_runs(store, busy + quiet + normal + flat)
    rows = records(volume_anomalies(store, now=NOW, include_normal=True))
    assert [(r["resource"], r["today_operations"], r["activity_assessment"]) for r in rows] == [
        ("hr/steady", 5, "ANOMALY_HIGH"),
        ("hr/normal", 3, "NORMAL"),
        ("hr/quiet", 1, "ANOMALY_LOW"),
    ]  # hr/flat: no variation (sd 0), left out as in the seed
    # By default only the anomalies.
    assert records(volume_anomalies(store, now=NOW)) == [rows[0], rows[2]]
    steady_row = rows[0]
    daily = [1] * 10 + [5]
    assert steady_row["avg_daily_operations"] == round(statistics.mean(daily), 2)
    assert steady_row["stddev_daily_operations"] == round(statistics.stdev(daily), 2)
    assert steady_row["active_days"] == 11
    # A resource that did not sync today is not assessed.
    tomorrow = records(volume_anomalies(store, now=NOW + dt.timedelta(days=1), include_normal=True))
    assert tomorrow == []


def test_volume_anomalies_compare_the_same_hours_of_earlier_days(store):
    """Today's ended hours against the same hours of earlier days, not against whole days.

    At 12:30 a resource syncing every 2 hours has 7 syncs today (00:00 to 12:00) against 11 or
    12 on whole earlier days: compared whole, it would be ANOMALY_LOW every morning. Compared
    over 00:00-12:00 on every day it is normal; a real burst in those hours is still found, and
    syncs in the hour not yet ended (12:00-12:30) wait for it to end.
    """
    days = [at("06-07 00:00") + dt.timedelta(days=d) for d in range(8)]
    skipped = {at("06-09 04:00"), at("06-12 04:00"), at("06-10 09:00")}
    runs = [
        Run("etl/every2h", day + dt.timedelta(hours=h), 1) for day in days for h in range(0, 24, 2)
    ]
    runs += [Run("etl/every2h", at(f"06-15 {h:02d}:00"), 1) for h in range(0, 13, 2)]
    runs += [Run("etl/burst", day + dt.timedelta(hours=h), 1) for day in days for h in (1, 9, 20)]
    burst = ("01:00", "01:20", "01:40", "05:00", "09:00", "09:30")
    runs += [Run("etl/burst", at(f"06-15 {t}"), 1) for t in burst]
    runs += [Run("etl/late", day + dt.timedelta(hours=12, minutes=10), 1) for day in days]
    runs += [Run("etl/late", day + dt.timedelta(hours=13), 1) for day in days[::2]]
    runs += [Run("etl/late", at("06-15 12:10"), 1)]
    add_runs(store, [run for run in runs if run.start not in skipped])
    rows = records(volume_anomalies(store, now=NOW, include_normal=True))
    assert [
        (r["resource"], r["today_operations"], r["active_days"], r["activity_assessment"])
        for r in rows
    ] == [
        ("etl/burst", 6, 9, "ANOMALY_HIGH"),
        ("etl/every2h", 6, 9, "NORMAL"),  # not ANOMALY_LOW: 7 today against 11 or 12 a day
    ]  # etl/late synced today in the hour that has not ended (12:00-12:30) only
    every2h = [6, 6, 5, 6, 6, 5, 6, 6, 6]  # 00:00-12:00 of 06-07..06-14, then today
    assert rows[1]["avg_daily_operations"] == round(statistics.mean(every2h), 2)
    assert rows[1]["stddev_daily_operations"] == round(statistics.stdev(every2h), 2)
    assert records(volume_anomalies(store, now=NOW)) == [rows[0]]
    # The roll-ups give what sync_history alone gives, at other hours too.
    live = SyncStore(store.engine, schema=store.schema, auto_migrate=False, rollups="off")
    for when in (at("06-15 10:00"), at("06-16 05:00")):
        for window in (1, 30):
            assert records(
                volume_anomalies(store, now=when, days=window, include_normal=True)
            ) == records(volume_anomalies(live, now=when, days=window, include_normal=True))
    # In the first hour of a UTC day no hour has ended: nothing is assessed.
    assert records(volume_anomalies(store, now=at("06-15 00:59"), include_normal=True)) == []


def test_volume_anomalies_on_known_history(store, known):
    assert records(volume_anomalies(store, now=NOW)) == []
    rows = records(volume_anomalies(store, now=NOW, include_normal=True))
    assert rows == [
        {
            "resource": "vantage/accounts",
            "today_operations": 3,
            "avg_daily_operations": 2.0,
            "stddev_daily_operations": round(statistics.stdev([1, 3]), 2),
            "active_days": 2,
            "activity_assessment": "NORMAL",
        }
    ]


def test_top_errors_grouped_by_resource_and_message(store, known):
    rows = records(top_errors(store, now=NOW))
    assert rows == [
        {
            "resource": "vantage/funds",
            "error_summary": TIMEOUT,
            "error_count": 2,
            "first_occurrence": at("06-13 08:00"),
            "last_occurrence": at("06-15 12:00"),
            "avg_duration_before_failure_ms": 15_000.0,
        },
        {
            "resource": "vantage/accounts",
            "error_summary": LONG_PARSE_ERROR[:100],
            "error_count": 1,
            "first_occurrence": at("06-15 11:30"),
            "last_occurrence": at("06-15 11:30"),
            "avg_duration_before_failure_ms": 30_000.0,
        },
    ]
    assert records(top_errors(store, days=1, now=NOW))[0]["error_count"] == 1


def test_cost_trends_per_day_and_resource(store, known):
    rows = records(cost_trends(store, now=NOW, per_resource=True))
    keyed = {(r["date"].isoformat(), r["resource"]): r for r in rows}
    assert list(keyed) == [
        ("2025-06-15", "crm/contacts"),
        ("2025-06-15", "crm/deals"),
        ("2025-06-15", "vantage/accounts"),
        ("2025-06-15", "vantage/funds"),
        ("2025-06-14", "vantage/accounts"),
        ("2025-06-13", "vantage/funds"),
        ("2025-06-10", "crm/contacts"),
    ]
    today = keyed[("2025-06-15", "vantage/accounts")]
    assert today == {
        "date": dt.date(2025, 6, 15),
        "resource": "vantage/accounts",
        "total_executions": 3,
        "successful_executions": 2,
        "failed_executions": 1,
        "total_cost_usd": 4.25,  # 1.5 + 2.5 + 0.25 (the failed run cost too)
        "avg_cost_per_execution": round(4.25 / 3, 6),
        "total_duration_seconds": 210.0,
        "records_processed": 400,
        "bytes_read": 4000,
        "bytes_written": 2000,
    }
    assert keyed[("2025-06-14", "vantage/accounts")]["avg_cost_per_execution"] == 1.0
    running = keyed[("2025-06-15", "crm/deals")]
    assert (running["total_executions"], running["successful_executions"]) == (1, 0)
    assert (running["total_cost_usd"], running["total_duration_seconds"]) == (0.0, 0.0)
    assert keyed[("2025-06-13", "vantage/funds")]["failed_executions"] == 1
    # The window ends at now: at 11:15 the 11:30 failure had not started.
    earlier = records(cost_trends(store, days=1, now=at("06-15 11:15"), per_resource=True))
    assert [(r["date"].day, r["resource"], r["total_executions"]) for r in earlier] == [
        (15, "crm/contacts", 1),
        (15, "vantage/accounts", 2),
        (14, "vantage/accounts", 1),
    ]


def test_quality_trends_daily_means_and_trend(store, known):
    rows = records(quality_trends(store, now=NOW, per_resource=True))
    assert [(r["date"], r["resource"], r["runs"], r["trend"]) for r in rows] == [
        (dt.date(2025, 6, 15), "vantage/accounts", 2, "improving"),
        (dt.date(2025, 6, 14), "vantage/accounts", 1, None),
    ]
    assert rows[0]["completeness"] == pytest.approx(0.97)
    assert rows[0]["accuracy"] == pytest.approx(0.92)
    assert rows[0]["overall_quality"] == pytest.approx(0.94)
    assert rows[1]["overall_quality"] == pytest.approx(0.89)


def test_operation_events_by_category(store, known):
    log_events(
        store,
        ACCOUNTS_1000,
        known[ACCOUNTS_1000],
        [
            ("dedup_conflict", at("06-15 10:05")),
            ("dedup_conflict", at("06-15 10:06")),
            ("cast_error", at("06-15 10:07")),
            ("maintenance", at("06-01 10:00")),  # outside the 7 days
        ],
    )
    log_events(store, FUNDS_1200, known[FUNDS_1200], [("cast_error", at("06-15 12:01"))])
    rows = records(operation_events(store, now=NOW))
    assert rows == [
        {
            "category": "cast_error",
            "events": 2,
            "resources": 2,
            "syncs": 2,
            "first_event": at("06-15 10:07"),
            "last_event": at("06-15 12:01"),
        },
        {
            "category": "dedup_conflict",
            "events": 2,
            "resources": 1,
            "syncs": 1,
            "first_event": at("06-15 10:05"),
            "last_event": at("06-15 10:06"),
        },
    ]
    assert len(operation_events(store, days=30, now=NOW)) == 3


def test_every_report_reads_an_empty_database_with_its_columns(store):
    for name, report in REPORTS.items():
        frame = report(store, now=NOW)
        assert len(frame.columns) >= 4, name
        # Only the reports that list every day, hour or metric have rows without history.
        assert frame.empty == (name not in ("daily-operations", "hourly-volume", "dashboard")), name


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[SyncStore]:
    store = SyncStore.from_url(f"sqlite:///{tmp_path / 'sync.db'}")
    yield store
    store.dispose()


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_days_must_be_a_whole_number_from_one(sqlite_store, days):
    for report in REPORTS.values():
        with pytest.raises(InvalidInputError, match="days"):
            report(sqlite_store, days=days, now=NOW)


def test_now_must_be_aware(sqlite_store):
    for report in REPORTS.values():
        with pytest.raises(InvalidInputError, match="now"):
            report(sqlite_store, now=dt.datetime(2025, 6, 15, 12, 30))
