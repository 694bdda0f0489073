"""The sync_health asset checks, run by Dagster with the asset and on their own."""

# No `from __future__ import annotations`: Dagster reads the assets' parameter annotations.
import datetime as dt

import dagster as dg

from sync_observability import SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.checks import CHECK_NAME, make_sync_health_checks
from sync_observability.definitions import sync_observability_definitions
from sync_observability_tests.alerts.dagster_helpers import fail, past_sync, utcnow
from sync_observability_tests.conftest import Backend

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class OrdersConfig(dg.Config):
    fail: bool = False


@dg.asset(key=["crm", "orders"])
def orders(
    context: dg.AssetExecutionContext, config: OrdersConfig, sync_tracker: SyncTracker
) -> dg.MaterializeResult:
    with sync_tracker.track(context, source_system="crm") as sync:
        if config.fail:
            raise ConnectionError("CRM answered 503")
        sync.record(processed=3)
    return dg.MaterializeResult(metadata=sync.metadata)


@dg.asset(key=["crm", "accounts"])
def accounts() -> None:
    """An asset that does not track its syncs."""


def _run(
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    *,
    fail: bool = False,
    checks_only: bool = False,
    consecutive_failures_threshold: int = 3,
    stale_after_hours: float = 24,
) -> dg.ExecuteInProcessResult:
    checks = make_sync_health_checks(
        [orders],
        consecutive_failures_threshold=consecutive_failures_threshold,
        stale_after_hours=stale_after_hours,
    )
    return dg.materialize(
        [orders, *checks],
        instance=instance,
        resources={"sync_tracker": tracker},
        run_config={
            **QUIET,
            "ops": {} if checks_only else {"crm__orders": {"config": {"fail": fail}}},
        },
        selection=dg.AssetSelection.checks_for_assets(orders) if checks_only else None,
        raise_on_error=False,
    )


def _evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_key == dg.AssetKey(["crm", "orders"])
    assert evaluation.check_name == CHECK_NAME
    return evaluation


def test_the_check_passes_with_the_asset_and_fails_after_three_failures(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    evaluation = _evaluation(_run(instance, tracker))
    assert evaluation.passed
    assert evaluation.metadata["status"].value == "success"
    assert evaluation.metadata["consecutive_failures"].value == 0
    assert evaluation.metadata["last_sync_time"].value is not None

    failed = _run(instance, tracker, fail=True)
    assert not failed.success
    assert failed.get_asset_check_evaluations() == []  # a failed asset skips its check
    fail(tracker, "crm/orders")  # the second failure, recorded outside Dagster
    assert _evaluation(_run(instance, tracker, checks_only=True)).passed
    fail(tracker, "crm/orders")
    evaluation = _evaluation(_run(instance, tracker, checks_only=True))
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["consecutive_failures"].value == 3
    assert evaluation.metadata["status"].value == "failed"
    assert "CRM answered 503" in (evaluation.description or "")


def test_the_threshold_is_configurable(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    fail(tracker, "crm/orders")
    assert _evaluation(_run(instance, tracker, checks_only=True)).passed
    strict = _run(instance, tracker, checks_only=True, consecutive_failures_threshold=1)
    assert not _evaluation(strict).passed


def test_a_stale_resource_fails_with_a_warning(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    past_sync(tracker.store, "crm/orders", started_at=utcnow() - dt.timedelta(hours=30))
    evaluation = _evaluation(_run(instance, tracker, checks_only=True))
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "no successful sync" in (evaluation.description or "")
    lenient = _run(instance, tracker, checks_only=True, stale_after_hours=48)
    assert _evaluation(lenient).passed


def test_a_never_synced_resource_fails_with_a_warning(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    evaluation = _evaluation(_run(instance, tracker, checks_only=True))
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["status"].value == "never_run"


def test_one_check_per_asset_whatever_form_it_is_given_in() -> None:
    checks = make_sync_health_checks(
        [orders, dg.AssetKey(["crm", "orders"]), "crm/accounts", dg.AssetSpec(["crm", "invoices"])]
    )
    keys = sorted(key.to_user_string() for c in checks for key in c.check_keys)
    assert keys == [
        "crm/accounts:sync_health",
        "crm/invoices:sync_health",
        "crm/orders:sync_health",
    ]
    defs = dg.Definitions(
        assets=[orders, accounts],
        asset_checks=checks,
        resources={"sync_tracker": SyncTracker(database_url="sqlite:///:memory:")},
    )
    dg.Definitions.validate_loadable(defs)


def _checks_only(
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    checks: list[dg.AssetChecksDefinition],
) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [orders, *checks],
        instance=instance,
        resources={"sync_tracker": tracker},
        run_config=QUIET,
        selection=dg.AssetSelection.checks_for_assets(orders),
        raise_on_error=False,
    )
    return _evaluation(result)


def test_the_alerting_resources_overrides_and_mutes_apply(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    fail(tracker, "crm/orders")

    def check(alerting: SyncAlerting, **thresholds: float) -> dg.AssetCheckEvaluation:
        checks = make_sync_health_checks([orders], alerting=alerting, **thresholds)
        return _checks_only(instance, tracker, checks)

    assert check(SyncAlerting()).passed  # one failure, three by default
    pattern = {"crm/*": {"consecutive_failures": 1}}
    strict = check(SyncAlerting(overrides=pattern))
    assert not strict.passed and strict.severity == dg.AssetCheckSeverity.ERROR
    # As for the sensors, an exact name beats a pattern, and an override beats the defaults
    # (including thresholds given to the factory).
    exact = {**pattern, "crm/orders": {"consecutive_failures": 2}}
    assert check(SyncAlerting(overrides=exact)).passed
    assert not check(SyncAlerting(overrides=pattern), consecutive_failures_threshold=5).passed
    assert not check(SyncAlerting(), consecutive_failures_threshold=1).passed
    muted = check(SyncAlerting(consecutive_failures_threshold=1, muted=["crm/*"]))
    assert muted.passed and muted.metadata["muted"].value is True


def test_a_per_resource_staleness_override_applies(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    past_sync(tracker.store, "crm/orders", started_at=utcnow() - dt.timedelta(hours=30))
    lenient = SyncAlerting(overrides={"crm/orders": {"stale_after_hours": 48}})
    [check] = make_sync_health_checks([orders], alerting=lenient)
    [spec] = check.check_specs
    assert "for 48 h" in (spec.description or "")
    assert _checks_only(instance, tracker, [check]).passed
    assert not _checks_only(instance, tracker, make_sync_health_checks([orders])).passed


def test_the_definitions_checks_follow_the_alerting_overrides(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    fail(tracker, "crm/orders")
    defs = sync_observability_definitions(
        tracker=tracker,
        alerting=SyncAlerting(overrides={"crm/orders": {"consecutive_failures": 1}}),
        assets_to_check=[orders],
        sensors=False,
    )
    assert not _checks_only(instance, tracker, list(defs.asset_checks)).passed
