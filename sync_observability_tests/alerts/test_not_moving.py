"""The "green but not moving" rule and sensor (issue 6 item 3).

The rule is tested as a pure function; the sensor with real syncs through the tracker, a real
Dagster instance, ``dg.build_sensor_context`` and a real webhook on 127.0.0.1, on both engines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import dagster as dg
import pytest

from sync_observability import InvalidInputError, SyncState, SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import (
    WATERMARK_NOT_MOVING,
    AlertPolicy,
    Thresholds,
    check_watermark_not_moving,
)
from sync_observability.alerts.sensors import SYNC_SENSORS, sync_watermark_not_moving_sensor
from sync_observability.errors import ConfigurationError
from sync_observability_tests.alerts.dagster_helpers import (
    WebhookReceiver,
    tick,
)
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 11, 5, 12, 0, tzinfo=UTC)
SOURCE_VALUE = dt.datetime(2025, 11, 1, tzinfo=UTC)


def state(resource: str = "accounts", **fields: object) -> SyncState:
    base = SyncState(
        resource=resource,
        source_system=None,
        target_system=None,
        last_sync_time=SOURCE_VALUE,
        cursor=None,
        last_sync_status="success",
        records_synced=0,
        records_created=0,
        records_updated=0,
        errors=[],
        started_at=NOW - dt.timedelta(minutes=1),
        completed_at=NOW,
        duration_ms=60_000,
        consecutive_failures=0,
        last_success_at=NOW,
        current_sync_id="s-1",
        dagster_run_id=None,
        created_at=NOW - dt.timedelta(days=3),
        updated_at=NOW,
        watermark_advanced_at=NOW - dt.timedelta(hours=2),
        syncs_since_advance=0,
    )
    return dataclasses.replace(base, **fields)


def test_the_rule_fires_at_n_green_syncs_without_a_move() -> None:
    policy = AlertPolicy()
    assert check_watermark_not_moving([state(syncs_since_advance=4)], policy, NOW) == []
    [finding] = check_watermark_not_moving([state(syncs_since_advance=5)], policy, NOW)
    assert (finding.rule, finding.severity, finding.resource) == (
        WATERMARK_NOT_MOVING,
        "warning",
        "accounts",
    )
    assert finding.details["reasons"] == ["syncs"]
    assert finding.since == NOW - dt.timedelta(hours=2)
    assert "5 successful syncs" in finding.message and SOURCE_VALUE.isoformat() in finding.message


def test_the_time_limit_counts_green_syncs_since_the_last_move() -> None:
    policy = AlertPolicy(defaults=Thresholds(not_moving_after=dt.timedelta(hours=1)))
    stalled = state(syncs_since_advance=2)  # successes for 2 h since the last move
    [finding] = check_watermark_not_moving([stalled], policy, NOW)
    assert finding.details["reasons"] == ["time"]
    # Just moved (no success since), or the last success within the hour: nothing.
    assert check_watermark_not_moving([state(syncs_since_advance=0)], policy, NOW) == []
    recent = state(syncs_since_advance=2, watermark_advanced_at=NOW - dt.timedelta(minutes=30))
    assert check_watermark_not_moving([recent], policy, NOW) == []
    # Off by default.
    assert check_watermark_not_moving([stalled], AlertPolicy(), NOW) == []


def test_overrides_and_muting_apply() -> None:
    policy = AlertPolicy(
        overrides={"feeds/*": {"not_moving_after_syncs": 20}, "feeds/hot": {"muted": True}},
        muted=["sandbox/*"],
    )
    states = [
        state("accounts", syncs_since_advance=6),
        state("feeds/a", syncs_since_advance=6),
        state("feeds/b", syncs_since_advance=20),
        state("feeds/hot", syncs_since_advance=50),
        state("sandbox/x", syncs_since_advance=50),
    ]
    found = check_watermark_not_moving(states, policy, NOW)
    assert [f.resource for f in found] == ["accounts", "feeds/b"]
    with pytest.raises(InvalidInputError):
        Thresholds(not_moving_after_syncs=0)
    with pytest.raises(InvalidInputError):
        Thresholds(not_moving_after=dt.timedelta(0))
    with pytest.raises(ConfigurationError):
        SyncAlerting(overrides={"x": {"not_moving_after_hours": "soon"}}).policy()
    configured = SyncAlerting(
        not_moving_after_syncs=3,
        not_moving_after_hours=6,
        overrides={"x": {"not_moving_after_hours": 48, "not_moving_after_syncs": 10}},
    ).policy()
    assert configured.defaults.not_moving_after_syncs == 3
    assert configured.defaults.not_moving_after == dt.timedelta(hours=6)
    assert configured.for_resource("x").not_moving_after == dt.timedelta(hours=48)
    assert configured.for_resource("x").not_moving_after_syncs == 10


def _sync_to(tracker: SyncTracker, value: dt.datetime) -> None:
    with tracker.track(resource="vantage/funds", source_system="vantage") as sync:
        sync.record(processed=10)
        sync.advance_watermark(value)  # the newest modified_at the source returned


def test_the_sensor_alerts_after_n_green_syncs_and_resolves_when_the_watermark_moves(
    backend: Backend, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    assert sync_watermark_not_moving_sensor in SYNC_SENSORS
    tracker = backend.tracker()
    alerting = SyncAlerting(webhook_url=webhook.url, not_moving_after_syncs=3)
    try:
        _sync_to(tracker, SOURCE_VALUE)  # moves it: None -> the source value
        for _ in range(2):
            _sync_to(tracker, SOURCE_VALUE)  # green, same source value again
        assert tracker.get_state("vantage/funds").syncs_since_advance == 2
        message = tick(sync_watermark_not_moving_sensor, instance, tracker, alerting)
        assert "no watermark left in place" in message
        assert webhook.accepted == []

        _sync_to(tracker, SOURCE_VALUE)  # the third green sync that did not move it
        tick(sync_watermark_not_moving_sensor, instance, tracker, alerting)
        [opened] = webhook.accepted
        assert (opened["event"], opened["rule"], opened["resource"]) == (
            "opened",
            WATERMARK_NOT_MOVING,
            "vantage/funds",
        )
        assert "3 successful syncs" in opened["message"]
        # Still not moving: refreshed, not re-sent.
        _sync_to(tracker, SOURCE_VALUE)
        tick(sync_watermark_not_moving_sensor, instance, tracker, alerting)
        assert len(webhook.accepted) == 1

        _sync_to(tracker, SOURCE_VALUE + dt.timedelta(hours=1))  # it moves
        state = tracker.get_state("vantage/funds")
        assert state.syncs_since_advance == 0
        tick(sync_watermark_not_moving_sensor, instance, tracker, alerting)
        assert [(b["event"], b["rule"]) for b in webhook.accepted] == [
            ("opened", WATERMARK_NOT_MOVING),
            ("resolved", WATERMARK_NOT_MOVING),
        ]
    finally:
        tracker.store.dispose()


def test_failures_do_not_count_and_a_manual_set_counts_as_a_move(backend: Backend) -> None:
    tracker = backend.tracker()
    try:
        _sync_to(tracker, SOURCE_VALUE)
        _sync_to(tracker, SOURCE_VALUE)
        with pytest.raises(ConnectionError), tracker.track(resource="vantage/funds"):
            raise ConnectionError("503")
        assert tracker.get_state("vantage/funds").syncs_since_advance == 1
        tracker.set_watermark("vantage/funds", {"id": 5}, reason="skip", changed_by="ana")
        moved = tracker.get_state("vantage/funds")
        assert moved.syncs_since_advance == 0
        assert moved.watermark_advanced_at is not None
    finally:
        tracker.store.dispose()
