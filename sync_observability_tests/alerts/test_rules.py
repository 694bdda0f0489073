"""The alert rules' edge cases, without a database or Dagster: states are built in memory."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sync_observability.alerts import (
    CONSECUTIVE_FAILURES,
    SLOW_SYNC,
    STALE_WATERMARK,
    STUCK_RUN,
    VOLUME_ANOMALY,
    AlertPolicy,
    Finding,
    Thresholds,
    check_consecutive_failures,
    check_slow_syncs,
    check_stale_watermarks,
    check_stuck_runs,
    check_volume_anomalies,
)
from sync_observability.errors import InvalidInputError
from sync_observability.storage.records import SyncState

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DEFAULT = AlertPolicy()


def state(resource: str = "accounts", **changes: Any) -> SyncState:
    """A sync_state row: by default created two days ago, last succeeded an hour ago."""
    row: dict[str, Any] = {
        "resource": resource,
        "source_system": "vantage",
        "target_system": "warehouse",
        "last_sync_time": NOW - HOUR - MIN,
        "cursor": None,
        "last_sync_status": "success",
        "records_synced": 10,
        "records_created": 4,
        "records_updated": 6,
        "errors": [],
        "started_at": NOW - HOUR - MIN,
        "completed_at": NOW - HOUR,
        "duration_ms": 60_000,
        "consecutive_failures": 0,
        "last_success_at": NOW - HOUR,
        "current_sync_id": f"sync-{resource}",
        "dagster_run_id": f"run-{resource}",
        "created_at": NOW - dt.timedelta(days=2),
        "updated_at": NOW - HOUR,
    }
    row.update(changes)
    return SyncState(**row)


def failing(resource: str = "accounts", count: int = 3, **changes: Any) -> SyncState:
    error = {"code": "TimeoutError", "message": "read timed out", "timestamp": NOW.isoformat()}
    fields: dict[str, Any] = {
        "last_sync_status": "failed",
        "consecutive_failures": count,
        "errors": [{"code": "Other", "message": "older error"}, error],
        "completed_at": NOW - MIN,
        "last_success_at": NOW - dt.timedelta(days=1),
    }
    return state(resource, **(fields | changes))


def running(resource: str = "accounts", started: dt.timedelta = MIN, **changes: Any) -> SyncState:
    fields: dict[str, Any] = {
        "last_sync_status": "running",
        "started_at": NOW - started,
        "completed_at": None,
        "duration_ms": None,
    }
    return state(resource, **(fields | changes))


def never_run(resource: str = "accounts", created: dt.timedelta = HOUR) -> SyncState:
    return state(
        resource,
        last_sync_time=None,
        last_sync_status="never_run",
        records_synced=0,
        records_created=0,
        records_updated=0,
        started_at=None,
        completed_at=None,
        duration_ms=None,
        last_success_at=None,
        current_sync_id=None,
        dagster_run_id=None,
        created_at=NOW - created,
        updated_at=NOW - created,
    )


def resources(findings: list[Finding]) -> list[str]:
    return [f.resource for f in findings]


def assert_serializable(findings: list[Finding]) -> None:
    for finding in findings:
        json.dumps(dict(finding.details), allow_nan=False)


# -- consecutive failures --------------------------------------------------------------------


def test_three_failures_alert_and_two_do_not() -> None:
    findings = check_consecutive_failures(
        [failing("at", 3), failing("below", 2), failing("over", 7), state("ok")], DEFAULT, NOW
    )
    assert resources(findings) == ["at", "over"]
    at = findings[0]
    assert at.rule == CONSECUTIVE_FAILURES
    assert at.fingerprint == "consecutive_failures:at"
    assert at.severity == "critical"
    assert at.since == NOW - MIN
    assert at.last_error == "TimeoutError: read timed out"
    assert "3 times in a row" in at.message
    assert "read timed out" in at.message
    assert at.details["consecutive_failures"] == 3
    assert at.details["threshold"] == 3
    assert at.sync_id == "sync-at"
    assert at.dagster_run_id == "run-at"
    assert_serializable(findings)


def test_a_retry_running_after_three_failures_still_alerts() -> None:
    # A running retry has not reset the count; dropping the finding would resolve and reopen.
    retrying = failing(last_sync_status="running", completed_at=None, duration_ms=None)
    [finding] = check_consecutive_failures([retrying], DEFAULT, NOW)
    assert finding.since == NOW  # the last error's timestamp, as completed_at is gone
    assert finding.details["last_sync_status"] == "running"


def test_failures_without_recorded_errors_still_alert() -> None:
    [finding] = check_consecutive_failures([failing(errors=[])], DEFAULT, NOW)
    assert finding.last_error is None
    assert "no error recorded" in finding.message


def test_a_long_error_is_shortened_in_the_message_only() -> None:
    long = "x" * 5000
    [finding] = check_consecutive_failures(
        [failing(errors=[{"code": "E", "message": long}])], DEFAULT, NOW
    )
    assert len(finding.message) < 400
    assert finding.last_error is not None and finding.last_error.startswith("E: xxx")
    assert len(finding.last_error) == 1000


def test_never_run_resources_have_no_failure_finding() -> None:
    assert check_consecutive_failures([never_run()], DEFAULT, NOW) == []


@given(
    counts=st.lists(st.integers(min_value=0, max_value=20), max_size=30),
    threshold=st.integers(min_value=1, max_value=10),
)
def test_failure_findings_are_exactly_the_states_at_or_over_threshold(
    counts: list[int], threshold: int
) -> None:
    states = [failing(f"r{i:02d}", count) for i, count in enumerate(counts)]
    policy = AlertPolicy(defaults=Thresholds(consecutive_failures=threshold))
    findings = check_consecutive_failures(reversed(states), policy, NOW)
    expected = [s.resource for s in states if s.consecutive_failures >= threshold]
    assert resources(findings) == expected  # also sorted by resource


# -- stuck runs ------------------------------------------------------------------------------


def test_running_exactly_the_limit_is_not_stuck_one_second_more_is() -> None:
    findings = check_stuck_runs(
        [
            running("exactly", 30 * MIN),
            running("over", 30 * MIN + dt.timedelta(seconds=1)),
            running("fresh", MIN),
        ],
        DEFAULT,
        NOW,
    )
    assert resources(findings) == ["over"]
    [over] = findings
    assert over.rule == STUCK_RUN
    assert over.details["reason"] == "timed_out"
    assert over.details["running_seconds"] == 1801.0
    assert over.since == NOW - 30 * MIN - dt.timedelta(seconds=1)
    assert "30m 1s" in over.message
    assert_serializable(findings)


def test_an_ended_dagster_run_is_orphaned_whatever_its_age() -> None:
    findings = check_stuck_runs(
        [running("young", MIN), running("alive", MIN), running("old", 2 * HOUR)],
        DEFAULT,
        NOW,
        ended_run_ids={"run-young", "run-old"},
    )
    assert [(f.resource, f.details["reason"]) for f in findings] == [
        ("old", "orphaned"),
        ("young", "orphaned"),
    ]
    assert findings[1].dagster_run_id == "run-young"
    assert "run-young" in findings[1].message


def test_finished_syncs_are_never_stuck_even_with_an_ended_run() -> None:
    states = [state("done", started_at=NOW - 5 * HOUR), failing("failed")]
    assert check_stuck_runs(states, DEFAULT, NOW, ended_run_ids={"run-done", "run-failed"}) == []


def test_a_start_in_the_future_is_not_stuck_unless_orphaned() -> None:
    skewed = running("skewed", -HOUR)
    assert check_stuck_runs([skewed], DEFAULT, NOW) == []
    [orphan] = check_stuck_runs([skewed], DEFAULT, NOW, ended_run_ids={"run-skewed"})
    assert orphan.details["reason"] == "orphaned"
    assert orphan.details["running_seconds"] == -3600.0


def test_a_running_sync_without_a_dagster_run_can_only_time_out() -> None:
    outside = running("outside", 2 * HOUR, dagster_run_id=None)
    [finding] = check_stuck_runs([outside], DEFAULT, NOW, ended_run_ids={"run-outside"})
    assert finding.details["reason"] == "timed_out"


@given(seconds=st.integers(min_value=-7200, max_value=7200))
def test_timed_out_exactly_when_running_longer_than_the_limit(seconds: int) -> None:
    findings = check_stuck_runs([running(started=dt.timedelta(seconds=seconds))], DEFAULT, NOW)
    assert bool(findings) == (seconds > 1800)


# -- stale watermarks ------------------------------------------------------------------------


def test_stale_after_more_than_a_day_without_success() -> None:
    day = dt.timedelta(days=1)
    findings = check_stale_watermarks(
        [
            state("exactly", last_success_at=NOW - day),
            state("over", last_success_at=NOW - day - dt.timedelta(seconds=1)),
            state("fresh"),
        ],
        DEFAULT,
        NOW,
    )
    assert resources(findings) == ["over"]
    [over] = findings
    assert over.rule == STALE_WATERMARK
    assert over.severity == "warning"
    assert over.since == NOW - day - dt.timedelta(seconds=1)
    assert over.details["never_succeeded"] is False
    assert_serializable(findings)


def test_last_sync_time_is_used_when_last_success_at_is_missing() -> None:
    old = state("old", last_success_at=None, last_sync_time=NOW - 2 * dt.timedelta(days=1))
    new = state("new", last_success_at=None, last_sync_time=NOW - HOUR)
    assert resources(check_stale_watermarks([old, new], DEFAULT, NOW)) == ["old"]


def test_last_success_at_wins_over_an_old_watermark() -> None:
    # An asset may advance the watermark to its data's own time, far behind the sync's time.
    data_time = state(last_sync_time=NOW - dt.timedelta(days=30), last_success_at=NOW - HOUR)
    assert check_stale_watermarks([data_time], DEFAULT, NOW) == []


def test_never_run_resources_are_stale_once_created_over_the_limit_ago() -> None:
    findings = check_stale_watermarks(
        [never_run("new", HOUR), never_run("old", dt.timedelta(days=2))], DEFAULT, NOW
    )
    assert resources(findings) == ["old"]
    assert findings[0].details["never_succeeded"] is True
    assert findings[0].since == NOW - dt.timedelta(days=2)
    assert "never synced successfully" in findings[0].message


def test_a_resource_that_only_ever_failed_is_judged_by_its_creation() -> None:
    only_failed = failing(last_success_at=None, last_sync_time=None)
    [finding] = check_stale_watermarks([only_failed], DEFAULT, NOW)
    assert finding.details["never_succeeded"] is True


def test_a_running_resource_is_judged_by_its_last_success() -> None:
    old = running("old", MIN, last_success_at=NOW - dt.timedelta(days=3))
    fresh = running("fresh", MIN)
    assert resources(check_stale_watermarks([old, fresh], DEFAULT, NOW)) == ["old"]


def test_a_success_in_the_future_is_not_stale() -> None:
    skewed = state(last_success_at=NOW + HOUR, last_sync_time=NOW + HOUR)
    assert check_stale_watermarks([skewed], DEFAULT, NOW) == []


# -- slow syncs ------------------------------------------------------------------------------


def test_slow_over_five_minutes_strictly() -> None:
    five = 5 * 60_000
    findings = check_slow_syncs(
        [state("exactly", duration_ms=five), state("over", duration_ms=five + 1)],
        DEFAULT,
        NOW,
        recent_durations_ms={},
    )
    assert resources(findings) == ["over"]
    assert findings[0].rule == SLOW_SYNC
    assert findings[0].details["reasons"] == ["over_limit"]
    assert findings[0].details["samples"] == 0
    assert_serializable(findings)


def test_slow_against_the_median_needs_min_samples() -> None:
    latest = state(duration_ms=31_000)
    four = {"accounts": [10_000] * 4}
    five = {"accounts": [10_000, 9_000, 10_000, 11_000, 10_000]}
    assert check_slow_syncs([latest], DEFAULT, NOW, recent_durations_ms=four) == []
    [finding] = check_slow_syncs([latest], DEFAULT, NOW, recent_durations_ms=five)
    assert finding.details["reasons"] == ["over_median"]
    assert finding.details["median_ms"] == 10_000
    assert "3.1x the median" in finding.message


def test_exactly_factor_times_the_median_is_not_slow() -> None:
    recent = {"accounts": [10_000] * 5}
    assert (
        check_slow_syncs([state(duration_ms=30_000)], DEFAULT, NOW, recent_durations_ms=recent)
        == []
    )


def test_slow_factor_none_turns_the_median_comparison_off() -> None:
    policy = AlertPolicy(defaults=Thresholds(slow_factor=None))
    recent = {"accounts": [1_000] * 10}
    assert (
        check_slow_syncs([state(duration_ms=60_000)], policy, NOW, recent_durations_ms=recent) == []
    )


def test_only_a_latest_successful_run_is_judged() -> None:
    states = [running("running", MIN), failing("failed", duration_ms=10**9), never_run("never")]
    recent = {s.resource: [1] * 10 for s in states}
    assert check_slow_syncs(states, DEFAULT, NOW, recent_durations_ms=recent) == []


# -- volume anomalies ------------------------------------------------------------------------


def volumes(latest: int, previous: list[int]) -> dict[str, list[int]]:
    return {"accounts": [latest, *previous]}


BASELINE = [90, 110] * 5  # mean 100, sample stdev ~10.54, ten samples


def test_volume_spike_and_drop_outside_two_sigma() -> None:
    stdev = statistics.stdev(BASELINE)
    policy = DEFAULT
    [spike] = check_volume_anomalies([state()], policy, NOW, recent_volumes=volumes(200, BASELINE))
    assert spike.rule == VOLUME_ANOMALY
    assert spike.details["direction"] == "spike"
    assert spike.details["mean"] == 100
    assert spike.details["stdev"] == pytest.approx(stdev)
    assert spike.details["z_score"] == pytest.approx(100 / stdev)
    assert spike.details["samples"] == 10
    assert "spike" in spike.message
    [drop] = check_volume_anomalies([state()], policy, NOW, recent_volumes=volumes(0, BASELINE))
    assert drop.details["direction"] == "drop"
    assert drop.details["z_score"] < -2
    inside = volumes(round(100 + 1.9 * stdev), BASELINE)
    assert check_volume_anomalies([state()], policy, NOW, recent_volumes=inside) == []
    assert_serializable([spike, drop])


def test_volume_needs_min_samples_and_ignores_the_latest_in_the_baseline() -> None:
    nine = volumes(10_000, BASELINE[:9])
    assert check_volume_anomalies([state()], DEFAULT, NOW, recent_volumes=nine) == []
    ten = volumes(10_000, BASELINE)
    assert len(check_volume_anomalies([state()], DEFAULT, NOW, recent_volumes=ten)) == 1


def test_volume_baseline_is_limited_to_the_window() -> None:
    # Older runs, beyond a window of 10, processed ten times more: they only count with 30.
    history = volumes(1_000, [*BASELINE, *([1_000] * 20)])
    narrow = AlertPolicy(defaults=Thresholds(volume_window=10))
    [finding] = check_volume_anomalies([state()], narrow, NOW, recent_volumes=history)
    assert finding.details["samples"] == 10
    assert finding.details["mean"] == 100
    assert check_volume_anomalies([state()], DEFAULT, NOW, recent_volumes=history) == []


def test_zero_stdev_any_different_count_is_an_anomaly() -> None:
    flat = [500] * 10
    assert check_volume_anomalies([state()], DEFAULT, NOW, recent_volumes=volumes(500, flat)) == []
    [finding] = check_volume_anomalies([state()], DEFAULT, NOW, recent_volumes=volumes(501, flat))
    assert finding.details["stdev"] == 0
    assert finding.details["z_score"] is None
    assert finding.details["direction"] == "spike"
    assert_serializable([finding])


def test_no_history_means_no_slow_or_volume_finding() -> None:
    states = [state("empty"), state("missing")]
    assert check_volume_anomalies(states, DEFAULT, NOW, recent_volumes={"empty": []}) == []
    assert check_slow_syncs(states, DEFAULT, NOW, recent_durations_ms={"empty": []}) == []


@given(
    previous=st.lists(st.integers(min_value=0, max_value=10**6), min_size=10, max_size=30),
    latest=st.integers(min_value=0, max_value=10**6),
)
def test_volume_finding_exactly_when_outside_the_band(previous: list[int], latest: int) -> None:
    mean, stdev = statistics.fmean(previous), statistics.stdev(previous)
    assume(abs(abs(latest - mean) - 2 * stdev) > 1e-6)  # no float ties on the band's edge
    outside = abs(latest - mean) > 2 * stdev
    findings = check_volume_anomalies(
        [state()], DEFAULT, NOW, recent_volumes=volumes(latest, previous)
    )
    assert bool(findings) == outside
    for finding in findings:
        assert finding.details["direction"] == ("spike" if latest > mean else "drop")


# -- policy: overrides, muting, validation ---------------------------------------------------


def test_exact_override_beats_patterns_and_longer_pattern_beats_shorter() -> None:
    policy = AlertPolicy(
        overrides={
            "*": {"consecutive_failures": 9},
            "vantage/*": {"consecutive_failures": 5, "stale_after": 48 * HOUR},
            "vantage/acc*": {"consecutive_failures": 4},
            "vantage/accounts": {"consecutive_failures": 2},
        }
    )
    assert policy.for_resource("vantage/accounts").consecutive_failures == 2
    assert policy.for_resource("vantage/accruals").consecutive_failures == 4
    assert policy.for_resource("vantage/funds").consecutive_failures == 5
    assert policy.for_resource("other").consecutive_failures == 9
    # A more specific key inherits the fields it does not set from the less specific ones.
    assert policy.for_resource("vantage/accounts").stale_after == 48 * HOUR
    assert policy.for_resource("other").stale_after == 24 * HOUR


def test_overrides_change_findings_per_resource() -> None:
    policy = AlertPolicy(overrides={"vantage/*": {"consecutive_failures": 5}})
    states = [failing("vantage/accounts", 4), failing("hubspot/deals", 4)]
    assert resources(check_consecutive_failures(states, policy, NOW)) == ["hubspot/deals"]
    stuck = AlertPolicy(overrides={"slow_one": {"stuck_after": 3 * HOUR}})
    states = [running("slow_one", 2 * HOUR), running("other", 2 * HOUR)]
    assert resources(check_stuck_runs(states, stuck, NOW)) == ["other"]


def test_pattern_precedence_does_not_depend_on_dict_order() -> None:
    one = {"a*": {"consecutive_failures": 4}, "a?": {"consecutive_failures": 5}}
    two = dict(reversed(list(one.items())))
    assert AlertPolicy(overrides=one).for_resource("ab") == AlertPolicy(overrides=two).for_resource(
        "ab"
    )


def test_muted_resources_produce_no_findings_by_any_rule() -> None:
    policy = AlertPolicy(muted=["sandbox/*", "legacy"], overrides={"quiet": {"muted": True}})
    names = ["sandbox/a", "legacy", "quiet", "loud"]
    failed = [failing(n, 10, last_success_at=NOW - 10 * dt.timedelta(days=1)) for n in names]
    assert resources(check_consecutive_failures(failed, policy, NOW)) == ["loud"]
    assert resources(check_stale_watermarks(failed, policy, NOW)) == ["loud"]
    stuck = [running(n, 2 * HOUR) for n in names]
    assert resources(check_stuck_runs(stuck, policy, NOW)) == ["loud"]
    slow = [state(n, duration_ms=10**8) for n in names]
    assert resources(check_slow_syncs(slow, policy, NOW, recent_durations_ms={})) == ["loud"]
    spiky = {n: [10**6, *BASELINE] for n in names}
    assert resources(check_volume_anomalies(slow, policy, NOW, recent_volumes=spiky)) == ["loud"]


def test_the_muted_list_wins_over_an_override_that_unmutes() -> None:
    policy = AlertPolicy(muted=["sandbox/*"], overrides={"sandbox/a": {"muted": False}})
    assert policy.for_resource("sandbox/a").muted is True
    assert policy.is_muted("sandbox/a")
    assert not policy.is_muted("prod/a")


def test_an_unknown_override_field_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInputError) as refused:
        AlertPolicy(overrides={"vantage/*": {"stuck_afterr": 5}})
    assert refused.value.field == "stuck_afterr"
    assert refused.value.value == 5
    assert "vantage/*" in str(refused.value)
    assert "stuck_after" in str(refused.value)


def test_an_invalid_override_value_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInputError) as refused:
        AlertPolicy(overrides={"accounts": {"stuck_after": 30}})
    assert refused.value.field == "stuck_after"
    with pytest.raises(InvalidInputError):
        AlertPolicy(overrides={"accounts": {"consecutive_failures": 0}})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_failures", 0),
        ("consecutive_failures", True),
        ("consecutive_failures", 2.5),
        ("stuck_after", dt.timedelta(0)),
        ("stale_after", -HOUR),
        ("slow_after", 300),
        ("slow_factor", 0),
        ("slow_factor", float("nan")),
        ("slow_min_samples", 0),
        ("volume_sigma", -1.0),
        ("volume_window", 1),
        ("volume_min_samples", 1),
        ("volume_min_samples", 31),
        ("muted", "yes"),
    ],
)
def test_thresholds_validate_their_values(field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as refused:
        Thresholds(**{field: value})
    assert refused.value.field == field


def test_muted_must_be_a_list_not_a_string() -> None:
    with pytest.raises(InvalidInputError):
        AlertPolicy(muted="sandbox/*")


def test_policy_overrides_are_copied_and_read_only() -> None:
    overrides = {"accounts": {"consecutive_failures": 5}}
    policy = AlertPolicy(overrides=overrides)
    overrides["accounts"]["consecutive_failures"] = 1
    assert policy.for_resource("accounts").consecutive_failures == 5
    with pytest.raises(TypeError):
        policy.overrides["x"] = {}  # type: ignore[index]


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        check_stale_watermarks([state()], DEFAULT, NOW.replace(tzinfo=None))
