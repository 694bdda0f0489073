"""SyncAlerting: its config becomes the rules' policy and the list of sinks."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.sinks import LogSink, SlackSink, WebhookSink
from sync_observability.errors import ConfigurationError

HOOK = "https://hooks.example.com/services/T000/B000/XXXXSECRET"


def test_defaults_match_the_issue() -> None:
    alerting = SyncAlerting()
    limits = alerting.policy().defaults
    assert limits.consecutive_failures == 3
    assert limits.stuck_after == dt.timedelta(minutes=30)
    assert limits.stale_after == dt.timedelta(hours=24)
    assert limits.slow_after == dt.timedelta(minutes=5)
    assert alerting.renotify_after == dt.timedelta(hours=4)
    assert SyncAlerting(renotify_after_minutes=None).renotify_after is None


def test_overrides_take_config_friendly_durations_and_patterns() -> None:
    policy = SyncAlerting(
        consecutive_failures_threshold=5,
        overrides={
            "vantage/*": {"stale_after_hours": 48, "consecutive_failures_threshold": 2},
            "vantage/accounts": {"stuck_after_minutes": 90, "slow_factor": 10},
            "sandbox": {"muted": True},
        },
        muted=["scratch/*"],
    ).policy()
    accounts = policy.for_resource("vantage/accounts")
    assert accounts.stale_after == dt.timedelta(hours=48)
    assert accounts.stuck_after == dt.timedelta(minutes=90)
    assert (accounts.consecutive_failures, accounts.slow_factor) == (2, 10)
    assert policy.for_resource("orders").consecutive_failures == 5
    assert policy.for_resource("sandbox").muted
    assert policy.for_resource("scratch/tmp").muted
    assert not policy.for_resource("orders").muted


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"orders": {"stale_after_days": 2}}, "stale_after_days"),
        ({"orders": {"stale_after_hours": "soon"}}, "stale_after_hours"),
        ({"orders": {"consecutive_failures": 0}}, "consecutive_failures"),
    ],
)
def test_a_bad_override_is_a_configuration_error_naming_it(
    overrides: dict[str, dict[str, object]], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        SyncAlerting(overrides=overrides).policy()


def test_sinks_follow_the_configuration_and_hide_the_secrets() -> None:
    log = logging.getLogger("sync_observability.test")
    assert [type(s) for s in SyncAlerting().sinks(log)] == [LogSink]
    alerting = SyncAlerting(webhook_url=HOOK, slack_webhook_url=HOOK, slack_channel="#alerts")
    sinks = alerting.sinks(log)
    assert [type(s) for s in sinks] == [LogSink, WebhookSink, SlackSink]
    assert "SECRET" not in repr(alerting)
    assert all("SECRET" not in repr(s) for s in sinks)


def test_a_slack_client_replaces_the_incoming_webhook_and_needs_a_channel() -> None:
    class Client:
        def chat_postMessage(self, *, channel: str, text: str) -> dict[str, bool]:
            return {"ok": True}

    log = logging.getLogger("sync_observability.test")
    alerting = SyncAlerting(slack_webhook_url=HOOK, slack_channel="#alerts")
    sinks = alerting.sinks(log, slack_client=Client())
    assert [type(s) for s in sinks] == [LogSink, SlackSink]
    assert "client" in repr(sinks[1])
    with pytest.raises(ConfigurationError, match="slack_channel"):
        SyncAlerting().sinks(log, slack_client=Client())
