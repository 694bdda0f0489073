"""Alert lifecycle: findings open, refresh and resolve alerts; due notifications are delivered.

One open alert per fingerprint (``rule:resource``), enforced by the database. Each tick of a
rule calls :func:`record_findings` with what the rule found now, then :func:`deliver_pending`
sends what is due:

- ``opened``: once per alert, when it opens;
- ``reminder``: while it stays open, every ``renotify_after`` after the last notification;
- ``resolved``: once, when its condition cleared, with a resolution message and the
  resource's state that cleared it.

Delivery is at least once. A notification is claimed by one tick (so racing ticks send it
once), sent to every sink, and marked delivered once all sinks accepted it: in groups, every
``SETTLE_EVERY`` notifications or ``SETTLE_AFTER``, whichever comes first, and whenever the tick
stops sending (also by an exception), always before the claim runs out. When a sink
fails, the notification stays due and the next tick retries it, skipping the sinks that already
accepted it; a delivered notification is never sent again. A sink that fails is not called
again in the same tick (a dead endpoint costs one timeout per tick, not one per alert), and
notifications that failed before are tried after the others, so one that a sink keeps refusing
cannot hold the rest back. Claims last ``claim_for`` from when they are taken and are renewed
before a send when half of that has passed, so a slow sink does not let a claim run out under
it; a tick stops after its time budget and leaves the rest to the next. A tick that dies
mid-send leaves the claim of the notification it was sending, and of those it sent but had not
marked yet (at most one group), which expire after ``claim_for``; those notifications are then
sent again (the one case where a sink can see a notification twice).

Each sensor delivers only its own rule's notifications (``rules=``), through its own sinks.

Decisions where the requirements were silent:

- An alert that resolves before its "opened" notification got out still gets both, in order:
  nothing is dropped, and the resolution message makes sense after the opening.
- A condition that comes back after its alert resolved opens a new alert (a new event, a new
  "opened" notification); the old row stays as history.
- ``notify_count`` and ``last_notified_at`` count every delivered notification, including the
  resolution.

Examples:
    .. code-block:: python

        alerts = AlertStore(store)
        findings = check_consecutive_failures(store.list_states(), policy, now)
        record_findings(alerts, CONSECUTIVE_FAILURES, findings, now=now)
        deliver_pending(alerts, [LogSink(log)], now=now, renotify_after=timedelta(hours=4))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
    SCHEMA_CHANGE,
    SLOW_SYNC,
    STALE_WATERMARK,
    STUCK_RUN,
    VOLUME_ANOMALY,
    WATERMARK_NOT_MOVING,
    Finding,
)
from sync_observability.alerts.sinks import Sink, SinkError
from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError
from sync_observability.storage.constants import ALERT_SEVERITIES, MAX_RULE_LENGTH
from sync_observability.storage.records import Alert, AlertDraft, Claim, SyncState
from sync_observability.validation import check_aware, check_name

if TYPE_CHECKING:
    from sync_observability.storage.alert_store import AlertStore

log = logging.getLogger("sync_observability")

OPENED = "opened"
REMINDER = "reminder"
RESOLVED = "resolved"
_ERROR_LIMIT = 1000
DEFAULT_BATCH_SIZE = 100
DEFAULT_BUDGET = dt.timedelta(seconds=30)  # half of Dagster's 60 s sensor timeout
_MAX_BATCHES = 1000  # a bound on one tick's work; what is left is sent next tick
SETTLE_EVERY = 50
SETTLE_AFTER = dt.timedelta(milliseconds=250)


@dataclasses.dataclass(frozen=True)
class Notification:
    """One message about one alert: ``opened``, ``reminder`` or ``resolved``.

    ``state``: for a resolution, the resource's ``sync_state`` when it is sent (the state that
    resolved the alert, unless later syncs ran before a failed delivery was retried); the sinks
    describe it instead of the open alert's details. None for the other kinds.
    """

    alert: Alert
    kind: str
    state: SyncState | None = None


@dataclasses.dataclass
class TickResult:
    """What :func:`record_findings` changed in one tick of one rule."""

    opened: list[Alert] = dataclasses.field(default_factory=list)
    refreshed: list[Alert] = dataclasses.field(default_factory=list)
    resolved: list[Alert] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DeliveryReport:
    """What :func:`deliver_pending` sent, and what failed (with why; retried next tick).

    ``out_of_time``: the time budget ran out; what is still due goes out on the next tick.
    """

    delivered: list[Notification] = dataclasses.field(default_factory=list)
    failed: list[tuple[Notification, str]] = dataclasses.field(default_factory=list)
    out_of_time: bool = False


def record_findings(
    alerts: AlertStore,
    rule: str,
    findings: Sequence[Finding],
    *,
    now: dt.datetime,
    checked: Collection[str] | None = None,
) -> TickResult:
    """Bring ``rule``'s alerts in line with what the rule found now.

    A finding whose fingerprint has no open alert opens one; a finding with an open alert
    refreshes it (``last_seen_at``, message, severity, details, since, last error, run). An
    open alert of ``rule`` with no finding now is resolved, with a resolution message. Two
    ticks racing each other open one alert: the database refuses a second open row.

    Args:
        alerts: the alert store.
        rule: the rule whose findings these are; every finding must be of this rule.
        findings: the rule's findings now (when a fingerprint repeats, the last one wins).
        now: the tick's time (timezone-aware).
        checked: the resources the rule judged this tick; when given, only their open alerts
            can resolve (a sensor that checked part of the resources resolves nothing else).

    Returns:
        The alerts opened, refreshed and resolved.

    Raises:
        InvalidInputError: a finding of another rule, an unknown severity, a naive ``now``,
            details that are not JSON.
    """
    now = check_aware("now", now)
    check_name("rule", rule)
    if len(rule) > MAX_RULE_LENGTH:
        raise InvalidInputError("rule", rule, f"is longer than {MAX_RULE_LENGTH} characters")
    drafts: dict[str, AlertDraft] = {}
    for finding in findings:
        drafts[finding.fingerprint] = _draft(rule, finding)
    applied = alerts.apply_findings(
        rule,
        list(drafts.values()),
        now=now,
        checked=None if checked is None else frozenset(checked),
        resolution_message=resolution_message,
    )
    return TickResult(opened=applied.opened, refreshed=applied.refreshed, resolved=applied.resolved)


def deliver_pending(
    alerts: AlertStore,
    sinks: Sequence[Sink],
    *,
    now: dt.datetime,
    renotify_after: dt.timedelta | None,
    claim_for: dt.timedelta = dt.timedelta(minutes=2),
    rules: Collection[str] | None = None,
    budget: dt.timedelta = DEFAULT_BUDGET,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> DeliveryReport:
    """Send every due notification to every sink, at least once and without duplicates.

    Due notifications are claimed in batches with a guarded update (a racing tick skips them),
    each claim lasting ``claim_for`` from the moment it is taken. Each notification is sent to
    each sink in order and marked delivered as soon as all sinks accepted it. A sink that
    raises leaves the notification due for the next tick, which sends it only to the sinks that
    did not accept it yet; the failed sink is not called again during this tick.

    A notification is sent only while its claim has at least half of ``claim_for`` left;
    older claims are given back and taken again, so a slow sink cannot make a claim run out
    under a send. After ``budget`` the tick stops (at least one notification is always tried)
    and gives back what it claimed but did not send: the next tick sends it.

    Args:
        alerts: the alert store.
        sinks: where to send; their ``name`` must be unique.
        now: the tick's time (timezone-aware).
        renotify_after: remind about a still-open alert this long after its last notification;
            None: never.
        claim_for: how long a claim holds before another tick may take the notifications over;
            more than twice the longest one notification can take to reach every sink.
        rules: deliver only the notifications of these rules' alerts (a sensor delivers its
            own rule's, with its own sinks); None: every rule's.
        budget: stop sending after this long (Dagster stops a sensor tick after 60 s).
        batch_size: notifications claimed at once.

    Returns:
        The notifications delivered, those that failed with the reason (no secrets), and
        whether the budget ran out before everything due was sent.
    """
    now = check_aware("now", now)
    _check_positive("claim_for", claim_for)
    _check_positive("budget", budget)
    if renotify_after is not None:
        _check_positive("renotify_after", renotify_after)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be an int >= 1")
    if rules is not None:
        if isinstance(rules, str) or not all(isinstance(r, str) for r in rules):
            raise InvalidInputError("rules", rules, "must be a collection of rule names")
        rules = frozenset(rules)
    names = [sink.name for sink in sinks]
    if len(set(names)) != len(names):
        raise InvalidInputError("sinks", names, "sink names must be unique")
    tick = _Tick(
        alerts=alerts,
        sinks=sinks,
        now=now,
        cutoff=None if renotify_after is None else now - renotify_after,
        claim_for=claim_for,
        budget=budget,
    )
    # Each batch claims only due notifications; delivered ones stop being due (or owe the next
    # kind), failed ones are held until `now` and unsent ones are given back, so the loop ends
    # when nothing is due or the budget is spent.
    for _ in range(_MAX_BATCHES):
        claimed_at = time.monotonic()
        until = max(now, utcnow()) + claim_for
        claims = alerts.claim_due(
            now=now, until=until, reminder_cutoff=tick.cutoff, limit=batch_size, rules=rules
        )
        if not claims:
            break
        tick.deliver(claims, claimed_at)
        if tick.report.out_of_time:
            break
    return tick.report


def due_kind(alert: Alert, reminder_cutoff: dt.datetime | None) -> str | None:
    """The notification ``alert`` owes now, if any (the same rule the store's claim applies)."""
    if alert.last_notified_at is None:
        return OPENED
    if alert.status == "resolved":
        return RESOLVED if alert.resolution_notified_at is None else None
    if reminder_cutoff is not None and alert.last_notified_at <= reminder_cutoff:
        return REMINDER
    return None


def resolution_message(alert: Alert, now: dt.datetime) -> str:
    """The line announcing that ``alert``'s condition cleared, from what the alert knows.

    Examples:
        ``resolved: 'accounts' succeeded again after 3 failures (alert open for 2h 5m)``
    """
    who = repr(alert.resource)
    if alert.rule == CONSECUTIVE_FAILURES:
        count = alert.details.get("consecutive_failures")
        text = f"{who} succeeded again" + (f" after {count} failures" if count else "")
    elif alert.rule == STUCK_RUN:
        sync = f"; sync {alert.sync_id} is no longer running" if alert.sync_id else ""
        text = f"{who} is no longer stuck{sync}"
    elif alert.rule == STALE_WATERMARK:
        text = f"{who} synced successfully again"
    elif alert.rule == SLOW_SYNC:
        text = f"{who} synced within its time limits again"
    elif alert.rule == VOLUME_ANOMALY:
        text = f"{who} processed a usual number of records again"
    elif alert.rule == WATERMARK_NOT_MOVING:
        text = f"{who}'s watermark moves again"
    elif alert.rule == SCHEMA_CHANGE:
        text = f"the {alert.details.get('command_tag', 'change')} of {who} is past its alert window"
    else:
        text = f"{alert.rule} no longer holds for {who}"
    return f"resolved: {text} (alert open for {_human(now - alert.opened_at)})"


@dataclasses.dataclass
class _Tick:
    """One call of :func:`deliver_pending`: its sinks, clock, and what it did so far."""

    alerts: AlertStore
    sinks: Sequence[Sink]
    now: dt.datetime
    cutoff: dt.datetime | None
    claim_for: dt.timedelta
    budget: dt.timedelta
    started: float = dataclasses.field(default_factory=time.monotonic)
    down: dict[str, str] = dataclasses.field(default_factory=dict)  # sink -> why; not retried
    report: DeliveryReport = dataclasses.field(default_factory=DeliveryReport)

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started >= self.budget.total_seconds()

    def deliver(self, claims: Sequence[Claim], claimed_at: float) -> None:
        """Send each claimed notification, settling them in groups; give back what is not sent.

        Delivered notifications are marked every ``SETTLE_EVERY`` or ``SETTLE_AFTER``, and when
        the batch ends, which is before half of ``claim_for`` has passed plus one send: before
        their claims run out. Failures that no sink newly accepted are settled together at the
        end: losing them (the tick dies) costs only their error text, as their claims expire
        anyway.
        """
        token = claims[0].token
        failed: list[tuple[str, str | None, Sequence[str], str | None]] = []
        delivered: list[Notification] = []
        unsent = [claim.alert.alert_id for claim in claims]
        oldest = 0.0  # when the first notification of `delivered` was sent
        try:
            for i, claim in enumerate(claims):
                tried = self.report.delivered or self.report.failed  # one per call at least
                if tried and self.out_of_time():
                    self.report.out_of_time = True
                    return
                if i > 0 and time.monotonic() - claimed_at >= self.claim_for.total_seconds() / 2:
                    return  # the caller claims again, with a fresh expiry
                unsent.pop(0)
                notification = self._send(token, claim, failed)
                if notification is None:
                    continue
                if not delivered:
                    oldest = time.monotonic()
                delivered.append(notification)
                due = time.monotonic() - oldest >= SETTLE_AFTER.total_seconds()
                if len(delivered) >= SETTLE_EVERY or due:
                    self._settle(token, delivered)
                    delivered = []
        finally:
            # Each step runs even when the one before raised (the database went away): an
            # unreleased claim would hold its notification back until the claim expires.
            try:
                if delivered:
                    self._settle(token, delivered)
            finally:
                try:
                    if failed:
                        self.alerts.release_failed(token, failed, now=self.now)
                finally:
                    if unsent:
                        self.alerts.release(token, unsent)

    def _settle(self, token: str, delivered: Sequence[Notification]) -> None:
        """Mark notifications that every sink accepted delivered, in one transaction."""
        marked = self.alerts.mark_delivered(
            token, [(n.alert.alert_id, n.kind) for n in delivered], now=self.now
        )
        for notification in delivered:
            if notification.alert.alert_id not in marked:
                log.warning(
                    "sync_observability: the claim on the %s notification of alert %s expired "
                    "while it was being sent; another tick may send it again (raise claim_for)",
                    notification.kind,
                    notification.alert.alert_id,
                )

    def _send(
        self,
        token: str,
        claim: Claim,
        failed: list[tuple[str, str | None, Sequence[str], str | None]],
    ) -> Notification | None:
        """Send one notification to the sinks that have not accepted it yet.

        Returns it when every sink has accepted it (the caller marks it delivered); a failure
        is recorded in ``failed``, or settled at once when a sink newly accepted it.
        """
        alert = claim.alert
        kind = due_kind(alert, self.cutoff)
        if kind is None:  # cannot happen while due_kind mirrors the store's rule; never send
            failed.append((alert.alert_id, None, (), None))
            return None
        # A resolution says what resolved it: the resource's state now, not the open alert's.
        state = self.alerts.store.get_state(alert.resource) if kind == RESOLVED else None
        notification = Notification(alert, kind, state)
        before = list(claim.delivered_sinks) if claim.delivery_kind == kind else []
        accepted = list(before)
        errors = []
        for sink in self.sinks:
            if sink.name in accepted:
                continue
            if sink.name in self.down:
                errors.append(f"{self.down[sink.name]} (not tried again this tick)")
                continue
            try:
                sink.send(notification)
            except Exception as e:
                reason = _describe_failure(sink, e)
                self.down[sink.name] = reason
                errors.append(reason)
            else:
                accepted.append(sink.name)
        if not errors:
            self.report.delivered.append(notification)
            return notification
        reason = "; ".join(errors)[:_ERROR_LIMIT]
        settle = (alert.alert_id, kind, accepted, reason)
        if accepted != before:  # a sink took it this tick: record that now, not at the end
            self.alerts.release_failed(token, [settle], now=self.now)
        else:
            failed.append(settle)
        self.report.failed.append((notification, reason))
        log.warning(
            "sync_observability: %s notification of alert %s (%s) not delivered, "
            "will retry next tick: %s",
            kind,
            alert.alert_id,
            alert.fingerprint,
            reason,
        )
        return None


def _describe_failure(sink: Sink, error: Exception) -> str:
    """Why a send failed, without secrets: a SinkError's own message, else the error type."""
    if isinstance(error, SinkError):
        return str(error)
    return f"sink {sink.name!r} raised {type(error).__name__}"


def _draft(rule: str, finding: Finding) -> AlertDraft:
    if finding.rule != rule:
        raise InvalidInputError(
            "findings", finding.fingerprint, f"is a finding of rule {finding.rule!r}, not {rule!r}"
        )
    if finding.severity not in ALERT_SEVERITIES:
        raise InvalidInputError(
            "severity", finding.severity, f"must be one of {', '.join(ALERT_SEVERITIES)}"
        )
    check_name("resource", finding.resource)
    return AlertDraft(
        rule=rule,
        resource=finding.resource,
        fingerprint=finding.fingerprint,
        severity=finding.severity,
        message=finding.message,
        details=_json_object(finding.details),
        since=None if finding.since is None else check_aware("since", finding.since),
        sync_id=finding.sync_id,
        dagster_run_id=finding.dagster_run_id,
        last_error=finding.last_error,
    )


def _json_object(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` as it reads back from the database (so refreshes compare equal)."""

    def fallback(value: Any) -> Any:
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if isinstance(value, set | frozenset):
            return sorted(value, key=str)
        raise TypeError(f"{type(value).__name__} is not JSON-serializable")

    try:
        return json.loads(json.dumps(dict(details), default=fallback, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidInputError("details", details, f"is not JSON-serializable ({e})") from e


def _check_positive(field: str, value: Any) -> None:
    if not isinstance(value, dt.timedelta):
        raise InvalidInputError(field, value, "must be a datetime.timedelta")
    if value <= dt.timedelta(0):
        raise InvalidInputError(field, value, "must be positive")


def _human(delta: dt.timedelta) -> str:
    """``2h 5m``, ``3d``, ``45s``: the largest unit and the next one when not zero."""
    seconds = max(0, int(delta.total_seconds()))
    amounts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        amounts.append((amount, unit))
    first = next((i for i, (amount, _) in enumerate(amounts) if amount), len(amounts) - 1)
    return " ".join(f"{a}{u}" for a, u in amounts[first : first + 2] if a) or "0s"


__all__: Sequence[str] = (
    "OPENED",
    "REMINDER",
    "RESOLVED",
    "Alert",
    "DeliveryReport",
    "Notification",
    "TickResult",
    "deliver_pending",
    "due_kind",
    "record_findings",
    "resolution_message",
)
