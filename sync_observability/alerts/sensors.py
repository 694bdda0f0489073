"""Dagster sensors that judge every resource's sync state, record alerts and deliver them.

Each sensor reads the ``sync_state`` rows its rule could flag (filtered in SQL with the loosest
threshold over the defaults and overrides; for the slow and volume rules, with the median or
mean and deviation of a bounded slice of recent history computed in the same query) through the
``sync_tracker`` resource, applies one rule from
:mod:`sync_observability.alerts.rules` with the thresholds of the ``sync_alerting`` resource,
records the findings in ``sync_alerts`` (one open alert per rule and resource) and delivers what
is due: new alerts, reminders, resolutions, and anything a sink failed to take on an earlier
tick. Sensors launch no runs, so Dagster lists every tick as skipped ("0 runs requested"): the
tick's skip message, shown on hover and in the tick's details, starts with what it changed
(``alerts: 1 opened (orders)``) and such a tick also writes it to the tick's log.

The stuck-run sensor also *reaps* (:mod:`sync_observability.alerts.reaping`): a sync still
marked running whose Dagster run has ended (looked up in the instance's run storage, one query
per tick) or that has run past its limit is marked failed (``ORPHANED`` or ``TIMED_OUT``); the
watermark never moves. Its stuck-run alert stays open until the resource's next sync starts.

The six factories are built from one table, :data:`_RULE_SENSORS` (rule, sensor name, interval,
what it reads), and share dagster-slack's shape (``make_slack_on_run_failure_sensor``): a
``name``, ``minimum_interval_seconds``, ``default_status``, a pluggable ``message_fn`` and a
``slack`` resource.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameters' annotations.
import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg

from sync_observability.alerts.check_reports import check_evaluations
from sync_observability.alerts.expected import definition_stale_limits, with_definition_limits
from sync_observability.alerts.lifecycle import (
    DeliveryReport,
    TickResult,
    deliver_pending,
    record_findings,
)
from sync_observability.alerts.reaping import ended_run_ids, reap_stuck, reaped_finding
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
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
from sync_observability.clock import utcnow
from sync_observability.tracking import SyncTracker

# The storage modules, and SQLAlchemy with them, load when a tick runs, not with the definitions.
if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore
else:
    SyncStore = "SyncStore"  # a forward reference in the annotations below

_HEALTH_RULES = (CONSECUTIVE_FAILURES, STALE_WATERMARK)
"""The rules the ``sync_health`` check judges: their sensors report its result (check_reports)."""
TICK_STORAGE_SECONDS = 45.0
"""The database time of one tick, all calls together: inside Dagster's 60 s sensor timeout."""
MessageFn = Callable[[Finding], str]
"""Builds the one-line alert message from a finding (default: the rule's own message)."""
_LISTED = 5  # resources named in a tick's message before "and N more"


@dataclasses.dataclass(frozen=True)
class _Judgement:
    """What a rule found on one tick, and how to say that it found nothing."""

    findings: list[Finding]
    checked: Collection[str] | None
    resources: int
    nothing_found: str
    done: str | None = None  # what the tick did besides alerting (the stuck sensor reaps)


_Judge = Callable[[dg.SensorEvaluationContext, SyncStore, AlertPolicy, dt.datetime], _Judgement]


def _judged_all(store: SyncStore, findings: list[Finding], nothing_found: str) -> _Judgement:
    """A judgement of every resource: those the rule's read left out cannot be flagged."""
    return _Judgement(
        findings=findings,
        checked=None,
        resources=store.count_states(),
        nothing_found=nothing_found,
    )


# -- what each rule reads and finds ------------------------------------------------------------


def _consecutive_failures(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    # Only the rows the loosest threshold could flag; the rule applies each resource's own.
    states = store.list_states(
        min_consecutive_failures=min(_override_values(policy, "consecutive_failures"))
    )
    nothing = f"no resource at or over {policy.defaults.consecutive_failures} consecutive failures"
    return _judged_all(store, check_consecutive_failures(states, policy, now), nothing)


def _stuck_runs(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    # Running syncs, and failed ones that may have been reaped (see reaping.reaped_finding).
    states = store.list_states(status=("running", "failed"))
    resources = store.list_resources()
    running = [s for s in states if s.last_sync_status == "running"]
    ended = ended_run_ids(context.instance, running)
    findings, lost, reaped = [], set(), []
    for finding in check_stuck_runs(states, policy, now, ended_run_ids=ended):
        after = reap_stuck(store, finding, now)
        if after is None:  # finished, or reaped by a racing tick, since we read it
            lost.add(finding.resource)
            continue
        findings.append(after)
        if "error_code" in after.details:
            reaped.append(f"{after.resource} {after.details['error_code']}")
    # Syncs reaped on an earlier tick stay stuck until the resource's next sync starts: the
    # alert stays open, and is opened now if that tick died before recording it.
    findings += [f for s in states if (f := reaped_finding(s, policy)) is not None]
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


def _stale_watermarks(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    shortest = min(_override_values(policy, "stale_after"))
    states = store.list_states(last_success_before=now - shortest)
    hours = policy.defaults.stale_after.total_seconds() / 3600
    nothing = f"every resource synced successfully within {hours:g} h"
    return _judged_all(store, check_stale_watermarks(states, policy, now), nothing)


def _slow_syncs(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    from sync_observability.storage.history_stats import (
        DEFAULT_DURATION_WINDOW,
        slow_sync_candidates,
    )

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
    nothing = (
        f"no last sync over {minutes:g} min or over its slow factor x the median of recent runs"
    )
    found = check_slow_syncs(candidates.states, policy, now, recent_durations_ms=candidates.values)
    return _judged_all(store, found, nothing)


def _volume_anomalies(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    from sync_observability.storage.history_stats import volume_anomaly_candidates

    windows = set(_override_values(policy, "volume_window"))
    candidates = volume_anomaly_candidates(
        store,
        limit=1 + max(windows),  # the latest run plus the window of runs before it
        # The band in SQL is over the largest window: a filter only when all are equal.
        sigma=min(_override_values(policy, "volume_sigma")) if len(windows) == 1 else None,
        min_samples=min(_override_values(policy, "volume_min_samples")),
    )
    sigma = policy.defaults.volume_sigma
    nothing = f"no record count outside mean +/- {sigma:g} sigma of recent runs"
    found = check_volume_anomalies(candidates.states, policy, now, recent_volumes=candidates.values)
    return _judged_all(store, found, nothing)


def _watermark_not_moving(
    context: dg.SensorEvaluationContext, store: SyncStore, policy: AlertPolicy, now: dt.datetime
) -> _Judgement:
    # The time limit needs only one green sync since the last move; the count, the fewest.
    timed = any(v is not None for v in _override_values(policy, "not_moving_after"))
    fewest = min(_override_values(policy, "not_moving_after_syncs"))
    states = store.list_states(min_syncs_since_advance=1 if timed else fewest)
    syncs = policy.defaults.not_moving_after_syncs
    nothing = f"no watermark left in place by {syncs} or more successful syncs in a row"
    return _judged_all(store, check_watermark_not_moving(states, policy, now), nothing)


# -- the table the factories are built from ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _RuleSensor:
    """One alert sensor: its rule, default name and interval, what it reads, how it is described.

    ``summary`` opens the factory's docstring; ``description`` is the sensor's in the UI.
    """

    rule: str
    name: str
    minimum_interval_seconds: int
    judge: _Judge
    summary: str
    description: str


_RULE_SENSORS = {
    spec.rule: spec
    for spec in (
        _RuleSensor(
            rule=CONSECUTIVE_FAILURES,
            name="sync_consecutive_failures_sensor",
            minimum_interval_seconds=60,
            judge=_consecutive_failures,
            summary=(
                "A sensor that alerts on resources that failed ``consecutive_failures_threshold`` "
                "times.\n\nThe alert resolves (and the resolution is announced) at the "
                "resource's next success."
            ),
            description="Alerts when a sync fails N times in a row; resolves at its next success.",
        ),
        _RuleSensor(
            rule=STUCK_RUN,
            name="sync_stuck_runs_sensor",
            minimum_interval_seconds=60,
            judge=_stuck_runs,
            summary=(
                "A sensor that reaps and alerts on syncs that are stuck or whose Dagster run has "
                "ended.\n\nA sync marked running is *orphaned* when its Dagster run is finished "
                "(success, failure, canceled) or unknown to the instance, whatever its age; it "
                "is *timed out* when it has run longer than ``stuck_after_minutes``. Either way "
                "it is marked failed (``ORPHANED`` or ``TIMED_OUT``, with a history row; the "
                "watermark stays) and alerted. If its process was only slow, its own finish is "
                "refused later with ``SyncNotRunningError``. The alert resolves when the "
                "resource's next sync starts."
            ),
            description=(
                "Marks syncs failed whose Dagster run has ended (ORPHANED) or that run too long "
                "(TIMED_OUT), and alerts."
            ),
        ),
        _RuleSensor(
            rule=STALE_WATERMARK,
            name="sync_stale_watermarks_sensor",
            minimum_interval_seconds=300,
            judge=_stale_watermarks,
            summary=(
                "A sensor that alerts on resources without a successful sync for "
                "``stale_after_hours``.\n\nStaleness changes slowly, so the default interval is "
                "five minutes."
            ),
            description="Alerts when a resource has had no successful sync for too long.",
        ),
        _RuleSensor(
            rule=SLOW_SYNC,
            name="sync_slow_syncs_sensor",
            minimum_interval_seconds=120,
            judge=_slow_syncs,
            summary=(
                "A sensor that warns when a resource's last successful sync was slow.\n\nSlow: "
                "longer than ``slow_after_minutes``, or more than ``slow_factor`` x the median of "
                "the resource's recent successful runs (read with one bounded query per tick)."
            ),
            description=(
                "Warns when a resource's last sync was much slower than usual or too slow."
            ),
        ),
        _RuleSensor(
            rule=VOLUME_ANOMALY,
            name="sync_volume_anomalies_sensor",
            minimum_interval_seconds=120,
            judge=_volume_anomalies,
            summary=(
                "A sensor that warns when a sync processed an unusual number of records (seed "
                "004's 2-sigma rule, docs/seeds.md).\n\nUnusual: outside mean +/- "
                "``volume_sigma`` standard deviations of the previous successful runs (30 by "
                "default, at least 10), read with one bounded query per tick."
            ),
            description="Warns when a sync processed far more or fewer records than usual.",
        ),
        _RuleSensor(
            rule=WATERMARK_NOT_MOVING,
            name="sync_watermark_not_moving_sensor",
            minimum_interval_seconds=300,
            judge=_watermark_not_moving,
            summary=(
                "A sensor that warns when syncs keep succeeding but the watermark does not "
                'move.\n\n"Green but not moving": ``not_moving_after_syncs`` successful syncs in '
                "a row (default 5) left the watermark (time or cursor) where it was, or, with "
                "``not_moving_after_hours`` set, syncs kept succeeding that long without moving "
                "it. Separate from the stale rule (no success at all). The alert resolves when "
                "the watermark moves (a sync or a manual change)."
            ),
            description="Warns when syncs keep succeeding but the watermark does not move.",
        ),
    )
}

_FACTORY_DOC = """

Args:
    name: the sensor's name (default ``{name}``).
    minimum_interval_seconds: the least time between two ticks (default {interval}).
    default_status: whether the sensor runs without being turned on in the UI.
    message_fn: builds the alert message from a :class:`~sync_observability.alerts.rules.Finding`
        (default: the rule's own message).
    slack: a dagster-slack ``SlackResource`` (anything with ``get_client()``) to post
        through, to ``SyncAlerting.slack_channel``.

Returns:
    The sensor. It needs the ``sync_tracker`` and ``sync_alerting`` resources.

Examples:
    .. code-block:: python

        defs = dg.Definitions(
            sensors=[
                {factory}(message_fn=lambda f: f"[{{f.severity}}] {{f.message}}"),
            ],
            resources={{"sync_tracker": SyncTracker(), "sync_alerting": SyncAlerting()}},
        )
"""


class SensorFactory(Protocol):
    """The shape every ``make_*_sensor`` factory shares (dagster-slack's)."""

    def __call__(
        self,
        *,
        name: str = ...,
        minimum_interval_seconds: int = ...,
        default_status: dg.DefaultSensorStatus = ...,
        message_fn: MessageFn | None = None,
        slack: Any = None,
    ) -> dg.SensorDefinition: ...


def _factory(rule: str) -> SensorFactory:
    """The ``make_*_sensor`` function of ``rule``'s row in :data:`_RULE_SENSORS`."""
    spec = _RULE_SENSORS[rule]

    def make(
        *,
        name: str = spec.name,
        minimum_interval_seconds: int = spec.minimum_interval_seconds,
        default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
        message_fn: MessageFn | None = None,
        slack: Any = None,
    ) -> dg.SensorDefinition:
        return _make_sensor(
            spec,
            name=name,
            minimum_interval_seconds=minimum_interval_seconds,
            default_status=default_status,
            message_fn=message_fn,
            slack=slack,
        )

    make.__name__ = make.__qualname__ = f"make_{spec.name.removeprefix('sync_')}"
    make.__doc__ = spec.summary + _FACTORY_DOC.format(
        name=spec.name, interval=spec.minimum_interval_seconds, factory=make.__name__
    )
    return make


def _make_sensor(
    spec: _RuleSensor,
    *,
    name: str,
    minimum_interval_seconds: int,
    default_status: dg.DefaultSensorStatus,
    message_fn: MessageFn | None,
    slack: Any,
) -> dg.SensorDefinition:
    rule = spec.rule

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=spec.description,
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        sync_tracker: SyncTracker,
        sync_alerting: SyncAlerting,
    ) -> dg.SkipReason | dg.SensorResult:
        from sync_observability.storage.alert_store import AlertStore

        now = utcnow()
        # Configuration errors surface before anything is written.
        policy = sync_alerting.policy()
        health = rule in _HEALTH_RULES and context.repository_def is not None
        if health:
            # Where the policy sets no stale limit, an asset's freshness policy or cron does.
            limits = definition_stale_limits(context.repository_def, now)
            policy = with_definition_limits(policy, limits)
        sinks = sync_alerting.sinks(
            context.log, slack_client=slack.get_client() if slack is not None else None
        )
        store = sync_tracker.store
        # All the tick's database calls together end inside Dagster's sensor timeout.
        with store.db.deadline(TICK_STORAGE_SECONDS):
            judgement = spec.judge(context, store, policy, now)
            findings = judgement.findings
            if message_fn is not None:
                findings = [dataclasses.replace(f, message=message_fn(f)) for f in findings]
            alerts = AlertStore(store)
            tick = record_findings(alerts, rule, findings, now=now, checked=judgement.checked)
            # Only this rule's notifications: they go through this sensor's sinks (slack=).
            report = deliver_pending(
                alerts, sinks, now=now, renotify_after=sync_alerting.renotify_after, rules=[rule]
            )
            changed = [a.resource for a in (*tick.opened, *tick.resolved)]
            checks = (
                check_evaluations(context.repository_def, store, changed, policy, now)
                if health and changed
                else []
            )
        for notification, error in report.failed:
            context.log.warning(
                f"sync_observability: {notification.kind} notification of alert "
                f"{notification.alert.fingerprint} not delivered, retrying next tick: {error}"
            )
        summary = _summary(judgement, findings, tick, report)
        # Every tick without a run request is listed as skipped, "0 runs requested": a tick
        # that changed something also writes it to the tick's log, which the UI links to.
        if report.delivered or report.failed or tick.opened or tick.resolved:
            context.log.info(f"sync_observability: {summary}")
        if checks:  # the sync_health checks of the assets whose alert opened or resolved
            return dg.SensorResult(skip_reason=dg.SkipReason(summary), asset_events=checks)
        return dg.SkipReason(summary)

    return _sensor


def _summary(
    judgement: _Judgement, findings: Sequence[Finding], tick: TickResult, report: DeliveryReport
) -> str:
    """The tick's skip message: what changed first (when anything did), then what was checked."""
    checked = f"checked {judgement.resources} resource{_s(judgement.resources)}"
    if findings:
        found = f"{len(findings)} alerting ({_names([f.resource for f in findings])})"
    else:
        found = judgement.nothing_found
    if judgement.done:
        found += f"; {judgement.done}"
    changes = []
    if tick.opened:
        changes.append(f"{len(tick.opened)} opened ({_names([a.resource for a in tick.opened])})")
    if tick.resolved:
        resolved = _names([a.resource for a in tick.resolved])
        changes.append(f"{len(tick.resolved)} resolved ({resolved})")
    sent = len(report.delivered)
    if not report.delivered and not report.failed:
        delivery = "0 notifications pending"
    else:
        kinds = ", ".join(f"{n.kind} {n.alert.resource}" for n in report.delivered[:_LISTED])
        delivery = f"sent {sent} notification{_s(sent)} ({kinds or 'nothing'})"
        if report.failed:
            delivery += f"; {len(report.failed)} failed, retried next tick"
        if report.out_of_time:
            delivery += "; out of time, the rest goes next tick"
    lead = f"alerts: {', '.join(changes)}; " if changes else ""
    return f"{lead}{checked}: {found}; {delivery}"


def _names(resources: Sequence[str]) -> str:
    more = f" and {len(resources) - _LISTED} more" if len(resources) > _LISTED else ""
    return ", ".join(resources[:_LISTED]) + more


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _override_values(policy: AlertPolicy, field: str) -> list[Any]:
    """A Thresholds field's default and every override of it: the loosest sizes a read."""
    values = [getattr(policy.defaults, field)]
    values += [fields[field] for fields in policy.overrides.values() if field in fields]
    return values


make_consecutive_failures_sensor = _factory(CONSECUTIVE_FAILURES)
make_stuck_runs_sensor = _factory(STUCK_RUN)
make_stale_watermarks_sensor = _factory(STALE_WATERMARK)
make_slow_syncs_sensor = _factory(SLOW_SYNC)
make_volume_anomalies_sensor = _factory(VOLUME_ANOMALY)
make_watermark_not_moving_sensor = _factory(WATERMARK_NOT_MOVING)

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
"""The six alert sensors with their default names and intervals, one per rule."""

__all__ = [
    "SYNC_SENSORS",
    "MessageFn",
    "SensorFactory",
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
