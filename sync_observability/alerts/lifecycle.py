"""Alert lifecycle: findings open, refresh and resolve alerts; due notifications are delivered.

One open alert per fingerprint (``rule:resource``), enforced by the database. Each tick of a
rule calls :func:`record_findings` with what the rule found now, then :func:`deliver_pending`
sends what is due:

- ``opened``: once per alert, when it opens;
- ``reminder``: while it stays open, every ``renotify_after`` after the last notification;
- ``resolved``: once, when its condition cleared, with a resolution message.

Delivery is at least once. A notification is claimed by one tick (so racing ticks send it
once), sent to every sink, and marked delivered only when all sinks accepted it. When a sink
fails, the notification stays due and the next tick retries it, skipping the sinks that already
accepted it; a delivered notification is never sent again. A sink that fails is not called
again in the same tick (a dead endpoint costs one timeout per tick, not one per alert), and
notifications that failed before are tried after the others, so one that a sink keeps refusing
cannot hold the rest back. A tick that dies mid-send leaves its claims, which expire after
``claim_for``; the notifications are then sent again (the one case where a sink can see a
notification twice).

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
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
    SLOW_SYNC,
    STALE_WATERMARK,
    STUCK_RUN,
    VOLUME_ANOMALY,
    Finding,
)
from sync_observability.alerts.sinks import Sink, SinkError
from sync_observability.errors import InvalidInputError
from sync_observability.storage.alert_store import Alert, AlertDraft, AlertStore, Claim
from sync_observability.storage.schema import ALERT_SEVERITIES, MAX_RULE_LENGTH
from sync_observability.validation import check_aware, check_name

log = logging.getLogger("sync_observability")

OPENED = "opened"
REMINDER = "reminder"
RESOLVED = "resolved"
_ERROR_LIMIT = 1000
_BATCH_SIZE = 100  # notifications per claim: sent well within claim_for
_MAX_BATCHES = 1000  # a bound on one tick's work; what is left is sent next tick


@dataclasses.dataclass(frozen=True)
class Notification:
    """One message about one alert: ``opened``, ``reminder`` or ``resolved``."""

    alert: Alert
    kind: str


@dataclasses.dataclass
class TickResult:
    """What :func:`record_findings` changed in one tick of one rule."""

    opened: list[Alert] = dataclasses.field(default_factory=list)
    refreshed: list[Alert] = dataclasses.field(default_factory=list)
    resolved: list[Alert] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DeliveryReport:
    """What :func:`deliver_pending` sent, and what failed (with why; retried next tick)."""

    delivered: list[Notification] = dataclasses.field(default_factory=list)
    failed: list[tuple[Notification, str]] = dataclasses.field(default_factory=list)


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
) -> DeliveryReport:
    """Send every due notification to every sink, at least once and without duplicates.

    Due notifications are claimed in batches with a guarded update (a racing tick skips them),
    sent to each sink in order, and marked delivered once all sinks accepted them. A sink that
    raises leaves the notification due for the next tick, which sends it only to the sinks that
    did not accept it yet; the failed sink is not called again during this tick.

    Args:
        alerts: the alert store.
        sinks: where to send; their ``name`` must be unique.
        now: the tick's time (timezone-aware).
        renotify_after: remind about a still-open alert this long after its last notification;
            None: never.
        claim_for: how long a claim holds before another tick may take the notifications over
            (longer than sending a batch of 100 notifications to every sink can take).

    Returns:
        The notifications delivered, and those that failed with the reason (no secrets).
    """
    now = check_aware("now", now)
    _check_positive("claim_for", claim_for)
    if renotify_after is not None:
        _check_positive("renotify_after", renotify_after)
    names = [sink.name for sink in sinks]
    if len(set(names)) != len(names):
        raise InvalidInputError("sinks", names, "sink names must be unique")
    cutoff = None if renotify_after is None else now - renotify_after
    report = DeliveryReport()
    down: dict[str, str] = {}  # sinks that failed this tick -> why; not called again this tick
    # Each batch claims only due notifications; delivered ones stop being due (or owe the next
    # kind) and failed ones are held until `now`, so the loop ends when nothing is due.
    for _ in range(_MAX_BATCHES):
        claims = alerts.claim_due(
            now=now, until=now + claim_for, reminder_cutoff=cutoff, limit=_BATCH_SIZE
        )
        if not claims:
            break
        _deliver_batch(alerts, claims, sinks, now, cutoff, down, report)
    return report


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
    else:
        text = f"{alert.rule} no longer holds for {who}"
    return f"resolved: {text} (alert open for {_human(now - alert.opened_at)})"


def _deliver_batch(
    alerts: AlertStore,
    claims: Sequence[Claim],
    sinks: Sequence[Sink],
    now: dt.datetime,
    cutoff: dt.datetime | None,
    down: dict[str, str],
    report: DeliveryReport,
) -> None:
    """Send each claimed notification to each sink that has not accepted it yet, then settle."""
    token = claims[0].token
    delivered: list[Notification] = []
    failed: list[tuple[str, str | None, Sequence[str], str | None]] = []
    for claim in claims:
        kind = due_kind(claim.alert, cutoff)
        if kind is None:  # cannot happen while due_kind mirrors the store's rule; never send
            failed.append((claim.alert.alert_id, None, (), None))
            continue
        notification = Notification(claim.alert, kind)
        accepted = list(claim.delivered_sinks) if claim.delivery_kind == kind else []
        errors = []
        for sink in sinks:
            if sink.name in accepted:
                continue
            if sink.name in down:
                errors.append(f"{down[sink.name]} (not tried again this tick)")
                continue
            try:
                sink.send(notification)
            except Exception as e:
                reason = _describe_failure(sink, e)
                down[sink.name] = reason
                errors.append(reason)
            else:
                accepted.append(sink.name)
        if errors:
            reason = "; ".join(errors)[:_ERROR_LIMIT]
            failed.append((claim.alert.alert_id, kind, accepted, reason))
            report.failed.append((notification, reason))
            log.warning(
                "sync_observability: %s notification of alert %s (%s) not delivered, "
                "will retry next tick: %s",
                kind,
                claim.alert.alert_id,
                claim.alert.fingerprint,
                reason,
            )
        else:
            delivered.append(notification)
    if delivered:
        pairs = [(n.alert.alert_id, n.kind) for n in delivered]
        marked = alerts.mark_delivered(token, pairs, now=now)
        for notification in delivered:
            if notification.alert.alert_id not in marked:
                log.warning(
                    "sync_observability: the claim on the %s notification of alert %s expired "
                    "while it was being sent; another tick may send it again (raise claim_for)",
                    notification.kind,
                    notification.alert.alert_id,
                )
        report.delivered.extend(delivered)
    if failed:
        alerts.release_failed(token, failed, now=now)


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
