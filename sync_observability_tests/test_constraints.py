"""Seed 001's CHECK constraints, column types, schema and indexes, enforced by the database itself.

Rows are written with plain SQLAlchemy Core (``sync_alerts``: raw SQL) through
``backend.engine()``, bypassing SyncStore and its validation, so a passing test means the
database refused the row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import (
    ConstraintViolationError,
    StorageError,
    SyncObservabilityError,
    SyncOutcome,
    SyncStore,
)
from sync_observability.storage.engine import run_with_retries
from sync_observability.storage.migrate import VERSION_TABLE
from sync_observability.storage.schema import UTCDateTime, metadata, sync_history, sync_state
from sync_observability_tests.conftest import Backend
from sync_observability_tests.test_store import snapshot

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 11, 5, 10, 0, tzinfo=UTC)
T1 = T0 + dt.timedelta(minutes=1)

VALID_STATE: dict[str, Any] = {
    "resource": "test",
    "last_sync_status": "success",
    "last_sync_time": T0,
    "records_synced": 3,
    "records_created": 1,
    "records_updated": 2,
    "errors": [],
    "started_at": T0,
    "completed_at": T1,
    "duration_ms": 60_000,
    "consecutive_failures": 0,
    "created_at": T0,
    "updated_at": T1,
}
VALID_HISTORY: dict[str, Any] = {
    "sync_id": "00000000-0000-0000-0000-000000000001",
    "resource": "test",
    "sync_type": "incremental",
    "sync_start_time": T0,
    "sync_end_time": T1,
    "sync_status": "success",
    "records_processed": 3,
    "records_created": 1,
    "records_updated": 2,
    "records_failed": 0,
    "errors": [],
    "duration_ms": 60_000,
    "metadata": {},
}

# (case, overrides that break exactly one rule, the constraint that must fire)
STATE_VIOLATIONS = [
    ("invalid status", {"last_sync_status": "invalid_status"}, "ck_sync_state_last_sync_status"),
    ("negative synced", {"records_synced": -1}, "ck_sync_state_records_synced"),
    ("negative created", {"records_created": -1}, "ck_sync_state_records_created"),
    ("negative updated", {"records_updated": -1}, "ck_sync_state_records_updated"),
    ("negative duration", {"duration_ms": -100}, "ck_sync_state_duration_ms"),
    ("negative failures", {"consecutive_failures": -1}, "ck_sync_state_consecutive_failures"),
    (
        "completed before started",
        {"completed_at": T0 - dt.timedelta(seconds=1)},
        "ck_sync_state_valid_sync_timerange",
    ),
    (
        "running with completed_at",
        {"last_sync_status": "running"},
        "ck_sync_state_running_incomplete",
    ),
    ("errors an object", {"errors": {"code": "E"}}, "ck_sync_state_errors_is_array"),
    ("errors a string", {"errors": "E"}, "ck_sync_state_errors_is_array"),
    ("errors a number", {"errors": 1}, "ck_sync_state_errors_is_array"),
]
HISTORY_VIOLATIONS = [
    ("invalid status", {"sync_status": "never_run"}, "ck_sync_history_sync_status"),
    ("invalid sync_type", {"sync_type": "weekly"}, "ck_sync_history_sync_type"),
    ("negative processed", {"records_processed": -1}, "ck_sync_history_record_counts"),
    ("negative created", {"records_created": -1}, "ck_sync_history_record_counts"),
    ("negative updated", {"records_updated": -1}, "ck_sync_history_record_counts"),
    ("negative failed", {"records_failed": -1}, "ck_sync_history_record_counts"),
    ("negative duration", {"duration_ms": -1}, "ck_sync_history_duration_ms"),
    (
        "ended before started",
        {"sync_end_time": T0 - dt.timedelta(seconds=1)},
        "ck_sync_history_valid_sync_timerange",
    ),
    ("running with end time", {"sync_status": "running"}, "ck_sync_history_running_open"),
    ("errors an object", {"errors": {"code": "E"}}, "ck_sync_history_errors_is_array"),
]


# sync_alerts, in raw SQL: the names and rules are written here, not read from schema.py, so a
# CHECK dropped from the schema and its migration alike still fails this test.
VALID_ALERT: dict[str, Any] = {
    "alert_id": "a-1",
    "rule": "consecutive_failures",
    "resource": "test",
    "severity": "critical",
    "status": "open",
    "fingerprint": "consecutive_failures:test",
    "message": "failed 3 times in a row",
    "details": "{}",
    "opened_at": T0.isoformat(),
    "last_seen_at": T0.isoformat(),
    "notify_count": 0,
    "delivered_sinks": "[]",
}
# (case, overrides that break one rule, the constraints that may refuse the row: an unknown
# status breaks resolved_at_matches_status too, and PostgreSQL may name either)
ALERT_VIOLATIONS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "unknown status",
        {"status": "closed"},
        ("ck_sync_alerts_status", "ck_sync_alerts_resolved_at_matches_status"),
    ),
    ("unknown severity", {"severity": "info"}, ("ck_sync_alerts_severity",)),
    ("unknown delivery kind", {"delivery_kind": "sent"}, ("ck_sync_alerts_delivery_kind",)),
    ("negative notify_count", {"notify_count": -1}, ("ck_sync_alerts_notify_count",)),
    (
        "resolved without resolved_at",
        {"status": "resolved"},
        ("ck_sync_alerts_resolved_at_matches_status",),
    ),
    (
        "open with resolved_at",
        {"resolved_at": T1.isoformat()},
        ("ck_sync_alerts_resolved_at_matches_status",),
    ),
    (
        "sinks an object",
        {"delivered_sinks": '{"slack": true}'},
        ("ck_sync_alerts_delivered_sinks_is_array",),
    ),
    (
        "sinks a string",
        {"delivered_sinks": '"slack"'},
        ("ck_sync_alerts_delivered_sinks_is_array",),
    ),
]


@pytest.fixture
def engine(store: SyncStore, backend: Backend) -> Iterator[sa.Engine]:
    """A plain engine on the migrated database under test."""
    e = backend.engine()
    yield e
    e.dispose()


def _refused(engine: sa.Engine, statement: sa.Executable) -> str:
    """Run ``statement`` in its own transaction; return the IntegrityError it must raise."""
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        conn.execute(statement)
    return str(refused.value.orig)


@pytest.mark.parametrize(
    ("table", "valid", "violations"),
    [
        pytest.param(sync_state, VALID_STATE, STATE_VIOLATIONS, id="sync_state"),
        pytest.param(sync_history, VALID_HISTORY, HISTORY_VIOLATIONS, id="sync_history"),
    ],
)
def test_check_constraints_are_enforced_by_the_database(
    backend: Backend,
    engine: sa.Engine,
    table: sa.Table,
    valid: dict[str, Any],
    violations: list[tuple[str, dict[str, Any], str]],
) -> None:
    key = table.primary_key.columns.values()[0]
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(valid))  # the base row is valid
    before = snapshot(backend)
    assert len(before[table.name]) == 1

    for case, overrides, constraint in violations:
        new_row = valid | overrides | {key.name: f"{valid[key.name][:-1]}2"}
        message = _refused(engine, sa.insert(table).values(new_row))
        assert constraint in message, f"{case}: insert refused by something else: {message}"
        message = _refused(engine, sa.update(table).where(key == valid[key.name]).values(overrides))
        assert constraint in message, f"{case}: update refused by something else: {message}"
        assert snapshot(backend) == before, case


def _alerts(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text("SELECT * FROM sync_alerts")).mappings()]


def test_sync_alerts_check_constraints_are_enforced_by_the_database(
    backend: Backend, engine: sa.Engine
) -> None:
    # Every CHECK the database holds has a case below, so a new one needs its case too.
    schema = backend.schema if backend.name == "postgresql" else None
    declared = sa.inspect(engine).get_check_constraints("sync_alerts", schema=schema)
    assert {c["name"] for c in declared} == {n for _, _, names in ALERT_VIOLATIONS for n in names}

    def insert(row: dict[str, Any]) -> sa.TextClause:
        columns = ", ".join(row)
        values = ", ".join(f":{column}" for column in row)
        return sa.text(f"INSERT INTO sync_alerts ({columns}) VALUES ({values})").bindparams(**row)

    with engine.begin() as conn:
        conn.execute(insert(VALID_ALERT))  # the base row is valid
    before = _alerts(engine)
    assert [row["notify_count"] for row in before] == [0]

    for i, (case, overrides, constraints) in enumerate(ALERT_VIOLATIONS):
        # Another id and fingerprint: only the CHECK can refuse the row, not a unique index.
        new_row = VALID_ALERT | overrides | {"alert_id": f"a-{i + 2}", "fingerprint": f"f{i}"}
        message = _refused(engine, insert(new_row))
        assert any(c in message for c in constraints), f"{case}: refused by another: {message}"
        assignments = ", ".join(f"{column} = :{column}" for column in overrides)
        update = sa.text(f"UPDATE sync_alerts SET {assignments} WHERE alert_id = 'a-1'")
        message = _refused(engine, update.bindparams(**overrides))
        assert any(c in message for c in constraints), f"{case}: refused by another: {message}"
        assert _alerts(engine) == before, case


def test_a_row_breaking_a_constraint_maps_to_constraint_violation_error(
    engine: sa.Engine,
) -> None:
    attempts = []

    def insert_negative_duration() -> None:
        attempts.append(1)
        with engine.begin() as conn:
            conn.execute(sa.insert(sync_state).values(VALID_STATE | {"duration_ms": -100}))

    with pytest.raises(ConstraintViolationError) as refused:
        run_with_retries(insert_negative_duration, what="insert test row", max_retries=3)
    assert isinstance(refused.value, StorageError)
    assert isinstance(refused.value, SyncObservabilityError)
    assert isinstance(refused.value.__cause__, sa.exc.IntegrityError)
    assert "ck_sync_state_duration_ms" in str(refused.value)
    assert str(refused.value).startswith("insert test row")
    assert len(attempts) == 1  # a constraint violation is not transient: no retry
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sync_state)).scalar() == 0


def test_a_bare_insert_gets_seed_001_defaults(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sync_state (resource) VALUES ('accounts')"))
        row = conn.execute(sa.select(sync_state)).mappings().one()
    assert row["last_sync_status"] == "never_run"
    assert row["errors"] == []
    assert row["created_at"] is not None


def _column_types(backend: Backend, conn: sa.Connection, table: str) -> dict[str, str]:
    if backend.name == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = :schema AND table_name = :table"
            ),
            {"schema": backend.schema, "table": table},
        )
    else:
        rows = conn.execute(sa.text(f"SELECT name, type FROM pragma_table_info('{table}')"))
    return {name: kind.lower() for name, kind in rows}


def test_json_columns_are_jsonb_and_timestamps_timestamptz(
    backend: Backend, store: SyncStore, engine: sa.Engine
) -> None:
    if backend.name == "postgresql":
        json_type, time_type = "jsonb", "timestamp with time zone"
    else:  # SQLite has no such types; the declared types drive SQLAlchemy's conversions
        json_type, time_type = "json", "datetime"
    with engine.connect() as conn:
        for table in (sync_state, sync_history):
            found = _column_types(backend, conn, table.name)
            assert set(found) == set(table.c.keys())
            for column in table.c:
                if isinstance(column.type, UTCDateTime):
                    assert found[column.name] == time_type, column
                elif column.name in ("errors", "cursor", "cursor_before", "cursor_after"):
                    assert found[column.name] == json_type, column
            assert found["metadata" if table is sync_history else "errors"] == json_type

    record = store.start_sync(sync_id="s1", resource="accounts", started_at=T0)
    store.finish_sync(
        sync_id="s1",
        resource="accounts",
        started_at=T0,
        outcome=SyncOutcome(
            status="failed", ended_at=T1, errors=[{"code": "A"}, {"code": "B"}, {"code": "C"}]
        ),
    )
    assert record.sync_id == "s1"
    with engine.connect() as conn:
        if backend.name == "postgresql":
            # Seed 001's own SQL, unchanged but for the table name.
            lengths = conn.execute(
                sa.text("SELECT jsonb_array_length(errors) FROM sync_state")
            ).scalars()
            assert list(lengths) == [3]
            kinds = conn.execute(
                sa.text(
                    "SELECT pg_typeof(errors)::text, pg_typeof(started_at)::text FROM sync_state"
                )
            ).one()
            assert tuple(kinds) == ("jsonb", "timestamp with time zone")
        else:
            lengths = conn.execute(sa.text("SELECT json_array_length(errors) FROM sync_state"))
            assert list(lengths.scalars()) == [3]


def test_tables_live_in_the_configured_schema(backend: Backend, store: SyncStore) -> None:
    ours = {*metadata.tables, VERSION_TABLE}
    if backend.name == "sqlite":
        with store.engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")
            ).scalars()
            assert ours <= set(tables)
        return
    # A connection without our search_path, to see where the tables really are.
    plain = sa.create_engine(
        sa.make_url(backend.url).set(drivername="postgresql+psycopg2"),
        poolclass=sa.pool.NullPool,
    )
    try:
        with plain.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": backend.schema},
            ).scalars()
            assert set(tables) == ours
            for table in ours:
                assert (
                    conn.execute(sa.text(f"SELECT to_regclass('public.{table}')")).scalar() is None
                )
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{backend.schema}".sync_state'))
            assert count.scalar() == 0
    finally:
        plain.dispose()


def test_declared_indexes_exist_and_partial_ones_are_partial(
    backend: Backend, engine: sa.Engine
) -> None:
    # Indexes declared for one engine only (``ddl_if``, e.g. PostgreSQL's BRIN) count there.
    declared = {
        ix.name: ix
        for table in metadata.tables.values()
        for ix in table.indexes
        if ix._ddl_if is None or ix._ddl_if.dialect in (None, backend.name)
    }
    partial = {
        name
        for name, ix in declared.items()
        if ix.dialect_kwargs.get(f"{backend.name}_where") is not None
    }
    # Seed 001's partial indexes (failures/running; slowest syncs), plus any added since.
    assert {"ix_sync_state_not_success", "ix_sync_state_duration"} <= partial
    with engine.connect() as conn:
        if backend.name == "postgresql":
            found = dict(
                conn.execute(
                    sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"),
                    {"s": backend.schema},
                ).all()
            )
        else:
            found = dict(
                conn.execute(
                    sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                ).all()
            )
    for name in declared:
        assert name in found, f"index {name} missing"
        where = found[name].upper().partition(" WHERE ")[2]
        assert bool(where) == (name in partial), found[name]
    assert "SUCCESS" in found["ix_sync_state_not_success"].upper().partition(" WHERE ")[2]
    assert "DURATION_MS IS NOT NULL" in found["ix_sync_state_duration"].upper()
    assert "DURATION_MS DESC" in found["ix_sync_state_duration"].upper()
    if backend.name == "postgresql":
        assert "last_sync_time DESC NULLS LAST" in found["ix_sync_state_last_sync_time"]
    else:
        assert "last_sync_time DESC" in found["ix_sync_state_last_sync_time"]
