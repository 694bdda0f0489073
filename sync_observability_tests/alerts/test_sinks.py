"""Sinks against a real HTTP server on 127.0.0.1: payloads, readable messages, no leaked secrets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sync_observability import ConfigurationError, SyncStore
from sync_observability.alerts.lifecycle import Notification, deliver_pending, record_findings
from sync_observability.alerts.rules import CONSECUTIVE_FAILURES, Finding
from sync_observability.alerts.sinks import (
    LogSink,
    SinkError,
    SlackSink,
    WebhookSink,
    format_message,
)
from sync_observability.storage.alert_store import Alert, AlertStore
from sync_observability.storage.records import SyncState

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
SINCE = dt.datetime(2025, 6, 1, 11, 50, 7, tzinfo=dt.timezone.utc)
UI = "http://dagster.internal:3000/"
SECRET = "SECRET-TOKEN-8f3a"
RUN_ID = "4f1c9a2e-0b7d-4c1e-9a57-2d3e8b6f0c11"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST.

    ``/dead/...`` answers 500 (a broken webhook), ``/slack/...`` answers like Slack's incoming
    webhooks (200 ``ok``), ``/redirect`` answers 302, ``/api/chat.postMessage`` like Slack's Web
    API; ``status`` forces every answer (a webhook that is down, then back).
    """

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status: int | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, payload = receiver.answer(self.path, body)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the server quiet; it is not the code under test

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.status is not None:
            return self.status, b"forced"
        if path.startswith("/dead"):
            return 500, b"internal error"
        if path.startswith("/redirect"):
            return 302, b""
        if path.startswith("/slack-broken"):
            return 400, b"invalid_payload"
        if path.startswith("/slack"):
            return 200, b"ok"
        if path == "/api/chat.postMessage":
            channel = json.loads(body)["channel"]
            if channel == "#missing":
                return 200, b'{"ok": false, "error": "channel_not_found"}'
            return 200, b'{"ok": true}'
        return 200, b'{"received": true}'

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def bodies(self) -> list[Any]:
        return [json.loads(p["body"]) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class MiniSlackClient:
    """slack_sdk.WebClient's ``chat_postMessage`` in miniature, over real HTTP.

    Like many real clients, its errors quote the request, token included.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def chat_postMessage(self, *, channel: str, text: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + "chat.postMessage",
            data=json.dumps({"channel": channel, "text": text}).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json; charset=utf-8",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except OSError as e:
            raise RuntimeError(f"chat.postMessage with token {self.token} failed: {e}") from e


def alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "0b8a3c1e-5d6f-4a2b-8c9d-1e2f3a4b5c6d",
        "rule": CONSECUTIVE_FAILURES,
        "resource": "vantage/accounts",
        "severity": "critical",
        "status": "open",
        "fingerprint": "consecutive_failures:vantage/accounts",
        "message": "vantage/accounts failed 3 times in a row; last error: <HTTP 503> & retry",
        "details": {"consecutive_failures": 3, "threshold": 3},
        "opened_at": NOW,
        "last_seen_at": NOW,
        "resolved_at": None,
        "last_notified_at": None,
        "notify_count": 0,
        "resolution_message": None,
        "resolution_notified_at": None,
        "since": SINCE,
        "sync_id": "7d0e2f4a-1b3c-4d5e-8f9a-0b1c2d3e4f5a",
        "dagster_run_id": RUN_ID,
        "last_error": "HTTP_503: CRM answered 503 Service Unavailable",
        "last_delivery_error": None,
    }
    return Alert(**(fields | changes))


RESOLVED = alert(
    status="resolved",
    resolved_at=NOW + dt.timedelta(hours=2),
    resolution_message="resolved: 'vantage/accounts' succeeded again after 3 failures",
    notify_count=1,
)


# -- the message -------------------------------------------------------------------------------


def test_the_message_names_resource_rule_since_error_and_run() -> None:
    text = format_message(Notification(alert(), "opened"), dagster_ui_url=UI)
    lines = text.splitlines()
    assert lines[0] == "[CRITICAL] consecutive_failures on vantage/accounts"
    assert "resource: vantage/accounts" in lines
    assert "rule: consecutive_failures" in lines
    assert "since: 2025-06-01 11:50:07 UTC" in lines
    assert "last error: HTTP_503: CRM answered 503 Service Unavailable" in lines
    assert f"run: http://dagster.internal:3000/runs/{RUN_ID}" in lines


def test_no_run_link_without_the_ui_url_or_the_run() -> None:
    assert "run:" not in format_message(Notification(alert(), "opened"))
    no_run = Notification(alert(dagster_run_id=None), "opened")
    assert "run:" not in format_message(no_run, dagster_ui_url=UI)


def test_reminder_and_resolution_say_so() -> None:
    reminder = format_message(Notification(alert(notify_count=1), "reminder"))
    assert reminder.startswith("[CRITICAL, still open] consecutive_failures on vantage/accounts")
    assert "alert open since 2025-06-01 12:00:00 UTC" in reminder
    resolved = format_message(Notification(RESOLVED, "resolved"), dagster_ui_url=UI)
    lines = resolved.splitlines()
    assert lines[0] == "[RESOLVED] consecutive_failures on vantage/accounts"
    assert lines[1] == "resolved: 'vantage/accounts' succeeded again after 3 failures"
    assert "alert open from 2025-06-01 12:00:00 UTC to 2025-06-01 14:00:00 UTC" in lines
    assert not any(line.startswith("last error") for line in lines)


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_posts_the_json_payload(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url("/hooks/alerts"), dagster_ui_url=UI)
    sink.send(Notification(alert(), "opened"))
    [post] = receiver.posts
    assert post["path"] == "/hooks/alerts"
    assert post["headers"]["Content-Type"] == "application/json"
    body = json.loads(post["body"])
    assert {k: body[k] for k in ("event", "rule", "resource", "severity", "alert_id")} == {
        "event": "opened",
        "rule": "consecutive_failures",
        "resource": "vantage/accounts",
        "severity": "critical",
        "alert_id": alert().alert_id,
    }
    assert body["message"] == alert().message
    assert body["since"] == "2025-06-01T11:50:07+00:00"
    assert body["last_error"] == "HTTP_503: CRM answered 503 Service Unavailable"
    assert body["details"] == {"consecutive_failures": 3, "threshold": 3}
    assert body["run_url"] == f"http://dagster.internal:3000/runs/{RUN_ID}"
    assert body["text"] == format_message(Notification(alert(), "opened"), dagster_ui_url=UI)


def test_webhook_resolution_carries_the_resolution_message(receiver: Receiver) -> None:
    WebhookSink(receiver.url("/hooks/alerts")).send(Notification(RESOLVED, "resolved"))
    [body] = receiver.bodies()
    assert (body["event"], body["status"]) == ("resolved", "resolved")
    assert body["message"] == RESOLVED.resolution_message
    assert body["resolved_at"] == "2025-06-01T14:00:00+00:00"
    assert body["run_url"] is None


def test_webhook_resolution_reports_the_state_that_resolved_it(receiver: Receiver) -> None:
    ended = NOW + dt.timedelta(hours=1, minutes=58)
    state = SyncState(
        resource="vantage/accounts",
        source_system="vantage",
        target_system=None,
        last_sync_time=ended - dt.timedelta(minutes=1),
        cursor=None,
        last_sync_status="success",
        records_synced=42,
        records_created=2,
        records_updated=40,
        errors=[],
        started_at=ended - dt.timedelta(minutes=1),
        completed_at=ended,
        duration_ms=60000,
        consecutive_failures=0,
        last_success_at=ended,
        current_sync_id="9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        dagster_run_id="c0ffee00-0000-4000-8000-000000000001",
        created_at=NOW - dt.timedelta(days=3),
        updated_at=ended,
    )
    WebhookSink(receiver.url("/hooks/alerts"), dagster_ui_url=UI).send(
        Notification(RESOLVED, "resolved", state)
    )
    [body] = receiver.bodies()
    assert body["details"] == {
        "last_sync_status": "success",
        "last_sync_time": "2025-06-01T13:57:00+00:00",
        "last_success_at": "2025-06-01T13:58:00+00:00",
        "started_at": "2025-06-01T13:57:00+00:00",
        "completed_at": "2025-06-01T13:58:00+00:00",
        "consecutive_failures": 0,
        "records_synced": 42,
        "sync_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        "dagster_run_id": "c0ffee00-0000-4000-8000-000000000001",
    }
    assert body["last_error"] is None
    good_run = "http://dagster.internal:3000/runs/c0ffee00-0000-4000-8000-000000000001"
    assert body["run_url"] == good_run
    lines = body["text"].splitlines()
    assert "last sync: success, ended 2025-06-01 13:58:00 UTC" in lines
    assert f"run: {good_run}" in lines and RUN_ID not in body["text"]

    running = dataclasses.replace(state, last_sync_status="running", completed_at=None)
    text = format_message(Notification(RESOLVED, "resolved", running))
    assert "last sync: running, started 2025-06-01 13:57:00 UTC" in text.splitlines()


def test_a_dead_webhook_fails_without_leaking_its_url(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = WebhookSink(receiver.url(f"/dead/T0001/{SECRET}"))
    with pytest.raises(SinkError) as raised:
        sink.send(Notification(alert(), "opened"))
    assert str(raised.value) == "sink 'webhook': HTTP 500"
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert len(receiver.posts) == 1  # it did reach the server
    assert SECRET not in repr(sink)
    assert SECRET not in caplog.text


def test_an_unreachable_webhook_names_the_error_type_only() -> None:
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/hooks/{SECRET}", timeout=5)
    with pytest.raises(SinkError) as raised:
        sink.send(Notification(alert(), "opened"))
    assert str(raised.value) == "sink 'webhook': ConnectionRefusedError"


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    with pytest.raises(SinkError, match="HTTP 302"):
        WebhookSink(receiver.url("/redirect")).send(Notification(alert(), "opened"))
    assert [p["path"] for p in receiver.posts] == ["/redirect"]


def test_a_bad_url_is_refused_without_quoting_it() -> None:
    for url in (f"ftp://hooks.example/{SECRET}", f"/relative/{SECRET}", f"http:///{SECRET}"):
        with pytest.raises(ConfigurationError) as raised:
            WebhookSink(url)
        assert SECRET not in str(raised.value)


# -- Slack -------------------------------------------------------------------------------------


def test_slack_incoming_webhook_gets_readable_text(receiver: Receiver) -> None:
    sink = SlackSink(receiver.url(f"/slack/T0001/B0001/{SECRET}"), dagster_ui_url=UI)
    sink.send(Notification(alert(), "opened"))
    [body] = receiver.bodies()
    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("[CRITICAL] consecutive_failures on vantage/accounts")
    assert "since: 2025-06-01 11:50:07 UTC" in text
    assert "last error: HTTP_503: CRM answered 503 Service Unavailable" in text
    assert f"run: http://dagster.internal:3000/runs/{RUN_ID}" in text
    # Slack's control characters are escaped, so an error text cannot break the message.
    assert "&lt;HTTP 503&gt; &amp; retry" in text
    assert SECRET not in repr(sink)


def test_slack_refusal_is_a_sink_error(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = SlackSink(receiver.url(f"/slack-broken/T0001/{SECRET}"))
    with pytest.raises(SinkError) as raised:
        sink.send(Notification(alert(), "opened"))
    assert str(raised.value) == "sink 'slack': HTTP 400"
    assert SECRET not in caplog.text


def test_slack_client_posts_to_the_channel(receiver: Receiver) -> None:
    client = MiniSlackClient(receiver.url("/api/"), token=f"xoxb-{SECRET}")
    sink = SlackSink(client=client, channel="#data-alerts", dagster_ui_url=UI)
    sink.send(Notification(RESOLVED, "resolved"))
    [post] = receiver.posts
    assert post["headers"]["Authorization"] == f"Bearer xoxb-{SECRET}"
    body = json.loads(post["body"])
    assert body["channel"] == "#data-alerts"
    assert body["text"].startswith("[RESOLVED] consecutive_failures on vantage/accounts")
    assert SECRET not in repr(sink)


def test_slack_client_errors_keep_the_token_out(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    missing = SlackSink(
        client=MiniSlackClient(receiver.url("/api/"), token=f"xoxb-{SECRET}"), channel="#missing"
    )
    with pytest.raises(SinkError, match=r"ok=false \(channel_not_found\)"):
        missing.send(Notification(alert(), "opened"))
    broken = SlackSink(
        client=MiniSlackClient(receiver.url("/dead/api/"), token=f"xoxb-{SECRET}"),
        channel="#data-alerts",
    )
    with pytest.raises(SinkError) as raised:
        broken.send(Notification(alert(), "opened"))
    assert str(raised.value) == "sink 'slack': chat_postMessage raised RuntimeError"
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert SECRET not in caplog.text


def test_slack_needs_one_destination() -> None:
    client = MiniSlackClient("http://127.0.0.1:9/api/", token="t")
    with pytest.raises(ConfigurationError):
        SlackSink()
    with pytest.raises(ConfigurationError):
        SlackSink("http://127.0.0.1:9/slack", client=client, channel="#a")
    with pytest.raises(ConfigurationError, match="channel"):
        SlackSink(client=client)
    with pytest.raises(ConfigurationError, match="chat_postMessage"):
        SlackSink(client=object(), channel="#a")


# -- log ---------------------------------------------------------------------------------------


def test_log_sink_levels_follow_severity(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("sync_observability_tests.alerts")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    sink = LogSink(logger, dagster_ui_url=UI)
    sink.send(Notification(alert(), "opened"))
    sink.send(Notification(alert(severity="warning"), "reminder"))
    sink.send(Notification(RESOLVED, "resolved"))
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING, logging.INFO]
    assert f"run: http://dagster.internal:3000/runs/{RUN_ID}" in caplog.records[0].getMessage()
    assert caplog.records[2].getMessage().startswith("[RESOLVED]")


# -- through the lifecycle, on both databases --------------------------------------------------


def test_a_dead_webhook_is_retried_until_it_takes_the_notification(
    store: SyncStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alerts = AlertStore(store)
    sinks = [
        LogSink(logging.getLogger("sync_observability_tests.alerts")),
        WebhookSink(receiver.url(f"/hooks/T0001/{SECRET}"), dagster_ui_url=UI),
    ]
    finding = Finding(
        rule=CONSECUTIVE_FAILURES,
        resource="accounts",
        severity="critical",
        message="accounts failed 3 times in a row",
        since=SINCE,
        details={"consecutive_failures": 3},
        dagster_run_id=RUN_ID,
        last_error="boom",
    )
    record_findings(alerts, CONSECUTIVE_FAILURES, [finding], now=NOW)

    receiver.status = 503
    down = deliver_pending(alerts, sinks, now=NOW, renotify_after=None)
    assert [reason for _, reason in down.failed] == ["sink 'webhook': HTTP 503"]

    receiver.status = None
    back = deliver_pending(alerts, sinks, now=NOW + dt.timedelta(minutes=1), renotify_after=None)
    assert [n.kind for n in back.delivered] == ["opened"]
    again = deliver_pending(alerts, sinks, now=NOW + dt.timedelta(minutes=2), renotify_after=None)
    assert again.delivered == [] and again.failed == []

    bodies = receiver.bodies()
    assert len(bodies) == 2  # the refused attempt and the accepted one, nothing after
    assert bodies[1]["event"] == "opened" and bodies[1]["resource"] == "accounts"
    assert bodies[1]["run_url"] == f"http://dagster.internal:3000/runs/{RUN_ID}"
    # The log sink accepted the first attempt and was not sent the retry.
    logged = [r for r in caplog.records if r.name == "sync_observability_tests.alerts"]
    assert len(logged) == 1
    assert SECRET not in caplog.text
    [stored] = alerts.list_alerts(status="open")
    assert stored.last_delivery_error is None and stored.notify_count == 1
