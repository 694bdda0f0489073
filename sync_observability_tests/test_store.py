"""SyncStore's lifecycle rules, on SQLite and PostgreSQL (one suite, both engines)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import (
    InvalidInputError,
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncObservabilityError,
    SyncOutcome,
    SyncRecord,
    SyncStore,
)
from sync_observability.storage.schema import sync_history, sync_state
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


UTC = dt.timezone.utc
T0 = dt.datetime(2025, 11, 5, 10, 0, 0, 123456, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    """T0 plus some minutes: fixed times make every assertion exact."""
    return T0 + dt.timedelta(minutes=minutes)


def snapshot(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Every row of sync_state and sync_history, read with a separate engine."""
    engine = backend.engine()
    try:
        with engine.connect() as conn:
            return {
                table.name: [
                    dict(row)
                    for row in conn.execute(
                        sa.select(table).order_by(*table.primary_key.columns)
                    ).mappings()
                ]
                for table in (sync_state, sync_history)
            }
    finally:
        engine.dispose()


def start(store: SyncStore, resource: str, when: dt.datetime, **kwargs: Any) -> SyncRecord:
    return store.start_sync(
        sync_id=kwargs.pop("sync_id", str(uuid.uuid4())),
        resource=resource,
        started_at=when,
        **kwargs,
    )


def finish(store: SyncStore, record: SyncRecord, status: str, when: dt.datetime, **kw: Any) -> None:
    store.finish_sync(
        sync_id=record.sync_id,
        resource=record.resource,
        started_at=record.sync_start_time,
        outcome=SyncOutcome(status=status, ended_at=when, **kw),
    )


def succeed(store: SyncStore, resource: str, started: dt.datetime, watermark: dt.datetime) -> str:
    record = start(store, resource, started)
    finish(store, record, "success", started + dt.timedelta(seconds=1), watermark_after=watermark)
    return record.sync_id


def test_start_marks_running_and_opens_a_history_row(store: SyncStore) -> None:
    record = start(
        store,
        "accounts",
        at(0),
        sync_type="full",
        source_system="vantage",
        target_system="warehouse",
        dagster_run_id="run-1",
        asset_key="vantage/accounts",
        partition_key="2025-11-05",
        retry_number=2,
        metadata={"cost": 1.5, "tags": ["a"]},
    )
    state = store.get_state("accounts")
    assert state is not None
    assert (state.last_sync_status, state.started_at, state.completed_at) == (
        "running",
        at(0),
        None,
    )
    assert state.duration_ms is None
    assert state.current_sync_id == record.sync_id
    assert state.dagster_run_id == "run-1"
    assert (state.source_system, state.target_system) == ("vantage", "warehouse")
    assert state.last_sync_time is None
    assert state.consecutive_failures == 0
    assert state.errors == []

    stored = store.get_sync(record.sync_id)
    assert stored == record
    assert stored.sync_status == "running"
    assert stored.sync_end_time is None
    assert stored.sync_type == "full"
    assert stored.watermark_before is None
    assert (stored.asset_key, stored.partition_key, stored.retry_number) == (
        "vantage/accounts",
        "2025-11-05",
        2,
    )
    assert stored.metadata == {"cost": 1.5, "tags": ["a"]}


def test_success_records_counts_duration_and_moves_the_watermark(store: SyncStore) -> None:
    record = start(store, "accounts", at(0))
    finish(
        store,
        record,
        "success",
        at(1.5),
        records_processed=100,
        records_created=10,
        records_updated=90,
        records_failed=3,
        watermark_after=at(0),
        metadata={"volume": 100},
    )
    state = store.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert state.last_sync_time == at(0)
    assert state.last_success_at == at(1.5)
    assert state.completed_at == at(1.5)
    assert state.duration_ms == 90_000
    assert (state.records_synced, state.records_created, state.records_updated) == (100, 10, 90)
    assert state.consecutive_failures == 0
    assert state.current_sync_id == record.sync_id

    row = store.get_sync(record.sync_id)
    assert row is not None
    assert (row.sync_status, row.sync_end_time, row.duration_ms) == ("success", at(1.5), 90_000)
    assert (row.records_processed, row.records_created, row.records_updated) == (100, 10, 90)
    assert row.records_failed == 3
    assert row.watermark_after == at(0)
    assert row.metadata == {"volume": 100}

    nxt = start(store, "accounts", at(10))
    assert nxt.watermark_before == at(0)


def test_failures_never_move_the_watermark_and_count_up_until_a_success(store: SyncStore) -> None:
    succeed(store, "funds", at(0), watermark=at(0))
    for n in (1, 2, 3):
        record = start(store, "funds", at(10 * n))
        assert record.watermark_before == at(0)
        # A failed outcome that carries a watermark and a cursor must still not move either.
        finish(
            store,
            record,
            "failed",
            at(10 * n + 1),
            watermark_after=at(10 * n),
            cursor_after={"page": n},
            cursor_advanced=True,
            error_message="boom",
            errors=[{"code": "E", "message": "boom"}],
        )
        state = store.get_state("funds")
        assert state is not None
        assert state.last_sync_status == "failed"
        assert state.consecutive_failures == n
        assert state.last_sync_time == at(0)
        assert state.cursor is None
        assert state.last_success_at == at(0) + dt.timedelta(seconds=1)
        row = store.get_sync(record.sync_id)
        assert row is not None
        assert (row.watermark_after, row.cursor_after) == (None, None)
        assert row.error_message == "boom"

    record = start(store, "funds", at(40))
    finish(store, record, "success", at(41), watermark_after=at(40))
    state = store.get_state("funds")
    assert state is not None
    assert state.consecutive_failures == 0
    assert state.last_sync_time == at(40)
    assert state.last_success_at == at(41)
    assert state.errors == []


def test_a_second_start_of_a_running_resource_is_refused(
    store: SyncStore, backend: Backend
) -> None:
    first = start(store, "accounts", at(0))
    before = snapshot(backend)
    second_id = str(uuid.uuid4())
    with pytest.raises(SyncAlreadyRunningError) as refused:
        start(store, "accounts", at(1), sync_id=second_id)
    assert refused.value.running_sync_id == first.sync_id
    assert first.sync_id in str(refused.value)
    assert refused.value.resource == "accounts"
    assert snapshot(backend) == before
    assert store.get_sync(second_id) is None
    # Another resource is not blocked.
    assert start(store, "funds", at(1)).sync_status == "running"


def test_finishing_a_reaped_sync_is_refused_and_changes_nothing(
    store: SyncStore, backend: Backend
) -> None:
    succeed(store, "accounts", at(0), watermark=at(0))
    record = start(store, "accounts", at(10))
    assert store.reap_sync(record.sync_id, code="ORPHANED", message="run gone", now=at(70))

    reaped = store.get_sync(record.sync_id)
    assert reaped is not None
    assert reaped.sync_status == "failed"
    assert reaped.sync_end_time == at(70)
    assert reaped.duration_ms == 3_600_000
    assert reaped.error_message == "ORPHANED: run gone"
    assert [e["code"] for e in reaped.errors] == ["ORPHANED"]
    assert reaped.watermark_after is None
    state = store.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "failed"
    assert state.consecutive_failures == 1
    assert state.last_sync_time == at(0)
    assert state.completed_at == at(70)

    before = snapshot(backend)
    with pytest.raises(SyncNotRunningError) as refused:
        finish(store, record, "success", at(71), records_processed=5, watermark_after=at(10))
    assert refused.value.status == "failed"
    assert record.sync_id in str(refused.value)
    assert snapshot(backend) == before


def test_reap_returns_false_when_the_sync_is_not_running(
    store: SyncStore, backend: Backend
) -> None:
    assert store.reap_sync(str(uuid.uuid4()), code="ORPHANED", message="x", now=at(0)) is False
    done = succeed(store, "accounts", at(0), watermark=at(0))
    failed = start(store, "funds", at(0))
    assert store.reap_sync(failed.sync_id, code="STUCK", message="too long", now=at(1))
    before = snapshot(backend)
    assert store.reap_sync(done, code="ORPHANED", message="x", now=at(5)) is False
    assert store.reap_sync(failed.sync_id, code="ORPHANED", message="x", now=at(5)) is False
    assert snapshot(backend) == before


def test_a_replayed_finish_is_a_no_op_but_a_different_one_is_refused(
    store: SyncStore, backend: Backend
) -> None:
    record = start(store, "accounts", at(0))
    finish(store, record, "failed", at(1), error_message="boom")
    before = snapshot(backend)
    # The same finish again (a retry after a lost commit acknowledgement) is recognised...
    finish(store, record, "failed", at(1), error_message="boom")
    assert snapshot(backend) == before
    state = store.get_state("accounts")
    assert state is not None
    assert state.consecutive_failures == 1
    # ...but a different result for a finished sync is not.
    with pytest.raises(SyncNotRunningError):
        finish(store, record, "success", at(2), watermark_after=at(0))
    assert snapshot(backend) == before


def test_duration_is_never_negative_when_the_clock_goes_backwards(store: SyncStore) -> None:
    record = start(store, "accounts", at(10))
    finish(store, record, "success", at(9), watermark_after=at(10))
    state = store.get_state("accounts")
    assert state is not None
    assert state.duration_ms == 0
    assert state.completed_at == at(10)
    row = store.get_sync(record.sync_id)
    assert row is not None
    assert row.duration_ms == 0
    assert row.sync_end_time == row.sync_start_time


def test_errors_are_stored_as_a_json_array(store: SyncStore, backend: Backend) -> None:
    errors = [
        {"code": "API_TIMEOUT", "message": "timed out after 30s", "timestamp": at(1).isoformat()},
        {"code": "PARSE_ERROR", "message": "bad JSON in «12345»", "record": {"id": 12345}},
    ]
    record = start(store, "accounts", at(0))
    finish(store, record, "failed", at(2), errors=errors, error_message="API_TIMEOUT")
    state = store.get_state("accounts")
    row = store.get_sync(record.sync_id)
    assert state is not None
    assert row is not None
    assert state.errors == errors
    assert row.errors == errors

    if backend.name == "postgresql":
        typeof, length = "jsonb_typeof", "jsonb_array_length"
    else:
        typeof, length = "json_type", "json_array_length"
    engine = backend.engine()
    try:
        with engine.connect() as conn:
            for table in ("sync_state", "sync_history"):
                found = conn.execute(
                    sa.text(f"SELECT {typeof}(errors), {length}(errors) FROM {table}")
                ).one()
                assert tuple(found) == ("array", 2)
    finally:
        engine.dispose()


def test_list_history_filters_and_orders_newest_first(store: SyncStore) -> None:
    a0 = succeed(store, "a", at(0), watermark=at(0))
    b1 = start(store, "b", at(1))
    finish(store, b1, "failed", at(1.5))
    a2 = start(store, "a", at(2))
    finish(store, a2, "failed", at(2.5))
    a3 = start(store, "a", at(3))  # still running

    def ids(**filters: Any) -> list[str]:
        return [r.sync_id for r in store.list_history(**filters)]

    assert ids() == [a3.sync_id, a2.sync_id, b1.sync_id, a0]
    assert ids(resource="a") == [a3.sync_id, a2.sync_id, a0]
    assert ids(status="failed") == [a2.sync_id, b1.sync_id]
    assert ids(status="running") == [a3.sync_id]
    assert ids(since=at(1)) == [a3.sync_id, a2.sync_id, b1.sync_id]
    # The same instant in another time zone selects the same rows.
    assert ids(since=at(1).astimezone(dt.timezone(dt.timedelta(hours=-5)))) == ids(since=at(1))
    assert ids(limit=2) == [a3.sync_id, a2.sync_id]
    assert ids(limit=None) == ids()
    assert ids(resource="a", status="failed", since=at(1)) == [a2.sync_id]
    assert ids(resource="nope") == []


def test_list_states_orders_by_resource_and_filters_by_status(store: SyncStore) -> None:
    succeed(store, "funds", at(0), watermark=at(0))
    failed = start(store, "accounts", at(0))
    finish(store, failed, "failed", at(1))
    start(store, "cashflows", at(0))

    states = store.list_states()
    assert [s.resource for s in states] == ["accounts", "cashflows", "funds"]
    assert [s.last_sync_status for s in states] == ["failed", "running", "success"]
    assert [s.resource for s in store.list_states(status="failed")] == ["accounts"]
    assert store.list_states(status="never_run") == []


def test_timestamps_come_back_timezone_aware_utc(store: SyncStore, backend: Backend) -> None:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    record = start(store, "accounts", at(0).astimezone(ist))
    finish(store, record, "success", at(2).astimezone(ist), watermark_after=at(1).astimezone(ist))

    state = store.get_state("accounts")
    row = store.get_sync(record.sync_id)
    assert state is not None
    assert row is not None
    stamps = [v for v in (*vars(state).values(), *vars(row).values()) if isinstance(v, dt.datetime)]
    assert len(stamps) >= 9
    for value in stamps:
        assert value.utcoffset() == dt.timedelta(0), value
    # Same instants, microseconds included.
    assert (state.started_at, state.last_sync_time, state.completed_at) == (at(0), at(1), at(2))
    assert state.started_at.tzinfo == UTC
    assert row.sync_start_time.microsecond == 123456

    engine = backend.engine()
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.select(sync_state.c.started_at)).scalar_one()
    finally:
        engine.dispose()
    assert raw == at(0)
    assert raw.utcoffset() == dt.timedelta(0)


def test_a_naive_datetime_is_refused_by_the_store_and_nothing_is_written(
    store: SyncStore, backend: Backend
) -> None:
    before = snapshot(backend)
    with pytest.raises(SyncObservabilityError, match="naive"):
        start(store, "accounts", at(0).replace(tzinfo=None))
    assert snapshot(backend) == before


NASTY_NAMES = [
    'O\'Reilly "quoted" `back` [bracket]',
    "'; DROP TABLE sync_state; --",
    "x'); DELETE FROM sync_history; --",
    "ünïcödé 日本語 🚀 — ☃",
    "percent %s %(name)s :param ? \\ backslash",
    "  padded name  ",
    "n" * 255,
]


def test_strings_are_stored_verbatim(store: SyncStore, backend: Backend) -> None:
    for i, name in enumerate(NASTY_NAMES):
        record = start(store, name, at(i), source_system=name, target_system=name[::-1])
        finish(
            store,
            record,
            "failed",
            at(i + 0.5),
            error_message=name,
            errors=[{"code": "E", "message": name}],
        )

    assert [s.resource for s in store.list_states()] == sorted(NASTY_NAMES)
    for name in NASTY_NAMES:
        state = store.get_state(name)
        assert state is not None
        assert (state.resource, state.source_system, state.target_system) == (
            name,
            name,
            name[::-1],
        )
        assert state.errors[0]["message"] == name
        [row] = store.list_history(resource=name)
        assert (row.resource, row.error_message) == (name, name)

    engine = backend.engine()
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sync_state.c.resource)).scalars().all()
            assert sorted(stored) == sorted(NASTY_NAMES)
            lengths = conn.execute(
                sa.select(sa.func.length(sync_history.c.resource)).where(
                    sync_history.c.resource == NASTY_NAMES[-1]
                )
            ).scalar_one()
            assert lengths == 255
            assert conn.execute(sa.select(sa.func.count()).select_from(sync_history)).scalar() == (
                len(NASTY_NAMES)
            )
    finally:
        engine.dispose()


def test_a_finish_with_another_start_time_is_refused_and_nothing_is_written(
    store: SyncStore, backend: Backend
) -> None:
    record = start(store, "accounts", at(0))
    before = snapshot(backend)
    with pytest.raises(InvalidInputError, match=r"started_at=.*started at"):
        store.finish_sync(
            sync_id=record.sync_id,
            resource="accounts",
            started_at=at(1),
            outcome=SyncOutcome(status="success", ended_at=at(2), records_processed=1),
        )
    assert snapshot(backend) == before
    finish(store, record, "success", at(2))
    row = store.get_sync(record.sync_id)
    assert row is not None and row.sync_status == "success"
