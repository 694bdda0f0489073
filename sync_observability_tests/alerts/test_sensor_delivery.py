"""Sensors: a reaped sync's alert is never lost, and each sensor delivers through its own sinks.

Every test runs on SQLite and PostgreSQL, with sensors evaluated on a real instance.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import dagster as dg

from sync_observability import SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import CONSECUTIVE_FAILURES, STUCK_RUN
from sync_observability.alerts.sensors import (
    make_consecutive_failures_sensor,
    make_stale_watermarks_sensor,
    sync_stuck_runs_sensor,
)
from sync_observability.storage.alert_store import AlertStore
from sync_observability_tests.alerts.dagster_helpers import (
    WebhookReceiver,
    fail,
    succeed,
    tick,
    utcnow,
)
from sync_observability_tests.conftest import Backend

GONE_RUN_ID = "f" * 36  # a Dagster run id the instance does not know


def _events(webhook: WebhookReceiver) -> list[tuple[str, str, str]]:
    return [(b["event"], b["rule"], b["resource"]) for b in webhook.accepted]


# -- a reaped sync stays stuck until its resource's next sync -----------------------------------


def test_a_sync_reaped_by_a_tick_that_died_is_alerted_on_the_next_tick(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = SyncAlerting(webhook_url=webhook.url)
    store = tracker.store
    sync_id, started = str(uuid.uuid4()), utcnow()
    store.start_sync(
        sync_id=sync_id, resource="orders", started_at=started, dagster_run_id=GONE_RUN_ID
    )
    # A tick reaped the sync, then died before it recorded the alert.
    message = f"orders sync {sync_id} is marked running but its Dagster run is gone"
    assert store.reap_sync(sync_id, code="ORPHANED", message=message, now=utcnow())

    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", STUCK_RUN, "orders")]
    body = webhook.accepted[0]
    assert body["details"]["error_code"] == "ORPHANED"
    assert body["details"]["reason"] == "orphaned"
    assert body["message"].startswith(message)

    # Open (and not re-sent) until the resource syncs again; then resolved.
    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert len(webhook.requests) == 1
    assert [a.fingerprint for a in AlertStore(store).list_alerts(status="open")] == [
        "stuck_run:orders"
    ]
    succeed(tracker, "orders")
    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    assert _events(webhook) == [("opened", STUCK_RUN, "orders"), ("resolved", STUCK_RUN, "orders")]


def test_later_ticks_keep_a_reaped_syncs_alert_as_the_reaping_tick_recorded_it(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    alerting = SyncAlerting(webhook_url=webhook.url)
    store = tracker.store
    for resource, started in (
        ("orders", utcnow()),  # orphaned: its Dagster run is gone
        ("ledger", utcnow() - dt.timedelta(minutes=45)),  # timed out
    ):
        store.start_sync(
            sync_id=str(uuid.uuid4()),
            resource=resource,
            started_at=started,
            dagster_run_id=GONE_RUN_ID if resource == "orders" else None,
        )
    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    alerts = AlertStore(store)
    recorded = {a.resource: a for a in alerts.list_alerts(status="open")}
    assert {r: a.details["error_code"] for r, a in recorded.items()} == {
        "orders": "ORPHANED",
        "ledger": "TIMED_OUT",
    }

    tick(sync_stuck_runs_sensor, instance, tracker, alerting)
    later = {a.resource: a for a in alerts.list_alerts(status="open")}
    for resource, alert in recorded.items():
        again = later[resource]
        assert again.alert_id == alert.alert_id
        assert again.last_seen_at > alert.last_seen_at
        assert (again.message, again.details, again.since) == (
            alert.message,
            alert.details,
            alert.since,
        )
        assert (again.sync_id, again.dagster_run_id) == (alert.sync_id, alert.dagster_run_id)
    assert len(webhook.requests) == 2


def test_a_muted_reaped_resource_is_not_alerted(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance, webhook: WebhookReceiver
) -> None:
    store = tracker.store
    sync_id = str(uuid.uuid4())
    store.start_sync(
        sync_id=sync_id, resource="sandbox/x", started_at=utcnow(), dagster_run_id=GONE_RUN_ID
    )
    assert store.reap_sync(sync_id, code="ORPHANED", message="gone", now=utcnow())
    tick(
        sync_stuck_runs_sensor,
        instance,
        tracker,
        SyncAlerting(webhook_url=webhook.url, muted=["sandbox/*"]),
    )
    assert webhook.requests == [] and AlertStore(store).list_alerts() == []


# -- each sensor delivers its own rule's notifications, through its own sinks -------------------


class RecordingSlackClient:
    """Stands in for slack_sdk.WebClient (no network to Slack); ``down`` makes it fail."""

    def __init__(self) -> None:
        self.down = False
        self.posts: list[dict[str, str]] = []

    def chat_postMessage(self, *, channel: str, text: str) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("slack.com unreachable")
        self.posts.append({"channel": channel, "text": text})
        return {"ok": True}


class SlackResourceLike:
    """Hands out its client the way dagster-slack's SlackResource does."""

    def __init__(self) -> None:
        self.client = RecordingSlackClient()

    def get_client(self) -> RecordingSlackClient:
        return self.client


def test_a_notification_goes_through_its_own_sensors_sinks_only(
    backend: Backend, tracker: SyncTracker, instance: dg.DagsterInstance
) -> None:
    failures_slack, stale_slack = SlackResourceLike(), SlackResourceLike()
    failures_sensor = make_consecutive_failures_sensor(name="crm_failures", slack=failures_slack)
    stale_sensor = make_stale_watermarks_sensor(name="crm_stale", slack=stale_slack)
    alerting = SyncAlerting(slack_channel="#alerts")
    fail(tracker, "orders", times=3)

    failures_slack.client.down = True
    assert "1 failed, retried next tick" in tick(failures_sensor, instance, tracker, alerting)
    # The stale sensor has nothing of its own to send; the pending failure is not its to send.
    assert "0 notifications pending" in tick(stale_sensor, instance, tracker, alerting)
    assert stale_slack.client.posts == []

    failures_slack.client.down = False
    tick(failures_sensor, instance, tracker, alerting)
    [post] = failures_slack.client.posts
    assert f"{CONSECUTIVE_FAILURES} on orders" in post["text"]
    assert stale_slack.client.posts == []
    [alert] = AlertStore(tracker.store).list_alerts()
    assert alert.notify_count == 1
