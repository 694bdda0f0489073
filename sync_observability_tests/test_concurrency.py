"""Parallel writers lose no row and no count: OS processes, and Dagster's multiprocess executor.

The rule for two syncs of one resource at the same time: the second is refused with
``SyncAlreadyRunningError`` (docs/contract.md, "Lifecycle"); these tests hold every process to it.
"""

# No `from __future__ import annotations`: Dagster reads the asset parameters' annotations.

import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_observability import SyncAlreadyRunningError, SyncRecord, SyncStore, SyncTracker
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend
from sync_observability_tests.processes import workers_running


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


pytestmark = pytest.mark.slow

WORKERS = 6
SYNCS_PER_WORKER = 25
SHARED_EVERY = 2  # a worker tries the shared resource after every 2nd own sync
SHARED_ATTEMPTS_PER_WORKER = len(range(0, SYNCS_PER_WORKER, SHARED_EVERY))
SHARED = "shared/resource"
FAIL_EVERY = 7  # every 7th sync of a worker's own resource raises inside the block
PROCESS_TIMEOUT_S = 120


class PlannedFailure(RuntimeError):
    """Raised on purpose inside a tracked block."""


def _own_resource(worker: int) -> str:
    return f"worker_{worker}"


def _own_processed(worker: int, index: int) -> int:
    return worker * 1000 + index


def _sync_worker(url: str, schema: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: tracked syncs of its own resource, interleaved with the shared one."""
    try:
        barrier.wait(timeout=PROCESS_TIMEOUT_S)
        # All processes open the store (and apply the migrations) at the same moment.
        tracker = SyncTracker(database_url=url, schema_name=schema)
        shared = {"attempts": 0, "successes": 0, "refusals": 0, "processed": 0}
        for index in range(SYNCS_PER_WORKER):
            try:
                with tracker.track(resource=_own_resource(worker), source_system="test") as sync:
                    sync.record(processed=_own_processed(worker, index), created=1, updated=2)
                    if index % FAIL_EVERY == FAIL_EVERY - 1:
                        raise PlannedFailure(f"worker {worker} sync {index}")
            except PlannedFailure:
                pass
            if index % SHARED_EVERY == 0:
                shared["attempts"] += 1
                try:
                    with tracker.track(resource=SHARED, source_system="test") as sync:
                        # Stay running for a moment so other processes meet a running sync.
                        time.sleep(0.01)
                        sync.record(processed=worker + 1)
                except SyncAlreadyRunningError:
                    shared["refusals"] += 1
                else:
                    shared["successes"] += 1
                    shared["processed"] += worker + 1
        tracker.store.dispose()
        results.put({"worker": worker, "shared": shared})
    except BaseException:
        results.put({"worker": worker, "error": traceback.format_exc()})
        raise


def _run_workers(backend: Backend) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_sync_worker,
            args=(backend.url, backend.schema, worker, barrier, results),
            name=f"sync-worker-{worker}",
        )
        for worker in range(WORKERS)
    ]
    with workers_running(processes, results):
        reports = [results.get(timeout=PROCESS_TIMEOUT_S) for _ in processes]
    errors = [r["error"] for r in reports if "error" in r]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in processes] == [0] * WORKERS
    assert len({p.pid for p in processes}) == WORKERS
    return reports


def _check_state_matches_latest(store: SyncStore, resource: str, rows: list[SyncRecord]) -> None:
    """sync_state of ``resource`` agrees with its latest history row and its successes."""
    state = store.get_state(resource)
    assert state is not None
    latest = max(rows, key=lambda r: (r.sync_end_time, r.sync_id))
    assert state.current_sync_id == latest.sync_id
    assert state.last_sync_status == latest.sync_status
    assert state.records_synced == latest.records_processed
    assert state.completed_at == latest.sync_end_time
    assert state.started_at == latest.sync_start_time
    successes = [r for r in rows if r.sync_status == "success"]
    assert state.last_sync_time == max(r.sync_start_time for r in successes)
    by_end = sorted(rows, key=lambda r: r.sync_end_time)
    trailing_failures = 0
    for row in reversed(by_end):
        if row.sync_status == "success":
            break
        trailing_failures += 1
    assert state.consecutive_failures == trailing_failures


def test_parallel_processes_lose_no_row_and_no_count(backend: Backend) -> None:
    reports = _run_workers(backend)

    store = backend.store()
    try:
        rows = store.list_history(limit=None)
        statuses = Counter(r.sync_status for r in rows)
        assert set(statuses) <= {"success", "failed"}, statuses
        assert all(r.sync_end_time is not None for r in rows)
        assert store.list_states(status="running") == []

        for worker in range(WORKERS):
            resource = _own_resource(worker)
            own = [r for r in rows if r.resource == resource]
            assert len(own) == SYNCS_PER_WORKER
            assert sorted(r.records_processed for r in own) == [
                _own_processed(worker, i) for i in range(SYNCS_PER_WORKER)
            ]
            failed = [r for r in own if r.sync_status == "failed"]
            assert len(failed) == SYNCS_PER_WORKER // FAIL_EVERY
            assert all("PlannedFailure" in (r.error_message or "") for r in failed)
            _check_state_matches_latest(store, resource, own)

        shared_rows = [r for r in rows if r.resource == SHARED]
        attempts = sum(r["shared"]["attempts"] for r in reports)
        successes = sum(r["shared"]["successes"] for r in reports)
        refusals = sum(r["shared"]["refusals"] for r in reports)
        assert successes + refusals == attempts == WORKERS * SHARED_ATTEMPTS_PER_WORKER
        assert len(shared_rows) == successes
        assert all(r.sync_status == "success" for r in shared_rows)
        assert sum(r.records_processed for r in shared_rows) == sum(
            r["shared"]["processed"] for r in reports
        )
        _check_state_matches_latest(store, SHARED, shared_rows)

        expected_total = sum(
            _own_processed(w, i) for w in range(WORKERS) for i in range(SYNCS_PER_WORKER)
        ) + sum(r["shared"]["processed"] for r in reports)
        assert sum(r.records_processed for r in rows) == expected_total
        assert len(rows) == WORKERS * SYNCS_PER_WORKER + successes
        with store.engine.connect() as conn:
            total = conn.execute(sa.text("SELECT sum(records_processed) FROM sync_history"))
            assert total.scalar_one() == expected_total
    finally:
        store.dispose()


# -- Dagster's multiprocess executor -------------------------------------------------------------

ASSET_COUNT = 6


def _processed_for(name: str) -> int:
    return 100 + int(name.rsplit("_", 1)[1])


def _tracked_asset(index: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"tracked_{index}", group_name="concurrency")
    def _asset(
        context: dg.AssetExecutionContext, sync_tracker: SyncTracker
    ) -> dg.MaterializeResult:
        with sync_tracker.track(context, source_system="test", target_system="warehouse") as sync:
            assert sync.watermark is None
            sync.record(processed=_processed_for(context.asset_key.path[-1]), created=3)
        return dg.MaterializeResult(metadata=sync.metadata)

    return _asset


TRACKED_ASSETS = [_tracked_asset(i) for i in range(ASSET_COUNT)]


def tracked_assets_job() -> dg.JobDefinition:
    """The job run in child processes (module level, so Dagster can reconstruct it there)."""
    defs = dg.Definitions(
        assets=TRACKED_ASSETS,
        jobs=[
            dg.define_asset_job(
                "tracked_assets_job",
                executor_def=dg.multiprocess_executor.configured(
                    {
                        "max_concurrent": ASSET_COUNT,
                        # Each step is still its own OS process, forked from a server that has
                        # imported Dagster and the package once (spawn re-imports them per step).
                        "start_method": {
                            "forkserver": {"preload_modules": ["dagster", "sync_observability"]}
                        },
                    }
                ),
            )
        ],
        # Configured per run: the forkserver outlives a test, so its environment can be stale.
        resources={"sync_tracker": SyncTracker.configure_at_launch()},
    )
    return defs.resolve_job_def("tracked_assets_job")


def test_multiprocess_executor_records_every_asset(backend: Backend, tmp_path: Any) -> None:
    tracker_config = {"database_url": backend.url, "schema_name": backend.schema}
    with (
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        dg.execute_job(
            dg.reconstructable(tracked_assets_job),
            instance=instance,
            run_config={"resources": {"sync_tracker": {"config": tracker_config}}},
        ) as result,
    ):
        assert result.success
        run_id = result.run_id
        step_pids = {
            event.pid for event in result.all_events if event.event_type_value == "STEP_START"
        }
        materialized = {
            event.asset_key.to_user_string(): event.materialization.metadata
            for event in result.get_asset_materialization_events()
        }

    assert len(step_pids) == ASSET_COUNT
    assert os.getpid() not in step_pids

    store = backend.store()
    try:
        rows = store.list_history(limit=None)
        assert sorted(r.resource for r in rows) == sorted(
            f"tracked_{i}" for i in range(ASSET_COUNT)
        )
        for row in rows:
            assert row.sync_status == "success"
            assert row.dagster_run_id == run_id
            assert row.asset_key == row.resource
            assert row.records_processed == _processed_for(row.resource)
            assert row.records_created == 3
            assert row.source_system == "test"
            metadata = materialized[row.resource]
            assert metadata["sync_id"].value == row.sync_id
            assert metadata["dagster/row_count"].value == row.records_processed
            state = store.get_state(row.resource)
            assert state is not None
            assert state.last_sync_status == "success"
            assert state.current_sync_id == row.sync_id
            assert state.dagster_run_id == run_id
            assert state.records_synced == row.records_processed
            assert state.last_sync_time == row.sync_start_time
    finally:
        store.dispose()
