"""The example Vantage assets: they load, and every materialization is recorded by the tracker."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from sync_observability import InvalidInputError, SyncRecord
from sync_observability.examples import vantage
from sync_observability.examples.definitions import defs
from sync_observability_tests.conftest import Backend

RESOURCES = {f"vantage/{name}" for name in vantage.VANTAGE_RESOURCES}
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def materialize(
    backend: Backend, instance: dg.DagsterInstance, *, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        vantage.vantage_assets,
        instance=instance,
        resources={"sync_tracker": backend.tracker()},
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )


def history_of_run(backend: Backend, run_id: str) -> dict[str, SyncRecord]:
    store = backend.store()
    try:
        records = [r for r in store.list_history(limit=None) if r.dagster_run_id == run_id]
    finally:
        store.dispose()
    return {record.resource: record for record in records}


def test_definitions_load_and_validate() -> None:
    dg.Definitions.validate_loadable(defs)
    specs = [s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() in RESOURCES]
    assert {spec.key.to_user_string() for spec in specs} == RESOURCES
    assert {spec.group_name for spec in specs} == {"vantage"}
    # sync_observability_definitions adds its report asset beside the examples.
    others = {s.key.to_user_string() for s in defs.resolve_all_asset_specs()} - RESOURCES
    assert others == {"sync_health_report"}
    assert set(defs.resources or {}) == {"sync_tracker", "sync_alerting"}
    schedule = defs.resolve_schedule_def("vantage_sync_schedule")
    assert schedule.job_name == "vantage_sync_job"
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_job_syncs_every_resource_and_records_it(
    backend: Backend, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, "0")
    job = defs.resolve_job_def("vantage_sync_job")
    result = job.execute_in_process(
        instance=instance, resources={"sync_tracker": backend.tracker()}, run_config=QUIET
    )
    assert result.success
    rows = history_of_run(backend, result.run_id)
    assert set(rows) == RESOURCES
    for materialization in result.get_asset_materialization_events():
        key = materialization.asset_key.to_user_string()
        metadata = materialization.materialization.metadata
        row = rows[key]
        assert row.sync_status == "success"
        assert row.asset_key == key
        assert row.source_system == "vantage"
        assert row.target_system == "warehouse"
        assert metadata["dagster/row_count"].value == row.records_processed
        assert metadata["sync_id"].value == row.sync_id
        # The first sync has no watermark: a backfill of new rows only.
        assert row.watermark_before is None
        assert row.records_created == row.records_processed > 0
        assert row.records_updated == 0


def test_incremental_syncs_then_failures_that_keep_the_watermark(
    backend: Backend, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, "0")
    first = history_of_run(backend, materialize(backend, instance).run_id)
    second = history_of_run(backend, materialize(backend, instance).run_id)
    assert set(second) == RESOURCES
    for resource, row in second.items():
        assert row.watermark_before == first[resource].watermark_after is not None
        assert row.watermark_after == row.sync_start_time
        # Back-to-back syncs see a trickle of changes, far less than the backfill.
        assert row.records_processed < first[resource].records_processed

    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, "1")
    result = materialize(backend, instance, raise_on_error=False)
    assert not result.success
    assert len(result.get_step_failure_events()) == len(RESOURCES)
    failed = history_of_run(backend, result.run_id)
    assert set(failed) == RESOURCES
    tracker = backend.tracker()
    for resource, row in failed.items():
        assert row.sync_status == "failed"
        assert row.errors[0]["code"] == "VantageAPITimeout"
        assert "timed out" in (row.error_message or "")
        state = tracker.get_state(resource)
        assert state is not None
        assert state.last_sync_status == "failed"
        assert state.consecutive_failures == 1
        assert state.last_sync_time == second[resource].watermark_after
    tracker.store.dispose()


def test_a_seed_makes_outcomes_reproducible(
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Simulation only, not storage: two SQLite files are enough to compare.
    monkeypatch.setenv(vantage.SEED_ENV, "42")
    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, "0.5")
    outcomes = []
    for name in ("one", "two"):
        target = Backend("sqlite", f"sqlite:///{tmp_path_factory.mktemp(name) / 'sync.db'}")
        rows = history_of_run(target, materialize(target, instance, raise_on_error=False).run_id)
        outcomes.append({r: (row.sync_status, row.records_processed) for r, row in rows.items()})
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) == len(RESOURCES)
    assert {status for status, _ in outcomes[0].values()} == {"success", "failed"}


def test_simulated_fetch_depends_on_the_salt_only() -> None:
    now = dt.datetime(2025, 11, 5, 12, tzinfo=dt.timezone.utc)
    since = now - dt.timedelta(hours=2)

    def fetch(salt: str, rate: float = 0.0) -> vantage.SimulatedFetch:
        return vantage.simulate_fetch(
            100, modified_since=since, now=now, salt=salt, failure_rate=rate
        )

    assert fetch("a") == fetch("a")
    assert len({fetch(str(i)).processed for i in range(20)}) > 1
    assert not any(fetch(str(i)).times_out for i in range(50))
    assert all(fetch(str(i), 1.0).times_out for i in range(50))
    backfill = vantage.simulate_fetch(100, modified_since=None, now=now, salt="a", failure_rate=0.0)
    assert backfill.updated == 0
    assert backfill.created >= 100 * vantage.BACKFILL_HOURS * 0.8


@pytest.mark.parametrize("raw", ["abc", "1.5", "-0.1", "nan"])
def test_a_bad_failure_rate_names_the_variable(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, raw)
    with pytest.raises(InvalidInputError, match=vantage.FAILURE_RATE_ENV):
        vantage.configured_failure_rate()


def test_a_bad_failure_rate_fails_the_step_before_any_sync(
    backend: Backend, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vantage.FAILURE_RATE_ENV, "abc")
    result = materialize(backend, instance, raise_on_error=False)
    assert len(result.get_step_failure_events()) == len(RESOURCES)
    assert history_of_run(backend, result.run_id) == {}
