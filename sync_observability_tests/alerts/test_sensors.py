"""The alert sensors, evaluated as the daemon does, against a real instance and a real webhook.

Every test runs on SQLite and PostgreSQL (the ``backend`` fixture), evaluates sensors with
``dg.build_sensor_context`` on a ``dg.instance_for_test`` instance and receives notifications on
a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import uuid
from typing import Any

import dagster as dg
import pytest

from sync_observability import SyncNotRunningError, SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import CONSECUTIVE_FAILURES, STALE_WATERMARK, STUCK_RUN
from sync_observability.alerts.sensors import (
    make_consecutive_failures_sensor,
    sync_consecutive_failures_sensor,
    sync_slow_syncs_sensor,
    sync_stale_watermarks_sensor,
    sync_stuck_runs_sensor,
    sync_volume_anomalies_sensor,
)
from sync_observability.storage.alert_store import AlertStore
from sync_observability_tests.alerts import killed_sync
from sync_observability_tests.alerts.dagster_helpers import (
    SECRET,
    WebhookReceiver,
    fail,
    past_sync,
    succeed,
    tick,
    utcnow,
)
from sync_observability_tests.conftest import Backend

UI = "https://dagster.example.com"


def _alerting(webhook: WebhookReceiver, **kwargs: Any) -> SyncAlerting:
    return SyncAlerting(webhook_url=webhook.url, dagster_ui_url=UI, **kwargs)


def _events(webhook: WebhookReceiver) -> list[tuple[str, str, str]]:
    return [(b["event"], b["rule"], b["resource"]) for b in webhook.accepted]


def _run_child(target: Any, *args: Any) -> None:
    """Run ``target`` in a fresh (spawned) interpreter and wait until it has died."""
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join(timeout=10)
        pytest.fail("the child process did not die within 60 s")
    assert child.exitcode == killed_sync.EXIT_CODE


# -- consecutive failures: once, then resolved ------------------------------------------------


def test_three_failures_send_one_post_and_a_success_resolves_it(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(webhook)
    sensor = sync_consecutive_failures_sensor
    succeed(tracker, "accounts")
    fail(tracker, "orders", times=2)
    assert tick(sensor, instance, tracker, alerting) == (
        "checked 2 resources: no resource at or over 3 consecutive failures; "
        "0 notifications pending"
    )
    assert webhook.requests == []

    fail(tracker, "orders")
    message = tick(sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", CONSECUTIVE_FAILURES, "orders")]
    body = webhook.accepted[0]
    assert body["severity"] == "critical"
    assert body["details"]["consecutive_failures"] == 3
    assert "CRM answered 503" in body["last_error"]
    assert "1 alerting (orders)" in message and "sent 1 notification" in message

    tick(sensor, instance, tracker, alerting)
    fail(tracker, "orders")  # a fourth failure refreshes the open alert, it does not re-send
    tick(sensor, instance, tracker, alerting)
    assert len(webhook.requests) == 1

    succeed(tracker, "orders")
    message = tick(sensor, instance, tracker, alerting)
    assert _events(webhook) == [
        ("opened", CONSECUTIVE_FAILURES, "orders"),
        ("resolved", CONSECUTIVE_FAILURES, "orders"),
    ]
    assert webhook.accepted[1]["status"] == "resolved"
    assert "1 resolved" in message
    tick(sensor, instance, tracker, alerting)
    assert len(webhook.requests) == 2
    [alert] = AlertStore(tracker.store).list_alerts()
    assert (alert.status, alert.notify_count) == ("resolved", 2)


def test_a_tick_that_opened_or_resolved_alerts_says_so_first_and_in_its_log(
    backend: Backend,
    tracker: SyncTracker,
    instance: dg.DagsterInstance,
    webhook: WebhookReceiver,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Dagster lists every tick without a run request as "0 runs requested", with the skip
    # message on hover: a tick that changed something must say so first, and log it.
    alerting = _alerting(webhook)
    sensor = sync_consecutive_failures_sensor
    fail(tracker, "orders", times=3)
    capfd.readouterr()
    opened = (
        "alerts: 1 opened (orders); checked 1 resource: 1 alerting (orders); "
        "sent 1 notification (opened orders)"
    )
    assert tick(sensor, instance, tracker, alerting) == opened
    assert f"INFO - sync_observability: {opened}" in capfd.readouterr().err

    idle = "checked 1 resource: 1 alerting (orders); 0 notifications pending"
    assert tick(sensor, instance, tracker, alerting) == idle
    assert "INFO - sync_observability:" not in capfd.readouterr().err

    succeed(tracker, "orders")
    resolved = (
        "alerts: 1 resolved (orders); checked 1 resource: no resource at or over 3 "
        "consecutive failures; sent 1 notification (resolved orders)"
    )
    assert tick(sensor, instance, tracker, alerting) == resolved
    assert f"INFO - sync_observability: {resolved}" in capfd.readouterr().err


def test_a_resolution_sends_the_state_that_resolved_it_not_the_open_alerts(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    store, now = tracker.store, utcnow()
    failed_run, good_run = "a" * 36, "b" * 36
    for minutes in (40, 30, 20):
        past_sync(
            store,
            "orders",
            started_at=now - dt.timedelta(minutes=minutes),
            status="failed",
            error_message="CRM answered 503",
            dagster_run_id=failed_run,
        )
    alerting = _alerting(webhook)
    tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    [opened] = webhook.accepted
    assert opened["details"]["last_sync_status"] == "failed"
    assert opened["details"]["last_success_at"] is None
    assert opened["run_url"] == f"{UI}/runs/{failed_run}"

    good_sync = past_sync(
        store, "orders", started_at=now - dt.timedelta(minutes=10), dagster_run_id=good_run
    )
    tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    [_, resolved] = webhook.accepted
    state = tracker.get_state("orders")
    assert state is not None
    assert resolved["event"] == "resolved"
    assert resolved["message"].startswith("resolved: 'orders' succeeded again after 3 failures")
    assert resolved["details"] == {
        "last_sync_status": "success",
        "last_sync_time": state.last_sync_time.isoformat(),
        "last_success_at": state.last_success_at.isoformat(),
        "started_at": (now - dt.timedelta(minutes=10)).isoformat(),
        "completed_at": (now - dt.timedelta(minutes=10, seconds=-1)).isoformat(),
        "consecutive_failures": 0,
        "records_synced": 0,
        "sync_id": good_sync,
        "dagster_run_id": good_run,
    }
    assert resolved["run_url"] == f"{UI}/runs/{good_run}"
    assert resolved["last_error"] is None
    assert failed_run not in resolved["text"] and "503" not in resolved["text"]
    assert f"run: {UI}/runs/{good_run}" in resolved["text"].splitlines()
    ended = (now - dt.timedelta(minutes=10, seconds=-1)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"last sync: success, ended {ended}" in resolved["text"].splitlines()


def test_thresholds_overrides_and_mutes_come_from_the_resource(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(
        webhook,
        consecutive_failures_threshold=2,
        overrides={"vantage/*": {"consecutive_failures": 4}},
        muted=["sandbox/*"],
    )
    for resource in ("orders", "vantage/funds", "sandbox/trial"):
        fail(tracker, resource, times=3)
    tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", CONSECUTIVE_FAILURES, "orders")]


def test_message_fn_shapes_the_alert_message(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    sensor = make_consecutive_failures_sensor(
        name="crm_failures", message_fn=lambda f: f"CRM sync {f.resource} is down"
    )
    assert sensor.name == "crm_failures"
    fail(tracker, "orders", times=3)
    tick(sensor, instance, tracker, _alerting(webhook))
    assert webhook.accepted[0]["message"] == "CRM sync orders is down"


def test_a_still_open_alert_is_re_sent_after_renotify_after(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    fail(tracker, "orders", times=3)
    never = _alerting(webhook, renotify_after_minutes=None)
    tick(sync_consecutive_failures_sensor, instance, tracker, never)
    tick(sync_consecutive_failures_sensor, instance, tracker, never)
    assert [b["event"] for b in webhook.accepted] == ["opened"]
    # Any time since the last notification is longer than 60 microseconds.
    eager = _alerting(webhook, renotify_after_minutes=1e-6)
    tick(sync_consecutive_failures_sensor, instance, tracker, eager)
    assert [b["event"] for b in webhook.accepted] == ["opened", "reminder"]


# -- delivery: a dead webhook, racing ticks, Slack ---------------------------------------------


def test_a_dead_webhook_is_retried_on_the_next_tick(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(webhook)
    fail(tracker, "orders", times=3)
    webhook.status = 500
    message = tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    assert "1 failed, retried next tick" in message
    assert SECRET not in message and webhook.url not in message
    tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    assert [r["status"] for r in webhook.requests] == [500, 500]

    webhook.status = 200
    message = tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    assert "sent 1 notification" in message
    assert _events(webhook) == [("opened", CONSECUTIVE_FAILURES, "orders")]
    tick(sync_consecutive_failures_sensor, instance, tracker, alerting)
    assert len(webhook.requests) == 3


def test_two_racing_ticks_send_one_notification(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(webhook)
    for resource in ("orders", "invoices", "refunds"):
        fail(tracker, resource, times=3)
    start = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def one_tick() -> None:
        try:
            start.wait()
            tick(sync_consecutive_failures_sensor, instance, backend.tracker(), alerting)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one_tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(_events(webhook)) == [
        ("opened", CONSECUTIVE_FAILURES, "invoices"),
        ("opened", CONSECUTIVE_FAILURES, "orders"),
        ("opened", CONSECUTIVE_FAILURES, "refunds"),
    ]
    assert len(AlertStore(tracker.store).list_alerts(status="open")) == 3


def test_slack_incoming_webhook_and_slack_client(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    fail(tracker, "orders", times=3)
    tick(
        sync_consecutive_failures_sensor,
        instance,
        tracker,
        SyncAlerting(slack_webhook_url=webhook.url, dagster_ui_url=UI),
    )
    [body] = webhook.accepted
    assert set(body) == {"text"}
    assert "consecutive_failures on orders" in body["text"]

    class RecordingSlackClient:  # stands in for slack_sdk.WebClient: no network to Slack
        def __init__(self) -> None:
            self.posts: list[dict[str, str]] = []

        def chat_postMessage(self, *, channel: str, text: str) -> dict[str, Any]:
            self.posts.append({"channel": channel, "text": text})
            return {"ok": True}

    class SlackResourceLike:  # dagster-slack's SlackResource hands out its client this way
        def __init__(self) -> None:
            self.client = RecordingSlackClient()

        def get_client(self) -> RecordingSlackClient:
            return self.client

    slack = SlackResourceLike()
    sensor = make_consecutive_failures_sensor(name="slack_failures", slack=slack)
    succeed(tracker, "orders")  # resolves the alert; the client announces it
    tick(sensor, instance, tracker, SyncAlerting(slack_channel="#data-alerts"))
    assert [p["channel"] for p in slack.client.posts] == ["#data-alerts"]
    assert "[RESOLVED]" in slack.client.posts[0]["text"]


# -- stuck runs: reaped, alerted, watermark untouched -------------------------------------------


@pytest.mark.slow
def test_a_killed_run_is_reaped_and_alerted_once_its_dagster_run_has_ended(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(webhook)
    resource = killed_sync.DYING_ASSET_KEY.to_user_string()
    succeed(tracker, resource)
    watermark = tracker.get_watermark(resource)
    _run_child(killed_sync.materialize_and_die, instance.get_ref(), backend.url, backend.schema)

    state = tracker.get_state(resource)
    assert state is not None and state.last_sync_status == "running"
    run = instance.get_run_by_id(state.dagster_run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED  # nobody noticed
    message = tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert "1 running, none stuck" in message
    assert tracker.get_state(resource).last_sync_status == "running"

    # Run monitoring (or a user) marks the dead run failed: the next tick reaps, not in 30 min.
    instance.report_run_failed(run)
    message = tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    state = tracker.get_state(resource)
    assert (state.last_sync_status, state.errors[-1]["code"]) == ("failed", "ORPHANED")
    assert state.last_sync_time == watermark
    killed = tracker.store.get_sync(state.current_sync_id)
    assert killed is not None and killed.sync_status == "failed"
    assert killed.error_message.startswith("ORPHANED: ")
    assert _events(webhook) == [("opened", STUCK_RUN, resource)]
    body = webhook.accepted[0]
    assert body["details"]["reason"] == "orphaned"
    assert body["run_url"] == f"{UI}/runs/{run.run_id}"
    assert "1 alerting (crm/orders); reaped 1 (crm/orders ORPHANED)" in message

    # Reaping cleared the condition, but the alert stays open until the resource syncs again.
    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert len(webhook.requests) == 1
    succeed(tracker, resource)
    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", STUCK_RUN, resource), ("resolved", STUCK_RUN, resource)]


def test_a_sync_whose_dagster_run_is_gone_is_reaped_on_the_first_tick(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    store = tracker.store
    gone, alive = str(uuid.uuid4()), str(uuid.uuid4())
    now = utcnow()
    store.start_sync(sync_id=gone, resource="orders", started_at=now, dagster_run_id="f" * 36)
    store.start_sync(sync_id=alive, resource="refunds", started_at=now, dagster_run_id=None)
    tick(sync_stuck_runs_sensor, instance, tracker, _alerting(webhook))
    assert _events(webhook) == [("opened", STUCK_RUN, "orders")]
    assert store.get_sync(gone).sync_status == "failed"
    assert store.get_sync(alive).sync_status == "running"


@pytest.mark.slow
def test_a_killed_sync_without_a_run_is_reaped_only_after_the_threshold(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    _run_child(killed_sync.track_and_die, backend.url, backend.schema, "ledger")
    state = tracker.get_state("ledger")
    assert state is not None and state.last_sync_status == "running"
    assert state.dagster_run_id is None

    tick(sync_stuck_runs_sensor, instance, tracker, _alerting(webhook))  # 30 minutes: not yet
    assert tracker.get_state("ledger").last_sync_status == "running"
    assert webhook.requests == []

    # The child started before it died, seconds ago: longer than 60 microseconds.
    tick(sync_stuck_runs_sensor, instance, tracker, _alerting(webhook, stuck_after_minutes=1e-6))
    state = tracker.get_state("ledger")
    assert (state.last_sync_status, state.errors[-1]["code"]) == ("failed", "TIMED_OUT")
    assert state.last_sync_time is None  # the watermark never moved
    assert _events(webhook) == [("opened", STUCK_RUN, "ledger")]
    assert webhook.accepted[0]["details"]["reason"] == "timed_out"


def test_a_sync_started_long_ago_times_out_with_the_default_threshold(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    store = tracker.store
    now = utcnow()
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    store.start_sync(sync_id=old, resource="orders", started_at=now - dt.timedelta(minutes=31))
    store.start_sync(sync_id=recent, resource="refunds", started_at=now - dt.timedelta(minutes=29))
    tick(sync_stuck_runs_sensor, instance, tracker, _alerting(webhook))
    assert _events(webhook) == [("opened", STUCK_RUN, "orders")]
    assert store.get_sync(old).error_message.startswith("TIMED_OUT: ")
    assert store.get_sync(recent).sync_status == "running"


def test_a_slow_sync_that_was_reaped_is_refused_when_it_finishes(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    succeed(tracker, "orders")
    watermark = tracker.get_watermark("orders")
    impatient = _alerting(webhook, stuck_after_minutes=1e-6)
    with (
        pytest.raises(SyncNotRunningError, match="no longer running"),
        tracker.track(resource="orders") as sync,
    ):
        sync.record(processed=10)
        tick(sync_stuck_runs_sensor, instance, tracker, impatient)
    state = tracker.get_state("orders")
    assert (state.last_sync_status, state.records_synced) == ("failed", 0)
    assert state.last_sync_time == watermark
    assert tracker.store.get_sync(sync.sync_id).error_message.startswith("TIMED_OUT: ")


# -- stale watermarks, slow syncs, volume anomalies -----------------------------------------


def test_a_stale_resource_alerts_and_a_fresh_one_does_not(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = _alerting(webhook)
    now = utcnow()
    past_sync(tracker.store, "orders", started_at=now - dt.timedelta(hours=30))
    past_sync(tracker.store, "accounts", started_at=now - dt.timedelta(hours=2))
    message = tick(sync_stale_watermarks_sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", STALE_WATERMARK, "orders")]
    assert webhook.accepted[0]["severity"] == "warning"
    assert message.startswith("alerts: 1 opened (orders); checked 2 resources: 1 alerting (orders)")

    succeed(tracker, "orders")
    tick(sync_stale_watermarks_sensor, instance, tracker, alerting)
    assert [b["event"] for b in webhook.accepted] == ["opened", "resolved"]
    assert tick(sync_stale_watermarks_sensor, instance, tracker, alerting) == (
        "checked 2 resources: every resource synced successfully within 24 h; "
        "0 notifications pending"
    )


def test_a_sync_much_slower_than_its_median_alerts(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    start = utcnow() - dt.timedelta(hours=10)
    for i in range(6):
        for resource in ("orders", "accounts"):
            past_sync(tracker.store, resource, started_at=start + dt.timedelta(hours=i))
    past_sync(
        tracker.store,
        "orders",
        started_at=start + dt.timedelta(hours=7),
        duration=dt.timedelta(seconds=30),
    )
    past_sync(tracker.store, "accounts", started_at=start + dt.timedelta(hours=7))
    tick(sync_slow_syncs_sensor, instance, tracker, _alerting(webhook))
    assert _events(webhook) == [("opened", "slow_sync", "orders")]
    assert webhook.accepted[0]["details"]["samples"] == 6


def test_an_unusual_record_count_alerts(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    start = utcnow() - dt.timedelta(hours=20)
    for i in range(12):
        for resource in ("orders", "accounts"):
            processed = 100 + (i % 3)
            past_sync(
                tracker.store,
                resource,
                started_at=start + dt.timedelta(hours=i),
                processed=processed,
            )
    past_sync(tracker.store, "orders", started_at=start + dt.timedelta(hours=13), processed=5000)
    past_sync(tracker.store, "accounts", started_at=start + dt.timedelta(hours=13), processed=101)
    message = tick(sync_volume_anomalies_sensor, instance, tracker, _alerting(webhook))
    assert _events(webhook) == [("opened", "volume_anomaly", "orders")]
    assert webhook.accepted[0]["details"]["direction"] == "spike"
    assert "1 alerting (orders)" in message
