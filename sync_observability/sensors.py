"""Dagster sensors that judge every resource's sync state, record alerts and deliver them.

Each sensor reads the ``sync_state`` rows its rule could flag (filtered in SQL with the loosest
threshold over the defaults and overrides; for the slow and volume rules, with the median or
mean and deviation of a bounded slice of recent history computed in the same query) through the
``sync_tracker`` resource, applies one rule from
:mod:`sync_observability.alerts.rules` with the thresholds of the ``sync_alerting`` resource,
records the findings in ``sync_alerts`` (one open alert per rule and resource) and delivers what
is due: new alerts, reminders, resolutions, and anything a sink failed to take on an earlier
tick. Sensors launch no runs; each tick ends with a ``SkipReason`` saying what was checked and
what was sent.

The stuck-run sensor also *reaps*: a sync still marked running whose Dagster run has ended
(looked up in the instance's run storage, one query per tick) or that has run past its limit is
marked failed (``ORPHANED`` or ``TIMED_OUT``) in ``sync_state`` and ``sync_history``; the
watermark never moves. Its stuck-run alert stays open until the resource's next sync starts.

The factories follow dagster-slack's shape (``make_slack_on_run_failure_sensor``): a ``name``,
``minimum_interval_seconds``, ``default_status`` and a pluggable ``message_fn``.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameters' annotations.
import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import Any

import dagster as dg

from sync_observability.alerting import SyncAlerting
from sync_observability.alerts.lifecycle import (
    DeliveryReport,
    TickResult,
    deliver_pending,
    record_findings,
)
from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
    CRITICAL,
    SLOW_SYNC,
    STALE_WATERMARK,
    STUCK_RUN,
    VOLUME_ANOMALY,
    WATERMARK_NOT_MOVING,
    AlertPolicy,
    Finding,
    check_consecutive_failures,
    check_slow_syncs,
    check_stale_watermarks,
    check_stuck_runs,
    check_volume_anomalies,
    check_watermark_not_moving,
)
from sync_observability.storage.alert_store import AlertStore
from sync_observability.storage.history_stats import (
    DEFAULT_DURATION_WINDOW,
    slow_sync_candidates,
    volume_anomaly_candidates,
)
from sync_observability.storage.store import SyncState, SyncStore
from sync_observability.tracking import ORPHANED, SyncTracker, utcnow

TIMED_OUT = "TIMED_OUT"
TICK_STORAGE_SECONDS = 45.0
"""The database time of one tick, all calls together: inside Dagster's 60 s sensor timeout."""
MessageFn = Callable[[Finding], str]
"""Builds the one-line alert message from a finding (default: the rule's own message)."""


@dataclasses.dataclass(frozen=True)
class _Judgement:
    """What a rule found on one tick, and how to say that it found nothing."""

    findings: list[Finding]
    checked: Collection[str] | None
    resources: int
    nothing_found: str
    done: str | None = None  # what the tick did besides alerting (the stuck sensor reaps)


_Judge = Callable[[dg.SensorEvaluationContext, SyncStore, AlertPolicy, dt.datetime], _Judgement]


def make_consecutive_failures_sensor(
    *,
    name: str = "sync_consecutive_failures_sensor",
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that alerts on resources that failed ``consecutive_failures_threshold`` times.

    The alert resolves (and the resolution is announced) at the resource's next success.

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` (anything with ``get_client()``) to post
            through, to ``SyncAlerting.slack_channel``.

    Examples:
        .. code-block:: python

            defs = dg.Definitions(
                sensors=[make_consecutive_failures_sensor(message_fn=lambda f: f.message)],
                resources={"sync_tracker": SyncTracker(), "sync_alerting": SyncAlerting()},
            )
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        # Only the rows the loosest threshold could flag; the rule applies each resource's own.
        states = store.list_states(
            min_consecutive_failures=min(_override_values(policy, "consecutive_failures"))
        )
        threshold = policy.defaults.consecutive_failures
        return _Judgement(
            findings=check_consecutive_failures(states, policy, now),
            checked=None,
            resources=store.count_states(),
            nothing_found=f"no resource at or over {threshold} consecutive failures",
        )

    return _make_sensor(
        name=name,
        rule=CONSECUTIVE_FAILURES,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description="Alerts when a sync fails N times in a row; resolves at its next success.",
    )


def make_stuck_runs_sensor(
    *,
    name: str = "sync_stuck_runs_sensor",
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that reaps and alerts on syncs that are stuck or whose Dagster run has ended.

    A sync marked running is *orphaned* when its Dagster run is finished (success, failure,
    canceled) or unknown to the instance, whatever its age; it is *timed out* when it has run
    longer than ``stuck_after_minutes``. Either way it is marked failed (``ORPHANED`` or
    ``TIMED_OUT``, with a history row; the watermark stays) and alerted. If its process was
    only slow, its own finish is refused later with ``SyncNotRunningError``. The alert resolves
    when the resource's next sync starts.

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` to post through.
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        # Running syncs, and failed ones that may have been reaped (see _reaped_finding).
        states = store.list_states(status=("running", "failed"))
        resources = store.list_resources()
        running = [s for s in states if s.last_sync_status == "running"]
        ended = _ended_run_ids(context.instance, running)
        findings, lost, reaped = [], set(), []
        for finding in check_stuck_runs(states, policy, now, ended_run_ids=ended):
            after = _reap(store, finding, now)
            if after is None:  # finished, or reaped by a racing tick, since we read it
                lost.add(finding.resource)
                continue
            findings.append(after)
            if "error_code" in after.details:
                reaped.append(f"{after.resource} {after.details['error_code']}")
        # Syncs reaped on an earlier tick stay stuck until the resource's next sync starts: the
        # alert stays open, and is opened now if that tick died before recording it.
        findings += [f for s in states if (f := _reaped_finding(s, policy)) is not None]
        return _Judgement(
            findings=findings,
            checked=set(resources) - lost,
            done=f"reaped {len(reaped)} ({', '.join(reaped)})" if reaped else None,
            resources=len(resources),
            nothing_found=(
                f"{len(running)} running, none stuck over its limit or left by an ended "
                f"Dagster run ({len({s.dagster_run_id for s in running} - {None})} runs "
                "looked up)"
            ),
        )

    return _make_sensor(
        name=name,
        rule=STUCK_RUN,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description=(
            "Marks syncs failed whose Dagster run has ended (ORPHANED) or that run too long "
            "(TIMED_OUT), and alerts."
        ),
    )


def make_stale_watermarks_sensor(
    *,
    name: str = "sync_stale_watermarks_sensor",
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that alerts on resources without a successful sync for ``stale_after_hours``.

    Staleness changes slowly, so the default interval is five minutes.

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` to post through.
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        shortest = min(_override_values(policy, "stale_after"))
        states = store.list_states(last_success_before=now - shortest)
        hours = policy.defaults.stale_after.total_seconds() / 3600
        return _Judgement(
            findings=check_stale_watermarks(states, policy, now),
            checked=None,
            resources=store.count_states(),
            nothing_found=f"every resource synced successfully within {hours:g} h",
        )

    return _make_sensor(
        name=name,
        rule=STALE_WATERMARK,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description="Alerts when a resource has had no successful sync for too long.",
    )


def make_slow_syncs_sensor(
    *,
    name: str = "sync_slow_syncs_sensor",
    minimum_interval_seconds: int = 120,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that warns when a resource's last successful sync was slow.

    Slow: longer than ``slow_after_minutes``, or more than ``slow_factor`` x the median of the
    resource's recent successful runs (read with one bounded query per tick).

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` to post through.
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        window = max(DEFAULT_DURATION_WINDOW, *_override_values(policy, "slow_min_samples"))
        factors = [f for f in _override_values(policy, "slow_factor") if f is not None]
        candidates = slow_sync_candidates(
            store,
            limit=window,
            slow_after_ms=min(_override_values(policy, "slow_after")).total_seconds() * 1000,
            slow_factor=min(factors, default=None),
            min_samples=min(_override_values(policy, "slow_min_samples")),
        )
        minutes = policy.defaults.slow_after.total_seconds() / 60
        return _Judgement(
            findings=check_slow_syncs(
                candidates.states, policy, now, recent_durations_ms=candidates.values
            ),
            checked=None,
            resources=store.count_states(),
            nothing_found=(
                f"no last sync over {minutes:g} min or over its slow factor x the median of "
                "recent runs"
            ),
        )

    return _make_sensor(
        name=name,
        rule=SLOW_SYNC,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description="Warns when a resource's last sync was much slower than usual or too slow.",
    )


def make_volume_anomalies_sensor(
    *,
    name: str = "sync_volume_anomalies_sensor",
    minimum_interval_seconds: int = 120,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that warns when a sync processed an unusual number of records (seed 004).

    Unusual: outside mean +/- ``volume_sigma`` standard deviations of the previous successful
    runs (30 by default, at least 10), read with one bounded query per tick.

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` to post through.
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        windows = set(_override_values(policy, "volume_window"))
        candidates = volume_anomaly_candidates(
            store,
            limit=1 + max(windows),  # the latest run plus the window of runs before it
            # The band in SQL is over the largest window: a filter only when all are equal.
            sigma=min(_override_values(policy, "volume_sigma")) if len(windows) == 1 else None,
            min_samples=min(_override_values(policy, "volume_min_samples")),
        )
        return _Judgement(
            findings=check_volume_anomalies(
                candidates.states, policy, now, recent_volumes=candidates.values
            ),
            checked=None,
            resources=store.count_states(),
            nothing_found=(
                f"no record count outside mean +/- {policy.defaults.volume_sigma:g} sigma of "
                "recent runs"
            ),
        )

    return _make_sensor(
        name=name,
        rule=VOLUME_ANOMALY,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description="Warns when a sync processed far more or fewer records than usual.",
    )


def make_watermark_not_moving_sensor(
    *,
    name: str = "sync_watermark_not_moving_sensor",
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that warns when syncs keep succeeding but the watermark does not move.

    "Green but not moving": ``not_moving_after_syncs`` successful syncs in a row (default 5)
    left the watermark (time or cursor) where it was, or, with ``not_moving_after_hours`` set,
    syncs kept succeeding that long without moving it. Separate from the stale rule (no
    success at all). The alert resolves when the watermark moves (a sync or a manual change).

    Args:
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from a :class:`Finding`.
        slack: a dagster-slack ``SlackResource`` to post through.
    """

    def judge(
        context: dg.SensorEvaluationContext,
        store: SyncStore,
        policy: AlertPolicy,
        now: dt.datetime,
    ) -> _Judgement:
        # The time limit needs only one green sync since the last move; the count, the fewest.
        timed = any(v is not None for v in _override_values(policy, "not_moving_after"))
        fewest = min(_override_values(policy, "not_moving_after_syncs"))
        states = store.list_states(min_syncs_since_advance=1 if timed else fewest)
        return _Judgement(
            findings=check_watermark_not_moving(states, policy, now),
            checked=None,
            resources=store.count_states(),
            nothing_found=(
                f"no watermark left in place by {policy.defaults.not_moving_after_syncs} or "
                "more successful syncs in a row"
            ),
        )

    return _make_sensor(
        name=name,
        rule=WATERMARK_NOT_MOVING,
        judge=judge,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        message_fn=message_fn,
        slack=slack,
        description="Warns when syncs keep succeeding but the watermark does not move.",
    )


def _make_sensor(
    *,
    name: str,
    rule: str,
    judge: _Judge,
    minimum_interval_seconds: int,
    default_status: dg.DefaultSensorStatus,
    message_fn: MessageFn | None,
    slack: Any,
    description: str,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=description,
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        sync_tracker: SyncTracker,
        sync_alerting: SyncAlerting,
    ) -> dg.SkipReason:
        now = utcnow()
        # Configuration errors surface before anything is written.
        policy = sync_alerting.policy()
        sinks = sync_alerting.sinks(
            context.log, slack_client=slack.get_client() if slack is not None else None
        )
        store = sync_tracker.store
        # All the tick's database calls together end inside Dagster's sensor timeout.
        with store.db.deadline(TICK_STORAGE_SECONDS):
            judgement = judge(context, store, policy, now)
            findings = judgement.findings
            if message_fn is not None:
                findings = [dataclasses.replace(f, message=message_fn(f)) for f in findings]
            alerts = AlertStore(store)
            tick = record_findings(alerts, rule, findings, now=now, checked=judgement.checked)
            # Only this rule's notifications: they go through this sensor's sinks (slack=).
            report = deliver_pending(
                alerts, sinks, now=now, renotify_after=sync_alerting.renotify_after, rules=[rule]
            )
        for notification, error in report.failed:
            context.log.warning(
                f"sync_observability: {notification.kind} notification of alert "
                f"{notification.alert.fingerprint} not delivered, retrying next tick: {error}"
            )
        summary = _summary(judgement, findings, tick, report)
        if report.delivered or report.failed or tick.opened or tick.resolved:
            context.log.info(f"sync_observability: {summary}")
        return dg.SkipReason(summary)

    return _sensor


def _summary(
    judgement: _Judgement, findings: Sequence[Finding], tick: TickResult, report: DeliveryReport
) -> str:
    checked = f"checked {judgement.resources} resource{_s(judgement.resources)}"
    if findings:
        names = ", ".join(f.resource for f in findings[:5])
        more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
        found = f"{len(findings)} alerting ({names}{more})"
    else:
        found = judgement.nothing_found
    if judgement.done:
        found += f"; {judgement.done}"
    changes = []
    if tick.opened:
        changes.append(f"{len(tick.opened)} opened")
    if tick.resolved:
        changes.append(f"{len(tick.resolved)} resolved")
    if changes:
        found += f"; alerts {', '.join(changes)}"
    sent = len(report.delivered)
    if not report.delivered and not report.failed:
        delivery = "0 notifications pending"
    else:
        kinds = ", ".join(f"{n.kind} {n.alert.resource}" for n in report.delivered[:5]) or "nothing"
        delivery = f"sent {sent} notification{_s(sent)} ({kinds})"
        if report.failed:
            delivery += f"; {len(report.failed)} failed, retried next tick"
        if report.out_of_time:
            delivery += "; out of time, the rest goes next tick"
    return f"{checked}: {found}; {delivery}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _override_values(policy: AlertPolicy, field: str) -> list[Any]:
    """A Thresholds field's default and every override of it: the loosest sizes a read."""
    values = [getattr(policy.defaults, field)]
    values += [fields[field] for fields in policy.overrides.values() if field in fields]
    return values


def _ended_run_ids(instance: dg.DagsterInstance, running: Sequence[SyncState]) -> set[str]:
    """Run ids of running syncs whose Dagster run is finished or unknown to this instance.

    One run-storage query per tick, however many syncs are running.
    """
    run_ids = sorted({s.dagster_run_id for s in running if s.dagster_run_id})
    if not run_ids:
        return set()
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    in_progress = {r.dagster_run.run_id for r in records if not r.dagster_run.is_finished}
    return set(run_ids) - in_progress


def _reap(store: SyncStore, finding: Finding, now: dt.datetime) -> Finding | None:
    """Mark the stuck sync failed; the finding to alert on, None if it finished meanwhile."""
    if finding.sync_id is None:
        return finding
    orphaned = finding.details.get("reason") == "orphaned"
    code = ORPHANED if orphaned else TIMED_OUT
    reaped = store.reap_sync(finding.sync_id, code=code, message=finding.message, now=now)
    if not reaped:
        return None
    return dataclasses.replace(
        finding,
        message=f"{finding.message}; marked failed ({code}), watermark unchanged",
        details={**finding.details, "error_code": code, "reaped_at": now.isoformat()},
    )


def _was_reaped(state: SyncState) -> bool:
    """Whether the resource's last sync was reaped and nothing has run since.

    Reaping clears the stuck condition at once, but announcing "resolved" on the next tick for a
    sync that never finished would mislead: such a resource stays stuck (see
    :func:`_reaped_finding`) until its next sync starts.
    """
    if state.last_sync_status != "failed" or not state.errors:
        return False
    return state.errors[-1].get("code") in (ORPHANED, TIMED_OUT)


def _reaped_finding(state: SyncState, policy: AlertPolicy) -> Finding | None:
    """The stuck-run finding of a reaped sync, rebuilt from the state reaping left.

    It equals the finding the reaping tick recorded (:func:`_reap` keeps the rule's message in
    the error), so later ticks refresh the open alert unchanged, and a tick that died between
    reaping and recording has its alert opened by the next one. None unless the resource's
    last sync was reaped (and it is not muted).
    """
    limits = policy.for_resource(state.resource)
    if limits.muted or not _was_reaped(state):
        return None
    error = state.errors[-1]
    code = error["code"]
    stamp = error.get("timestamp")
    try:
        reaped_at = dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        reaped_at = None
    if reaped_at is None or reaped_at.tzinfo is None:
        reaped_at = state.completed_at
    started = state.started_at
    running = None if started is None or reaped_at is None else reaped_at - started
    return Finding(
        rule=STUCK_RUN,
        resource=state.resource,
        severity=CRITICAL,
        message=f"{error.get('message') or code}; marked failed ({code}), watermark unchanged",
        since=started,
        details={
            "reason": "orphaned" if code == ORPHANED else "timed_out",
            "started_at": None if started is None else started.isoformat(),
            "running_seconds": None if running is None else running.total_seconds(),
            "stuck_after_seconds": limits.stuck_after.total_seconds(),
            "error_code": code,
            "reaped_at": stamp if isinstance(stamp, str) else _iso_or_none(reaped_at),
        },
        sync_id=state.current_sync_id,
        dagster_run_id=state.dagster_run_id,
    )


def _iso_or_none(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


sync_consecutive_failures_sensor = make_consecutive_failures_sensor()
sync_stuck_runs_sensor = make_stuck_runs_sensor()
sync_stale_watermarks_sensor = make_stale_watermarks_sensor()
sync_slow_syncs_sensor = make_slow_syncs_sensor()
sync_volume_anomalies_sensor = make_volume_anomalies_sensor()
sync_watermark_not_moving_sensor = make_watermark_not_moving_sensor()

SYNC_SENSORS: tuple[dg.SensorDefinition, ...] = (
    sync_consecutive_failures_sensor,
    sync_stuck_runs_sensor,
    sync_stale_watermarks_sensor,
    sync_slow_syncs_sensor,
    sync_volume_anomalies_sensor,
    sync_watermark_not_moving_sensor,
)

__all__ = [
    "SYNC_SENSORS",
    "TIMED_OUT",
    "MessageFn",
    "make_consecutive_failures_sensor",
    "make_slow_syncs_sensor",
    "make_stale_watermarks_sensor",
    "make_stuck_runs_sensor",
    "make_volume_anomalies_sensor",
    "make_watermark_not_moving_sensor",
    "sync_consecutive_failures_sensor",
    "sync_slow_syncs_sensor",
    "sync_stale_watermarks_sensor",
    "sync_stuck_runs_sensor",
    "sync_volume_anomalies_sensor",
    "sync_watermark_not_moving_sensor",
]
