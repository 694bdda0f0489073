"""Reaping: a sync still marked running whose Dagster run has ended, or that ran too long.

Two callers, one set of codes and checks. The stuck-run sensor reaps on every tick (an ended or
unknown Dagster run: ``ORPHANED``; past the resource's ``stuck_after``: ``TIMED_OUT``) and keeps
the alert open until the resource's next sync starts; :class:`SyncTracker` reaps a sync that
blocks a new start when its Dagster run, or its step attempt, is known to have ended
(``ORPHANED``). Either way the sync is marked failed in ``sync_state`` and ``sync_history`` and
the watermark never moves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg

from sync_observability.alerts.rules import CRITICAL, STUCK_RUN, AlertPolicy, Finding
from sync_observability.clock import utcnow
from sync_observability.storage.records import SyncState

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore

ORPHANED = "ORPHANED"
"""Error code of a sync reaped because its Dagster run (or step attempt) ended without it."""
TIMED_OUT = "TIMED_OUT"
"""Error code of a sync reaped because it ran longer than its resource's ``stuck_after``."""
REAPED_CODES = (ORPHANED, TIMED_OUT)


class StepAttempt(Protocol):
    """What the tracker knows about the step that wants to start a sync."""

    instance: dg.DagsterInstance | None
    run_id: str | None
    asset_key: str | None
    partition_key: str | None
    retry_number: int
    log: Any


def reap_if_orphaned(store: SyncStore, step: StepAttempt, running_sync_id: str | None) -> bool:
    """Reap the sync blocking ``step``'s start when its Dagster run, or step attempt, has ended.

    An earlier attempt of this very step (same run, asset and partition, a lower
    ``retry_number``) has ended: Dagster starts a retry only after the attempt before it. A
    sync of another run is reaped when that run is finished or unknown to the instance.

    Args:
        store: the tracker's store.
        step: the step starting a sync (the tracker's view of its Dagster context).
        running_sync_id: the sync that refused the start (``SyncAlreadyRunningError``).

    Returns:
        True when the blocking sync is no longer running (reaped here, or it finished
        meanwhile): the caller retries its start. False when it may still be running.
    """
    if step.instance is None or running_sync_id is None:
        return False
    running = store.get_sync(running_sync_id)
    if running is None or running.dagster_run_id is None:
        return False
    if running.dagster_run_id == step.run_id:
        earlier_attempt = (
            running.asset_key == step.asset_key
            and running.partition_key == step.partition_key
            and running.retry_number < step.retry_number
        )
        if not earlier_attempt:
            return False
        status = f"retried (this is attempt {step.retry_number + 1})"
    else:
        dagster_run = step.instance.get_run_by_id(running.dagster_run_id)
        if dagster_run is not None and not dagster_run.is_finished:
            return False
        status = "gone" if dagster_run is None else dagster_run.status.value
    reaped = store.reap_sync(
        running.sync_id,
        code=ORPHANED,
        message=f"Dagster run {running.dagster_run_id} is {status} but the sync was running",
        now=utcnow(),
    )
    if not reaped:  # it finished meanwhile; the retried start decides
        return True
    step.log.warning(
        f"sync_observability: reaped orphaned sync {running.sync_id} of "
        f"{running.resource!r} (Dagster run {running.dagster_run_id} is {status})"
    )
    return True


def ended_run_ids(instance: dg.DagsterInstance, running: Sequence[SyncState]) -> set[str]:
    """Run ids of running syncs whose Dagster run is finished or unknown to this instance.

    One run-storage query, however many syncs are running.
    """
    run_ids = sorted({s.dagster_run_id for s in running if s.dagster_run_id})
    if not run_ids:
        return set()
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    in_progress = {r.dagster_run.run_id for r in records if not r.dagster_run.is_finished}
    return set(run_ids) - in_progress


def reap_stuck(store: SyncStore, finding: Finding, now: dt.datetime) -> Finding | None:
    """Mark the stuck sync of a stuck-run finding failed.

    Returns:
        The finding to alert on (saying what was done), or None when the sync finished, or
        was reaped by a racing tick, since the rule read it.
    """
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


def was_reaped(state: SyncState) -> bool:
    """Whether the resource's last sync was reaped and nothing has run since.

    Reaping clears the stuck condition at once, but announcing "resolved" on the next tick for a
    sync that never finished would mislead: such a resource stays stuck (see
    :func:`reaped_finding`) until its next sync starts.
    """
    if state.last_sync_status != "failed" or not state.errors:
        return False
    return state.errors[-1].get("code") in REAPED_CODES


def reaped_finding(state: SyncState, policy: AlertPolicy) -> Finding | None:
    """The stuck-run finding of a reaped sync, rebuilt from the state reaping left.

    It equals the finding the reaping tick recorded (:func:`reap_stuck` keeps the rule's message
    in the error), so later ticks refresh the open alert unchanged, and a tick that died between
    reaping and recording has its alert opened by the next one. None unless the resource's
    last sync was reaped (and it is not muted).
    """
    limits = policy.for_resource(state.resource)
    if limits.muted or not was_reaped(state):
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


__all__ = [
    "ORPHANED",
    "REAPED_CODES",
    "TIMED_OUT",
    "StepAttempt",
    "ended_run_ids",
    "reap_if_orphaned",
    "reap_stuck",
    "reaped_finding",
    "was_reaped",
]
