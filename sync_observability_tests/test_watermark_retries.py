"""Retry-aware failure counting (issue 6 item 4), with dg.materialize and a real RetryPolicy."""

# No `from __future__ import annotations`: Dagster reads the asset parameters' annotations.

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from sync_observability import SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.sensors import sync_consecutive_failures_sensor
from sync_observability.clock import utcnow
from sync_observability.storage.alert_store import AlertStore
from sync_observability_tests.alerts.dagster_helpers import tick
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _flaky_asset(succeeds_on: int | None) -> dg.AssetsDefinition:
    """An asset that fails until attempt ``succeeds_on`` (retry number; None: always fails)."""

    @dg.asset(name="flaky", retry_policy=dg.RetryPolicy(max_retries=2))
    def flaky(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> dg.MaterializeResult:
        with sync_tracker.track(context, source_system="crm") as sync:
            if succeeds_on is None or context.retry_number < succeeds_on:
                raise ConnectionError(f"CRM answered 503 on attempt {context.retry_number}")
            sync.record(processed=3)
        return dg.MaterializeResult(metadata=sync.metadata)

    return flaky


def _materialize(tracker: SyncTracker, succeeds_on: int | None, instance: Any) -> bool:
    result = dg.materialize(
        [_flaky_asset(succeeds_on)],
        resources={"sync_tracker": tracker},
        instance=instance,
        run_config=QUIET,
        raise_on_error=False,
    )
    return result.success


def test_a_step_that_succeeds_on_its_third_attempt_counts_no_failure(backend: Backend) -> None:
    tracker = backend.tracker()
    alerting = SyncAlerting(consecutive_failures_threshold=2)
    with dg.instance_for_test() as instance:
        assert _materialize(tracker, succeeds_on=2, instance=instance)
        history = tracker.store.list_history(resource="flaky")
        assert [(r.retry_number, r.sync_status) for r in history] == [
            (2, "success"),
            (1, "failed"),
            (0, "failed"),
        ]
        assert history[1].errors[0]["will_retry"] is True
        assert history[1].errors[0]["retry_number"] == 1
        state = tracker.get_state("flaky")
        assert (state.last_sync_status, state.consecutive_failures) == ("success", 0)
        tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
        assert AlertStore(tracker.store).list_alerts() == []
    tracker.store.dispose()


@pytest.mark.parametrize("count_retried", [False, True])
def test_only_the_last_attempt_counts_unless_configured(
    backend: Backend, count_retried: bool
) -> None:
    tracker = backend.tracker(count_retried_failures=count_retried)
    alerting = SyncAlerting(consecutive_failures_threshold=2)
    with dg.instance_for_test() as instance:
        assert not _materialize(tracker, succeeds_on=None, instance=instance)
        history = tracker.store.list_history(resource="flaky")
        assert [(r.retry_number, r.sync_status) for r in history] == [
            (2, "failed"),
            (1, "failed"),
            (0, "failed"),
        ]
        assert "will_retry" not in history[0].errors[0]  # the last attempt
        assert tracker.get_state("flaky").consecutive_failures == (3 if count_retried else 1)
        tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
        alerts = AlertStore(tracker.store).list_alerts()
        assert [a.resource for a in alerts] == (["flaky"] if count_retried else [])
        # A second run whose last attempt fails too: now two real failures in a row.
        assert not _materialize(tracker, succeeds_on=None, instance=instance)
        assert tracker.get_state("flaky").consecutive_failures == (6 if count_retried else 2)
        tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
        assert [a.resource for a in AlertStore(tracker.store).list_alerts()] == ["flaky"]
    tracker.store.dispose()


def test_a_retry_reaps_the_sync_its_dead_earlier_attempt_left_running(backend: Backend) -> None:
    tracker = backend.tracker()

    @dg.asset(name="crashy", retry_policy=dg.RetryPolicy(max_retries=1))
    def crashy(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> None:
        if context.retry_number == 0:
            # What a step process killed mid-sync leaves: a started sync nobody will finish.
            sync_tracker.store.start_sync(
                sync_id="attempt-0",
                resource="crashy",
                started_at=utcnow(),
                dagster_run_id=context.run.run_id,
                asset_key="crashy",
                retry_number=0,
            )
            raise ConnectionError("the step process died")
        with sync_tracker.track(context) as sync:
            sync.record(processed=4)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [crashy],
            resources={"sync_tracker": tracker},
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
    assert result.success
    history = tracker.store.list_history(resource="crashy")
    assert [(r.retry_number, r.sync_status) for r in history] == [(1, "success"), (0, "failed")]
    assert [e["code"] for e in history[1].errors] == ["ORPHANED"]
    assert "retried (this is attempt 2)" in (history[1].error_message or "")
    assert tracker.get_state("crashy").records_synced == 4
