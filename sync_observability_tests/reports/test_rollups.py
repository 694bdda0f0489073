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
    sync_history_daily,
    sync_history_hourly,
    sync_rollup_state,
    sync_volume_baseline,
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
    ("volume-anomalies", {"include_normal": True}),
    ("volume-anomalies", {"days": 3, "include_normal": True}),
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


def test_a_backfilled_start_reopens_its_day(store):
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
    # Back to its day's start: the day's count per resource is redone whole.
    assert rollup_state(store).rolled_until == at("06-14 00:00")
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


def _busy_history() -> list[Run]:
    """Three resources over 12 days with daily counts that vary, and anomalies on 06-15."""
    counts = {
        "ops/steady": [2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 9],  # spikes on the last day
        "ops/wobbly": [1, 4, 0, 6, 2, 5, 0, 3, 4, 1, 5, 2],
        "ops/fading": [6, 5, 6, 7, 5, 6, 6, 5, 7, 6, 5, 1],  # drops on the last day
    }
    runs = []
    for resource, per_day in counts.items():
        for offset, count in enumerate(per_day):
            day = at("06-04 00:00") + dt.timedelta(days=offset)
            runs += [Run(resource, day + dt.timedelta(minutes=50 * i + 7), 5) for i in range(count)]
    return runs


def volume_answers(store: SyncStore) -> list:
    return [
        REPORTS["volume-anomalies"](store, now=when, days=days, include_normal=True).to_dict(
            "records"
        )
        for when in (NOW, at("06-15 03:10"), at("06-16 00:00"))
        for days in (3, 7, 30)
    ]


def test_volume_baselines_follow_backfills_and_retention(store):
    """The daily counts and per-resource baselines give the live answer after every change."""
    # A sync running since 11:00 on the last day holds the roll-ups at 11:00: that day's
    # closed hours are counted in its sync_history_daily row, the rest read live.
    late_spike = Run("ops/steady", at("06-15 11:40"), 5)
    add_runs(store, [*_busy_history(), Run("ops/other", at("06-15 11:00"), None), late_spike])
    rolled = volume_answers(store)
    assert rolled == volume_answers(store_with(store, "off"))
    anomalies = REPORTS["volume-anomalies"](store, now=NOW).to_dict("records")
    assert [(r["resource"], r["activity_assessment"]) for r in anomalies] == [
        ("ops/steady", "ANOMALY_HIGH"),
        ("ops/fading", "ANOMALY_LOW"),
    ]
    with store.engine.connect() as conn:
        daily = conn.execute(sa.select(sync_history_daily)).all()
        baselines = conn.execute(sa.select(sync_volume_baseline)).all()
    assert {r.day for r in daily} == {at("06-04 00:00") + dt.timedelta(days=d) for d in range(12)}
    last_day = {r.resource: r.operations for r in daily if r.day == at("06-15 00:00")}
    assert last_day == {"ops/steady": 9, "ops/wobbly": 2, "ops/fading": 1}  # not 11:40's
    assert rollup_state(store).rolled_until == at("06-15 11:00")
    assert baselines and {b.resource for b in baselines} <= {
        "ops/steady",
        "ops/wobbly",
        "ops/fading",
    }
    # A backfilled run on a day the baselines summed: its hour, day and baselines are redone.
    add_runs(store, [Run("ops/wobbly", at("06-10 05:00"), 5)])
    assert volume_answers(store) == volume_answers(store_with(store, "off"))
    with store.engine.connect() as conn:
        wobbly = conn.execute(
            sa.select(sync_history_daily.c.operations).where(
                sync_history_daily.c.resource == "ops/wobbly",
                sync_history_daily.c.day == at("06-10 00:00"),
            )
        ).scalar_one()
    assert wobbly == 1  # 0 before the backfill
    # Retention archives the runs before 06-08 10:00: the days it touched leave the roll-ups.
    RetentionStore(store).archive_batch(
        before=at("06-08 10:00"), after=None, limit=1000, now=NOW, keep_last=0
    )
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(sync_history_daily.c.day))).scalar() == at(
            "06-09 00:00"
        )
        assert conn.execute(sa.select(sa.func.min(sync_volume_baseline.c.from_day))).scalar() in (
            None,
            at("06-09 00:00"),
        )
    assert volume_answers(store) == volume_answers(store_with(store, "off"))
    # A read-only store uses what is rolled up and sums the daily counts itself if need be.
    assert volume_answers(store_with(store, "read")) == volume_answers(store_with(store, "off"))
