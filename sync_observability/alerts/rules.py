"""Alert rules: pure functions from ``sync_state`` rows, ``now`` and thresholds to findings.

No SQL and no Dagster here. Each ``check_*`` function takes the states to judge, an
:class:`AlertPolicy` and ``now`` (plus the history figures its rule needs, read by the caller)
and returns one :class:`Finding` per resource whose condition holds, sorted by resource. Muted
resources never produce findings.

Decisions where the requirements were silent:

- Every "longer than" / "more than" is strict, as in seed 001's SQL (docs/seeds.md: ``started_at <
  now() - interval '30 minutes'``): a sync running exactly ``stuck_after`` is not stuck, one second
  more is. The same holds for ``stale_after``, ``slow_after``, ``slow_factor`` and the volume band.
- Times in the future (clock skew between workers) never make a finding on their own: a sync
  that "started" in the future is not stuck, a success in the future is not stale.
- ``Finding.since`` is the moment the finding is about: the latest failure (consecutive
  failures), the start of the run (stuck), the last success or, for a resource that never
  succeeded, its creation (stale), the end of the judged run (slow sync, volume anomaly).
- The volume band uses the sample standard deviation (PostgreSQL's ``STDDEV``, seed 004). When
  every previous run processed the same count the deviation is zero and any other count is an
  anomaly; its z-score is then reported as ``None`` (infinity is not JSON).

Examples:
    .. code-block:: python

        policy = AlertPolicy(
            defaults=Thresholds(consecutive_failures=3),
            overrides={"vantage/*": {"stale_after": timedelta(hours=48)}},
            muted=["sandbox/*"],
        )
        findings = check_consecutive_failures(store.list_states(), policy, now)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
import types
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from sync_observability.errors import InvalidInputError
from sync_observability.storage.records import SyncState
from sync_observability.validation import check_aware

CONSECUTIVE_FAILURES = "consecutive_failures"
STUCK_RUN = "stuck_run"
STALE_WATERMARK = "stale_watermark"
SLOW_SYNC = "slow_sync"
VOLUME_ANOMALY = "volume_anomaly"
WATERMARK_NOT_MOVING = "watermark_not_moving"
SCHEMA_CHANGE = "schema_change"  # from ddl_events, not sync_state: alerts/schema_changes.py
RULES = (
    CONSECUTIVE_FAILURES,
    STUCK_RUN,
    STALE_WATERMARK,
    SLOW_SYNC,
    VOLUME_ANOMALY,
    WATERMARK_NOT_MOVING,
    SCHEMA_CHANGE,
)

CRITICAL = "critical"
WARNING = "warning"

_LAST_ERROR_LIMIT = 1000
_MESSAGE_ERROR_LIMIT = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class Thresholds:
    """The limits the rules apply to one resource; every value is checked on construction.

    Args:
        consecutive_failures: failures in a row that make a critical finding (``>=``).
        stuck_after: a sync running longer than this is stuck.
        stale_after: a resource without a successful sync for longer than this is stale.
        slow_after: a successful run that took longer than this is slow.
        slow_factor: a successful run is also slow when it took more than this many times the
            median of the resource's recent runs; None turns this comparison off.
        slow_min_samples: recent runs needed before ``slow_factor`` applies.
        volume_sigma: records processed outside mean +/- this many standard deviations of the
            previous successful runs is an anomaly.
        volume_window: how many previous successful runs make the volume baseline.
        volume_min_samples: previous runs needed before the volume rule applies (at least 2).
        not_moving_after_syncs: successful syncs in a row that left the watermark where it was
            before a "not moving" warning (``>=``).
        not_moving_after: also warn when syncs kept succeeding for longer than this without
            moving the watermark; None turns this comparison off.
        muted: no findings at all for this resource.

    Raises:
        InvalidInputError: a value of the wrong type, not positive, or
            ``volume_min_samples > volume_window``.
    """

    consecutive_failures: int = 3
    stuck_after: dt.timedelta = dt.timedelta(minutes=30)
    stale_after: dt.timedelta = dt.timedelta(hours=24)
    slow_after: dt.timedelta = dt.timedelta(minutes=5)
    slow_factor: float | None = 3.0
    slow_min_samples: int = 5
    volume_sigma: float = 2.0
    volume_window: int = 30
    volume_min_samples: int = 10
    not_moving_after_syncs: int = 5
    not_moving_after: dt.timedelta | None = None
    muted: bool = False

    def __post_init__(self) -> None:
        _check_int("consecutive_failures", self.consecutive_failures, minimum=1)
        for name in ("stuck_after", "stale_after", "slow_after"):
            value = getattr(self, name)
            if not isinstance(value, dt.timedelta):
                raise InvalidInputError(name, value, "must be a datetime.timedelta")
            if value <= dt.timedelta(0):
                raise InvalidInputError(name, value, "must be positive")
        if self.slow_factor is not None:
            _check_positive_number("slow_factor", self.slow_factor)
        _check_int("slow_min_samples", self.slow_min_samples, minimum=1)
        _check_positive_number("volume_sigma", self.volume_sigma)
        _check_int("volume_window", self.volume_window, minimum=2)
        _check_int("volume_min_samples", self.volume_min_samples, minimum=2)
        if self.volume_min_samples > self.volume_window:
            raise InvalidInputError(
                "volume_min_samples",
                self.volume_min_samples,
                f"must not exceed volume_window ({self.volume_window}), or the rule never fires",
            )
        _check_int("not_moving_after_syncs", self.not_moving_after_syncs, minimum=1)
        if self.not_moving_after is not None:
            if not isinstance(self.not_moving_after, dt.timedelta):
                raise InvalidInputError(
                    "not_moving_after", self.not_moving_after, "must be a datetime.timedelta"
                )
            if self.not_moving_after <= dt.timedelta(0):
                raise InvalidInputError(
                    "not_moving_after", self.not_moving_after, "must be positive"
                )
        if not isinstance(self.muted, bool):
            raise InvalidInputError("muted", self.muted, "must be a bool")


_THRESHOLD_FIELDS = tuple(f.name for f in dataclasses.fields(Thresholds))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertPolicy:
    """Global thresholds, per-resource overrides and muted resources.

    An override key is a resource name or an ``fnmatch`` pattern (``vantage/*``). Every key that
    matches a resource applies, the most specific last, so that on a conflicting field the
    exact name beats any pattern and a longer pattern beats a shorter one (equal lengths: the
    alphabetically later pattern wins, so the result never depends on dict order). A resource
    matching an entry of ``muted`` (a name or a pattern) is muted whatever its overrides say.

    Args:
        defaults: the thresholds of every resource no override names.
        overrides: key -> ``{Thresholds field: value}``.
        muted: resource names or patterns that produce no findings.

    Raises:
        InvalidInputError: an override names an unknown field or gives an invalid value
            (checked here, at construction, not at the first tick).

    Examples:
        .. code-block:: python

            policy = AlertPolicy(
                overrides={
                    "vantage/*": {"stale_after": timedelta(hours=48)},
                    "vantage/accounts": {"consecutive_failures": 5},
                },
                muted=["sandbox/*"],
            )
            policy.for_resource("vantage/accounts")  # 48 h stale limit and 5 failures
    """

    defaults: Thresholds = dataclasses.field(default_factory=Thresholds)
    overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    muted: Sequence[str] = ()
    _patterns: tuple[tuple[str, Mapping[str, Any]], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.defaults, Thresholds):
            raise InvalidInputError("defaults", self.defaults, "must be a Thresholds")
        if not isinstance(self.overrides, Mapping):
            raise InvalidInputError("overrides", self.overrides, "must be a mapping")
        if isinstance(self.muted, str) or not all(isinstance(m, str) for m in self.muted):
            raise InvalidInputError(
                "muted", self.muted, "must be a sequence of resource names or patterns"
            )
        overrides: dict[str, Mapping[str, Any]] = {}
        for key, fields in self.overrides.items():
            if not isinstance(key, str) or not key:
                raise InvalidInputError("overrides", key, "keys must be non-empty strings")
            if not isinstance(fields, Mapping):
                raise InvalidInputError(f"overrides[{key!r}]", fields, "must be a mapping")
            for name, value in fields.items():
                if name not in _THRESHOLD_FIELDS:
                    raise InvalidInputError(
                        name,
                        value,
                        f"is not a Thresholds field (in overrides[{key!r}]); "
                        f"known fields: {', '.join(_THRESHOLD_FIELDS)}",
                    )
            dataclasses.replace(self.defaults, **fields)  # validates the values now
            overrides[key] = types.MappingProxyType(dict(fields))
        object.__setattr__(self, "overrides", types.MappingProxyType(overrides))
        object.__setattr__(self, "muted", tuple(self.muted))
        patterns = sorted(
            ((k, v) for k, v in overrides.items() if _is_pattern(k)),
            key=lambda kv: (len(kv[0]), kv[0]),
        )
        object.__setattr__(self, "_patterns", tuple(patterns))

    def is_muted(self, resource: str) -> bool:
        """Whether ``resource`` is named or matched by ``muted``."""
        return any(m == resource or fnmatchcase(resource, m) for m in self.muted)

    def for_resource(self, resource: str) -> Thresholds:
        """The thresholds that apply to ``resource``: defaults, then patterns, then its name."""
        fields: dict[str, Any] = {}
        for pattern, values in self._patterns:
            if fnmatchcase(resource, pattern):
                fields.update(values)
        exact = self.overrides.get(resource)
        if exact is not None:
            fields.update(exact)
        if self.is_muted(resource):
            fields["muted"] = True
        return dataclasses.replace(self.defaults, **fields) if fields else self.defaults


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """One resource for which one rule holds now.

    Args:
        rule: one of :data:`RULES`.
        resource: the resource the finding is about.
        severity: ``critical`` or ``warning``.
        message: one readable line.
        since: when the condition began (see the module docstring for each rule).
        details: the figures behind the finding; JSON-serializable (datetimes as ISO strings).
        sync_id: the sync the finding is about, when there is one.
        dagster_run_id: the Dagster run of that sync, when known.
        last_error: the last error message, for failure findings.
    """

    rule: str
    resource: str
    severity: str
    message: str
    since: dt.datetime | None
    details: Mapping[str, Any]
    sync_id: str | None = None
    dagster_run_id: str | None = None
    last_error: str | None = None

    @property
    def fingerprint(self) -> str:
        """``rule:resource``: at most one open alert per fingerprint."""
        return f"{self.rule}:{self.resource}"


def check_consecutive_failures(
    states: Iterable[SyncState], policy: AlertPolicy, now: dt.datetime
) -> list[Finding]:
    """A critical finding per resource that failed ``consecutive_failures`` times in a row or more.

    The count is the row's ``consecutive_failures``, reset only by a success, so a resource
    retrying (running) after three failures still has its finding. ``since`` is the end of the
    latest failure (``completed_at``; while a retry runs, the last error's timestamp): the
    state row does not say when the streak began.
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        count = state.consecutive_failures
        if count < limits.consecutive_failures:
            return None
        error = state.errors[-1] if state.errors else {}
        last_error = _error_text(error)
        since = state.completed_at if state.last_sync_status == "failed" else None
        since = since or _parse_time(error.get("timestamp"))
        message = f"{state.resource} failed {count} times in a row"
        if since is not None:
            message += f", the last at {_iso(since)}"
        message += f"; last error: {_shorten(last_error)}" if last_error else "; no error recorded"
        return Finding(
            rule=CONSECUTIVE_FAILURES,
            resource=state.resource,
            severity=CRITICAL,
            message=message,
            since=since,
            details={
                "consecutive_failures": count,
                "threshold": limits.consecutive_failures,
                "last_sync_status": state.last_sync_status,
                "last_failure_at": _iso(since),
                "last_success_at": _iso(state.last_success_at),
                "error_code": error.get("code"),
            },
            sync_id=state.current_sync_id,
            dagster_run_id=state.dagster_run_id,
            last_error=last_error[:_LAST_ERROR_LIMIT] if last_error else None,
        )

    return _apply(states, policy, judge)


def check_stuck_runs(
    states: Iterable[SyncState],
    policy: AlertPolicy,
    now: dt.datetime,
    *,
    ended_run_ids: Container[str] = frozenset(),
) -> list[Finding]:
    """A critical finding per sync still marked running that is stuck.

    Reason ``orphaned``: its ``dagster_run_id`` is in ``ended_run_ids`` (the caller's list of
    runs that finished, crashed, were canceled or are unknown to the instance), whatever its
    age. Reason ``timed_out``: it has run longer than ``stuck_after`` (strictly). A start in
    the future (clock skew) is not stuck unless orphaned.
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        if state.last_sync_status != "running":
            return None
        running_for = now - state.started_at if state.started_at is not None else None
        run_id = state.dagster_run_id
        if run_id is not None and run_id in ended_run_ids:
            reason = "orphaned"
            message = (
                f"{state.resource} sync {state.current_sync_id} is marked running but its "
                f"Dagster run {run_id} is no longer in progress"
            )
        elif running_for is not None and running_for > limits.stuck_after:
            reason = "timed_out"
            message = (
                f"{state.resource} sync {state.current_sync_id} has been running for "
                f"{_human(running_for)} (limit {_human(limits.stuck_after)})"
            )
        else:
            return None
        if state.started_at is not None:
            message += f", started at {_iso(state.started_at)}"
        return Finding(
            rule=STUCK_RUN,
            resource=state.resource,
            severity=CRITICAL,
            message=message,
            since=state.started_at,
            details={
                "reason": reason,
                "started_at": _iso(state.started_at),
                "running_seconds": None if running_for is None else running_for.total_seconds(),
                "stuck_after_seconds": limits.stuck_after.total_seconds(),
            },
            sync_id=state.current_sync_id,
            dagster_run_id=run_id,
        )

    return _apply(states, policy, judge)


def check_stale_watermarks(
    states: Iterable[SyncState], policy: AlertPolicy, now: dt.datetime
) -> list[Finding]:
    """A warning per resource without a successful sync for longer than ``stale_after``.

    The last success is ``last_success_at``, else ``last_sync_time``; a resource that never
    succeeded is judged by its ``created_at`` (seed 001: never run and created over 24 hours
    ago). A sync running now does not count: the resource is judged by its last success.
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        last_success = state.last_success_at or state.last_sync_time
        reference = last_success or state.created_at
        age = now - reference
        if age <= limits.stale_after:
            return None
        if last_success is None:
            message = (
                f"{state.resource} has never synced successfully; tracked since "
                f"{_iso(reference)} ({_human(age)} ago, limit {_human(limits.stale_after)})"
            )
        else:
            message = (
                f"{state.resource} has had no successful sync for {_human(age)} "
                f"(last at {_iso(reference)}, limit {_human(limits.stale_after)})"
            )
        return Finding(
            rule=STALE_WATERMARK,
            resource=state.resource,
            severity=WARNING,
            message=message,
            since=reference,
            details={
                "last_success_at": _iso(last_success),
                "created_at": _iso(state.created_at),
                "never_succeeded": last_success is None,
                "age_seconds": age.total_seconds(),
                "stale_after_seconds": limits.stale_after.total_seconds(),
                "last_sync_status": state.last_sync_status,
            },
            sync_id=state.current_sync_id,
            dagster_run_id=state.dagster_run_id,
        )

    return _apply(states, policy, judge)


def check_slow_syncs(
    states: Iterable[SyncState],
    policy: AlertPolicy,
    now: dt.datetime,
    *,
    recent_durations_ms: Mapping[str, Sequence[int]],
) -> list[Finding]:
    """A warning per resource whose latest run succeeded but was slow.

    Slow means ``duration_ms`` over ``slow_after``, or over ``slow_factor`` x the median of
    ``recent_durations_ms[resource]`` (recent successful runs, newest first, excluding the
    latest) when there are at least ``slow_min_samples`` of them. Only a row whose
    ``last_sync_status`` is ``success`` is judged: a running or failed row has no latest
    successful duration.
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        if state.last_sync_status != "success" or state.duration_ms is None:
            return None
        duration = state.duration_ms
        limit_ms = limits.slow_after.total_seconds() * 1000
        recent = list(recent_durations_ms.get(state.resource, ()))
        median = statistics.median(recent) if recent else None
        reasons = []
        if duration > limit_ms:
            reasons.append("over_limit")
        factor_applies = limits.slow_factor is not None and len(recent) >= limits.slow_min_samples
        if factor_applies and median is not None and duration > limits.slow_factor * median:
            reasons.append("over_median")
        if not reasons:
            return None
        took = dt.timedelta(milliseconds=duration)
        parts = []
        if "over_limit" in reasons:
            parts.append(f"limit {_human(limits.slow_after)}")
        if "over_median" in reasons:
            times = f"{duration / median:.1f}x" if median else "above"
            parts.append(
                f"{times} the median {_human(dt.timedelta(milliseconds=median))} "
                f"of {len(recent)} recent runs"
            )
        return Finding(
            rule=SLOW_SYNC,
            resource=state.resource,
            severity=WARNING,
            message=f"{state.resource} last sync took {_human(took)} ({'; '.join(parts)})",
            since=state.completed_at,
            details={
                "reasons": reasons,
                "duration_ms": duration,
                "slow_after_ms": limit_ms,
                "median_ms": median,
                "slow_factor": limits.slow_factor,
                "samples": len(recent),
                "completed_at": _iso(state.completed_at),
            },
            sync_id=state.current_sync_id,
            dagster_run_id=state.dagster_run_id,
        )

    return _apply(states, policy, judge)


def check_volume_anomalies(
    states: Iterable[SyncState],
    policy: AlertPolicy,
    now: dt.datetime,
    *,
    recent_volumes: Mapping[str, Sequence[int]],
) -> list[Finding]:
    """A warning per resource whose latest successful run processed an unusual record count.

    ``recent_volumes[resource]`` is ``records_processed`` of successful runs, newest first,
    including the latest (index 0). The latest is an anomaly when strictly outside mean +/-
    ``volume_sigma`` x the sample standard deviation of the previous ``volume_window`` runs,
    given at least ``volume_min_samples`` of them (seed 004's 2-sigma rule). With a zero
    deviation any other count is an anomaly (z-score None).
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        volumes = recent_volumes.get(state.resource, ())
        if not volumes:
            return None
        latest = volumes[0]
        previous = list(volumes[1 : limits.volume_window + 1])
        if len(previous) < limits.volume_min_samples:
            return None
        mean, stdev = _mean_stdev(previous)
        low, high = mean - limits.volume_sigma * stdev, mean + limits.volume_sigma * stdev
        if low <= latest <= high:  # a zero stdev leaves only the mean itself inside
            return None
        direction = "spike" if latest > mean else "drop"
        z_score = (latest - mean) / stdev if stdev > 0 else None
        shown_z = f", z={z_score:.1f}" if z_score is not None else ", every previous run equal"
        latest_run_id = state.current_sync_id if state.last_sync_status == "success" else None
        return Finding(
            rule=VOLUME_ANOMALY,
            resource=state.resource,
            severity=WARNING,
            message=(
                f"{state.resource} processed {latest:,} records, a {direction}: the previous "
                f"{len(previous)} runs averaged {mean:,.1f} (stdev {stdev:,.1f}, band "
                f"+/-{limits.volume_sigma:g} sigma{shown_z})"
            ),
            since=state.last_success_at,
            details={
                "direction": direction,
                "records_processed": latest,
                "mean": mean,
                "stdev": stdev,
                "z_score": z_score,
                "lower_bound": low,
                "upper_bound": high,
                "sigma": limits.volume_sigma,
                "samples": len(previous),
                "last_success_at": _iso(state.last_success_at),
            },
            sync_id=latest_run_id,
            dagster_run_id=state.dagster_run_id if latest_run_id else None,
        )

    return _apply(states, policy, judge)


def check_watermark_not_moving(
    states: Iterable[SyncState], policy: AlertPolicy, now: dt.datetime
) -> list[Finding]:
    """A warning per resource whose syncs keep succeeding but leave the watermark in place.

    "Green but not moving": ``syncs_since_advance`` (successful syncs since the watermark, time
    or cursor, last changed) is at least ``not_moving_after_syncs``, or, when
    ``not_moving_after`` is set, syncs kept succeeding for longer than that since the last
    change (``last_success_at - watermark_advanced_at``). Failed syncs do not count either
    way: a resource with no success at all is the stale rule's. A manual set or rewind counts
    as a move. ``since`` is when the watermark last moved (None when unknown).
    """
    check_aware("now", now)

    def judge(state: SyncState, limits: Thresholds) -> Finding | None:
        count = state.syncs_since_advance
        moved_at = state.watermark_advanced_at
        reasons = []
        if count >= limits.not_moving_after_syncs:
            reasons.append("syncs")
        stalled_for = None
        if moved_at is not None and state.last_success_at is not None and count > 0:
            stalled_for = state.last_success_at - moved_at
        if (
            limits.not_moving_after is not None
            and stalled_for is not None
            and stalled_for > limits.not_moving_after
        ):
            reasons.append("time")
        if not reasons:
            return None
        where = (
            f"cursor {state.cursor!r}"
            if state.cursor is not None and state.last_sync_time is None
            else f"watermark {_iso(state.last_sync_time)}"
        )
        message = f"{state.resource}: {count} successful syncs in a row left the {where} unchanged"
        if moved_at is not None:
            message += f"; it last moved at {_iso(moved_at)}"
        if "time" in reasons and stalled_for is not None:
            message += f" ({_human(stalled_for)} of green syncs since)"
        return Finding(
            rule=WATERMARK_NOT_MOVING,
            resource=state.resource,
            severity=WARNING,
            message=message,
            since=moved_at,
            details={
                "reasons": reasons,
                "syncs_since_advance": count,
                "threshold_syncs": limits.not_moving_after_syncs,
                "watermark_advanced_at": _iso(moved_at),
                "not_moving_after_seconds": (
                    None
                    if limits.not_moving_after is None
                    else limits.not_moving_after.total_seconds()
                ),
                "last_sync_time": _iso(state.last_sync_time),
                "last_success_at": _iso(state.last_success_at),
            },
            sync_id=state.current_sync_id,
            dagster_run_id=state.dagster_run_id,
        )

    return _apply(states, policy, judge)


# -- helpers ---------------------------------------------------------------------------------


def _apply(
    states: Iterable[SyncState],
    policy: AlertPolicy,
    judge: Callable[[SyncState, Thresholds], Finding | None],
) -> list[Finding]:
    findings = []
    for state in states:
        limits = policy.for_resource(state.resource)
        if limits.muted:
            continue
        finding = judge(state, limits)
        if finding is not None:
            findings.append(finding)
    findings.sort(key=lambda f: f.resource)
    return findings


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(name, value, "must be an int")
    if value < minimum:
        raise InvalidInputError(name, value, f"must be >= {minimum}")


def _check_positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(name, value, "must be a finite number")
    if value <= 0:
        raise InvalidInputError(name, value, "must be positive")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _error_text(error: Mapping[str, Any]) -> str | None:
    message = error.get("message")
    if message is None:
        return None
    code = error.get("code")
    text = str(message).strip()
    if not code or text.startswith(str(code)):
        return text or None
    return f"{code}: {text}" if text else str(code)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MESSAGE_ERROR_LIMIT:
        return text
    return text[: _MESSAGE_ERROR_LIMIT - 3] + "..."


def _human(delta: dt.timedelta) -> str:
    """``1d 2h``, ``45m 10s``, ``850ms``: the two largest units, for messages."""
    total_ms = max(0, round(delta.total_seconds() * 1000))
    if total_ms < 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts = []
    for unit, size in units:
        amount, seconds = divmod(seconds, size)
        if amount or parts:
            parts.append(f"{amount}{unit}")
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0")) or "0s"


def _mean_stdev(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation in floating point.

    ``statistics.stdev`` works in exact fractions, which dominated a volume tick at 10,000
    resources; this is the same estimator, accurate to float rounding.
    """
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
