"""The alert lifecycle on SQLite and PostgreSQL: open, refresh, resolve, deliver at least once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import ConstraintViolationError, InvalidInputError, SyncOutcome, SyncStore
from sync_observability.alerts.lifecycle import (
    Notification,
    deliver_pending,
    record_findings,
)
from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
    STALE_WATERMARK,
    AlertPolicy,
    Finding,
    check_consecutive_failures,
)
from sync_observability.alerts.sinks import SinkError
from sync_observability.storage.alert_store import AlertStore
from sync_observability.storage.schema import sync_alerts
from sync_observability_tests.conftest import Backend

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
THREAD_TIMEOUT_S = 30


def failures(resource: str = "accounts", count: int = 3, **changes: Any) -> Finding:
    """A consecutive-failures finding, as the rule builds it."""
    fields: dict[str, Any] = {
        "rule": CONSECUTIVE_FAILURES,
        "resource": resource,
        "severity": "critical",
        "message": f"{resource} failed {count} times in a row",
        "since": NOW - 10 * MIN,
        "details": {"consecutive_failures": count, "threshold": 3},
        "sync_id": str(uuid.uuid4()),
        "dagster_run_id": "run-" + resource.replace("/", "-"),
        "last_error": "HTTPError: 503 Service Unavailable",
    }
    return Finding(**(fields | changes))


class RecordingSink:
    """A sink that keeps what it accepted; ``down`` makes it refuse like a dead endpoint."""

    def __init__(self, name: str = "recorder", *, delay: float = 0.0) -> None:
        self.name = name
        self.down = False
        self.delay = delay
        self.sent: list[Notification] = []
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> None:
        if self.down:
            raise SinkError(f"sink {self.name!r}: HTTP 503")
        time.sleep(self.delay)  # widens the window in which racing ticks could double-send
        with self._lock:
            self.sent.append(notification)

    @property
    def events(self) -> list[tuple[str, str]]:
        return [(n.kind, n.alert.fingerprint) for n in self.sent]


@pytest.fixture
def alerts(store: SyncStore) -> AlertStore:
    return AlertStore(store)


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; their results, or raise."""
    barrier = threading.Barrier(count, timeout=THREAD_TIMEOUT_S)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(THREAD_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def thread_stores(backend: Backend) -> Iterator[Callable[[], AlertStore]]:
    """Separate SyncStores (own engines) on the backend's database, as separate ticks have."""
    made: list[SyncStore] = []

    def make() -> AlertStore:
        store = backend.store()
        made.append(store)
        return AlertStore(store)

    yield make
    for store in made:
        store.dispose()


# -- open, refresh, resolve --------------------------------------------------------------------


def test_a_finding_opens_one_alert_then_refreshes_it(alerts: AlertStore) -> None:
    first = record_findings(alerts, CONSECUTIVE_FAILURES, [failures(count=3)], now=NOW)
    assert [a.fingerprint for a in first.opened] == ["consecutive_failures:accounts"]
    assert first.refreshed == [] and first.resolved == []
    opened = first.opened[0]
    assert (opened.status, opened.opened_at, opened.last_seen_at) == ("open", NOW, NOW)
    assert opened.notify_count == 0 and opened.last_notified_at is None

    later = NOW + 5 * MIN
    newer = failures(count=4, severity="warning", last_error="Timeout", dagster_run_id="run-2")
    second = record_findings(alerts, CONSECUTIVE_FAILURES, [newer], now=later)
    assert second.opened == [] and second.resolved == []
    [refreshed] = second.refreshed
    [stored] = alerts.list_alerts()
    assert stored == refreshed
    assert stored.alert_id == opened.alert_id
    assert (stored.opened_at, stored.last_seen_at) == (NOW, later)
    assert stored.message == "accounts failed 4 times in a row"
    assert stored.details == {"consecutive_failures": 4, "threshold": 3}
    assert (stored.severity, stored.last_error, stored.dagster_run_id) == (
        "warning",
        "Timeout",
        "run-2",
    )
    assert len(alerts.list_alerts(status="open")) == 1


def test_an_unchanged_finding_still_refreshes_last_seen_at(alerts: AlertStore) -> None:
    finding = failures()
    record_findings(alerts, CONSECUTIVE_FAILURES, [finding], now=NOW)
    record_findings(alerts, CONSECUTIVE_FAILURES, [finding], now=NOW + HOUR)
    [alert] = alerts.list_alerts(status="open")
    assert alert.last_seen_at == NOW + HOUR
    assert alert.opened_at == NOW


def test_a_refresh_stores_every_changed_column_verbatim(alerts: AlertStore) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("a"), failures("b")], now=NOW)
    changed = {
        "a": failures(
            "a",
            message='a a échoué 4 fois \N{WARNING SIGN} "quoted" \\ back',
            since=NOW - 5 * MIN + dt.timedelta(microseconds=123456),
            details={"nested": {"list": [1, 2.5, None, "ü"]}, "empty": {}},
            sync_id=None,
            dagster_run_id=None,
            last_error=None,
        ),
        "b": failures("b", since=None, details={}),
    }
    tick = record_findings(alerts, CONSECUTIVE_FAILURES, list(changed.values()), now=NOW + MIN)
    stored = {a.resource: a for a in alerts.list_alerts(status="open")}
    assert {a.resource: a for a in tick.refreshed} == stored
    for resource, finding in changed.items():
        alert = stored[resource]
        assert alert.last_seen_at == NOW + MIN
        assert (alert.message, alert.since, alert.details) == (
            finding.message,
            finding.since,
            finding.details,
        )
        assert (alert.sync_id, alert.dagster_run_id, alert.last_error) == (
            finding.sync_id,
            finding.dagster_run_id,
            finding.last_error,
        )


def test_a_cleared_condition_resolves_with_a_message(alerts: AlertStore) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures(count=3)], now=NOW)
    tick = record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + 2 * HOUR + 5 * MIN)
    [resolved] = tick.resolved
    assert resolved.status == "resolved"
    assert resolved.resolved_at == NOW + 2 * HOUR + 5 * MIN
    assert resolved.resolution_message == (
        "resolved: 'accounts' succeeded again after 3 failures (alert open for 2h 5m)"
    )
    assert alerts.list_alerts() == [resolved]  # as stored; nothing left open
    # Nothing left to resolve on the next tick.
    assert record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + 3 * HOUR).resolved == []


def test_a_condition_that_comes_back_opens_a_new_alert(alerts: AlertStore) -> None:
    first = record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW).opened[0]
    record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + HOUR)
    again = record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW + 2 * HOUR)
    [second] = again.opened
    assert second.alert_id != first.alert_id
    assert second.opened_at == NOW + 2 * HOUR
    history = alerts.list_alerts(rule=CONSECUTIVE_FAILURES)
    assert [(a.alert_id, a.status) for a in history] == [
        (second.alert_id, "open"),
        (first.alert_id, "resolved"),
    ]


def test_only_checked_resources_and_the_same_rule_resolve(alerts: AlertStore) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("a"), failures("b")], now=NOW)
    stale = Finding(
        rule=STALE_WATERMARK,
        resource="a",
        severity="warning",
        message="a is stale",
        since=NOW - 30 * HOUR,
        details={},
    )
    record_findings(alerts, STALE_WATERMARK, [stale], now=NOW)

    tick = record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + MIN, checked=["a"])
    assert [a.fingerprint for a in tick.resolved] == ["consecutive_failures:a"]
    still_open = sorted(a.fingerprint for a in alerts.list_alerts(status="open"))
    assert still_open == ["consecutive_failures:b", "stale_watermark:a"]


def test_findings_of_another_rule_are_refused(alerts: AlertStore) -> None:
    with pytest.raises(InvalidInputError, match="stale_watermark"):
        record_findings(alerts, STALE_WATERMARK, [failures()], now=NOW)
    with pytest.raises(InvalidInputError, match="naive"):
        record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW.replace(tzinfo=None))
    assert alerts.list_alerts() == []


def test_the_database_allows_one_open_alert_per_fingerprint(
    backend: Backend, alerts: AlertStore
) -> None:
    [alert] = record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW).opened
    row = {
        "alert_id": str(uuid.uuid4()),
        "rule": alert.rule,
        "resource": alert.resource,
        "severity": "critical",
        "status": "open",
        "fingerprint": alert.fingerprint,
        "message": "a second open alert",
        "opened_at": NOW,
        "last_seen_at": NOW,
    }
    engine = backend.engine()
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.insert(sync_alerts).values(row))
        # Once the first is resolved, the same fingerprint may open again.
        record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + MIN)
        with engine.begin() as conn:
            conn.execute(sa.insert(sync_alerts).values(row))
    finally:
        engine.dispose()
    assert len(alerts.list_alerts(status="open")) == 1


def test_racing_ticks_open_one_alert(
    alerts: AlertStore, thread_stores: Callable[[], AlertStore]
) -> None:
    stores = [thread_stores() for _ in range(4)]
    findings = [failures("a"), failures("b")]
    ticks = run_threads(
        len(stores),
        lambda i: record_findings(stores[i], CONSECUTIVE_FAILURES, findings, now=NOW + i * MIN),
    )
    opened = sorted(a.fingerprint for tick in ticks for a in tick.opened)
    assert opened == ["consecutive_failures:a", "consecutive_failures:b"]
    assert sum(len(tick.refreshed) for tick in ticks) == 2 * (len(stores) - 1)
    rows = alerts.list_alerts()
    assert sorted(a.fingerprint for a in rows) == opened
    assert all(a.status == "open" for a in rows)


def test_a_bad_row_is_refused_by_the_database(alerts: AlertStore) -> None:
    with pytest.raises(InvalidInputError, match="severity"):
        record_findings(alerts, CONSECUTIVE_FAILURES, [failures(severity="info")], now=NOW)
    [alert] = record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW).opened
    with pytest.raises(ConstraintViolationError):
        alerts.store.db.write(
            lambda conn: conn.execute(
                sa.update(sync_alerts)
                .where(sync_alerts.c.alert_id == alert.alert_id)
                .values(status="resolved")  # resolved without resolved_at
            ),
            "break a row",
        )


def test_list_alerts_filters(alerts: AlertStore) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("a")], now=NOW)
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("a"), failures("b")], now=NOW + MIN)
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("b")], now=NOW + HOUR)  # a resolves
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("b"), failures("c")], now=NOW + DAY)

    def names(found: list[Any]) -> list[str]:
        return [a.resource for a in found]

    assert names(alerts.list_alerts()) == ["c", "b", "a"]  # newest opened first
    assert names(alerts.list_alerts(status="resolved")) == ["a"]
    assert names(alerts.list_alerts(resource="b")) == ["b"]
    assert names(alerts.list_alerts(limit=1)) == ["c"]
    assert names(alerts.list_alerts(rule=STALE_WATERMARK)) == []
    assert names(alerts.list_alerts(since=NOW + 2 * HOUR)) == ["c", "b"]  # a resolved before
    assert names(alerts.list_alerts(since=NOW + 30 * MIN)) == ["c", "b", "a"]
    assert names(alerts.list_alerts(status="open", rule=CONSECUTIVE_FAILURES)) == ["c", "b"]


# -- delivery ----------------------------------------------------------------------------------


def test_an_opened_alert_is_delivered_once(alerts: AlertStore) -> None:
    sink = RecordingSink()
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    report = deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    assert sink.events == [("opened", "consecutive_failures:accounts")]
    assert report.delivered == sink.sent and report.failed == []

    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW + MIN)
    again = deliver_pending(alerts, [sink], now=NOW + MIN, renotify_after=HOUR)
    assert again.delivered == [] and len(sink.sent) == 1
    [alert] = alerts.list_alerts(status="open")
    assert (alert.notify_count, alert.last_notified_at) == (1, NOW)


def test_reminders_follow_renotify_after(alerts: AlertStore) -> None:
    sink = RecordingSink()
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    for at in (NOW + 30 * MIN, NOW + HOUR - dt.timedelta(seconds=1)):
        assert deliver_pending(alerts, [sink], now=at, renotify_after=HOUR).delivered == []
    reminder = deliver_pending(alerts, [sink], now=NOW + HOUR, renotify_after=HOUR)
    assert [n.kind for n in reminder.delivered] == ["reminder"]
    assert (
        deliver_pending(alerts, [sink], now=NOW + HOUR + MIN, renotify_after=HOUR).delivered == []
    )
    # The next reminder counts from the last one.
    assert deliver_pending(alerts, [sink], now=NOW + 2 * HOUR, renotify_after=HOUR).delivered
    assert [kind for kind, _ in sink.events] == ["opened", "reminder", "reminder"]
    [alert] = alerts.list_alerts(status="open")
    assert (alert.notify_count, alert.last_notified_at) == (3, NOW + 2 * HOUR)


def test_no_reminders_without_renotify_after(alerts: AlertStore) -> None:
    sink = RecordingSink()
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=None)
    later = NOW + 30 * DAY
    assert deliver_pending(alerts, [sink], now=later, renotify_after=None).delivered == []
    assert sink.events == [("opened", "consecutive_failures:accounts")]


def test_a_resolution_is_announced_once(alerts: AlertStore) -> None:
    sink = RecordingSink()
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + 10 * MIN)
    report = deliver_pending(alerts, [sink], now=NOW + 10 * MIN, renotify_after=HOUR)
    [resolved] = report.delivered
    assert resolved.kind == "resolved"
    assert resolved.alert.resolution_message is not None
    assert resolved.alert.resolution_message.startswith("resolved: 'accounts' succeeded again")
    # Resolved alerts get no reminders and no second announcement.
    assert deliver_pending(alerts, [sink], now=NOW + 5 * HOUR, renotify_after=HOUR).delivered == []
    [alert] = alerts.list_alerts()
    assert alert.resolution_notified_at == NOW + 10 * MIN
    assert alert.notify_count == 2


def test_a_dead_sink_is_retried_next_tick_and_delivered_once_back(alerts: AlertStore) -> None:
    sink = RecordingSink("webhook")
    sink.down = True
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    report = deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    assert report.delivered == []
    [(notification, reason)] = report.failed
    assert notification.kind == "opened"
    assert reason == "sink 'webhook': HTTP 503"
    [alert] = alerts.list_alerts(status="open")
    assert alert.notify_count == 0 and alert.last_notified_at is None
    assert alert.last_delivery_error == "sink 'webhook': HTTP 503"

    # Still down on the next tick: still pending, not dropped.
    assert deliver_pending(alerts, [sink], now=NOW + MIN, renotify_after=HOUR).failed
    sink.down = False
    back = deliver_pending(alerts, [sink], now=NOW + 2 * MIN, renotify_after=HOUR)
    assert [n.kind for n in back.delivered] == ["opened"] and back.failed == []
    assert deliver_pending(alerts, [sink], now=NOW + 3 * MIN, renotify_after=HOUR).delivered == []
    assert sink.events == [("opened", "consecutive_failures:accounts")]
    [alert] = alerts.list_alerts(status="open")
    assert (alert.notify_count, alert.last_notified_at, alert.last_delivery_error) == (
        1,
        NOW + 2 * MIN,
        None,
    )


def test_a_sink_that_accepted_is_not_sent_the_retry(alerts: AlertStore) -> None:
    log, slack = RecordingSink("log"), RecordingSink("slack")
    slack.down = True
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    first = deliver_pending(alerts, [log, slack], now=NOW, renotify_after=HOUR)
    assert len(first.failed) == 1 and len(log.sent) == 1 and slack.sent == []

    slack.down = False
    second = deliver_pending(alerts, [log, slack], now=NOW + MIN, renotify_after=HOUR)
    assert [n.kind for n in second.delivered] == ["opened"]
    assert log.events == slack.events == [("opened", "consecutive_failures:accounts")]


def test_an_alert_resolved_before_it_was_announced_gets_both_in_order(
    alerts: AlertStore,
) -> None:
    sink = RecordingSink()
    sink.down = True
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    record_findings(alerts, CONSECUTIVE_FAILURES, [], now=NOW + MIN)
    sink.down = False
    report = deliver_pending(alerts, [sink], now=NOW + 2 * MIN, renotify_after=HOUR)
    assert [n.kind for n in report.delivered] == ["opened", "resolved"]
    assert sink.events == [
        ("opened", "consecutive_failures:accounts"),
        ("resolved", "consecutive_failures:accounts"),
    ]
    assert deliver_pending(alerts, [sink], now=NOW + HOUR, renotify_after=HOUR).delivered == []


def test_a_sink_error_never_quotes_its_exception(alerts: AlertStore) -> None:
    class Leaky:
        name = "leaky"

        def send(self, notification: Notification) -> None:
            raise RuntimeError("POST https://hooks.example/T0/SECRET-TOKEN failed")

    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    report = deliver_pending(alerts, [Leaky()], now=NOW, renotify_after=None)
    [(_, reason)] = report.failed
    assert reason == "sink 'leaky' raised RuntimeError"
    [alert] = alerts.list_alerts(status="open")
    assert alert.last_delivery_error is not None
    assert "SECRET-TOKEN" not in alert.last_delivery_error


def test_sink_names_must_be_unique(alerts: AlertStore) -> None:
    with pytest.raises(InvalidInputError, match="unique"):
        deliver_pending(alerts, [RecordingSink(), RecordingSink()], now=NOW, renotify_after=None)


def test_racing_deliveries_send_each_notification_once(
    alerts: AlertStore, thread_stores: Callable[[], AlertStore]
) -> None:
    findings = [failures(name) for name in ("a", "b", "c")]
    record_findings(alerts, CONSECUTIVE_FAILURES, findings, now=NOW)
    sink = RecordingSink(delay=0.02)
    stores = [thread_stores() for _ in range(4)]
    reports = run_threads(
        len(stores),
        lambda i: deliver_pending(stores[i], [sink], now=NOW, renotify_after=HOUR),
    )
    expected = sorted(("opened", f"consecutive_failures:{n}") for n in ("a", "b", "c"))
    assert sorted(sink.events) == expected
    assert sum(len(r.delivered) for r in reports) == 3
    assert all(r.failed == [] for r in reports)
    assert all(a.notify_count == 1 for a in alerts.list_alerts(status="open"))


def test_racing_reminders_are_sent_once(
    alerts: AlertStore, thread_stores: Callable[[], AlertStore]
) -> None:
    sink = RecordingSink(delay=0.02)
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=HOUR)
    stores = [thread_stores() for _ in range(4)]
    run_threads(
        len(stores),
        lambda i: deliver_pending(stores[i], [sink], now=NOW + 2 * HOUR, renotify_after=HOUR),
    )
    assert [kind for kind, _ in sink.events] == ["opened", "reminder"]


def test_a_claim_left_by_a_dead_tick_expires(alerts: AlertStore) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    [alert] = alerts.list_alerts(status="open")
    # A tick that claimed the notification and died before sending or releasing it.
    until = NOW + 2 * MIN
    [claim] = alerts.claim_due(now=NOW, until=until, reminder_cutoff=None, limit=10)
    assert claim.alert.alert_id == alert.alert_id
    assert alerts.claim_due(now=NOW, until=until, reminder_cutoff=None, limit=10) == []

    sink = RecordingSink()
    for held in (NOW + MIN, until):  # held through `until` inclusive
        assert deliver_pending(alerts, [sink], now=held, renotify_after=None).delivered == []
    later = deliver_pending(alerts, [sink], now=until + SECOND, renotify_after=None)
    assert [n.kind for n in later.delivered] == ["opened"]
    # The dead tick's token no longer marks anything.
    assert alerts.mark_delivered(claim.token, [(alert.alert_id, "opened")], now=NOW) == set()
    [stored] = alerts.list_alerts()
    assert (stored.notify_count, stored.last_notified_at) == (1, until + SECOND)


def test_a_failed_sink_is_not_called_again_in_the_same_tick(alerts: AlertStore) -> None:
    calls: list[str] = []

    class Dead:
        name = "dead"

        def send(self, notification: Notification) -> None:
            calls.append(notification.alert.resource)
            raise SinkError("sink 'dead': TimeoutError")

    log = RecordingSink("log")
    findings = [failures(name) for name in ("a", "b", "c")]
    record_findings(alerts, CONSECUTIVE_FAILURES, findings, now=NOW)
    report = deliver_pending(alerts, [log, Dead()], now=NOW, renotify_after=None)
    assert len(calls) == 1  # one timeout per tick, not one per alert
    assert len(log.sent) == 3 and report.delivered == []
    reasons = sorted(reason for _, reason in report.failed)
    assert reasons == [
        "sink 'dead': TimeoutError",
        "sink 'dead': TimeoutError (not tried again this tick)",
        "sink 'dead': TimeoutError (not tried again this tick)",
    ]
    # Next tick: tried again (once), and the log sink, which accepted, is not sent it twice.
    deliver_pending(alerts, [log, Dead()], now=NOW + MIN, renotify_after=None)
    assert len(calls) == 2 and len(log.sent) == 3


def test_a_notification_a_sink_keeps_refusing_does_not_block_the_others(
    alerts: AlertStore,
) -> None:
    class Picky:
        name = "picky"

        def __init__(self) -> None:
            self.accepted: list[str] = []

        def send(self, notification: Notification) -> None:
            if notification.alert.resource == "poison":
                raise SinkError("sink 'picky': HTTP 400")
            self.accepted.append(notification.alert.resource)

    sink = Picky()
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures("poison")], now=NOW)
    deliver_pending(alerts, [sink], now=NOW, renotify_after=None)  # poison fails first
    later = [failures("poison"), failures("x"), failures("y")]
    record_findings(alerts, CONSECUTIVE_FAILURES, later, now=NOW + MIN)
    report = deliver_pending(alerts, [sink], now=NOW + MIN, renotify_after=None)
    # x and y were sent before poison was tried again, so its refusal did not stop them.
    assert sorted(sink.accepted) == ["x", "y"]
    assert [n.alert.resource for n, _ in report.failed] == ["poison"]


# -- end to end with real syncs ----------------------------------------------------------------


def _sync(store: SyncStore, resource: str, status: str, at: dt.datetime, error: str = "") -> None:
    sync_id = str(uuid.uuid4())
    store.start_sync(
        sync_id=sync_id, resource=resource, started_at=at, dagster_run_id="r-" + sync_id
    )
    errors = [{"code": "HTTP_503", "message": error, "timestamp": at.isoformat()}] if error else []
    store.finish_sync(
        sync_id=sync_id,
        resource=resource,
        started_at=at,
        outcome=SyncOutcome(status=status, ended_at=at + MIN, errors=errors, error_message=error),
    )


def test_three_failures_alert_once_and_a_success_resolves(store: SyncStore) -> None:
    alerts = AlertStore(store)
    sink = RecordingSink()
    policy = AlertPolicy()

    def tick(at: dt.datetime) -> None:
        found = check_consecutive_failures(store.list_states(), policy, at)
        record_findings(alerts, CONSECUTIVE_FAILURES, found, now=at)
        deliver_pending(alerts, [sink], now=at, renotify_after=None)

    for i in range(3):
        _sync(store, "accounts", "failed", NOW + i * 10 * MIN, error=f"upstream down #{i}")
        tick(NOW + i * 10 * MIN + 2 * MIN)
    assert sink.events == [("opened", "consecutive_failures:accounts")]
    opened = sink.sent[0].alert
    assert opened.last_error == "HTTP_503: upstream down #2"
    assert opened.dagster_run_id is not None and opened.dagster_run_id.startswith("r-")

    tick(NOW + HOUR)  # still failing: nothing new
    assert len(sink.sent) == 1

    _sync(store, "accounts", "success", NOW + 2 * HOUR)
    tick(NOW + 2 * HOUR + 2 * MIN)
    assert [kind for kind, _ in sink.events] == ["opened", "resolved"]
    message = sink.sent[1].alert.resolution_message
    assert message is not None
    assert message.startswith("resolved: 'accounts' succeeded again after 3 failures")


def test_refresh_keeps_details_json_equal(alerts: AlertStore) -> None:
    finding = failures(details={"at": NOW, "took": dt.timedelta(seconds=90), "ids": (1, 2)})
    [alert] = record_findings(alerts, CONSECUTIVE_FAILURES, [finding], now=NOW).opened
    assert alert.details == {"at": NOW.isoformat(), "took": 90.0, "ids": [1, 2]}
    again = record_findings(alerts, CONSECUTIVE_FAILURES, [finding], now=NOW + MIN)
    assert (
        again.refreshed[0].details == alert.details == alerts.list_alerts(status="open")[0].details
    )
    bad = dataclasses.replace(finding, details={"x": float("nan")})
    with pytest.raises(InvalidInputError, match="details"):
        record_findings(alerts, CONSECUTIVE_FAILURES, [bad], now=NOW + 2 * MIN)


# -- claims that outlast slow sinks, a time budget, one rule's notifications ------------------


class TickKilled(BaseException):
    """Stands for the tick's process dying (Dagster's sensor timeout, a kill) mid-send."""


def test_a_slow_sink_does_not_let_a_racing_tick_send_again(
    alerts: AlertStore, thread_stores: Callable[[], AlertStore]
) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures(n) for n in "abc"], now=NOW)
    claim_for = SECOND
    racer = thread_stores()
    sink = RecordingSink("webhook")
    racing: list[Any] = []

    class Slow:
        """Healthy but slow: the first send outlasts the claim; the second lets a tick race."""

        name = "webhook"

        def send(self, notification: Notification) -> None:
            if not sink.sent:
                time.sleep(1.2 * claim_for.total_seconds())
            elif len(sink.sent) == 1:
                # Another sensor's tick, started now (its clock is the wall clock too).
                now = dt.datetime.now(dt.timezone.utc)
                racing.append(
                    deliver_pending(
                        racer, [sink], now=now, renotify_after=None, claim_for=claim_for
                    )
                )
            sink.send(notification)

    start = dt.datetime.now(dt.timezone.utc)
    report = deliver_pending(alerts, [Slow()], now=start, renotify_after=None, claim_for=claim_for)
    assert len(racing) == 1
    assert sorted(sink.events) == [("opened", f"consecutive_failures:{n}") for n in "abc"]
    assert racing[0].delivered == [] and len(report.delivered) == 3
    assert [a.notify_count for a in alerts.list_alerts(status="open")] == [1, 1, 1]


def test_each_notification_is_marked_delivered_as_soon_as_it_is_sent(
    alerts: AlertStore,
) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures(n) for n in "abc"], now=NOW)
    sink = RecordingSink()

    class DiesOnSecond:
        name = "recorder"

        def send(self, notification: Notification) -> None:
            if len(sink.sent) == 1:
                raise TickKilled
            sink.send(notification)

    with pytest.raises(TickKilled):
        deliver_pending(alerts, [DiesOnSecond()], now=NOW, renotify_after=None)
    [first] = sink.sent
    stored = {a.alert_id: a for a in alerts.list_alerts()}[first.alert.alert_id]
    assert (stored.notify_count, stored.last_notified_at) == (1, NOW)

    # A later tick, once the dead tick's claim on the one it was sending has expired (claims
    # run on the wall clock), sends the other two only.
    after_expiry = dt.datetime.now(dt.timezone.utc) + 10 * MIN
    later = deliver_pending(alerts, [sink], now=after_expiry, renotify_after=None)
    assert len(later.delivered) == 2
    assert sorted(sink.events) == [("opened", f"consecutive_failures:{n}") for n in "abc"]


def test_delivered_notifications_are_marked_in_groups(alerts: AlertStore) -> None:
    findings = [failures(f"r{n:03}") for n in range(120)]
    record_findings(alerts, CONSECUTIVE_FAILURES, findings, now=NOW)
    marks: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE sync_alerts SET last_notified_at"):
            marks.append(statement)

    sink = RecordingSink()
    sa.event.listen(alerts.engine, "before_cursor_execute", count)
    try:
        report = deliver_pending(alerts, [sink], now=NOW, renotify_after=None)
    finally:
        sa.event.remove(alerts.engine, "before_cursor_execute", count)
    assert len(report.delivered) == len(sink.sent) == 120
    # Groups of at most 50 within each claimed batch of 100 (more when a group's time runs
    # out first); one statement per notification before.
    assert 3 <= len(marks) <= 20
    stored = alerts.list_alerts(status="open", limit=None)
    assert {(a.notify_count, a.last_notified_at) for a in stored} == {(1, NOW)}
    assert deliver_pending(alerts, [sink], now=NOW, renotify_after=None).delivered == []


def test_a_tick_stops_at_its_time_budget_and_the_next_sends_the_rest(
    alerts: AlertStore,
) -> None:
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures(n) for n in "abcde"], now=NOW)
    sink = RecordingSink(delay=0.2)
    budget = dt.timedelta(seconds=0.3)
    first = deliver_pending(alerts, [sink], now=NOW, renotify_after=None, budget=budget)
    # Each send sleeps 0.2 s, so the budget is spent after one or two of them.
    assert 1 <= len(first.delivered) <= 2 and first.failed == []
    assert first.out_of_time
    # What was left is not held by a claim: a tick at the same time sends it right away.
    sink.delay = 0.0
    second = deliver_pending(alerts, [sink], now=NOW, renotify_after=None)
    assert len(second.delivered) == 5 - len(first.delivered) and not second.out_of_time
    assert sorted(sink.events) == [("opened", f"consecutive_failures:{n}") for n in "abcde"]


def test_every_notification_is_sent_while_its_claim_holds(
    backend: Backend, alerts: AlertStore
) -> None:
    # A batch takes longer to send than its claim lasts (3 x 0.3 s against 1 s): the claims
    # must be renewed as the tick goes, not left to run out under the notifications.
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures(n) for n in "abcd"], now=NOW)
    claim_for = SECOND
    engine = backend.engine()
    left: dict[str, dt.timedelta] = {}

    class Checking(RecordingSink):
        def send(self, notification: Notification) -> None:
            with engine.connect() as conn:
                until = conn.execute(
                    sa.select(sync_alerts.c.claimed_until).where(
                        sync_alerts.c.alert_id == notification.alert.alert_id
                    )
                ).scalar_one()
            left[notification.alert.resource] = until - dt.datetime.now(dt.timezone.utc)
            super().send(notification)

    sink = Checking(delay=0.3)
    start = dt.datetime.now(dt.timezone.utc)
    try:
        report = deliver_pending(
            alerts, [sink], now=start, renotify_after=None, claim_for=claim_for, batch_size=3
        )
    finally:
        engine.dispose()
    assert len(report.delivered) == 4 and report.failed == []
    assert sorted(left) == ["a", "b", "c", "d"]
    # Each send started with at least (nearly) half of its claim left.
    assert all(time_left > 0.4 * claim_for for time_left in left.values()), left
    assert all(a.notify_count == 1 for a in alerts.list_alerts(status="open"))


def test_deliveries_can_be_limited_to_some_rules(alerts: AlertStore) -> None:
    stale = Finding(
        rule=STALE_WATERMARK,
        resource="accounts",
        severity="warning",
        message="accounts is stale",
        since=NOW - 30 * HOUR,
        details={},
    )
    record_findings(alerts, CONSECUTIVE_FAILURES, [failures()], now=NOW)
    record_findings(alerts, STALE_WATERMARK, [stale], now=NOW)
    stale_sink, failures_sink = RecordingSink("slack"), RecordingSink("slack")
    only_stale = deliver_pending(
        alerts, [stale_sink], now=NOW, renotify_after=None, rules=[STALE_WATERMARK]
    )
    assert stale_sink.events == [("opened", "stale_watermark:accounts")]
    assert [n.alert.rule for n in only_stale.delivered] == [STALE_WATERMARK]
    again = deliver_pending(
        alerts, [stale_sink], now=NOW, renotify_after=None, rules=[STALE_WATERMARK]
    )
    assert again.delivered == []  # nothing of that rule is due any more
    # The failures alert was left due, for a delivery that takes its rule.
    everything = deliver_pending(alerts, [failures_sink], now=NOW, renotify_after=None)
    assert failures_sink.events == [("opened", "consecutive_failures:accounts")]
    assert len(everything.delivered) == 1
    with pytest.raises(InvalidInputError, match="rules"):
        deliver_pending(alerts, [failures_sink], now=NOW, renotify_after=None, rules="stale")
