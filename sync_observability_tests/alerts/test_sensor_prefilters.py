"""The sensors read only the rows their rule could flag: they find what the rule finds on all.

Each sensor filters ``sync_state`` (and, on PostgreSQL, the slow and volume sensors their
history figures) in SQL with the loosest thresholds over the defaults and overrides. Here varied
histories are judged under several policies, overrides that loosen and tighten thresholds
included, and the alerts each sensor leaves open must be exactly the findings of its rule over
every row and every resource's full recent history.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable
from typing import Any

import dagster as dg

from sync_observability import SyncStore, SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import (
    AlertPolicy,
    Finding,
    check_consecutive_failures,
    check_slow_syncs,
    check_stale_watermarks,
    check_volume_anomalies,
    check_watermark_not_moving,
)
from sync_observability.alerts.sensors import (
    sync_consecutive_failures_sensor,
    sync_slow_syncs_sensor,
    sync_stale_watermarks_sensor,
    sync_volume_anomalies_sensor,
    sync_watermark_not_moving_sensor,
)
from sync_observability.storage.alert_store import AlertStore
from sync_observability.storage.history_stats import (
    recent_durations_ms,
    recent_volumes,
    slow_sync_candidates,
    volume_anomaly_candidates,
)
from sync_observability_tests.alerts.dagster_helpers import past_sync, tick, utcnow

HOUR = dt.timedelta(hours=1)

POLICIES: list[dict[str, Any]] = [
    {},
    {
        "overrides": {
            "r0*": {
                "consecutive_failures": 1,
                "stale_after_hours": 2,
                "slow_after_minutes": 0.05,
                "slow_factor": 1.3,
                "volume_sigma": 0.8,
                "not_moving_after_syncs": 2,
            },
            "r12": {"consecutive_failures": 2, "slow_min_samples": 3},
            "r1*": {"consecutive_failures": 6, "volume_sigma": 4.0},
        },
        "muted": ["r05"],
    },
    {
        "slow_factor": None,
        "not_moving_after_hours": 0.5,
        "overrides": {
            "r1*": {"slow_factor": 1.2, "slow_min_samples": 3},
            "r2*": {"slow_factor": 4.0},
            # Different windows: the volume filter can only count samples.
            "r0*": {
                "slow_factor": 1.5,
                "volume_window": 6,
                "volume_min_samples": 3,
                "volume_sigma": 1.0,
            },
        },
    },
    {
        "consecutive_failures_threshold": 1,
        "stale_after_hours": 30,
        "slow_factor": 1.5,
        "volume_sigma": 1.0,
        "not_moving_after_syncs": 3,
    },
]


def _sync(
    store: SyncStore,
    resource: str,
    started_at: dt.datetime,
    *,
    ms: int,
    status: str = "success",
    processed: int = 0,
    watermark_after: dt.datetime | None = None,
) -> None:
    past_sync(
        store,
        resource,
        started_at=started_at,
        duration=dt.timedelta(milliseconds=ms),
        status=status,
        processed=processed,
        watermark_after=watermark_after,
        error_message="HTTP 503",
    )


def _histories(store: SyncStore) -> None:
    """24 resources: steady, noisy, slow or odd last runs, failing, stale, constant, stuck."""
    draw = random.Random(42)
    now = utcnow()
    for r in range(24):
        resource = f"r{r:02}"
        kind = ("steady", "slow", "volume", "failing", "stale", "constant", "still")[r % 7]
        runs = 6 + draw.randrange(10)
        start = now - (runs + 2) * HOUR - (60 * HOUR if kind == "stale" else dt.timedelta(0))
        base_ms, base_volume = 1000 + draw.randrange(60_000), 50 + draw.randrange(5000)
        first = start
        for k in range(runs):
            last = k == runs - 1
            at = start + k * HOUR
            status = "failed" if draw.random() < 0.1 and not last else "success"
            if kind == "failing" and k >= runs - 1 - r % 3:
                status = "failed"
            ms = int(base_ms * (0.8 + 0.4 * draw.random()))
            volume = int(base_volume * (0.9 + 0.2 * draw.random()))
            if kind == "constant":
                volume = base_volume + (1 if last and r % 2 else 0)
            if last and kind == "slow":
                ms *= 2 + r % 4
            if last and kind == "volume":
                volume = volume * 4 if r % 2 else volume // 3
            held = first if kind == "still" and k > 0 else None
            _sync(store, resource, at, ms=ms, status=status, processed=volume, watermark_after=held)


def _expected(store: SyncStore, policy: AlertPolicy, now: dt.datetime) -> dict[str, list[Finding]]:
    """What each rule finds over every row and every resource's full recent history."""
    states = store.list_states()
    values = [policy.defaults, *(policy.for_resource(s.resource) for s in states)]
    window = max(20, *(v.slow_min_samples for v in values))
    volume_window = 1 + max(v.volume_window for v in values)
    return {
        "consecutive_failures": check_consecutive_failures(states, policy, now),
        "stale_watermark": check_stale_watermarks(states, policy, now),
        "slow_sync": check_slow_syncs(
            states, policy, now, recent_durations_ms=recent_durations_ms(store, limit=window)
        ),
        "volume_anomaly": check_volume_anomalies(
            states, policy, now, recent_volumes=recent_volumes(store, limit=volume_window)
        ),
        "watermark_not_moving": check_watermark_not_moving(states, policy, now),
    }


SENSORS: dict[str, dg.SensorDefinition] = {
    "consecutive_failures": sync_consecutive_failures_sensor,
    "stale_watermark": sync_stale_watermarks_sensor,
    "slow_sync": sync_slow_syncs_sensor,
    "volume_anomaly": sync_volume_anomalies_sensor,
    "watermark_not_moving": sync_watermark_not_moving_sensor,
}


def test_each_sensor_finds_what_its_rule_finds_over_every_row(
    tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    store = tracker.store
    _histories(store)
    alerts = AlertStore(store)
    found: dict[str, int] = dict.fromkeys(SENSORS, 0)
    for config in POLICIES:
        alerting = SyncAlerting(**config)
        policy = alerting.policy()
        for rule, sensor in SENSORS.items():
            message = tick(sensor, instance, tracker, alerting)
            # What the tick changed comes first, when it changed anything.
            assert re.match(r"(alerts: [^;]+; )?checked 24 resources:", message), message
            expected = _expected(store, policy, utcnow())[rule]
            opened = {a.resource: a for a in alerts.list_alerts(status="open", rule=rule)}
            assert sorted(opened) == [f.resource for f in expected], (rule, config)
            if rule != "stale_watermark":  # its message says how old, as of the tick
                assert [opened[f.resource].message for f in expected] == [
                    f.message for f in expected
                ]
            found[rule] += len(expected)
    assert all(found.values()), found


def test_the_history_filters_leave_out_rows_on_postgresql(store: SyncStore) -> None:
    _histories(store)
    every = len(store.list_states())
    read: Callable[..., Any]
    for read, kwargs in (
        (slow_sync_candidates, {"slow_after_ms": 300_000, "slow_factor": 3.0, "min_samples": 5}),
        (volume_anomaly_candidates, {"sigma": 2.0, "min_samples": 3}),
    ):
        candidates = read(store, **kwargs)
        assert set(candidates.values) <= {s.resource for s in candidates.states}
        if store.dialect == "postgresql":
            assert 0 < len(candidates.states) < every / 2, read.__name__
        else:
            assert len(candidates.states) == every
