"""An untouched asset's failures open an alert and turn its check red; a success clears both.

The whole loop a user gets from ``sync_observability_definitions(observe=...)``: real runs with
no tracker code, the observer's tick, the consecutive-failures sensor's tick (webhook on
127.0.0.1), and the check result that sensor reports, stored as Dagster's daemon stores it.
"""

# No `from __future__ import annotations`: Dagster reads the test asset's annotations.
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from sync_observability import SyncAlerting, sync_observability_definitions
from sync_observability.checks import CHECK_NAME
from sync_observability_tests.alerts.dagster_helpers import webhook_receiver
from sync_observability_tests.conftest import Backend

FAILING = {"on": True}


@dg.asset
def fragile() -> dg.MaterializeResult:
    if FAILING["on"]:
        raise ConnectionError("warehouse unreachable")
    return dg.MaterializeResult(metadata={"dagster/row_count": 4})


@pytest.fixture
def instance(tmp_path: Any) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def evaluate(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None = None
) -> Any:
    """One tick of sensor ``name``; its asset events are stored as the daemon stores them."""
    sensor = defs.get_repository_def().get_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=dict(defs.resources or {}), cursor=cursor
    ) as context:
        result = sensor(context)
    for event in getattr(result, "asset_events", None) or []:
        instance.report_runless_asset_event(event)
    return result


def check_state(instance: dg.DagsterInstance) -> tuple[str, Any] | None:
    key = dg.AssetCheckKey(dg.AssetKey("fragile"), CHECK_NAME)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    if record is None:
        return None
    evaluation = record.evaluation
    assert evaluation is not None
    return record.status.value, evaluation.severity


def test_three_failures_open_one_alert_and_a_red_check_a_success_clears_both(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    FAILING["on"] = True
    tracker = backend.tracker()
    with webhook_receiver() as webhook:
        defs = dg.Definitions.merge(
            dg.Definitions(assets=[fragile]),
            sync_observability_definitions(
                tracker=tracker,
                alerting=SyncAlerting(webhook_url=webhook.url),
                assets_to_check=[fragile],
                observe=dg.AssetSelection.all(),
            ),
        )
        cursor = None
        for attempt in range(3):
            assert not dg.materialize([fragile], instance=instance, raise_on_error=False).success
            cursor = evaluate(defs, "sync_asset_observer_sensor", instance, cursor).cursor
            evaluate(defs, "sync_consecutive_failures_sensor", instance)
            if attempt < 2:
                assert webhook.accepted == []
                assert check_state(instance) is None
        [opened] = webhook.accepted
        assert (opened["event"], opened["rule"], opened["resource"]) == (
            "opened",
            "consecutive_failures",
            "fragile",
        )
        assert "warehouse unreachable" in opened["last_error"]
        assert check_state(instance) == ("FAILED", dg.AssetCheckSeverity.ERROR)

        # Still failing on the next tick: nothing new is sent or reported.
        evaluate(defs, "sync_consecutive_failures_sensor", instance)
        assert len(webhook.accepted) == 1

        FAILING["on"] = False
        assert dg.materialize([fragile], instance=instance).success
        evaluate(defs, "sync_asset_observer_sensor", instance, cursor)
        evaluate(defs, "sync_consecutive_failures_sensor", instance)
        assert [b["event"] for b in webhook.accepted] == ["opened", "resolved"]
        assert check_state(instance) == ("SUCCEEDED", dg.AssetCheckSeverity.ERROR)
    state = tracker.get_state("fragile")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("success", 0)
    assert state.last_success_at is not None
