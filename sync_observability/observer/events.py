"""What a finished Dagster run did to its assets, read from its events: the syncs to record.

The rules (issue 13), per step of the run:

- every materialization is a successful sync of its asset (partition), from the start of the
  step's attempt to the materialization, ``records_processed`` from its row-count metadata;
- a planned asset (partition) the attempt did not materialize is a failed sync when the attempt
  failed (``STEP_FAILURE``: the step's error), will be retried (``STEP_UP_FOR_RETRY``: recorded,
  not counted in ``consecutive_failures`` by default, as tracked retries), or never ended
  because the run did (``RUN_CANCELED``/``RUN_FAILURE`` while the step ran: that error code);
- a step that never started (its upstream failed) records nothing; a run that failed before any
  step started fails every asset it planned (``RUN_FAILURE``); a run canceled before it started
  records nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dagster as dg

from sync_observability.operations import MAX_MESSAGE_LENGTH
from sync_observability.storage.observed import ObservedSync
from sync_observability.validation import MAX_BIGINT, clean_text

EventType = dg.DagsterEventType
RUN_END_TYPES = (EventType.RUN_SUCCESS, EventType.RUN_FAILURE, EventType.RUN_CANCELED)
"""The run status changes after which a run's syncs are read (one per finished run)."""
STEP_TYPES = frozenset(
    {
        EventType.ASSET_MATERIALIZATION_PLANNED,
        EventType.STEP_START,
        EventType.STEP_RESTARTED,
        EventType.ASSET_MATERIALIZATION,
        EventType.STEP_UP_FOR_RETRY,
        EventType.STEP_FAILURE,
        EventType.STEP_SUCCESS,
    }
)
"""The event types of a run that decide its syncs."""
RUN_CANCELED = "RUN_CANCELED"
RUN_FAILURE = "RUN_FAILURE"
_WRAPPERS = (
    "DagsterExecutionStepExecutionError",
    "DagsterUserCodeExecutionError",
    "RetryRequestedFromPolicy",
)


@dataclasses.dataclass
class _Attempt:
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    outcome: str | None = None  # success, failure, retry; None: the run ended first
    error: Any = None
    materialized: list[tuple[str, str | None, dt.datetime, Any]] = dataclasses.field(
        default_factory=list
    )


@dataclasses.dataclass(frozen=True)
class RunEnd:
    """How a run ended: its status event."""

    run_id: str
    event_type: dg.DagsterEventType
    at: dt.datetime
    message: str | None


def run_syncs(
    end: RunEnd,
    records: Iterable[Any],
    *,
    selected: Callable[[str], bool],
    row_count_key: str = "dagster/row_count",
    count_retried_failures: bool = False,
) -> list[ObservedSync]:
    """The syncs of one finished run, from its event records (``EventLogRecord``s, in order).

    ``selected`` says whether an asset key (user string) is observed.
    """
    planned: dict[str | None, dict[tuple[str, str | None], None]] = {}
    attempts: dict[str | None, list[_Attempt]] = {}
    first_event: dt.datetime | None = None
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        at = _time(entry.timestamp)
        first_event = first_event or at
        step = event.step_key
        kind = event.event_type
        if kind == EventType.ASSET_MATERIALIZATION_PLANNED:
            data = event.event_specific_data
            key = data.asset_key.to_user_string()
            for partition in _planned_partitions(data):
                planned.setdefault(step, {})[(key, partition)] = None
        elif kind in (EventType.STEP_START, EventType.STEP_RESTARTED):
            attempts.setdefault(step, []).append(_Attempt(started_at=at))
        elif kind == EventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            _open_attempt(attempts, step, at).materialized.append(
                (
                    materialization.asset_key.to_user_string(),
                    materialization.partition,
                    at,
                    materialization.metadata.get(row_count_key),
                )
            )
        elif kind in (EventType.STEP_UP_FOR_RETRY, EventType.STEP_FAILURE, EventType.STEP_SUCCESS):
            attempt = _open_attempt(attempts, step, at)
            attempt.ended_at = at
            attempt.outcome = {
                EventType.STEP_UP_FOR_RETRY: "retry",
                EventType.STEP_FAILURE: "failure",
                EventType.STEP_SUCCESS: "success",
            }[kind]
            attempt.error = getattr(event.event_specific_data, "error", None)
    syncs: list[ObservedSync] = []
    for step, step_attempts in attempts.items():
        for number, attempt in enumerate(step_attempts):
            syncs += _attempt_syncs(
                end,
                step,
                number,
                attempt,
                planned.get(step, {}),
                row_count_key,
                count_retried_failures,
            )
    if not attempts and end.event_type == EventType.RUN_FAILURE:
        # Nothing ran: the run itself failed (could not launch, load its code, ...).
        started = first_event or end.at
        message = end.message or "the run failed before any step started"
        for step_planned in planned.values():
            for key, partition in step_planned:
                syncs.append(
                    _failed(
                        end,
                        key,
                        partition,
                        0,
                        started,
                        end.at,
                        RUN_FAILURE,
                        message,
                        None,
                        count=True,
                        step=None,
                    )
                )
    return [s for s in syncs if selected(s.asset_key)]


def _attempt_syncs(
    end: RunEnd,
    step: str | None,
    number: int,
    attempt: _Attempt,
    planned: Mapping[tuple[str, str | None], None],
    row_count_key: str,
    count_retried_failures: bool,
) -> list[ObservedSync]:
    syncs = []
    done: set[tuple[str, str | None]] = set()
    for key, partition, at, row_count in attempt.materialized:
        done.add((key, partition))
        syncs.append(
            ObservedSync(
                resource=key,
                asset_key=key,
                partition_key=partition,
                dagster_run_id=end.run_id,
                retry_number=number,
                started_at=attempt.started_at,
                ended_at=max(at, attempt.started_at),
                status="success",
                records_processed=_row_count(row_count),
                metadata={"observed": {"step_key": step, "row_count_key": row_count_key}},
            )
        )
    if attempt.outcome == "success":
        return syncs  # a planned output the step chose not to produce is no failure
    if attempt.outcome is None:
        code = RUN_CANCELED if end.event_type == EventType.RUN_CANCELED else RUN_FAILURE
        verb = "canceled" if code == RUN_CANCELED else "ended"
        message = f"the run {verb} while step {step!r} was running"
        if end.message:
            message += f": {end.message}"
        error, ended = None, end.at
    else:
        error = _user_error(attempt.error)
        code, message = _error_text(error)
        ended = attempt.ended_at or end.at
    retried = attempt.outcome == "retry"
    for key, partition in planned:
        if (key, partition) in done:
            continue
        syncs.append(
            _failed(
                end,
                key,
                partition,
                number,
                attempt.started_at,
                ended,
                code,
                message,
                error,
                count=count_retried_failures or not retried,
                step=step,
                will_retry=retried,
            )
        )
    return syncs


def _failed(
    end: RunEnd,
    key: str,
    partition: str | None,
    number: int,
    started: dt.datetime,
    ended: dt.datetime,
    code: str,
    message: str,
    error: Any,
    *,
    count: bool,
    step: str | None,
    will_retry: bool = False,
) -> ObservedSync:
    message = clean_text(message, MAX_MESSAGE_LENGTH)[0]
    entry: dict[str, Any] = {"code": code, "message": message, "timestamp": ended.isoformat()}
    if error is not None and getattr(error, "stack", None):
        entry["traceback"] = clean_text("".join(error.stack), MAX_MESSAGE_LENGTH, keep_end=True)[0]
    if will_retry:
        entry |= {"retry_number": number, "will_retry": True}
    return ObservedSync(
        resource=key,
        asset_key=key,
        partition_key=partition,
        dagster_run_id=end.run_id,
        retry_number=number,
        started_at=started,
        ended_at=max(ended, started),
        status="failed",
        error_message=clean_text(f"{code}: {message}", MAX_MESSAGE_LENGTH)[0],
        errors=[entry],
        count_failure=count,
        metadata={"observed": {"step_key": step}},
    )


def _open_attempt(
    attempts: dict[str | None, list[_Attempt]], step: str | None, at: dt.datetime
) -> _Attempt:
    """The step's running attempt; one starting now when its start was not seen."""
    step_attempts = attempts.setdefault(step, [])
    if not step_attempts or step_attempts[-1].outcome is not None:
        step_attempts.append(_Attempt(started_at=at))
    return step_attempts[-1]


def _planned_partitions(data: Any) -> list[str | None]:
    if data.partition is not None:
        return [data.partition]
    subset = getattr(data, "partitions_subset", None)
    if subset is not None:
        try:
            return list(subset.get_partition_keys())
        except Exception:  # a subset that needs its definition: its materializations count
            return []
    return [None]


def _user_error(error: Any) -> Any:
    """The user's exception behind Dagster's wrapper (a ``SerializableErrorInfo``)."""
    while error is not None and error.cls_name in _WRAPPERS and error.cause is not None:
        error = error.cause
    return error


def _error_text(error: Any) -> tuple[str, str]:
    """The error's class name (the code) and its message."""
    if error is None:
        return "STEP_FAILURE", "the step failed (no error recorded)"
    text = error.message.strip()
    prefix = f"{error.cls_name}: "
    return error.cls_name or "STEP_FAILURE", text.removeprefix(prefix) or text


def _row_count(value: Any) -> int:
    value = getattr(value, "value", value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    count = int(value)
    return count if 0 <= count <= MAX_BIGINT else 0


def _time(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


__all__ = ["RUN_END_TYPES", "STEP_TYPES", "RunEnd", "run_syncs"]
