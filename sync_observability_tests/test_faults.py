"""Real faults: dropped connections, locks that outlast the retries, lost acknowledgements, crashes.

Nothing here is simulated with mocks: connections are killed with ``pg_terminate_backend``,
locks are taken from a second connection, and a crash is a child process calling ``os._exit``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import sqlite3
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import (
    DatabaseUnavailableError,
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncOutcome,
    SyncStateError,
    SyncStore,
    SyncTracker,
)
from sync_observability_tests.conftest import (
    WITH_PARTITIONED,
    Backend,
    _admin_engine,
    make_backend,
    own_database,
)


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
RETRY_WARNING = "transient database error"
KILLED_EXIT_CODE = 17
TERMINATE_TRACKER_CONNECTIONS = sa.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name = 'sync_obs' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)
TRACKER_CONNECTIONS = sa.text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = 'sync_obs' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


def _history_count(store: SyncStore, resource: str) -> int:
    return len(store.list_history(resource=resource, limit=None))


def _drop_schema(url: str, schema: str) -> None:
    admin = _admin_engine(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


# -- (a) a real dropped connection is retried (PostgreSQL) ---------------------------------------


@pytest.fixture
def pg_backend(postgres_database_url: str) -> Iterator[Backend]:
    """A fresh schema on PostgreSQL only (these faults have no SQLite equivalent)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Backend("postgresql", postgres_database_url, schema)
    _drop_schema(postgres_database_url, schema)


def _terminate_tracker_connections(url: str) -> int:
    """Kill every connection the tracker's engines hold open; wait until they are gone."""
    admin = _admin_engine(url)
    try:
        with admin.connect() as conn:
            killed = sum(conn.execute(TERMINATE_TRACKER_CONNECTIONS).scalars())
            deadline = time.monotonic() + 10
            while conn.execute(TRACKER_CONNECTIONS).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert conn.execute(TRACKER_CONNECTIONS).scalar_one() == 0
    finally:
        admin.dispose()
    return killed


@pytest.mark.postgres
@pytest.mark.parametrize("killed_before", ["start", "finish"])
def test_dropped_connection_is_retried_and_the_sync_recorded(
    pg_backend: Backend, caplog: pytest.LogCaptureFixture, killed_before: str
) -> None:
    caplog.set_level(logging.WARNING, logger="sync_observability")
    tracker = pg_backend.tracker()
    with tracker.track(resource="accounts") as first:
        first.record(processed=1)
    assert not [r for r in caplog.records if RETRY_WARNING in r.getMessage()]

    killed = 0
    if killed_before == "start":
        killed = _terminate_tracker_connections(pg_backend.url)
    with tracker.track(resource="accounts") as sync:
        assert sync.watermark == first.started_at
        sync.record(processed=40, created=10, updated=30)
        if killed_before == "finish":
            killed = _terminate_tracker_connections(pg_backend.url)

    assert killed >= 1
    retries = [r for r in caplog.records if RETRY_WARNING in r.getMessage()]
    assert retries, "the dropped connection was not retried"
    assert all(r.levelno == logging.WARNING for r in retries)
    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert state.current_sync_id == sync.sync_id
    assert state.records_synced == 40
    assert state.consecutive_failures == 0
    assert state.last_sync_time == sync.started_at
    rows = tracker.store.list_history(resource="accounts", limit=None)
    assert [(r.sync_id, r.sync_status) for r in rows] == [
        (sync.sync_id, "success"),
        (first.sync_id, "success"),
    ]
    assert (rows[0].records_processed, rows[0].records_created, rows[0].records_updated) == (
        40,
        10,
        30,
    )
    tracker.store.dispose()


# -- (b) retries run out: the sync fails loudly and nothing is half-written ----------------------


def _assert_still_running(store: SyncStore, resource: str, sync_id: str, before: Any) -> None:
    """Neither table took the failed finish: both still say the sync is running."""
    state = store.get_state(resource)
    assert state is not None
    assert state.last_sync_status == "running"
    assert state.current_sync_id == sync_id
    assert state.completed_at is None
    assert state.last_sync_time == before.last_sync_time
    assert state.records_synced == before.records_synced
    assert state.consecutive_failures == before.consecutive_failures
    row = store.get_sync(sync_id)
    assert row is not None
    assert row.sync_status == "running"
    assert row.sync_end_time is None
    assert row.records_processed == 0
    assert row.watermark_after is None
    assert [r.sync_id for r in store.list_history(status="running", limit=None)] == [sync_id]


def test_sqlite_lock_outlasting_the_retries_fails_loudly(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sync_observability")
    path = tmp_path / "sync.db"
    tracker = Backend("sqlite", f"sqlite:///{path}").tracker(storage_timeout_seconds=1)
    with tracker.track(resource="accounts") as first:
        first.record(processed=2)
    before = tracker.get_state("accounts")

    locker = sqlite3.connect(path, isolation_level=None)
    try:
        with (
            pytest.raises(DatabaseUnavailableError, match=r"gave up after 1 attempt in 1\.\ds"),
            tracker.track(resource="accounts") as sync,
        ):
            sync.record(processed=9)
            sync.advance_watermark(dt.datetime.now(UTC) + dt.timedelta(minutes=2))
            locker.execute("BEGIN EXCLUSIVE")
            # The lock is waited for as long as the budget (1 s) allows, then given up on.
    finally:
        locker.rollback()
        locker.close()

    assert not [r for r in caplog.records if RETRY_WARNING in r.getMessage()]
    _assert_still_running(tracker.store, "accounts", sync.sync_id, before)
    # The next sync of the resource marks the unrecorded one failed, then runs.
    with tracker.track(resource="accounts") as after:
        assert after.watermark == before.last_sync_time
    lost = tracker.store.get_sync(sync.sync_id)
    assert lost is not None and lost.sync_status == "failed"
    assert [e["code"] for e in lost.errors] == ["RECORD_FAILED"]
    tracker.store.dispose()


@pytest.fixture
def pg_lock_timeout_url(postgres_database_url: str) -> Iterator[str]:
    """A database of its own whose sessions give up waiting for a lock after 200 ms."""
    with own_database(postgres_database_url, "sync_obs_locks", "lock_timeout = '200ms'") as url:
        yield url


@pytest.mark.postgres
def test_postgres_lock_outlasting_the_retries_rolls_back_the_whole_finish(
    pg_lock_timeout_url: str,
) -> None:
    backend = Backend("postgresql", pg_lock_timeout_url, "sync_observability")
    # The database's own lock_timeout (200 ms) gives way to the budget's, set per transaction.
    tracker = backend.tracker(storage_timeout_seconds=1)
    with tracker.track(resource="accounts") as first:
        first.record(processed=2)
    before = tracker.get_state("accounts")

    locker = _admin_engine(pg_lock_timeout_url).execution_options(isolation_level="READ COMMITTED")
    with locker.connect() as conn:
        transaction = conn.begin()
        try:
            with (
                pytest.raises(DatabaseUnavailableError, match=r"gave up after 1 attempt in 1\.\ds"),
                tracker.track(resource="accounts") as sync,
            ):
                sync.record(processed=9)
                # finish updates sync_history first, then waits on sync_state until lock_timeout:
                # the history update must be rolled back with it.
                conn.execute(
                    sa.text("LOCK TABLE sync_observability.sync_state IN ACCESS EXCLUSIVE MODE")
                )
        finally:
            transaction.rollback()
    locker.dispose()

    _assert_still_running(tracker.store, "accounts", sync.sync_id, before)
    tracker.store.dispose()


def test_unreachable_server_fails_after_the_retries_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sync_observability")
    secret = "s3cret-Pa55word"
    tracker = SyncTracker(
        database_url=f"postgresql://sync:{secret}@127.0.0.1:1/nowhere", max_retries=2
    )
    with (
        pytest.raises(DatabaseUnavailableError, match="gave up after 3 attempts") as raised,
        tracker.track(resource="accounts"),
    ):
        pytest.fail("the sync must not start without its database")
    assert len([r for r in caplog.records if RETRY_WARNING in r.getMessage()]) == 2
    assert secret not in str(raised.value)
    assert secret not in "".join(traceback.format_exception(raised.value))
    assert secret not in caplog.text


# -- (c) a lost commit acknowledgement is replayed idempotently ----------------------------------


def test_replayed_start_and_finish_are_idempotent(store: SyncStore) -> None:
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = store.start_sync(sync_id=first_id, resource="accounts", started_at=T0)
    replayed = store.start_sync(sync_id=first_id, resource="accounts", started_at=T0)
    assert replayed == first
    assert _history_count(store, "accounts") == 1

    failed = SyncOutcome(
        status="failed",
        ended_at=T0 + dt.timedelta(seconds=5),
        records_processed=3,
        error_message="ValueError: boom",
        errors=[{"code": "ValueError", "message": "boom"}],
    )
    for _ in range(2):
        store.finish_sync(sync_id=first_id, resource="accounts", started_at=T0, outcome=failed)
    state = store.get_state("accounts")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("failed", 1)
    assert state.last_sync_time is None

    # A finish with another outcome is not a replay: refused, nothing changes.
    other = SyncOutcome(status="success", ended_at=failed.ended_at, watermark_after=T0)
    with pytest.raises(SyncNotRunningError):
        store.finish_sync(sync_id=first_id, resource="accounts", started_at=T0, outcome=other)
    assert store.get_state("accounts") == state
    assert store.get_sync(first_id).sync_status == "failed"

    t1 = T0 + dt.timedelta(minutes=1)
    for _ in range(2):
        second = store.start_sync(sync_id=second_id, resource="accounts", started_at=t1)
        assert second.watermark_before is None
    succeeded = SyncOutcome(
        status="success",
        ended_at=t1 + dt.timedelta(seconds=2),
        records_processed=8,
        watermark_after=t1,
    )
    for _ in range(2):
        store.finish_sync(sync_id=second_id, resource="accounts", started_at=t1, outcome=succeeded)
    state = store.get_state("accounts")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("success", 0)
    assert state.last_sync_time == t1
    assert state.records_synced == 8
    rows = store.list_history(resource="accounts", limit=None)
    assert [(r.sync_id, r.sync_status) for r in rows] == [
        (second_id, "success"),
        (first_id, "failed"),
    ]
    assert rows[0].records_processed == 8


def test_late_replay_of_a_start_does_not_resurrect_an_ended_sync(store: SyncStore) -> None:
    sync_id = str(uuid.uuid4())
    store.start_sync(sync_id=sync_id, resource="accounts", started_at=T0)
    store.finish_sync(
        sync_id=sync_id,
        resource="accounts",
        started_at=T0,
        outcome=SyncOutcome(status="success", ended_at=T0, watermark_after=T0),
    )
    with contextlib.suppress(SyncStateError):  # refusing the late replay is fine too
        store.start_sync(sync_id=sync_id, resource="accounts", started_at=T0)
    state = store.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    store.start_sync(sync_id=str(uuid.uuid4()), resource="accounts", started_at=T0)


# -- (d) a process killed mid-sync leaves it running; reaping fails it, watermark untouched ------


def _die_mid_sync(url: str, schema: str, resource: str) -> None:
    """Child process: start a sync, move its watermark in memory, then die without cleanup."""
    tracker = SyncTracker(database_url=url, schema_name=schema)
    with tracker.track(resource=resource) as sync:
        sync.record(processed=5, created=5)
        sync.advance_watermark(dt.datetime.now(UTC) + dt.timedelta(minutes=2))
        os._exit(KILLED_EXIT_CODE)


@pytest.mark.slow
def test_killed_process_leaves_the_sync_running_until_reaped(backend: Backend) -> None:
    tracker = backend.tracker()
    with tracker.track(resource="funds") as first:
        first.record(processed=1)
    before = tracker.get_state("funds")
    assert before is not None

    child = multiprocessing.get_context("spawn").Process(
        target=_die_mid_sync, args=(backend.url, backend.schema, "funds")
    )
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join(timeout=10)
        pytest.fail("the child process did not exit")
    assert child.exitcode == KILLED_EXIT_CODE

    store = tracker.store
    running = store.list_history(resource="funds", status="running", limit=None)
    assert len(running) == 1
    orphan = running[0]
    _assert_still_running(store, "funds", orphan.sync_id, before)
    assert orphan.watermark_before == first.started_at
    with pytest.raises(SyncAlreadyRunningError) as refused, tracker.track(resource="funds"):
        pass
    assert refused.value.running_sync_id == orphan.sync_id

    reaped_at = dt.datetime.now(UTC)
    assert store.reap_sync(orphan.sync_id, code="ORPHANED", message="process died", now=reaped_at)
    assert not store.reap_sync(orphan.sync_id, code="ORPHANED", message="again", now=reaped_at)
    state = store.get_state("funds")
    assert state is not None
    assert state.last_sync_status == "failed"
    assert state.last_sync_time == before.last_sync_time
    assert state.consecutive_failures == before.consecutive_failures + 1
    assert [e["code"] for e in state.errors] == ["ORPHANED"]
    row = store.get_sync(orphan.sync_id)
    assert row is not None
    assert row.sync_status == "failed"
    assert row.error_message == "ORPHANED: process died"
    assert row.watermark_after is None
    assert row.sync_end_time is not None

    with tracker.track(resource="funds") as after:
        assert after.watermark == first.started_at
        after.record(processed=3)
    state = tracker.get_state("funds")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("success", 0)
    assert state.last_sync_time == after.started_at
    assert _history_count(store, "funds") == 3
    store.dispose()
