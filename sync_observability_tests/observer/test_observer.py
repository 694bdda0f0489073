"""The asset observer: rows for assets with no tracker code, from real runs' events.

Real Dagster runs (the multiprocess executor where it matters), real sensor evaluation
(``dg.build_sensor_context`` with the definitions), both tracking engines.
"""

# No `from __future__ import annotations`: Dagster reads the test assets' annotations.
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from sync_observability import SyncRecord, SyncTracker
from sync_observability.observer import make_asset_observer_sensor
from sync_observability.observer import sensor as observer_sensor
from sync_observability_tests.conftest import Backend, own_database
from sync_observability_tests.observer import observed_jobs
from sync_observability_tests.observer.observed_jobs import (
    MIXED,
    RELEASE_FILE,
    STARTED_FILE,
    hanging_job,
    mixed_job,
)

OBSERVER = make_asset_observer_sensor()


def observe(
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    cursor: str | None = None,
    *,
    sensor: dg.SensorDefinition = OBSERVER,
    assets: list[Any] = MIXED,
) -> dg.SensorResult:
    """One tick of the observer, as the daemon runs it, with the code location's assets."""
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources={"sync_tracker": tracker})
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources={"sync_tracker": tracker}, cursor=cursor
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult), result
    return result


def message(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None and result.skip_reason.skip_message is not None
    return result.skip_reason.skip_message


def history(tracker: SyncTracker) -> list[SyncRecord]:
    store = tracker._open()
    try:
        return sorted(
            store.list_history(limit=None),
            key=lambda r: (r.resource, r.retry_number, r.sync_start_time),
        )
    finally:
        store.dispose()


def by_resource(rows: list[SyncRecord]) -> dict[str, list[SyncRecord]]:
    out: dict[str, list[SyncRecord]] = {}
    for row in rows:
        out.setdefault(row.resource, []).append(row)
    return out


@pytest.fixture
def instance(tmp_path: Any) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


def run_mixed(instance: dg.DagsterInstance, backend: Backend) -> str:
    config = {"database_url": backend.url, "schema_name": backend.schema}
    with dg.execute_job(
        dg.reconstructable(mixed_job),
        instance=instance,
        run_config={"resources": {"sync_tracker": {"config": config}}},
        raise_on_error=False,
    ) as result:
        assert not result.success
        return result.run_id


@pytest.mark.slow
def test_a_run_with_no_tracker_code_records_what_each_asset_did(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    tracker = backend.tracker()
    run_id = run_mixed(instance, backend)

    result = observe(instance, tracker)
    assert "observed 1 ended run: 6 syncs recorded" in message(result)

    rows = by_resource(history(tracker))
    # The upstream-skipped asset is no failure of its own: no row.
    assert sorted(rows) == ["broken", "flaky", "multi_bad", "multi_ok", "tracked", "upstream"]
    assert all(r.dagster_run_id == run_id for rs in rows.values() for r in rs)

    [up] = rows["upstream"]
    assert (up.sync_status, up.records_processed, up.observed) == ("success", 12, True)
    assert up.asset_key == "upstream" and up.partition_key is None
    assert up.sync_end_time is not None and up.sync_end_time >= up.sync_start_time
    assert up.watermark_after == up.sync_end_time

    # Retried once: both attempts in history, the first not counted.
    first, second = rows["flaky"]
    assert (first.retry_number, first.sync_status) == (0, "failed")
    assert first.error_message == "ConnectionError: source answered 503"
    assert first.errors[0]["will_retry"] is True
    assert "observed_jobs.py" in first.errors[0]["traceback"]  # the user's frame
    assert (second.retry_number, second.sync_status, second.records_processed) == (1, "success", 7)

    [bad] = rows["broken"]
    assert bad.sync_status == "failed"
    assert bad.error_message == "ValueError: column 'amount' missing"
    assert bad.errors[0]["code"] == "ValueError"

    # The multi-asset: one sync per key, each as it went.
    assert [r.sync_status for r in rows["multi_ok"]] == ["success"]
    assert rows["multi_ok"][0].records_processed == 3
    assert rows["multi_bad"][0].error_message == "RuntimeError: second table failed"

    # The tracked asset keeps the tracker's row, and only it.
    [own] = rows["tracked"]
    assert (own.observed, own.records_processed) == (False, 5)

    store = tracker._open()
    try:
        flaky_state = store.get_state("flaky")
        broken_state = store.get_state("broken")
        assert store.get_state("after_broken") is None
    finally:
        store.dispose()
    assert flaky_state is not None and broken_state is not None
    assert (flaky_state.last_sync_status, flaky_state.consecutive_failures) == ("success", 0)
    assert flaky_state.records_synced == 7
    assert (broken_state.last_sync_status, broken_state.consecutive_failures) == ("failed", 1)
    assert broken_state.last_sync_time is None

    # Replayed: the next tick, a reset cursor, a garbled one: never a second row.
    before = [r.sync_id for r in history(tracker)]
    again = observe(instance, tracker, result.cursor)
    assert "observed 0 ended runs" in message(again)
    for cursor in (None, "not json", json.dumps({"after_storage_id": 0})):
        observe(instance, tracker, cursor)
    assert [r.sync_id for r in history(tracker)] == before


def test_a_selection_limits_what_is_observed(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    tracker = backend.tracker()
    dg.materialize(
        [observed_jobs.upstream, observed_jobs.broken],
        instance=instance,
        raise_on_error=False,
    )
    sensor = make_asset_observer_sensor(dg.AssetSelection.assets("broken"))
    first = observe(instance, tracker, sensor=sensor)
    assert [(r.resource, r.sync_status) for r in history(tracker)] == [("broken", "failed")]

    # Every asset of any code location, but never the package's own report.
    @dg.asset(name="sync_health_report")
    def report() -> None:
        pass

    dg.materialize([report], instance=instance)
    dg.materialize([observed_jobs.upstream], instance=instance)
    everything = make_asset_observer_sensor(None)
    observe(instance, tracker, first.cursor, sensor=everything, assets=[])
    assert [r.resource for r in history(tracker)] == ["broken", "upstream"]


def test_a_partitioned_asset_is_one_sync_per_partition(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    days = dg.DailyPartitionsDefinition(start_date="2026-11-01")

    @dg.asset(partitions_def=days)
    def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        if context.partition_key == "2026-11-03":
            raise RuntimeError("no file for 2026-11-03")
        return dg.MaterializeResult(metadata={"dagster/row_count": int(context.partition_key[-1])})

    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        dg.materialize([daily], instance=instance, partition_key=day, raise_on_error=False)
    tracker = backend.tracker()
    observe(instance, tracker, assets=[daily])
    rows = history(tracker)
    assert sorted((r.partition_key, r.sync_status, r.records_processed) for r in rows) == [
        ("2026-11-01", "success", 1),
        ("2026-11-02", "success", 2),
        ("2026-11-03", "failed", 0),
    ]
    assert {r.resource for r in rows} == {"daily"}
    store = tracker._open()
    try:
        state = store.get_state("daily")
    finally:
        store.dispose()
    assert state is not None and state.last_sync_status == "failed"


@pytest.mark.parametrize("per_transaction", [2_000, 7])
def test_a_multi_asset_step_with_twenty_keys_records_twenty_syncs(
    backend: Backend,
    instance: dg.DagsterInstance,
    per_transaction: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 7: a run bigger than a transaction is written in parts, over ticks when out of time.
    monkeypatch.setattr(observer_sensor, "SYNCS_PER_TRANSACTION", per_transaction)
    specs = [dg.AssetSpec(["dbt", f"model_{i:02d}"]) for i in range(20)]

    @dg.multi_asset(specs=specs)
    def dbt_models() -> Iterator[dg.MaterializeResult]:
        for i, spec in enumerate(specs):
            yield dg.MaterializeResult(asset_key=spec.key, metadata={"dagster/row_count": i})

    dg.materialize([dbt_models], instance=instance)
    tracker = backend.tracker()
    if per_transaction == 2_000:
        observe(instance, tracker, assets=[dbt_models])
    else:
        hurried = make_asset_observer_sensor(tick_seconds=1e-9)
        cursor, counts = None, []
        for _ in range(4):
            result = observe(instance, tracker, cursor, sensor=hurried, assets=[dbt_models])
            cursor = result.cursor
            counts.append(len(history(tracker)))
        assert counts == [7, 14, 20, 20]
    rows = history(tracker)
    assert sorted((r.resource, r.records_processed) for r in rows) == [
        (f"dbt/model_{i:02d}", i) for i in range(20)
    ]
    assert {r.sync_status for r in rows} == {"success"}
    assert len({r.sync_id for r in rows}) == 20


def test_a_backlog_drains_over_ticks_and_racing_ticks_write_each_run_once(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    for _ in range(3):
        dg.materialize([observed_jobs.upstream], instance=instance)
    tracker = backend.tracker()
    # A tick that is out of time after its first run still handles that one.
    slow = make_asset_observer_sensor(tick_seconds=1e-9)
    cursor, counts = None, []
    for _ in range(4):
        result = observe(instance, tracker, cursor, sensor=slow)
        cursor = result.cursor
        counts.append(len(history(tracker)))
    assert counts == [1, 2, 3, 3]

    # Two ticks from scratch at once (a reset cursor racing the daemon): no run twice.
    other = backend.tracker()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def tick(t: SyncTracker) -> None:
        try:
            barrier.wait(timeout=30)
            observe(instance, t)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=tick, args=(t,)) for t in (tracker, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(history(tracker)) == 3


def _run_hanging(dagster_home: str, env: dict[str, str]) -> None:
    os.setsid()  # its own process group: the kill takes Dagster's log-capturing tails too
    os.environ.update(env)
    with dg.instance_for_test(temp_dir=dagster_home) as instance:
        dg.execute_job(dg.reconstructable(hanging_job), instance=instance)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["failed", "canceled"])
def test_a_run_killed_mid_step_is_a_failed_sync_with_its_code(
    backend: Backend, tmp_path: Any, how: str
) -> None:
    home = str(tmp_path / "dagster")
    os.mkdir(home)
    env = {STARTED_FILE: str(tmp_path / "started"), RELEASE_FILE: str(tmp_path / "release")}
    with dg.instance_for_test(temp_dir=home) as instance:
        child = multiprocessing.get_context("spawn").Process(target=_run_hanging, args=(home, env))
        child.start()
        deadline = time.monotonic() + 120
        while not os.path.exists(env[STARTED_FILE]):
            assert child.is_alive() and time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)  # the run worker dies mid-step
        child.join(timeout=30)
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        # What Dagster's run monitoring, or a cancel of a dead run, reports.
        if how == "failed":
            instance.report_run_failed(run, message="Run worker died")
        else:
            instance.report_run_canceled(run, message="Canceled by the user")
        tracker = backend.tracker()
        observe(instance, tracker, assets=[observed_jobs.hanging])
    [row] = history(tracker)
    code = "RUN_FAILURE" if how == "failed" else "RUN_CANCELED"
    assert row.resource == "hanging" and row.sync_status == "failed"
    assert row.errors[0]["code"] == code
    assert row.error_message is not None
    assert row.error_message.startswith(f"{code}: the run")
    assert "'hanging'" in row.error_message


@pytest.fixture
def dagster_postgres_url(postgres_database_url: str) -> Iterator[str]:
    """A database of its own for a dagster-postgres instance: no other test's runs in it."""
    with own_database(postgres_database_url, "dagster") as url:
        yield url


@pytest.mark.postgres
def test_it_reads_a_dagster_postgres_instance(backend: Backend, dagster_postgres_url: str) -> None:
    storage = {"postgres": {"postgres_url": dagster_postgres_url}}
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        dg.materialize(
            [observed_jobs.upstream, observed_jobs.broken], instance=instance, raise_on_error=False
        )
        tracker = backend.tracker()
        first = observe(instance, tracker)
        assert "observed 1 ended run: 2 syncs recorded" in message(first)
        dg.materialize([observed_jobs.upstream], instance=instance)
        second = observe(instance, tracker, first.cursor)
        assert "observed 1 ended run: 1 syncs recorded" in message(second)
    rows = history(tracker)
    assert [(r.resource, r.sync_status) for r in rows] == [
        ("broken", "failed"),
        ("upstream", "success"),
        ("upstream", "success"),
    ]


def test_an_asset_key_too_long_for_a_resource_name_blocks_nothing(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    @dg.asset(key=["deep", "x" * 300])
    def long_named() -> None:
        pass

    dg.materialize([long_named, observed_jobs.upstream], instance=instance)
    tracker = backend.tracker()
    result = observe(instance, tracker, assets=[long_named, observed_jobs.upstream])
    assert "observed 1 ended run: 1 syncs recorded" in message(result)
    assert [r.resource for r in history(tracker)] == ["upstream"]
