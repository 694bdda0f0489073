"""The database is the outage, and tracking must not become one: every call ends in its budget.

Each test breaks a throwaway PostgreSQL cluster of its own (``cluster.py``): stopped in the middle
of a sync, frozen with SIGSTOP, a table locked from another connection, every connection slot
taken. SQLite gets the lock it can have: its file locked by another connection. Nothing is
mocked. A call that could hang runs in a thread that the test waits on for a bounded time, so a
regression fails in seconds instead of hanging the suite; the fault is then undone so that the
thread ends too.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_observability import (
    DatabaseUnavailableError,
    SyncObservabilityError,
    SyncStore,
    SyncTracker,
    sync_observability_definitions,
)
from sync_observability_tests.outage.cluster import PostgresCluster
from sync_observability_tests.outage.conftest import ClusterFactory
from sync_observability_tests.processes import workers_running

SLACK_S = 5  # what a call may take beyond its budget: the "within the budget + 5 s"
SENSOR_TIMEOUT_S = 60  # Dagster's sensor evaluation timeout
SECRET = "s3cret-Pa55word"
RESOURCE = "vantage/accounts"
RECORD_FAILED = "RECORD_FAILED"

MakeTracker = Callable[..., SyncTracker]


# -- helpers ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ended:
    """How a bounded call ended: what it returned or raised, how long it took, and when."""

    seconds: float
    ended_at: float  # time.monotonic()
    value: Any = None
    error: BaseException | None = None


def run_bounded(
    call: Callable[[], Any], *, limit: float, undo_fault: Callable[[], None] | None = None
) -> Ended:
    """Run ``call`` in a thread and wait at most ``limit`` seconds for it to end.

    When it has not ended by then, ``undo_fault`` (thaw, release the lock) lets the thread end
    and the test fails: the call hangs as long as the fault lasts.
    """
    ended: dict[str, Any] = {}

    def target() -> None:
        start = time.monotonic()
        try:
            ended["value"] = call()
        except BaseException as error:  # reported to the test, never an unhandled thread error
            ended["error"] = error
        ended["ended_at"] = time.monotonic()
        ended["seconds"] = ended["ended_at"] - start

    thread = threading.Thread(target=target, name="bounded-storage-call", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        if undo_fault is not None:
            undo_fault()
        thread.join(30)
        pytest.fail(f"the call was still blocked after {limit:.0f} s: it waits out the fault")
    return Ended(**ended)


def package_error(error: BaseException | None) -> SyncObservabilityError | None:
    """``error`` or the first of its causes that is one of the package's own errors."""
    while error is not None:
        if isinstance(error, SyncObservabilityError):
            return error
        error = error.__cause__ or error.__context__
    return None


def snapshot(url: str, schema: str | None = "sync_observability") -> dict[str, Any]:
    """The sync tables as they are, read in raw SQL on a connection of their own."""
    prefix = f'"{schema}".' if schema else ""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            history = conn.execute(
                sa.text(
                    "SELECT sync_id, resource, sync_status, error_message, records_processed "
                    f"FROM {prefix}sync_history"
                )
            ).all()
            state = conn.execute(
                sa.text(
                    "SELECT resource, last_sync_status, current_sync_id, records_synced "
                    f"FROM {prefix}sync_state"
                )
            ).all()
    finally:
        engine.dispose()
    return {
        "history": {row.sync_id: row._asdict() for row in history},
        "state": {row.resource: row._asdict() for row in state},
    }


def running(tables: dict[str, Any]) -> list[str]:
    """Whatever is still marked running, in either table."""
    return [
        *(
            f"history {r['sync_id']}"
            for r in tables["history"].values()
            if r["sync_status"] == "running"
        ),
        *(
            f"state {r['resource']}"
            for r in tables["state"].values()
            if r["last_sync_status"] == "running"
        ),
    ]


def statuses(tables: dict[str, Any]) -> dict[str, str]:
    return {sync_id: row["sync_status"] for sync_id, row in tables["history"].items()}


def sync_once(tracker: SyncTracker, processed: int) -> Any:
    """One successful tracked sync of :data:`RESOURCE`; returns its SyncRun."""
    with tracker.track(resource=RESOURCE) as sync:
        sync.record(processed=processed)
    return sync


def enter_track(tracker: SyncTracker) -> str:
    """Try to start a sync of :data:`RESOURCE`; returns only if it started (it should not)."""
    with tracker.track(resource=RESOURCE) as sync:
        return sync.sync_id


def assert_recovered(tracker: SyncTracker, url: str, first: Any, expected: dict[str, str]) -> Any:
    """The next sync starts from ``first``'s watermark and succeeds; nothing is left running."""
    after = sync_once(tracker, processed=2)
    assert after.watermark == first.started_at
    tables = snapshot(url)
    assert running(tables) == []
    assert statuses(tables) == {**expected, after.sync_id: "success"}
    assert tables["state"][RESOURCE]["current_sync_id"] == after.sync_id
    assert tables["state"][RESOURCE]["last_sync_status"] == "success"
    assert tables["state"][RESOURCE]["records_synced"] == 2
    return after


# -- (a) server stopped in the middle of a sync ---------------------------------------------------


@pytest.mark.slow
def test_server_down_past_the_budget_fails_the_finish_and_the_next_sync_runs(
    cluster: PostgresCluster, make_tracker: MakeTracker
) -> None:
    budget = 3
    tracker = make_tracker(cluster.url(), storage_timeout_seconds=budget)
    first = sync_once(tracker, processed=1)  # the tracker now holds a pooled connection
    lost: dict[str, Any] = {}

    def sync_through_the_outage() -> None:
        with tracker.track(resource=RESOURCE) as sync:
            lost["sync"] = sync
            sync.record(processed=5)
            cluster.stop()  # and it stays down until the finish has given up
            lost["down_at"] = time.monotonic()

    ended = run_bounded(sync_through_the_outage, limit=budget + SLACK_S + 10)
    finish_s = ended.ended_at - lost["down_at"]
    print(f"finish gave up after {finish_s:.2f} s (budget {budget} s)")
    assert isinstance(ended.error, DatabaseUnavailableError), repr(ended.error)
    assert finish_s <= budget + SLACK_S
    assert SECRET not in str(ended.error)

    cluster.start()
    # No SyncAlreadyRunningError and no manual step: the unrecorded sync is reaped at this start.
    assert_recovered(
        tracker, cluster.url(), first, {first.sync_id: "success", lost["sync"].sync_id: "failed"}
    )
    reaped = snapshot(cluster.url())["history"][lost["sync"].sync_id]
    assert RECORD_FAILED in reaped["error_message"]


@pytest.mark.slow
def test_server_back_within_the_budget_records_the_sync(
    cluster: PostgresCluster, make_tracker: MakeTracker
) -> None:
    budget = 10
    tracker = make_tracker(cluster.url(), storage_timeout_seconds=budget)
    first = sync_once(tracker, processed=1)
    marks: dict[str, Any] = {}
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(1.5)  # the outage: the finish retries meanwhile
        cluster.start()
        marks["up_at"] = time.monotonic()
        restarted.set()

    def sync_through_the_outage() -> Any:
        with tracker.track(resource=RESOURCE) as sync:
            sync.record(processed=5)
            cluster.stop()
            marks["down_at"] = time.monotonic()
            threading.Thread(target=restart_later, daemon=True).start()
        return sync

    ended = run_bounded(sync_through_the_outage, limit=budget + SLACK_S)
    assert restarted.wait(30)
    print(
        f"server down {marks['up_at'] - marks['down_at']:.2f} s; "
        f"finish recorded {ended.ended_at - marks['down_at']:.2f} s after the stop"
    )
    assert ended.error is None, "".join(traceback.format_exception(ended.error))
    sync = ended.value
    assert sync.status == "success"
    assert ended.ended_at - marks["down_at"] < budget
    tables = snapshot(cluster.url())
    assert running(tables) == []
    assert statuses(tables) == {first.sync_id: "success", sync.sync_id: "success"}
    assert tables["history"][sync.sync_id]["records_processed"] == 5
    assert tables["state"][RESOURCE]["current_sync_id"] == sync.sync_id


# -- (b) server frozen (SIGSTOP) ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("connection", ["pooled", "new"])
def test_frozen_server_fails_the_start_within_the_budget(
    cluster: PostgresCluster, make_tracker: MakeTracker, connection: str
) -> None:
    budget = 3
    tracker = make_tracker(cluster.url(), storage_timeout_seconds=budget)
    first = sync_once(tracker, processed=1)
    if connection == "new":  # nothing pooled: connecting is what hangs
        tracker = make_tracker(cluster.url(), storage_timeout_seconds=budget)

    cluster.freeze()
    ended = run_bounded(
        lambda: enter_track(tracker), limit=budget + SLACK_S + 5, undo_fault=cluster.thaw
    )
    cluster.thaw()
    print(f"track() gave up after {ended.seconds:.2f} s on a frozen server (budget {budget} s)")
    assert isinstance(ended.error, DatabaseUnavailableError), repr(ended.error)
    assert ended.seconds <= budget + SLACK_S

    assert_recovered(tracker, cluster.url(), first, {first.sync_id: "success"})


# -- (c) sync_state locked by another connection --------------------------------------------------


@pytest.mark.slow
def test_locked_sync_state_fails_the_start_within_the_budget(
    cluster: PostgresCluster, make_tracker: MakeTracker
) -> None:
    budget = 3
    tracker = make_tracker(cluster.url(), storage_timeout_seconds=budget)
    first = sync_once(tracker, processed=1)

    locker = sa.create_engine(cluster.url(), poolclass=sa.pool.NullPool)
    conn = locker.connect()
    transaction = conn.begin()
    try:
        conn.execute(sa.text("LOCK TABLE sync_observability.sync_state IN ACCESS EXCLUSIVE MODE"))
        ended = run_bounded(
            lambda: enter_track(tracker),
            limit=budget + SLACK_S + 5,
            undo_fault=transaction.rollback,
        )
    finally:
        if transaction.is_active:
            transaction.rollback()
        conn.close()
        locker.dispose()
    print(f"track() gave up after {ended.seconds:.2f} s on a locked table (budget {budget} s)")
    assert isinstance(ended.error, DatabaseUnavailableError), repr(ended.error)
    assert ended.seconds <= budget + SLACK_S

    assert_recovered(tracker, cluster.url(), first, {first.sync_id: "success"})


# -- (d) a sensor tick on a frozen server ---------------------------------------------------------


@pytest.mark.slow
def test_sensor_tick_on_a_frozen_server_ends_inside_the_sensor_timeout(
    cluster: PostgresCluster, make_tracker: MakeTracker
) -> None:
    url = cluster.url(password=SECRET)
    tracker = make_tracker(url, storage_timeout_seconds=3)
    defs = sync_observability_definitions(tracker=tracker)
    (sensor,) = [s for s in defs.sensors or [] if s.name == "sync_stuck_runs_sensor"]
    resources = {key: defs.resources[key] for key in ("sync_tracker", "sync_alerting")}
    instance = dg.DagsterInstance.ephemeral()
    sync_once(tracker, processed=1)

    def tick() -> Any:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return sensor(context)

    assert isinstance(run_bounded(tick, limit=SENSOR_TIMEOUT_S).value, dg.SkipReason)

    cluster.freeze()
    ended = run_bounded(tick, limit=SENSOR_TIMEOUT_S + 5, undo_fault=cluster.thaw)
    cluster.thaw()
    print(f"sensor tick on a frozen server ended after {ended.seconds:.2f} s: {ended.error!r}")
    assert ended.seconds < SENSOR_TIMEOUT_S
    if ended.error is not None:
        error = package_error(ended.error)
        assert error is not None, "".join(traceback.format_exception(ended.error))
        assert f"127.0.0.1:{cluster.port}/postgres" in str(error)
        assert SECRET not in "".join(traceback.format_exception(ended.error))
        print(f"its message: {error}")
    else:
        assert isinstance(ended.value, dg.SkipReason)


# -- (e) more trackers than connection slots ------------------------------------------------------

CROWD_PROCESSES = 20
CROWD_SYNCS = 3
CROWD_HOLD_S = 0.3  # work inside each sync, while the tracker keeps its pooled connection
CROWD_BUDGET_S = 30


def _crowd_worker(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: wait for everyone, then run CROWD_SYNCS syncs of a resource of its own."""
    reports: list[dict[str, Any]] = []
    try:
        tracker = SyncTracker(database_url=url, storage_timeout_seconds=CROWD_BUDGET_S)
        barrier.wait(timeout=120)
        for n in range(CROWD_SYNCS):
            report: dict[str, Any] = {"worker": worker, "n": n, "sync_id": None}
            reports.append(report)
            started = time.monotonic()
            left_block = None
            try:
                with tracker.track(resource=f"crowd/{worker}") as sync:
                    report["start_s"] = time.monotonic() - started
                    report["sync_id"] = sync.sync_id
                    sync.record(processed=n + 1)
                    time.sleep(CROWD_HOLD_S)
                    left_block = time.monotonic()
                report["outcome"] = "success"
            except DatabaseUnavailableError as refused:
                report["outcome"] = "refused"
                report["message"] = str(refused)
            except Exception:
                report["outcome"] = "error"
                report["message"] = traceback.format_exc()
            if left_block is None:  # refused at the start
                report["start_s"] = time.monotonic() - started
            else:
                report["finish_s"] = time.monotonic() - left_block
        if tracker._store is not None:
            tracker._store.dispose()
        results.put((worker, reports, None))
    except BaseException:
        results.put((worker, reports, traceback.format_exc()))
        raise


@pytest.mark.slow
def test_more_trackers_than_connection_slots_are_recorded_or_refused_in_time(
    make_cluster: ClusterFactory,
) -> None:
    # superuser_reserved_connections=0: the trackers connect as a superuser and get all ten.
    cluster = make_cluster(max_connections=10, superuser_reserved_connections=0)
    url = cluster.url()
    SyncStore.from_url(url, storage_timeout_seconds=CROWD_BUDGET_S).dispose()  # tables made once

    # forkserver: the package is imported once (preloaded), not once per process; no threads
    # of this process are forked.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    barrier = ctx.Barrier(CROWD_PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_crowd_worker, args=(url, worker, barrier, results), daemon=True)
        for worker in range(CROWD_PROCESSES)
    ]
    reports: list[dict[str, Any]] = []
    errors: list[str] = []
    with workers_running(processes, results):
        deadline = time.monotonic() + 120 + CROWD_SYNCS * (2 * (CROWD_BUDGET_S + SLACK_S))
        for _ in processes:
            worker, worker_reports, error = results.get(timeout=max(1, deadline - time.monotonic()))
            reports += worker_reports
            if error:
                errors.append(f"worker {worker}:\n{error}")
    assert not errors, "\n".join(errors)

    succeeded = [r for r in reports if r["outcome"] == "success"]
    refused = [r for r in reports if r["outcome"] == "refused"]
    print(
        f"{len(succeeded)} of {len(reports)} syncs recorded, {len(refused)} refused; slowest "
        f"start {max(r['start_s'] for r in reports):.2f} s, slowest finish "
        f"{max((r['finish_s'] for r in reports if 'finish_s' in r), default=0):.2f} s"
    )
    assert len(reports) == CROWD_PROCESSES * CROWD_SYNCS
    assert [r for r in reports if r["outcome"] not in ("success", "refused")] == []
    assert [r for r in reports if r["start_s"] > CROWD_BUDGET_S + SLACK_S] == []
    assert [r for r in reports if r.get("finish_s", 0) > CROWD_BUDGET_S + SLACK_S] == []
    tables = snapshot(url)
    assert running(tables) == []
    recorded = {s for s, status in statuses(tables).items() if status == "success"}
    assert recorded == {r["sync_id"] for r in succeeded}


# -- (f) SQLite: the database file locked by another connection -----------------------------------


@pytest.mark.slow
def test_sqlite_locked_file_fails_the_start_within_the_budget(
    tmp_path: Path, make_tracker: MakeTracker
) -> None:
    budget = 2
    path = tmp_path / "sync.db"
    url = f"sqlite:///{path}"
    tracker = make_tracker(url, storage_timeout_seconds=budget)
    first = sync_once(tracker, processed=1)

    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        ended = run_bounded(
            lambda: enter_track(tracker), limit=budget + SLACK_S + 5, undo_fault=locker.rollback
        )
    finally:
        if locker.in_transaction:
            locker.rollback()
        locker.close()
    print(
        f"track() gave up after {ended.seconds:.2f} s on a locked SQLite file (budget {budget} s)"
    )
    assert isinstance(ended.error, DatabaseUnavailableError), repr(ended.error)
    assert ended.seconds <= budget + SLACK_S

    after = sync_once(tracker, processed=2)
    assert after.watermark == first.started_at
    tables = snapshot(url, schema=None)
    assert running(tables) == []
    assert statuses(tables) == {first.sync_id: "success", after.sync_id: "success"}
