"""Where the tracker stores its tables when no database_url is configured."""

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_observability import SyncStore, SyncTracker
from sync_observability.storage.engine import default_database_url, redact


@dg.asset
def orders(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> dg.MaterializeResult:
    with sync_tracker.track(context, source_system="shop") as sync:
        sync.record(processed=4)
    return dg.MaterializeResult(metadata=sync.metadata)


@pytest.mark.postgres
def test_dagster_postgres_instance_storage_is_reused(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNC_OBS_DATABASE_URL", raising=False)
    storage = {"postgres": {"postgres_url": postgres_database_url}}
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        assert default_database_url(instance) == postgres_database_url
        result = dg.materialize(
            [orders], resources={"sync_tracker": SyncTracker()}, instance=instance
        )
        assert result.success
    engine = sa.create_engine(
        sa.make_url(postgres_database_url).set(drivername="postgresql+psycopg2")
    )
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT records_synced, dagster_run_id FROM sync_observability.sync_state "
                "WHERE resource = 'orders'"
            )
        ).one()
        # Dagster's own tables stay in public; ours are in their own schema.
        public = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_name LIKE 'sync_%'"
            )
        ).scalar_one()
    engine.dispose()
    assert row.records_synced == 4
    assert row.dagster_run_id == result.run_id
    assert public == 0


def test_sqlite_under_dagster_home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNC_OBS_DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert default_database_url() == f"sqlite:///{tmp_path / 'sync_observability.db'}"


def test_sqlite_under_working_directory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNC_OBS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    url = default_database_url()
    assert url == f"sqlite:///{tmp_path / '.sync_observability' / 'sync_observability.db'}"
    # Naming the default creates nothing; opening a store on it makes the folder.
    assert not (tmp_path / ".sync_observability").exists()
    SyncStore.from_url(url).dispose()
    assert (tmp_path / ".sync_observability" / "sync_observability.db").is_file()


def test_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_OBS_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    assert default_database_url() == "sqlite:////tmp/elsewhere.db"


def test_redact_masks_the_password() -> None:
    shown = redact("postgresql://etl:hunter2@db.internal:5432/warehouse")
    assert "hunter2" not in shown
    assert shown == "postgresql://etl:***@db.internal:5432/warehouse"
