"""Database: per-transaction settings, shared deadlines, idle connections, driver errors."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from sync_observability import ConfigurationError, DatabaseUnavailableError, SyncStore, SyncTracker
from sync_observability.storage.database import Database
from sync_observability.storage.engine import (
    as_sqlalchemy_error,
    create_engine,
    is_disconnect,
    is_transient,
    release_idle,
)
from sync_observability_tests.conftest import _admin_engine


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = Database.from_url(postgres_database_url, schema=schema, timeout_seconds=7)
    yield db
    db.dispose()
    admin = _admin_engine(postgres_database_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def _settings(conn: sa.Connection) -> tuple[int, int, str]:
    row = conn.execute(
        sa.text(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('search_path')"
        )
    ).one()
    return _ms(row[0]), _ms(row[1]), row[2]


def _ms(setting: str) -> int:
    for unit, factor in (("ms", 1), ("s", 1000), ("min", 60_000)):
        if setting.endswith(unit) and setting[: -len(unit)].isdigit():
            return int(setting[: -len(unit)]) * factor
    return int(setting)


@pytest.mark.postgres
def test_each_transaction_sets_its_own_schema_and_timeouts_and_leaves_the_session_alone(
    pg_db: Database,
) -> None:
    statement_ms, lock_ms, search_path = pg_db.read(_settings, "read settings")
    assert search_path.strip('"') == pg_db.schema
    assert 6000 < statement_ms <= 7000
    assert 6000 < lock_ms <= 7000
    # No startup `options` (PgBouncer in transaction mode refuses them), and nothing leaks
    # into the session once the transaction ends.
    assert "options" not in str(pg_db.engine.url)
    with pg_db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert "options" not in raw.dsn
        cursor = raw.cursor()
        cursor.execute(
            "SELECT current_setting('statement_timeout'), current_setting('search_path')"
        )
        assert cursor.fetchone() == ("0", '"$user", public')


@pytest.mark.postgres
def test_calls_inside_a_deadline_share_what_is_left_of_it(pg_db: Database) -> None:
    with pg_db.deadline(2):
        first = pg_db.read(_settings, "first")
        second = pg_db.read(_settings, "second")
    assert 1000 < second[0] <= first[0] <= 2000
    # Outside the deadline each call has its own budget again.
    assert pg_db.read(_settings, "after")[0] > 6000


@pytest.mark.postgres
def test_a_mixed_case_schema_works(postgres_database_url: str) -> None:
    schema = f"Mixed_{uuid.uuid4().hex[:8]}"
    tracker = SyncTracker(database_url=postgres_database_url, schema_name=schema)
    try:
        with tracker.track(resource="accounts") as sync:
            sync.record(processed=3)
        state = tracker.get_state("accounts")
        assert state is not None and (state.last_sync_status, state.records_synced) == (
            "success",
            3,
        )
    finally:
        tracker.store.dispose()
        admin = _admin_engine(postgres_database_url)
        with admin.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": schema}
                ).scalar_one()
                == 1
            )
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.parametrize("schema", ["bad-name", "1starts_with_a_digit", "x" * 64, ""])
def test_a_schema_name_that_cannot_be_quoted_safely_is_refused_up_front(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid PostgreSQL schema name"):
        create_engine("postgresql://u@127.0.0.1:1/db", schema)


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan"), True])
def test_a_budget_must_be_a_positive_number_of_seconds(tmp_path: Any, seconds: Any) -> None:
    with pytest.raises(ConfigurationError, match="storage_timeout_seconds"):
        SyncStore.from_url(f"sqlite:///{tmp_path / 'x.db'}", storage_timeout_seconds=seconds)
    assert not (tmp_path / "x.db").exists()


def test_sqlite_waits_for_a_lock_only_as_long_as_the_budget_left(tmp_path: Any) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'x.db'}", timeout_seconds=9)

    def busy_timeout(conn: sa.Connection) -> int:
        return conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()

    assert 8000 < db.read(busy_timeout, "read") <= 9000
    with db.deadline(1.5):
        assert 1000 < db.read(busy_timeout, "read") <= 1500
    db.dispose()


@pytest.mark.postgres
def test_idle_pooled_connections_are_released_but_never_one_in_use(pg_db: Database) -> None:
    pg_db.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar_one(), "ping")
    pool = pg_db.engine.pool
    assert isinstance(pool, sa.pool.QueuePool) and pool.checkedin() == 1
    assert not release_idle(pg_db.engine, 3600)  # not idle long enough
    seen: list[bool] = []
    pg_db.read(lambda conn: seen.append(release_idle(pg_db.engine, 0)), "busy")
    assert seen == [False]  # a connection in use keeps the pool
    assert release_idle(pg_db.engine, 0)
    assert pg_db.engine.pool.checkedin() == 0
    assert pg_db.read(lambda conn: conn.exec_driver_sql("SELECT 2").scalar_one(), "again") == 2


@pytest.mark.postgres
def test_stores_on_one_database_share_an_engine_and_its_compiled_statements(
    postgres_database_url: str,
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = SyncStore.from_url(postgres_database_url, schema=schema)
    second = SyncStore.from_url(postgres_database_url, schema=schema)
    other_budget = SyncStore.from_url(
        postgres_database_url, schema=schema, storage_timeout_seconds=5
    )
    try:
        assert first.engine is second.engine
        assert first.db._driver is second.db._driver
        assert other_budget.engine is not first.engine
        first.dispose()  # closes the pooled connections; the engine stays usable
        assert second.count_states() == 0
    finally:
        second.dispose()
        other_budget.dispose()
        admin = _admin_engine(postgres_database_url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_raw_driver_errors_are_wrapped_and_classified() -> None:
    closed = as_sqlalchemy_error(psycopg2.OperationalError("server closed the connection"))
    assert isinstance(closed, sa.exc.OperationalError)
    assert is_transient(closed) and is_disconnect(closed)
    gone = as_sqlalchemy_error(psycopg2.InterfaceError("connection already closed"))
    assert isinstance(gone, sa.exc.InterfaceError) and is_transient(gone) and is_disconnect(gone)
    locked = as_sqlalchemy_error(sqlite3.OperationalError("database is locked"))
    assert is_transient(locked) and not is_disconnect(locked)
    wrong = as_sqlalchemy_error(psycopg2.OperationalError('database "nope" does not exist'))
    assert not is_transient(wrong)
    assert as_sqlalchemy_error(ValueError("not a driver error")) is None


@pytest.mark.postgres
@pytest.mark.slow
def test_an_unbounded_write_may_outlive_the_budget_and_a_bounded_one_may_not(
    postgres_database_url: str,
) -> None:
    # Converting sync_history to partitions runs as long as the table needs: neither
    # statement_timeout nor the watchdog (budget + 2 s) may end it.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = Database.from_url(postgres_database_url, schema=schema, timeout_seconds=1)
    sleep = sa.text("SELECT pg_sleep(3.5)")
    try:
        db.write(lambda conn: conn.execute(sleep), "long", unbounded_statements=True)
        with pytest.raises(DatabaseUnavailableError, match="statement timeout"):
            db.write(lambda conn: conn.execute(sleep), "bounded")
    finally:
        db.dispose()
