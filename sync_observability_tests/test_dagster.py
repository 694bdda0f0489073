"""SyncTracker inside Dagster: a real instance, real materializations, on both engines."""

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sync_observability import SyncAlreadyRunningError, SyncStore, SyncTracker
from sync_observability.storage.engine import DATABASE_URL_ENV
from sync_observability_tests.conftest import Backend

ACCOUNTS = "vantage/accounts"
API_TIMEOUT = "Vantage API request timed out after 30s"


@dg.asset(key_prefix=["vantage"])
def accounts(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> dg.MaterializeResult:
    with sync_tracker.track(context, source_system="vantage", target_system="warehouse") as sync:
        sync.record(processed=12, created=2, updated=10)
    return dg.MaterializeResult(metadata=sync.metadata)


@dg.asset(key_prefix=["vantage"])
def funds(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> None:
    with sync_tracker.track(context, source_system="vantage") as sync:
        sync.record(processed=4)
        raise RuntimeError(API_TIMEOUT)


@dg.asset(
    key_prefix=["vantage"],
    partitions_def=dg.DailyPartitionsDefinition(start_date="2025-11-01"),
)
def cashflows(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> dg.MaterializeResult:
    with sync_tracker.track(context, source_system="vantage", sync_type="full") as sync:
        sync.record(processed=len(context.partition_key))
    return dg.MaterializeResult(metadata=sync.metadata)


@dg.op
def noop() -> None:
    pass


@dg.job
def blocking_job() -> None:
    noop()


# Dagster's per-run SQLite event log files cost ~1-2 s per run on this machine (schema creation
# and fsyncs); its in-memory event log (meant for tests) keeps a run near 0.3 s. Runs are still
# stored in the instance's SQLite run storage, which is what orphan detection reads.
FAST_EVENT_LOG = {
    "event_log_storage": {
        "module": "dagster._core.storage.event_log",
        "class": "InMemoryEventLogStorage",
    }
}


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """A real, temporary Dagster instance, shared by this module's tests (runs have unique ids)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(DATABASE_URL_ENV, raising=False)
        with dg.instance_for_test(overrides=FAST_EVENT_LOG) as inst:
            yield inst


def run(
    assets: list[dg.AssetsDefinition],
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    **kwargs: object,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, instance=instance, resources={"sync_tracker": tracker}, **kwargs)


def test_an_asset_records_its_run_asset_key_and_metadata(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    first = run([accounts], instance, tracker)
    assert first.success
    [row] = tracker.store.list_history()
    assert (row.resource, row.asset_key) == (ACCOUNTS, ACCOUNTS)  # resource defaults to the key
    assert row.dagster_run_id == first.run_id
    assert row.partition_key is None
    assert (row.source_system, row.target_system) == ("vantage", "warehouse")
    assert (row.sync_status, row.records_processed, row.records_created) == ("success", 12, 2)
    state = tracker.get_state(ACCOUNTS)
    assert state is not None
    assert state.dagster_run_id == first.run_id
    assert state.last_sync_time == row.sync_start_time

    [materialization] = first.asset_materializations_for_node("vantage__accounts")
    meta = materialization.metadata
    assert meta["dagster/row_count"] == dg.MetadataValue.int(12)
    assert meta["sync_id"].value == row.sync_id
    assert meta["sync_status"].value == "success"
    assert meta["watermark_before"] == dg.MetadataValue.null()
    assert meta["watermark_after"].value == row.sync_start_time.timestamp()
    assert meta["duration_ms"].value == row.duration_ms
    # The instance stored the same metadata (what the UI plots).
    event = instance.get_latest_materialization_event(dg.AssetKey(["vantage", "accounts"]))
    assert event is not None
    assert event.run_id == first.run_id
    assert event.asset_materialization is not None
    assert event.asset_materialization.metadata["sync_id"].value == row.sync_id
    assert event.asset_materialization.metadata["dagster/row_count"].value == 12

    second = run([accounts], instance, tracker)
    [materialization] = second.asset_materializations_for_node("vantage__accounts")
    assert materialization.metadata["watermark_before"].value == row.sync_start_time.timestamp()
    assert [r.dagster_run_id for r in tracker.store.list_history()] == [
        second.run_id,
        first.run_id,
    ]


def test_a_partitioned_asset_records_its_partition_key(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    result = run([cashflows], instance, tracker, partition_key="2025-11-04")
    assert result.success
    [row] = tracker.store.list_history()
    assert (row.resource, row.asset_key) == ("vantage/cashflows", "vantage/cashflows")
    assert (row.partition_key, row.sync_type, row.sync_status) == ("2025-11-04", "full", "success")
    assert row.records_processed == len("2025-11-04")
    assert row.dagster_run_id == result.run_id


def test_a_failing_asset_records_the_failure_and_re_raises(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    result = run([funds], instance, tracker, raise_on_error=False)
    assert result.success is False
    [row] = tracker.store.list_history()
    assert (row.resource, row.dagster_run_id) == ("vantage/funds", result.run_id)
    assert row.sync_status == "failed"
    assert row.error_message == f"RuntimeError: {API_TIMEOUT}"
    assert row.errors[0]["code"] == "RuntimeError"
    assert row.records_processed == 4
    assert row.watermark_after is None
    [failure] = result.get_step_failure_events()
    assert API_TIMEOUT in str(failure.step_failure_data.error)
    state = tracker.get_state("vantage/funds")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("failed", 1)
    assert state.last_sync_time is None


def test_the_database_url_comes_from_config_then_the_environment(
    tracker: SyncTracker,
    backend: Backend,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    env_db = tmp_path / "from_env.db"
    monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{env_db}")
    # 1. The resource's own config wins over the environment (``tracker`` is configured).
    assert tracker.database_url == backend.url
    assert run([accounts], instance, tracker).success
    assert len(tracker.store.list_history()) == 1
    assert not env_db.exists()

    # 2. Without config: SYNC_OBS_DATABASE_URL wins over $DAGSTER_HOME.
    monkeypatch.setenv(DATABASE_URL_ENV, backend.url)
    assert run([accounts], instance, SyncTracker(schema_name=backend.schema)).success
    assert len(tracker.store.list_history()) == 2
    assert not env_db.exists()
    assert not (tmp_path / "sync_observability.db").exists()


def test_the_database_url_defaults_to_sqlite_under_dagster_home(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = run([accounts], instance, SyncTracker())
    assert result.success
    store = SyncStore.from_url(f"sqlite:///{tmp_path / 'sync_observability.db'}")
    try:
        [row] = store.list_history()
        assert (row.resource, row.dagster_run_id) == (ACCOUNTS, result.run_id)
    finally:
        store.dispose()


def _insert_running_sync(tracker: SyncTracker, dagster_run_id: str) -> str:
    sync_id = str(uuid.uuid4())
    tracker.store.start_sync(
        sync_id=sync_id,
        resource=ACCOUNTS,
        started_at=dt.datetime.now(dt.timezone.utc),
        dagster_run_id=dagster_run_id,
        asset_key=ACCOUNTS,
    )
    return sync_id


def test_a_sync_whose_run_has_ended_is_reaped_by_the_next_run(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    with tracker.track(resource=ACCOUNTS) as earlier:  # a watermark to keep (set outside Dagster)
        earlier.advance_watermark(dt.datetime(2025, 11, 5, tzinfo=dt.timezone.utc))
    watermark = tracker.get_watermark(ACCOUNTS)

    failed_run = run([funds], instance, tracker, raise_on_error=False).run_id
    assert instance.get_run_by_id(failed_run).status == dg.DagsterRunStatus.FAILURE
    missing_run = str(uuid.uuid4())
    assert instance.get_run_by_id(missing_run) is None

    for blocking_run, status in ((failed_run, "FAILURE"), (missing_run, "gone")):
        orphan = _insert_running_sync(tracker, blocking_run)
        result = run([accounts], instance, tracker)
        assert result.success

        reaped = tracker.store.get_sync(orphan)
        assert reaped is not None
        assert reaped.sync_status == "failed"
        assert [e["code"] for e in reaped.errors] == ["ORPHANED"]
        assert blocking_run in reaped.error_message
        assert status in reaped.error_message
        assert reaped.watermark_after is None

        [latest] = tracker.store.list_history(resource=ACCOUNTS, limit=1)
        assert latest.dagster_run_id == result.run_id
        assert latest.sync_status == "success"
        assert latest.watermark_before == watermark  # the reap did not move the watermark
        watermark = latest.watermark_after
        state = tracker.get_state(ACCOUNTS)
        assert state is not None
        assert (state.current_sync_id, state.consecutive_failures) == (latest.sync_id, 0)


def test_a_sync_whose_run_is_still_in_progress_blocks_the_next_run(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    blocking = instance.create_run_for_job(blocking_job, status=dg.DagsterRunStatus.STARTED)
    assert not instance.get_run_by_id(blocking.run_id).is_finished
    orphan = _insert_running_sync(tracker, blocking.run_id)

    with pytest.raises(SyncAlreadyRunningError) as refused:
        run([accounts], instance, tracker)
    assert refused.value.running_sync_id == orphan
    assert orphan in str(refused.value)
    [row] = tracker.store.list_history()  # nothing was written for the refused run
    assert (row.sync_id, row.sync_status) == (orphan, "running")
    state = tracker.get_state(ACCOUNTS)
    assert state is not None
    assert (state.last_sync_status, state.current_sync_id) == ("running", orphan)
