"""Connection-level behaviour: secrets, permanent vs transient errors, newer schemas."""

import logging
import sqlite3
import time

import pytest
import sqlalchemy as sa

from sync_observability import ConfigurationError, SyncStore, SyncTracker
from sync_observability.storage import migrate
from sync_observability.storage.engine import redact
from sync_observability_tests.conftest import POSTGRES_URL, Backend


def test_redact_masks_a_password_given_as_a_query_parameter() -> None:
    shown = redact("postgresql://etl@db.internal/warehouse?password=hunter2&sslmode=require")
    assert "hunter2" not in shown
    assert "sslmode=require" in shown


def test_the_trackers_repr_and_str_hide_the_database_password() -> None:
    tracker = SyncTracker(database_url="postgresql://etl:hunter2@db.internal:5432/warehouse")
    for shown in (repr(tracker), str(tracker)):
        assert "hunter2" not in shown
        assert "postgresql://etl:***@db.internal:5432/warehouse" in shown
    assert tracker.database_url.endswith(":hunter2@db.internal:5432/warehouse")  # still usable


@pytest.mark.postgres
def test_a_missing_database_is_a_configuration_error_not_retried(
    postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = sa.make_url(POSTGRES_URL).set(database="sync_obs_no_such_database")
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="sync_observability"),
        pytest.raises(ConfigurationError, match="does not exist"),
    ):
        SyncStore.from_url(url.render_as_string(hide_password=False), max_retries=5)
    assert not [r for r in caplog.records if "transient" in r.getMessage()]
    assert time.monotonic() - started < 30  # no backoff schedule was walked through


def _stamp(backend: Backend, revision: str) -> None:
    engine = backend.engine()
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = :v"), {"v": revision}
        )
    engine.dispose()


def test_a_database_migrated_by_a_newer_version_is_used_as_it_is(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.store().dispose()  # migrate to this version's head
    _stamp(backend, "9999_from_the_future")
    with caplog.at_level(logging.WARNING, logger="sync_observability"):
        store = backend.store()
    try:
        assert "newer than this version" in caplog.text
        assert store.list_states() == []
        with pytest.raises(ConfigurationError, match="9999_from_the_future"):
            store.migrate()
    finally:
        store.dispose()


def test_opening_a_migrated_sqlite_database_takes_no_write_lock(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    SyncStore.from_url(url).dispose()
    writer = sqlite3.connect(tmp_path / "sync.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        store = SyncStore.from_url(url)  # only reads the schema version
        assert store.list_states() == []
        store.dispose()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
