"""The hot path's driver-level execution (PostgreSQL) answers exactly as SQLAlchemy does.

On SQLite the store keeps SQLAlchemy's execution, so the same assertions hold there too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_observability import SyncOutcome, SyncStore
from sync_observability.errors import ConstraintViolationError
from sync_observability.storage.driver import DriverExecutor
from sync_observability.storage.schema import sync_history
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def test_the_hot_path_returns_what_sqlalchemy_reads(store: SyncStore) -> None:
    # A non-UTC offset in, a nested JSON cursor: both come back the way SQLAlchemy reads them.
    first = store.start_sync(sync_id="s1", resource="accounts", started_at=T0)
    cursor = {"page": 7, "ids": [1, 2], "nested": {"token": "a b"}}
    watermark = (T0 + dt.timedelta(minutes=5)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    store.finish_sync(
        sync_id=first.sync_id,
        resource="accounts",
        started_at=T0,
        outcome=SyncOutcome(
            status="success",
            ended_at=T0 + dt.timedelta(minutes=6),
            records_processed=3,
            watermark_after=watermark,
            cursor_after=cursor,
            cursor_advanced=True,
        ),
    )
    second = store.start_sync(
        sync_id="s2", resource="accounts", started_at=T0 + dt.timedelta(hours=1)
    )
    state = store.get_state("accounts")
    assert state is not None
    assert second.watermark_before == state.last_sync_time == watermark
    assert second.watermark_before is not None
    assert second.watermark_before.utcoffset() == dt.timedelta(0)
    assert second.cursor_before == state.cursor == cursor
    stored = store.get_sync("s2")
    assert stored is not None
    assert (stored.watermark_before, stored.cursor_before) == (watermark, cursor)


def test_a_driver_error_is_sqlalchemys_and_the_pool_stays_usable(
    store: SyncStore, backend: Backend
) -> None:
    store.start_sync(sync_id="s1", resource="accounts", started_at=T0)
    negative = SyncOutcome(status="success", ended_at=T0, records_processed=-1)
    with pytest.raises(ConstraintViolationError, match="ck_sync_history_record_counts"):
        store.finish_sync(sync_id="s1", resource="accounts", started_at=T0, outcome=negative)
    # Rolled back as one transaction: the sync is still running, and the next write works.
    row = store.get_sync("s1")
    assert row is not None and row.sync_status == "running"
    good = SyncOutcome(status="success", ended_at=T0, records_processed=1)
    store.finish_sync(sync_id="s1", resource="accounts", started_at=T0, outcome=good)
    row = store.get_sync("s1")
    assert row is not None and (row.sync_status, row.records_processed) == ("success", 1)


@pytest.mark.postgres
def test_prebuilt_statements_are_compiled_once_to_sqlalchemys_sql(
    postgres_database_url: str,
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = SyncStore.from_url(postgres_database_url, schema=schema)
    try:
        driver = store.db._driver
        assert isinstance(driver, DriverExecutor)
        statement = next(iter(driver.prebuilt))
        assert statement not in driver._cache  # compiled when first run, not at setup
        assert driver.compile(statement) is driver.compile(statement)
        compiled = str(statement.compile(dialect=store.engine.dialect))
        assert driver.compile(statement).sql == compiled
        # A statement built on the spot (a diagnostic query) is compiled and run too.
        query = sa.select(sa.func.count()).select_from(sync_history)
        assert store.db.write_hot(lambda conn: conn.execute(query).one()[0], "count") == 0
    finally:
        with store.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        store.dispose()


def test_sqlite_keeps_sqlalchemys_execution(tmp_path: Path) -> None:
    store = SyncStore.from_url(f"sqlite:///{tmp_path / 'sync.db'}")
    assert store.db._driver is None
    store.dispose()
