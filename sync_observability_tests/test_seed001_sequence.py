"""Seed 001's "Manual Testing Sequence" (steps 1-8), through the tracker and the store.

The seed's helper functions map onto the package: ``start_vantage_sync`` is entering
``tracker.track`` (or ``SyncStore.start_sync``), ``complete_vantage_sync`` is leaving the block
cleanly, ``fail_vantage_sync`` is ``SyncStore.finish_sync`` with a failed outcome. The seed's SQL
runs with ``vantage_sync_state`` renamed to ``sync_state``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_observability import SyncOutcome, SyncTracker
from sync_observability_tests.conftest import Backend
from sync_observability_tests.test_store import snapshot

UTC = dt.timezone.utc


@pytest.fixture
def engine(backend: Backend) -> Iterator[sa.Engine]:
    """A plain engine for the seed's SQL."""
    e = backend.engine()
    yield e
    e.dispose()


def query(engine: sa.Engine, sql: str) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)).mappings())


def test_seed_001_manual_testing_sequence(
    tracker: SyncTracker, backend: Backend, engine: sa.Engine
) -> None:
    store = tracker.store  # opening the store migrates the database

    # 1. Check initial state: no resource has synced (rows appear on a resource's first sync).
    assert query(engine, "SELECT * FROM sync_state ORDER BY resource") == []
    assert store.list_states() == []

    # 2. Start a sync.
    before_start = dt.datetime.now(UTC)
    with tracker.track(resource="accounts", source_system="vantage") as sync:
        after_start = dt.datetime.now(UTC)
        # 3. Verify running state. Expected: status='running', started_at=now(), completed_at=NULL
        [row] = query(
            engine,
            "SELECT resource, last_sync_status, started_at, completed_at "
            "FROM sync_state WHERE resource = 'accounts'",
        )
        assert row["last_sync_status"] == "running"
        assert row["completed_at"] is None
        state = tracker.get_state("accounts")
        assert state is not None
        assert state.started_at == sync.started_at
        assert before_start <= state.started_at <= after_start
        time.sleep(0.005)  # the seed expects duration_ms > 0: let a few milliseconds pass
        # 4. Complete the sync: complete_vantage_sync('accounts', 100, 10, 90).
        sync.record(processed=100, created=10, updated=90)
    after_end = dt.datetime.now(UTC)

    # 5. Verify success state. Expected: status='success', last_sync_time=now(), duration_ms>0
    [row] = query(
        engine,
        "SELECT resource, last_sync_status, last_sync_time, duration_ms, "
        "records_synced, records_created, records_updated "
        "FROM sync_state WHERE resource = 'accounts'",
    )
    assert row["last_sync_status"] == "success"
    assert row["duration_ms"] > 0
    assert (row["records_synced"], row["records_created"], row["records_updated"]) == (100, 10, 90)
    state = tracker.get_state("accounts")
    assert state is not None
    # The contract's watermark rule (docs/contract.md) refines the seed's "now()": it is the
    # sync's start, so rows modified while the sync ran are fetched again next time.
    assert state.last_sync_time == sync.started_at
    assert before_start <= state.last_sync_time <= state.completed_at <= after_end
    assert state.duration_ms == round((state.completed_at - state.started_at).total_seconds() * 1e3)

    # 6. Test failure scenario: start_vantage_sync('funds'); fail_vantage_sync('funds', [...]).
    seed_errors = [{"code": "TEST_ERROR", "message": "Test failure"}]
    started = dt.datetime.now(UTC)
    record = store.start_sync(sync_id=str(uuid.uuid4()), resource="funds", started_at=started)
    store.finish_sync(
        sync_id=record.sync_id,
        resource="funds",
        started_at=started,
        outcome=SyncOutcome(
            status="failed",
            ended_at=dt.datetime.now(UTC),
            errors=seed_errors,
            error_message="TEST_ERROR: Test failure",
        ),
    )

    # 7. Verify failure state. Expected: status='failed', errors array has 1 element
    array_length = "jsonb_array_length" if backend.name == "postgresql" else "json_array_length"
    [row] = query(
        engine,
        f"SELECT resource, last_sync_status, completed_at, errors, {array_length}(errors) AS n "
        "FROM sync_state WHERE resource = 'funds'",
    )
    assert row["last_sync_status"] == "failed"
    assert row["completed_at"] is not None
    assert row["n"] == 1
    state = tracker.get_state("funds")
    assert state is not None
    assert state.errors == seed_errors
    assert state.last_sync_time is None  # a failure does not set the watermark
    if backend.name == "postgresql":
        # Seed 001's "Query 2: Find Failed Syncs with Errors", verbatim but for the table name.
        failed = query(
            engine,
            """
            SELECT
              resource,
              last_sync_status,
              completed_at,
              duration_ms,
              jsonb_array_length(errors) AS error_count,
              errors
            FROM sync_state
            WHERE last_sync_status = 'failed'
            ORDER BY completed_at DESC;
            """,
        )
        assert [(r["resource"], r["error_count"]) for r in failed] == [("funds", 1)]

    # 8. Verify constraints.
    before = snapshot(backend)
    for sql, constraint in [
        (
            "INSERT INTO sync_state (resource, last_sync_status, created_at, updated_at) "
            "VALUES ('test', 'invalid_status', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "ck_sync_state_last_sync_status",
        ),
        (
            "INSERT INTO sync_state (resource, duration_ms, created_at, updated_at) "
            "VALUES ('test', -100, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "ck_sync_state_duration_ms",
        ),
    ]:
        with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
            conn.execute(sa.text(sql))
        assert constraint in str(refused.value.orig)
    assert snapshot(backend) == before


def test_seed_001_step_8_statements_verbatim(tracker: SyncTracker, engine: sa.Engine) -> None:
    tracker.store  # noqa: B018 - create the tables
    for sql, constraint in [
        (
            "INSERT INTO sync_state (resource, last_sync_status) VALUES ('test', 'invalid_status')",
            "ck_sync_state_last_sync_status",
        ),
        (
            "INSERT INTO sync_state (resource, duration_ms) VALUES ('test', -100)",
            "ck_sync_state_duration_ms",
        ),
    ]:
        with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
            conn.execute(sa.text(sql))
        assert constraint in str(refused.value.orig)
