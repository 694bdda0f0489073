"""The hourly roll-ups give the reports exactly the answer ``sync_history`` alone gives.

Each report is compared with the same report through a store opened with ``rollups="off"``
(every hour read from ``sync_history``), on SQLite and PostgreSQL, after history changes that
touch closed hours: a late finish, a backfilled start, retention.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync_observability import SyncOutcome, SyncStore
from sync_observability.errors import InvalidInputError
from sync_observability.health import health_indicator
from sync_observability.reports import REPORTS, cost_trends, quality_trends, status, top_errors
from sync_observability.storage.retention_store import RetentionStore
from sync_observability.storage.schema import (
    sync_history,
    sync_history_hourly,
    sync_rollup_state,
)
from sync_observability_tests.reports.history import (
    DEALS_RUNNING,
    KNOWN_HISTORY,
    NOW,
    Run,
    add_runs,
    at,
)

# Every report with every option that changes what it reads.
CALLS = [(name, {}) for name in REPORTS] + [
    ("status", {"include_healthy": True}),
    ("cost-trends", {"per_resource": True}),
    ("quality-trends", {"per_resource": True}),
    ("cost-trends", {"resource": "vantage/accounts"}),
    ("dashboard", {"days": 7}),
    ("hourly-volume", {"days": 2}),
    ("top-errors", {"days": 30}),
]
NOWS = [NOW, NOW + dt.timedelta(minutes=7, seconds=3), at("06-14 23:59"), at("06-15 00:00")]


def answers(store: SyncStore) -> dict:
    return {
        (name, str(kwargs), when): REPORTS[name](store, now=when, **kwargs).to_dict("records")
        for name, kwargs in CALLS
        for when in NOWS
    }


def rollup_state(store: SyncStore):
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sync_rollup_state)).one_or_none()


def store_with(store: SyncStore, rollups: str) -> SyncStore:
    """Another store on the same database and schema, with its own ``rollups`` mode."""
    return SyncStore(store.engine, schema=store.schema, auto_migrate=False, rollups=rollups)


def live_answers(store: SyncStore) -> dict:
    """The reports with the roll-ups off: every hour read from sync_history."""
    before = rollup_state(store)
    live = answers(store_with(store, "off"))
    assert rollup_state(store) == before  # "off" neither reads nor writes them
    return live


def assert_rolled_equals_live(store: SyncStore) -> None:
    rolled = answers(store)
    state = rollup_state(store)
    assert state is not None and state.rolled_until > state.rolled_from  # something was rolled
    assert rolled == live_answers(store)


def test_reports_from_rollups_equal_reports_from_history(store):
    add_runs(store, KNOWN_HISTORY)
    assert_rolled_equals_live(store)
    # The running sync (06-15 12:20) keeps its hour and every later one open.
    assert rollup_state(store).rolled_until == at("06-15 12:00")
    with store.engine.connect() as conn:
        hours = conn.execute(sa.select(sync_history_hourly.c.hour)).scalars().all()
    assert hours and max(hours) < at("06-15 12:00")


def test_a_late_finish_is_counted_once_its_hour_closes(store):
    ids = add_runs(store, KNOWN_HISTORY)
    before = REPORTS["daily-operations"](store, days=1, now=NOW).to_dict("records")
    store.finish_sync(
        sync_id=ids[DEALS_RUNNING],
        resource=DEALS_RUNNING.resource,
        started_at=DEALS_RUNNING.start,
        outcome=SyncOutcome(status="failed", ended_at=NOW, error_message="late"),
    )
    after = REPORTS["daily-operations"](store, days=1, now=NOW).to_dict("records")
    assert after[0]["failed_operations"] == before[0]["failed_operations"] + 1
    # Nothing runs any more: every hour up to the grace period is closed and rolled.
    assert rollup_state(store).rolled_until > NOW
    assert_rolled_equals_live(store)


def test_a_backfilled_start_reopens_its_hour(store):
    add_runs(store, KNOWN_HISTORY)
    answers(store)  # rolls every closed hour
    assert rollup_state(store).rolled_until == at("06-15 12:00")
    late = Run(
        "vantage/accounts",
        at("06-14 03:10"),
        40,
        records=7,
        source="vantage",
        target="warehouse",
        status="failed",
        error="API_TIMEOUT: backfill",
    )
    add_runs(store, [late])
    assert rollup_state(store).rolled_until == at("06-14 03:00")
    rows = top_errors(store, days=3, now=NOW).to_dict("records")
    assert ("vantage/accounts", "API_TIMEOUT: backfill") in {
        (r["resource"], r["error_summary"]) for r in rows
    }
    assert_rolled_equals_live(store)


def test_retention_retires_the_hours_it_deletes_from(store):
    add_runs(store, KNOWN_HISTORY)
    answers(store)
    cutoff = at("06-12 10:30")
    retention = RetentionStore(store)
    retention.archive_batch(before=cutoff, after=None, limit=1000, now=NOW, keep_last=0)
    state = rollup_state(store)
    assert state.rolled_from == at("06-12 11:00")
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.min(sync_history.c.sync_start_time))).scalar()
        oldest_hour = conn.execute(sa.select(sa.func.min(sync_history_hourly.c.hour))).scalar()
    assert left >= cutoff
    assert oldest_hour >= at("06-12 11:00")
    assert_rolled_equals_live(store)
    # The archived runs still count in the cost trends, read live from the archive.
    totals = cost_trends(store, days=60, now=NOW).to_dict("records")
    assert sum(r["total_executions"] for r in totals) == len(KNOWN_HISTORY)


def test_overall_trends_sum_the_per_resource_ones(store):
    add_runs(store, KNOWN_HISTORY)
    overall = cost_trends(store, now=NOW).to_dict("records")
    per = cost_trends(store, now=NOW, per_resource=True).to_dict("records")
    for day in {r["date"] for r in per}:
        mine = [r for r in per if r["date"] == day]
        (total,) = [r for r in overall if r["date"] == day]
        assert total["resource"] is None
        for key in ("total_executions", "failed_executions", "records_processed", "bytes_read"):
            assert total[key] == sum(r[key] for r in mine), key
        assert total["total_cost_usd"] == pytest.approx(sum(r["total_cost_usd"] for r in mine))
    quality = quality_trends(store, now=NOW).to_dict("records")
    assert [(r["date"].day, r["runs"], r["trend"]) for r in quality] == [
        (15, 2, "improving"),
        (14, 1, None),
    ]
    assert quality[0]["overall_quality"] == pytest.approx(0.94)


def test_status_colour_in_sql_agrees_with_health_indicator(store):
    m = dt.timedelta(minutes=1)
    runs = [
        Run("a/ok", NOW - 60 * m, 10),
        Run("a/failed", NOW - 60 * m, 10, status="failed", error="X: boom"),
        Run("a/stale", NOW - 24 * 60 * m - m, 10),
        Run("a/exactly-stale", NOW - 24 * 60 * m, 10),
        Run("a/stuck", NOW - 31 * m, None),
        Run("a/exactly-stuck", NOW - 30 * m, None),
        Run("a/running", NOW - 5 * m, None),
    ]
    add_runs(store, runs)
    # A stale watermark with a sync running, not yet stuck, is yellow (rule 3).
    add_runs(store, [Run("a/stale-running", NOW - 2000 * m, 10)])
    add_runs(store, [Run("a/stale-running", NOW - 10 * m, None)])
    for when in (NOW, NOW + 29 * m, NOW + 24 * 60 * m):
        expected = {s.resource: health_indicator(s, when) for s in store.list_states()}
        every = {
            r["resource"]: r["health"]
            for r in status(store, now=when, include_healthy=True).to_dict("records")
        }
        assert every == expected
        unhealthy = status(store, now=when).to_dict("records")
        assert [r["resource"] for r in unhealthy] == sorted(
            (r for r, c in expected.items() if c != "green"),
            key=lambda r: ({"red": 0, "yellow": 1}[expected[r]], r),
        )
    assert {r for r, c in expected.items() if c == "green"} == set()  # a day later: all stale


def test_read_mode_uses_the_rolled_hours_and_writes_nothing(store):
    """``rollups="read"`` (a read-only replica or user): whatever is rolled up, no refresh."""
    ids = add_runs(store, KNOWN_HISTORY)
    reader = store_with(store, "read")
    assert answers(reader) == live_answers(store)
    assert rollup_state(store) is None  # nothing rolled, nothing written: every hour read live
    answers(store)  # the primary's reports refresh them
    state = rollup_state(store)
    assert state.rolled_until == at("06-15 12:00")
    # The running sync finishes: a refresh would now roll every hour up to the grace period.
    store.finish_sync(
        sync_id=ids[DEALS_RUNNING],
        resource=DEALS_RUNNING.resource,
        started_at=DEALS_RUNNING.start,
        outcome=SyncOutcome(status="success", ended_at=NOW),
    )
    assert answers(reader) == live_answers(store)
    assert rollup_state(store) == state
    answers(store)
    assert rollup_state(store).rolled_until > NOW


def test_rollups_mode_is_checked():
    with pytest.raises(InvalidInputError, match="rollups='never'"):
        SyncStore.from_url("sqlite://", rollups="never")
