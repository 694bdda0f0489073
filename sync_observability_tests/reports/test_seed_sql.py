"""Seeds 000 and 001's own SQL, run unchanged on PostgreSQL, agree with the reports.

The statements are parsed from the seed documents at test time (see ``seed_sql.py``); only the
table names are substituted. History is written through the store relative to the real clock,
since the seeds' SQL reads ``now()`` and ``CURRENT_DATE``; the session runs in UTC so that
``CURRENT_DATE`` and ``DATE(...)`` are UTC days, as the reports' are.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import SyncOutcome, SyncStore
from sync_observability.clock import utcnow
from sync_observability.reports import (
    daily_operations,
    daily_volume,
    dashboard,
    failures,
    performance,
    status,
)
from sync_observability_tests.conftest import IN_CI, Backend, _admin_engine
from sync_observability_tests.reports import seed_sql
from sync_observability_tests.reports.seed_sql import (
    CI_SEEDS_DIR,
    SEEDS_ENV,
    SeedStatement,
    missing_seeds,
    seeds_dir,
    skip_reason,
    statements,
    strip_comments,
)


def require_seeds(in_ci: bool) -> Path:
    """The seeds' folder. Without them: a skip saying why, but a failure in CI (``CI=true``),
    which has them, or when ``$SYNC_OBS_SEEDS_DIR`` names a folder without them."""
    folder = seeds_dir()
    reason = missing_seeds(folder)
    if reason is None:
        return folder
    if in_ci or os.environ.get(SEEDS_ENV):
        pytest.fail(f"{reason} (a failure: CI=true or {SEEDS_ENV} set)", pytrace=False)
    pytest.skip(f"{reason} (skipped outside CI; CI=true makes this a failure)")


@pytest.fixture(scope="module")
def seed_folder() -> Path:
    return require_seeds(IN_CI)


def _seed_files(folder: Path, *seeds: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"{seed}_0123456789abcdef.txt").write_text("# seed\n", encoding="utf-8")
    return folder


def test_the_seeds_are_found_where_ci_puts_them_unless_the_variable_says_otherwise(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(SEEDS_ENV, raising=False)
    assert seeds_dir() == CI_SEEDS_DIR
    assert Path(__file__).resolve().parents[3] / "shared" / "seeds" == CI_SEEDS_DIR
    monkeypatch.setenv(SEEDS_ENV, str(_seed_files(tmp_path / "seeds", "000", "001")))
    assert seeds_dir() == tmp_path / "seeds"
    assert missing_seeds(seeds_dir()) is None
    assert require_seeds(in_ci=True) == tmp_path / "seeds"


def test_missing_seeds_skip_outside_ci_and_fail_in_ci(tmp_path, monkeypatch):
    empty = _seed_files(tmp_path / "only_000", "000")
    reason = (
        f"seed documents 001_*.txt not found in {empty} ($SYNC_OBS_SEEDS_DIR); "
        "set SYNC_OBS_SEEDS_DIR to the folder holding them"
    )
    monkeypatch.setenv(SEEDS_ENV, str(empty))
    assert missing_seeds(empty) == reason
    # A variable naming the wrong folder is a mistake to report, in CI or not.
    for in_ci in (True, False):
        with pytest.raises(pytest.fail.Exception, match="a failure: CI=true or"):
            require_seeds(in_ci)

    monkeypatch.delenv(SEEDS_ENV)
    monkeypatch.setattr(seed_sql, "CI_SEEDS_DIR", tmp_path / "nowhere")
    reason = (
        f"seed documents 000_*.txt and 001_*.txt not found in {tmp_path / 'nowhere'} (beside "
        "the repository, as in CI); set SYNC_OBS_SEEDS_DIR to the folder holding them"
    )
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_seeds(in_ci=False)
    assert str(skipped.value) == f"{reason} (skipped outside CI; CI=true makes this a failure)"
    with pytest.raises(pytest.fail.Exception) as failed:
        require_seeds(in_ci=True)
    assert str(failed.value) == f"{reason} (a failure: CI=true or {SEEDS_ENV} set)"


def test_the_skipped_seed_statements_are_exactly_the_non_queries(seed_folder):
    skipped = {
        seed: [
            (" ".join(strip_comments(s.sql).split()[:2]), skip_reason(s))
            for s in statements(seed_folder, seed)
            if skip_reason(s)
        ]
        for seed in ("000", "001")
    }
    ddl = "DDL: the seed's recommended index; migration 0001 creates its equivalent"
    assert [first for first, _ in skipped["000"]] == [
        "CREATE INDEX",
        "CREATE INDEX",
        "CREATE INDEX",
        "INSERT INTO",  # archive to utilities.sync_log_archive
        "DELETE FROM",  # ... and delete: retention's job
    ]
    assert [reason for first, reason in skipped["000"] if first == "CREATE INDEX"] == [ddl] * 3
    firsts_001 = [first for first, _ in skipped["001"]]
    assert firsts_001.count("CREATE INDEX") == 3
    assert firsts_001.count("INSERT INTO") == 2  # the invalid inserts of the manual test
    helper_calls = [r for _, r in skipped["001"] if "helper functions" in r]
    assert len(helper_calls) == 7  # start/complete/fail_vantage_sync, documented and tested
    assert len(skipped["001"]) == 12
    runnable = [
        s for seed in ("000", "001") for s in statements(seed_folder, seed) if not skip_reason(s)
    ]
    assert len(runnable) == 23
    assert all(strip_comments(s.sql).split()[0].upper() in ("SELECT", "WITH") for s in runnable)
    # Only the table names changed.
    for s in runnable:
        assert s.sql.replace("sync_history", "").replace("sync_state", "") == (
            s.original.replace("utilities.sync_log", "").replace("vantage_sync_state", "")
        )


@pytest.fixture
def pg(postgres_database_url: str) -> Iterator[Backend]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Backend("postgresql", postgres_database_url, schema)
    engine = _admin_engine(postgres_database_url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _sync(
    store: SyncStore,
    resource: str,
    start: dt.datetime,
    seconds: int | None,
    *,
    status: str = "success",
    records: int = 0,
    source: str | None = None,
    target: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> str:
    sync_id = str(uuid.uuid4())
    store.start_sync(
        sync_id=sync_id,
        resource=resource,
        started_at=start,
        source_system=source,
        target_system=target,
    )
    if seconds is not None:
        store.finish_sync(
            sync_id=sync_id,
            resource=resource,
            started_at=start,
            outcome=SyncOutcome(
                status=status,
                ended_at=start + dt.timedelta(seconds=seconds),
                records_processed=records,
                errors=errors or [],
                error_message=errors[0]["message"] if errors else None,
            ),
        )
    return sync_id


def _history(store: SyncStore, now: dt.datetime) -> dict[str, str]:
    """Known history around ``now``, far from every window's edge; returns notable sync ids."""
    h = dt.timedelta(hours=1)
    m = dt.timedelta(minutes=1)
    d = dt.timedelta(days=1)
    timeout = [{"code": "API_TIMEOUT", "message": "Vantage API request timed out after 30s"}]
    vantage = {"source": "vantage", "target": "warehouse"}
    erp = {"source": "erp", "target": "lake"}
    crm = {"source": "crm", "target": "lake"}
    ids = {}
    _sync(store, "vantage/accounts", now - 10 * d, 100, records=1000, **vantage)
    _sync(store, "vantage/accounts", now - 3 * d, 50, records=200, **vantage)
    _sync(store, "vantage/accounts", now - 2 * h, 60, records=100, **vantage)
    ids["accounts_failed"] = _sync(
        store, "vantage/accounts", now - 90 * m, 30, status="failed", errors=timeout, **vantage
    )
    _sync(store, "vantage/funds", now - 26 * h, 20, records=30, **vantage)
    _sync(store, "vantage/funds", now - 3 * h, 10, records=41, **vantage)
    for minutes in (50, 40, 30):  # seed 000's critical alert: 3 failures in the last hour
        _sync(store, "erp/orders", now - minutes * m, 5, status="failed", errors=timeout, **erp)
    ids["slow"] = _sync(store, "erp/slow", now - 230 * m, 3900, records=7, **erp)  # > 1 hour
    _sync(store, "crm/contacts", now - 30 * h, 11, records=13, **crm)  # stale: yellow
    _sync(store, "crm/deals", now - 45 * m, None, **crm)  # running for 45 min: stuck, red
    _sync(store, "crm/leads", now - 5 * m, None, **crm)  # running, not stuck
    _sync(store, "old/thing", now - 40 * d, 6, records=3, source="x", target="y")  # stale
    # Seed 001's manual test sequence, by its own resource names.
    _sync(store, "accounts", now - 4 * h, 12, records=101)
    _sync(
        store,
        "funds",
        now - 5 * h,
        7,
        status="failed",
        errors=[{"code": "TEST_ERROR", "message": "Test failure"}],
    )
    return ids


def _run_seed_queries(
    backend: Backend, runnable: list[SeedStatement]
) -> dict[str, list[list[dict[str, Any]]]]:
    """Each statement's rows, by ``seed: heading`` (several statements may share a heading)."""
    results: dict[str, list[list[dict[str, Any]]]] = {}
    engine = backend.engine()
    try:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("SET TIME ZONE 'UTC'")
            # The package sets its schema per transaction; a user's own session names it.
            cursor.execute(f'SET search_path TO "{backend.schema}"')
            for statement in runnable:
                cursor.execute(statement.sql)  # no parameters: the text goes as written
                names = [c[0] for c in cursor.description]
                rows = [dict(zip(names, map(_plain, row), strict=True)) for row in cursor]
                results.setdefault(statement.name, []).append(rows)
            conn.rollback()
    finally:
        engine.dispose()
    return results


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


@pytest.mark.postgres
def test_seed_sql_runs_unchanged_and_agrees_with_the_reports(seed_folder, pg):
    runnable = [
        s for seed in ("000", "001") for s in statements(seed_folder, seed) if not skip_reason(s)
    ]
    store = pg.store()
    try:
        ids = _history(store, utcnow())
        results = _run_seed_queries(pg, runnable)
        now = utcnow()
        _agree_000(results, store, now, ids)
        _agree_001(results, store, now)
    finally:
        store.dispose()
    assert sum(len(v) for v in results.values()) == len(runnable)


def _records(frame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")


def _agree_000(results, store: SyncStore, now: dt.datetime, ids: dict[str, str]) -> None:
    (recent,) = results["000: sync_log (20 MB) 📝"]
    week = _records(daily_operations(store, days=7, now=now))
    assert len(recent) == sum(r["operations"] for r in week) == 14

    (pattern1,) = results["000: Pattern 1: Recent Sync Status"]
    board = {r["metric_name"]: r["metric_value"] for r in _records(dashboard(store, now=now))}
    assert sum(r["total_syncs"] for r in pattern1) == board["total_operations_24h"] == 11
    assert sum(r["failed"] for r in pattern1) == board["failed_operations_24h"] == 5
    assert pattern1[0][("source_system")] == "erp" and pattern1[0]["failed"] == 3

    (pattern2,) = results["000: Pattern 2: Failed Sync Investigation"]
    columns = ("sync_id", "source_system", "target_system", "sync_start_time", "error_message")
    report = [{c: r[c] for c in columns} for r in _records(failures(store, days=7, now=now))]
    assert pattern2 == report
    assert len(report) == 5
    assert ids["accounts_failed"] in {r["sync_id"] for r in report}

    (pattern3,) = results["000: Pattern 3: Sync Performance Analysis"]
    report = _records(performance(store, days=30, now=now))
    assert [(r["source_system"], r["target_system"], r["sync_count"]) for r in pattern3] == [
        (r["source_system"], r["target_system"], r["sync_count"]) for r in report
    ]
    for seed_row, row in zip(pattern3, report, strict=True):
        assert seed_row["avg_duration_seconds"] == pytest.approx(row["avg_duration_seconds"])
        assert seed_row["max_duration_seconds"] == pytest.approx(row["max_duration_seconds"])
    assert report[0] == {
        "source_system": "erp",
        "target_system": "lake",
        "sync_count": 1,
        "avg_duration_seconds": 3900.0,
        "max_duration_seconds": 3900.0,
    }

    (pattern4,) = results["000: Pattern 4: Data Volume Tracking"]
    report = _records(daily_volume(store, days=30, now=now))
    assert [(r["sync_date"], r["source_system"], r["total_records"]) for r in pattern4] == [
        (r["sync_date"], r["source_system"], r["total_records"]) for r in report
    ]
    assert sum(r["total_records"] for r in report) == 1000 + 200 + 100 + 30 + 41 + 7 + 13 + 101

    (critical,) = results["000: Critical Sync Failures Alert"]
    assert critical == [
        {"source_system": "erp", "target_system": "lake", "consecutive_failures": 3}
    ]
    (latency,) = results["000: Sync Latency Monitoring"]
    assert [r["sync_id"] for r in latency] == [ids["slow"]]
    (completeness,) = results["000: Data Completeness Check"]
    assert completeness == []  # HAVING COUNT(*) < 1 never holds for a group: the seed's own SQL


def _agree_001(results, store: SyncStore, now: dt.datetime) -> None:
    report = _records(status(store, now=now, include_healthy=True))
    by_resource = {r["resource"]: r for r in report}
    assert len(by_resource) == 10
    # The default lists the seed dashboard's red and yellow rows only, in its order.
    assert _records(status(store, now=now)) == [r for r in report if r["health"] != "green"]

    (dashboard_rows,) = results["001: Monitoring Dashboard Query"]
    assert [(r["resource"], r["health_indicator"]) for r in dashboard_rows] == [
        (r["resource"], r["health"]) for r in report
    ]
    assert [r["health"] for r in report] == ["red"] * 4 + ["yellow"] * 2 + ["green"] * 4
    for seed_row in dashboard_rows:
        row = by_resource[seed_row["resource"]]
        assert seed_row["error_count"] == row["error_count"]
        assert seed_row["records_synced"] == row["records_synced"]
        assert seed_row["duration_ms"] == row["duration_ms"]
        if row["hours_since_sync"] is None:
            assert seed_row["hours_since_sync"] is None
        else:
            assert seed_row["hours_since_sync"] == pytest.approx(row["hours_since_sync"], abs=0.01)

    (query1,) = results["001: Query 1: Get Current Status for All Resources"]
    assert {r["resource"]: r["status"] for r in query1} == {
        r: row["status"] for r, row in by_resource.items()
    }
    assert [r["status"] for r in query1][:3] == ["failed"] * 3
    for seed_row in query1:
        row = by_resource[seed_row["resource"]]
        assert seed_row["last_sync_time"] == row["last_sync_time"]
        if row["running_seconds"] is None:
            assert seed_row["running_seconds"] is None
        else:
            assert abs(seed_row["running_seconds"] - row["running_seconds"]) <= 5

    failed = {r for r, row in by_resource.items() if row["status"] == "failed"}
    (query2,) = results["001: Query 2: Find Failed Syncs with Errors"]
    assert {r["resource"]: r["error_count"] for r in query2} == {
        r: by_resource[r]["error_count"] for r in failed
    }
    (query3,) = results["001: Query 3: Check for Stale Syncs (Last Sync > 24 Hours Ago)"]
    stale = {r for r, row in by_resource.items() if (row["hours_since_sync"] or 0) > 24}
    assert {r["resource"] for r in query3} == stale == {"crm/contacts", "old/thing"}
    (query4,) = results["001: Query 4: Get Incremental Sync Timestamp for Resource"]
    assert query4 == [{"last_sync_time": by_resource["accounts"]["last_sync_time"]}]
    (query5,) = results["001: Query 5: Monitor Performance - Slowest Syncs"]
    slowest = sorted(
        (row for row in report if row["duration_ms"] is not None),
        key=lambda row: -row["duration_ms"],
    )[:5]
    assert [(r["resource"], r["duration_ms"]) for r in query5] == [
        (r["resource"], r["duration_ms"]) for r in slowest
    ]
    (query6,) = results["001: Query 6: Aggregate Sync Statistics"]
    statuses = [row["status"] for row in report]
    durations = [row["duration_ms"] for row in report if row["duration_ms"] is not None]
    assert query6 == [
        {
            "total_resources": len(report),
            "successful": statuses.count("success"),
            "failed": statuses.count("failed"),
            "running": statuses.count("running"),
            "never_run": statuses.count("never_run"),
            "total_records_synced": sum(row["records_synced"] for row in report),
            "avg_duration_ms": pytest.approx(sum(durations) / len(durations)),
            "max_duration_ms": max(durations),
        }
    ]

    stuck, stale_alert, repeated, slow = results["001: Alert Conditions"]
    assert (
        {r["resource"] for r in stuck}
        == {r for r, row in by_resource.items() if (row["running_seconds"] or 0) > 1800}
        == {"crm/deals"}
    )
    assert {r["resource"] for r in stale_alert} == stale
    assert {r["resource"] for r in repeated} == failed
    assert (
        {r["resource"] for r in slow}
        == {r for r, row in by_resource.items() if (row["duration_ms"] or 0) > 300_000}
        == {"erp/slow"}
    )

    everything, accounts_running, accounts_done, funds_failed = results[
        "001: Manual Testing Sequence"
    ]
    assert [r["resource"] for r in everything] == sorted(by_resource)
    assert accounts_running[0]["last_sync_status"] == by_resource["accounts"]["status"]
    assert accounts_done == [
        {
            "resource": "accounts",
            "last_sync_status": "success",
            "last_sync_time": by_resource["accounts"]["last_sync_time"],
            "duration_ms": 12_000,
            "records_synced": 101,
            "records_created": 0,
            "records_updated": 0,
        }
    ]
    assert funds_failed[0]["last_sync_status"] == "failed"
    assert len(funds_failed[0]["errors"]) == by_resource["funds"]["error_count"] == 1
