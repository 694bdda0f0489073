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
from sync_observability.clock import floor_hour
from sync_observability.errors import InvalidInputError
from sync_observability.health import health_indicator
from sync_observability.reports import REPORTS, cost_trends, quality_trends, status, top_errors
from sync_observability.storage.reporting import hourly_rollups
from sync_observability.storage.retention_store import RetentionStore
from sync_observability.storage.schema import (
    sync_error_group_sums,
    sync_history,
    sync_history_daily,
    sync_history_hourly,
    sync_rollup_pending,
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
NOWS = [
    NOW,
    NOW + dt.timedelta(minutes=7, seconds=3),
    at("06-14 23:59"),
    at("06-15 00:00"),
    at("06-16 09:00"),  # the running sync's hour is rolled up
]


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


@pytest.mark.slow
def test_reports_from_rollups_equal_reports_from_history(store):
    ids = add_runs(store, KNOWN_HISTORY)
    assert_rolled_equals_live(store)
    # Every hour up to the grace period is rolled; the running sync (06-15 12:20) is left out
    # of its hour's roll-up and listed, read live.
    assert rollup_state(store).rolled_until > NOW
    assert pending(store) == {ids[DEALS_RUNNING]: False}
    with store.engine.connect() as conn:
        hours = conn.execute(sa.select(sync_history_hourly.c["hour", "sync_status"])).all()
    assert (at("06-15 12:00"), "running") not in {tuple(h) for h in hours}


def pending(store: SyncStore) -> dict[str, bool]:
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(sync_rollup_pending.c["sync_id", "finished"])).all())


@pytest.mark.slow
def test_a_late_finish_is_added_to_its_rolled_hour(store):
    ids = add_runs(store, KNOWN_HISTORY)
    before = REPORTS["daily-operations"](store, days=1, now=NOW).to_dict("records")
    assert pending(store) == {ids[DEALS_RUNNING]: False}
    with store.engine.connect() as conn:
        rolled_rows = conn.execute(sa.select(sa.func.count()).select_from(sync_history_hourly))
        rolled_rows = rolled_rows.scalar_one()
    store.finish_sync(
        sync_id=ids[DEALS_RUNNING],
        resource=DEALS_RUNNING.resource,
        started_at=DEALS_RUNNING.start,
        outcome=SyncOutcome(status="failed", ended_at=NOW, error_message="late"),
    )
    # A read-only store still reads the listed run live, with its new status.
    reader = store_with(store, "read")
    failed = REPORTS["daily-operations"](reader, days=1, now=NOW).to_dict("records")
    assert failed[0]["failed_operations"] == before[0]["failed_operations"] + 1
    assert answers(reader) == live_answers(store)  # top errors too
    assert pending(store) == {ids[DEALS_RUNNING]: False}
    # The next refresh adds the finished run to its hour's roll-up and unlists it.
    after = REPORTS["daily-operations"](store, days=1, now=NOW).to_dict("records")
    assert after == failed
    assert pending(store) == {}
    with store.engine.connect() as conn:
        added = conn.execute(
            sa.select(sync_history_hourly.c["sync_status", "operations"]).where(
                sync_history_hourly.c.hour == at("06-15 12:00")
            )
        ).all()
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(sync_history_hourly)).scalar_one()
            == rolled_rows + 1
        )
    assert sorted(tuple(r) for r in added) == [("failed", 1), ("failed", 1)]  # funds', deals'
    assert_rolled_equals_live(store)


@pytest.mark.slow
def test_a_backfilled_start_reopens_its_day(store):
    add_runs(store, KNOWN_HISTORY)
    answers(store)  # rolls every closed hour
    assert rollup_state(store).rolled_until > NOW
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_read_mode_uses_the_rolled_hours_and_writes_nothing(store):
    """``rollups="read"`` (a read-only replica or user): whatever is rolled up, no refresh."""
    ids = add_runs(store, KNOWN_HISTORY)
    reader = store_with(store, "read")
    assert answers(reader) == live_answers(store)
    assert rollup_state(store) is None  # nothing rolled, nothing written: every hour read live
    answers(store)  # the primary's reports refresh them
    state = rollup_state(store)
    assert state.rolled_until > NOW
    assert pending(store) == {ids[DEALS_RUNNING]: False}
    # The running sync finishes: a refresh would add it to its hour's roll-up.
    store.finish_sync(
        sync_id=ids[DEALS_RUNNING],
        resource=DEALS_RUNNING.resource,
        started_at=DEALS_RUNNING.start,
        outcome=SyncOutcome(status="success", ended_at=NOW),
    )
    assert answers(reader) == live_answers(store)
    assert rollup_state(store) == state
    assert pending(store) == {ids[DEALS_RUNNING]: False}
    answers(store)
    assert pending(store) == {}


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


@pytest.mark.slow
def test_volume_baselines_follow_backfills_and_retention(store):
    """The daily counts and per-resource baselines give the live answer after every change."""
    add_runs(store, _busy_history())
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
    assert last_day == {"ops/steady": 9, "ops/wobbly": 2, "ops/fading": 1}
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


@pytest.mark.parametrize(
    ("wall", "compared", "closed_today"),
    [
        (at("06-15 14:37"), 14, 2),  # hours 00-13 compared; 14:00 - 5 min grace closes 00-13
        (at("06-15 01:03"), 1, 0),  # 00:00-01:00 compared, but within the grace: not rolled
        (at("06-15 00:20"), 0, 0),  # the day's first hour: nothing to compare, nothing rolled
    ],
)
def test_todays_closed_hours_come_from_the_daily_counts(
    store, monkeypatch, wall, compared, closed_today
):
    """Today's row in sync_history_daily counts its closed hours only, on the roll-up's clock."""
    monkeypatch.setattr(hourly_rollups, "utcnow", lambda: wall)
    midnight = wall.replace(hour=0, minute=0)
    runs = [
        Run("clock/a", midnight - dt.timedelta(days=d, hours=h), 5)
        for d in range(1, 8)
        for h in range(d % 3 + 1)
    ]
    today = [midnight + (wall - midnight) * f for f in (0.1, 0.5, 0.999)]
    runs += [Run("clock/a", t, 5) for t in today] + [Run("clock/b", today[0], None)]
    add_runs(store, runs)
    rolled = [
        REPORTS["volume-anomalies"](store, now=wall, days=days, include_normal=True)
        for days in (1, 3, 30)
    ]
    live = [
        REPORTS["volume-anomalies"](
            store_with(store, "off"), now=wall, days=days, include_normal=True
        )
        for days in (1, 3, 30)
    ]
    assert [r.to_dict("records") for r in rolled] == [r.to_dict("records") for r in live]
    # Today's ended hours are compared (the same ones of earlier days): none in the first hour.
    assert hourly_rollups.compared_hours(wall) == compared
    found = rolled[2].to_dict("records")
    if compared:
        assert found[0]["today_operations"] == sum(t < floor_hour(wall) for t in today)
    else:
        assert found == []
    state = rollup_state(store)
    if not compared:  # the report had no hour to read, and rolled nothing up
        assert state is None
        return
    until = state.rolled_until
    assert until == max(floor_hour(wall - hourly_rollups.GRACE), midnight)
    with store.engine.connect() as conn:
        counted = dict(
            conn.execute(
                sa.select(sync_history_daily.c["resource", "operations"]).where(
                    sync_history_daily.c.day == midnight
                )
            ).all()
        )
    assert sum(t < until for t in today) == closed_today
    assert counted == ({"clock/a": closed_today, "clock/b": 1} if closed_today else {})


@pytest.mark.slow
def test_top_errors_with_a_late_failure_in_a_rolled_hour(store):
    """More groups than the report shows, and a run rolled up while running that fails later."""
    runs = []
    for g in range(40):  # group g fails g % 6 + 1 times over 06-05..06-14
        resource = f"err/r{g % 13}"
        message = None if g % 11 == 0 else f"E{g}: failure {g}"
        for k in range(g % 6 + 1):
            start = at("06-05 03:00") + dt.timedelta(days=(g + 3 * k) % 10, minutes=g)
            runs.append(Run(resource, start, 7 + g, status="failed", error=message))
    # Today: a one-failure group climbs into the top, a frequent one gets one more.
    runs += [
        Run("err/r1", at(f"06-15 0{h}:10"), 3, status="failed", error="E1: failure 1")
        for h in range(6)
    ]
    runs += [Run("err/r5", at("06-15 08:00"), 3, status="failed", error="E5: failure 5")]
    slow = [
        Run("err/slow", at(f"06-{d:02d} 10:00"), 9, status="failed", error="SLOW")
        for d in (6, 7, 8, 9)
    ]
    running = Run("err/slow", at("06-10 22:00"), None)  # rolled up while running, fails later
    ids = add_runs(store, [*runs, *slow, running])

    def both(when: dt.datetime) -> None:
        for days in (3, 7, 30):
            rolled = top_errors(store, now=when, days=days).to_dict("records")
            live = top_errors(store_with(store, "off"), now=when, days=days).to_dict("records")
            assert rolled == live, (when, days)

    def summed() -> dict:
        """The failure groups the roll-ups summed for the last window (what top-errors reads)."""
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(sync_error_group_sums)).all()
        assert len({(r.from_hour, r.until_hour) for r in rows}) == 1
        return {(r.resource, r.error_summary): r.failures for r in rows}

    for when in (at("06-14 12:00"), at("06-16 00:00"), NOW):  # NOW's baselines stay
        both(when)
    assert summed()[("err/slow", "SLOW")] == 4 and len(summed()) > 20
    store.finish_sync(
        sync_id=ids[running],
        resource=running.resource,
        started_at=running.start,
        outcome=SyncOutcome(status="failed", ended_at=at("06-11 02:00"), error_message="SLOW"),
    )
    # A read-only store reads the late failure live (the roll-up of its hour has not got it).
    reader = store_with(store, "read")
    for days in (3, 7, 30):
        live = top_errors(store_with(store, "off"), now=NOW, days=days).to_dict("records")
        assert top_errors(reader, now=NOW, days=days).to_dict("records") == live
    assert pending(store) == {ids[running]: False}
    both(NOW)  # refreshed: added to its hour
    assert pending(store) == {}
    assert summed()[("err/slow", "SLOW")] == 5  # the sums were dropped and summed again
    rows = top_errors(store, now=NOW, days=30).to_dict("records")
    assert len(rows) == 20
    assert rows[0]["resource"] == "err/r1" and rows[0]["error_count"] == 8  # 2 before, 6 today
    slow_row = [r for r in rows if r["resource"] == "err/slow"]
    assert [r["error_count"] for r in slow_row] == [5]


@pytest.mark.slow
def test_retention_before_any_report_starts_the_rollups_at_its_cutoff(store):
    add_runs(store, KNOWN_HISTORY)
    assert rollup_state(store) is None
    cutoff = at("06-12 10:30")
    RetentionStore(store).archive_batch(before=cutoff, after=None, limit=1000, now=NOW, keep_last=0)
    state = rollup_state(store)
    assert (state.rolled_from, state.rolled_until) == (at("06-12 11:00"), at("06-12 11:00"))
    assert_rolled_equals_live(store)
    assert rollup_state(store).rolled_from == at("06-12 11:00")


@pytest.mark.slow
def test_a_backfill_before_the_rolled_hours_reopens_nothing(store):
    add_runs(store, KNOWN_HISTORY[1:])  # from 06-10 09:00 on
    answers(store)
    state = rollup_state(store)
    assert state.rolled_from == at("06-10 09:00")
    add_runs(store, [Run("vantage/funds", at("06-10 08:59"), 5)])  # its hour is read live
    assert rollup_state(store) == state
    add_runs(store, [Run("vantage/funds", at("06-10 09:30"), 5)])  # a rolled hour
    assert rollup_state(store).rolled_until == at("06-10 09:00")  # back to rolled_from
    assert_rolled_equals_live(store)


def test_archived_runs_count_in_the_per_resource_quality_trend(store):
    add_runs(store, KNOWN_HISTORY)
    before = quality_trends(store, now=NOW, per_resource=True).to_dict("records")
    assert {r["date"].day for r in before} == {14, 15}
    RetentionStore(store).archive_batch(
        before=at("06-15 00:00"), after=None, limit=1000, now=NOW, keep_last=0
    )
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.min(sync_history.c.sync_start_time))).scalar()
    assert left >= at("06-15 00:00")  # the 06-14 scores are in the archive now
    assert quality_trends(store, now=NOW, per_resource=True).to_dict("records") == before
    overall = quality_trends(store, now=NOW).to_dict("records")
    assert [(r["date"].day, r["runs"]) for r in overall] == [(15, 2), (14, 1)]


@pytest.mark.slow
def test_a_first_fill_rolls_up_a_step_of_history_per_transaction(store, monkeypatch):
    """Each transaction rolls up FILL_STEP from the next run on; the answers do not change."""
    monkeypatch.setattr(hourly_rollups, "FILL_STEP", dt.timedelta(hours=1))
    add_runs(store, KNOWN_HISTORY)
    commits = []

    def count(conn: sa.Connection) -> None:
        commits.append(conn)

    sa.event.listen(store.engine, "commit", count)
    try:
        hourly_rollups.refresh_rollups(store)
    finally:
        sa.event.remove(store.engine, "commit", count)
    with store.engine.connect() as conn:
        hours_with_runs = conn.execute(
            sa.select(sa.func.count(sa.distinct(sync_history_hourly.c.hour)))
        ).scalar_one()
    assert len(commits) >= hours_with_runs >= 8  # one step per hour with runs, at least
    assert rollup_state(store).rolled_until > NOW
    assert_rolled_equals_live(store)
