"""sync_observability_definitions merges with a user's Definitions and works from them."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from sync_observability.alerts.resources import SyncAlerting
from sync_observability.definitions import sync_observability_definitions
from sync_observability.examples import definitions as example
from sync_observability.examples.vantage import vantage_assets
from sync_observability.tracking import SyncTracker
from sync_observability_tests.alerts.dagster_helpers import fail, webhook_receiver
from sync_observability_tests.conftest import Backend

SENSOR_NAMES = {
    "sync_consecutive_failures_sensor",
    "sync_stuck_runs_sensor",
    "sync_stale_watermarks_sensor",
    "sync_slow_syncs_sensor",
    "sync_volume_anomalies_sensor",
    "sync_watermark_not_moving_sensor",
}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def test_the_example_workspace_includes_everything_and_loads() -> None:
    merged = example.defs  # the examples merge sync_observability_definitions themselves
    dg.Definitions.validate_loadable(merged)

    repository = merged.get_repository_def()
    sensors = {s.name: s for s in repository.sensor_defs}
    assert set(sensors) == SENSOR_NAMES
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    assert sensors["sync_stale_watermarks_sensor"].minimum_interval_seconds == 300
    assert {"sync_tracker", "sync_alerting"} <= set(merged.resources or {})
    check_keys = {key for checks in merged.asset_checks or [] for key in checks.check_keys}
    asset_keys = {key for asset in vantage_assets for key in asset.keys}
    assert {key.asset_key for key in check_keys} == asset_keys
    assert {key.name for key in check_keys} == {"sync_health"}
    assert repository.get_job(example.vantage_sync_job.name) is not None


def test_merges_with_user_definitions_sharing_the_tracker() -> None:
    tracker = SyncTracker()
    users = dg.Definitions(assets=vantage_assets, resources={"sync_tracker": tracker})
    merged = dg.Definitions.merge(
        users, sync_observability_definitions(tracker=tracker, assets_to_check=vantage_assets)
    )
    dg.Definitions.validate_loadable(merged)
    assert set(merged.resources or {}) == {"sync_tracker", "sync_alerting"}


def test_a_second_tracker_under_the_same_key_is_refused_by_merge() -> None:
    users = dg.Definitions(assets=vantage_assets, resources={"sync_tracker": SyncTracker()})
    with pytest.raises(dg.DagsterInvariantViolationError, match="sync_tracker"):
        dg.Definitions.merge(users, sync_observability_definitions())


def test_sensors_and_checks_can_be_left_out() -> None:
    defs = sync_observability_definitions(sensors=False)
    assert not list(defs.sensors or [])
    assert not list(defs.asset_checks or [])
    assert set(defs.resources or {}) == {"sync_tracker", "sync_alerting"}
    dg.Definitions.validate_loadable(defs)


def test_a_sensor_runs_with_the_resources_of_the_merged_definitions(
    backend: Backend, instance: dg.DagsterInstance
) -> None:
    tracker = backend.tracker()
    with webhook_receiver() as webhook:
        defs = dg.Definitions.merge(
            dg.Definitions(resources={"sync_tracker": tracker}),
            sync_observability_definitions(
                tracker=tracker, alerting=SyncAlerting(webhook_url=webhook.url)
            ),
        )
        fail(tracker, "orders", times=3)
        sensor = defs.get_repository_def().get_sensor_def("sync_consecutive_failures_sensor")
        # Direct invocation takes its resources from the context, so hand over the merged ones.
        with dg.build_sensor_context(
            instance=instance, definitions=defs, resources=dict(defs.resources or {})
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason)
        assert [(b["event"], b["resource"]) for b in webhook.accepted] == [("opened", "orders")]
    tracker.store.dispose()
