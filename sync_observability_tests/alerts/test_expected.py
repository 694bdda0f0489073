"""Stale limits from the definitions: freshness policies, schedules and on_cron conditions."""

import datetime as dt

import dagster as dg

from sync_observability import sync_observability_definitions
from sync_observability.alerts.expected import definition_stale_limits, with_definition_limits
from sync_observability.alerts.rules import AlertPolicy
from sync_observability_tests.alerts.dagster_helpers import past_sync
from sync_observability_tests.conftest import Backend

NOW = dt.datetime(2026, 12, 5, 14, 30, tzinfo=dt.timezone.utc)  # a Saturday


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=6)))
def windowed() -> None: ...


@dg.asset(
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 10 * * *", lower_bound_delta=dt.timedelta(hours=1)
    )
)
def deadline() -> None: ...


@dg.asset(automation_condition=dg.AutomationCondition.on_cron("0 */4 * * *"))
def every_four_hours() -> None: ...


@dg.asset(key=["crm", "weekdays"])
def weekdays() -> None: ...


# Scheduled too, but its own freshness policy comes first.
@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=2)))
def scheduled_with_policy() -> None: ...


@dg.asset
def unscheduled() -> None: ...


SCHEDULE = dg.ScheduleDefinition(
    job=dg.define_asset_job("weekday_job", selection=["crm/weekdays", "scheduled_with_policy"]),
    cron_schedule="0 9 * * 1-5",
)
DEFS = dg.Definitions(
    assets=[windowed, deadline, every_four_hours, weekdays, scheduled_with_policy, unscheduled],
    schedules=[SCHEDULE],
)


def test_each_source_of_a_limit() -> None:
    limits = definition_stale_limits(DEFS.get_repository_def(), NOW)
    assert limits == {
        "windowed": dt.timedelta(hours=6),
        # Daily deadline: a day between deadlines, plus the hour the window opens before it.
        "deadline": dt.timedelta(days=1, hours=1),
        # Two missed ticks of a 4-hourly cron.
        "every_four_hours": dt.timedelta(hours=8),
        # Weekdays at 9: the longest gap is Friday to Monday, so two missed ticks is 6 days.
        "crm/weekdays": dt.timedelta(days=6),
        "scheduled_with_policy": dt.timedelta(hours=2),
    }


def test_the_users_threshold_wins_exact_or_pattern() -> None:
    limits = definition_stale_limits(DEFS.get_repository_def(), NOW)
    policy = AlertPolicy(
        overrides={
            "windowed": {"stale_after": dt.timedelta(hours=1)},
            "crm/*": {"stale_after": dt.timedelta(hours=30)},
            "deadline": {"consecutive_failures": 7},
        }
    )
    derived = with_definition_limits(policy, limits)
    assert derived.for_resource("windowed").stale_after == dt.timedelta(hours=1)
    assert derived.for_resource("crm/weekdays").stale_after == dt.timedelta(hours=30)
    # Derived where the user set nothing, and the user's other fields stay.
    assert derived.for_resource("deadline").stale_after == dt.timedelta(days=1, hours=1)
    assert derived.for_resource("deadline").consecutive_failures == 7
    assert derived.for_resource("every_four_hours").stale_after == dt.timedelta(hours=8)
    assert derived.for_resource("unscheduled").stale_after == policy.defaults.stale_after


def test_no_limits_leaves_the_policy_as_it_is() -> None:
    policy = AlertPolicy()
    assert with_definition_limits(policy, {}) is policy


def test_the_stale_sensor_and_the_check_use_the_freshness_policy(backend: Backend) -> None:
    """7 h without a success: stale for a 6 h fail window, not for the 24 h default."""
    tracker = backend.tracker()
    store = tracker._open()
    seven_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=7)
    for resource in ("windowed", "unscheduled"):
        past_sync(store, resource, started_at=seven_hours_ago)
    store.dispose()
    defs = dg.Definitions.merge(
        DEFS,
        sync_observability_definitions(tracker=tracker, assets_to_check=[windowed, unscheduled]),
    )
    sensor = defs.get_repository_def().get_sensor_def("sync_stale_watermarks_sensor")
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, definitions=defs, resources=dict(defs.resources or {})
        ) as context,
    ):
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert result.skip_reason is not None
    assert "1 opened (windowed)" in (result.skip_reason.skip_message or "")
    [evaluation] = result.asset_events
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert (evaluation.asset_key, evaluation.passed) == (dg.AssetKey("windowed"), False)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "limit 6h" in (evaluation.description or "")
