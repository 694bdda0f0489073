"""Writing the syncs the asset observer reads from Dagster's event log.

An observed sync has already ended when it is written: its history row goes in complete, and
the resource's ``sync_state`` takes its outcome as a tracked sync's finish would (watermark,
consecutive failures, counts). The syncs of several runs are written in one transaction, with a
fixed number of statements whatever their number (the update of the states is one statement
run for each resource). A (run, asset, partition) with a row already (the observer's own, or the
tracker's for that run and asset) adds nothing, so a replayed tick, a reset cursor or two racing
ticks never duplicate a row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from sync_observability.storage.store import SyncStore

_NAMESPACE = uuid.UUID("6f0d5f4e-3f5c-4d8e-9a3e-0b5d0c7e1a21")
RUN_WINDOW = dt.timedelta(minutes=5)
"""How far before or after the observed times a tracked sync of the run may have started (the
clocks of the step's host and of the event log): the recorded-check reads that window only."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObservedSync:
    """One sync read from Dagster's event log: an asset (partition) materialized or failed."""

    resource: str
    asset_key: str
    partition_key: str | None
    dagster_run_id: str
    retry_number: int
    started_at: dt.datetime
    ended_at: dt.datetime
    status: str
    records_processed: int = 0
    error_message: str | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    count_failure: bool = True
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def sync_id(self) -> str:
        """The same id every time this sync is read: a replay cannot make a second row."""
        name = f"{self.dagster_run_id}\0{self.asset_key}\0{self.partition_key}\0{self.retry_number}"
        return str(uuid.uuid5(_NAMESPACE, name))


def record_observed_runs(
    store: SyncStore,
    runs: Sequence[tuple[str, Sequence[ObservedSync]]],
    *,
    now: dt.datetime,
) -> int:
    """Write the syncs of Dagster runs ``(run id, syncs)`` not recorded yet, in one transaction.

    A (run, asset key, partition) that already has a row in ``sync_history`` (tracked, or
    observed before) is skipped whole, every attempt of it. Returns the rows written.
    """
    runs = [(run_id, syncs) for run_id, syncs in runs if syncs]
    if not runs:
        return 0

    def tx(conn: sa.Connection) -> int:
        return _write_runs(conn, store.dialect, runs, now)

    what = f"record observed syncs of {len(runs)} run{'' if len(runs) == 1 else 's'}"
    return store.db.write(tx, what)


def _write_runs(
    conn: sa.Connection,
    dialect: str,
    runs: Sequence[tuple[str, Sequence[ObservedSync]]],
    now: dt.datetime,
) -> int:
    import sqlalchemy as sa

    from sync_observability.storage.reporting.backfills import is_backfill, reopen_statement
    from sync_observability.storage.schema import sync_history
    from sync_observability.storage.watermarks import INSERT_CHANGE

    if dialect == "postgresql":
        # Two observer ticks at once: the second waits, then finds the first one's rows.
        lock = sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))")
        conn.execute(lock, {"key": "sync_observability.observer"})
    h = sync_history.c
    windows = []
    for run_id, syncs in runs:
        lo = min(s.started_at for s in syncs) - RUN_WINDOW
        hi = max(s.ended_at for s in syncs) + RUN_WINDOW
        windows.append(sa.and_(h.sync_start_time.between(lo, hi), h.dagster_run_id == run_id))
    # Each run's window on the start-time index: no index on the run id is needed.
    recorded = set(
        conn.execute(
            sa.select(h.dagster_run_id, h.asset_key, h.partition_key).where(sa.or_(*windows))
        ).tuples()
    )
    new = [
        s
        for run_id, syncs in runs
        for s in syncs
        if (run_id, s.asset_key, s.partition_key) not in recorded
    ]
    if not new:
        return 0
    new.sort(key=lambda s: (s.resource, s.ended_at, s.retry_number))
    states = _lock_states(conn, dialect, sorted({s.resource for s in new}), now)
    rows: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    updates = []
    for resource, group in itertools.groupby(new, key=lambda s: s.resource):
        state = states[resource]
        before = dict(state)
        _fold(state, list(group), rows, changes)
        if state != before:
            updates.append({f"p_{k}": v for k, v in state.items()})
    conn.execute(sa.insert(sync_history), rows)
    if updates:
        conn.execute(_update_state(), updates)
    if changes:
        conn.execute(INSERT_CHANGE, changes)
    earliest = min(s.started_at for s in new)
    if is_backfill(earliest, now):
        conn.execute(reopen_statement(earliest))
    return len(rows)


def _lock_states(
    conn: sa.Connection, dialect: str, resources: list[str], now: dt.datetime
) -> dict[str, dict[str, Any]]:
    """The resources' state rows (created when missing), locked, in a fixed order."""
    import sqlalchemy as sa

    from sync_observability.storage.schema import sync_state

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s = sync_state.c
    conn.execute(
        insert(sync_state).on_conflict_do_nothing(),
        [{"resource": r, "created_at": now, "updated_at": now} for r in resources],
    )
    query = sa.select(sync_state).where(s.resource.in_(resources)).order_by(s.resource)
    if dialect == "postgresql":
        query = query.with_for_update()
    return {row["resource"]: dict(row) for row in conn.execute(query).mappings()}


def _fold(
    state: dict[str, Any],
    syncs: list[ObservedSync],
    rows: list[dict[str, Any]],
    changes: list[dict[str, Any]],
) -> None:
    """Apply ``syncs`` (one resource's, oldest first) to its ``state``; add their history rows."""
    for sync in syncs:
        resource = sync.resource
        duration = max(0, round((sync.ended_at - sync.started_at).total_seconds() * 1000))
        success = sync.status == "success"
        watermark_before = state["last_sync_time"]
        watermark_after = None
        if success:
            watermark_after = (
                sync.ended_at if watermark_before is None else max(watermark_before, sync.ended_at)
            )
        rows.append(
            {
                "sync_id": sync.sync_id,
                "resource": resource,
                "sync_type": "incremental",
                "sync_start_time": sync.started_at,
                "sync_end_time": sync.ended_at,
                "sync_status": sync.status,
                "records_processed": sync.records_processed,
                "error_message": sync.error_message,
                "errors": sync.errors,
                "watermark_before": watermark_before,
                "watermark_after": watermark_after,
                "cursor_before": state["cursor"],
                "duration_ms": duration,
                "dagster_run_id": sync.dagster_run_id,
                "asset_key": sync.asset_key,
                "partition_key": sync.partition_key,
                "retry_number": sync.retry_number,
                "metadata": sync.metadata,
                "observed": True,
            }
        )
        # A sync of this resource in flight (tracked) owns the state; a newer end already
        # recorded stays: this one is history only.
        if state["last_sync_status"] == "running" or (
            state["completed_at"] is not None and state["completed_at"] > sync.ended_at
        ):
            continue
        state.update(
            last_sync_status=sync.status,
            started_at=sync.started_at,
            completed_at=sync.ended_at,
            duration_ms=duration,
            records_synced=sync.records_processed,
            records_created=0,
            records_updated=0,
            errors=sync.errors,
            current_sync_id=sync.sync_id,
            dagster_run_id=sync.dagster_run_id,
            updated_at=sync.ended_at,
        )
        if success:
            moved = watermark_after != watermark_before
            if moved:
                changes.append(
                    {
                        "resource": resource,
                        "sync_id": sync.sync_id,
                        "kind": "advance",
                        "watermark_before": watermark_before,
                        "watermark_after": watermark_after,
                        "cursor_before": state["cursor"],
                        "cursor_after": state["cursor"],
                        "changed_at": sync.ended_at,
                        "changed_by": None,
                        "reason": None,
                    }
                )
            state.update(
                last_sync_time=watermark_after,
                consecutive_failures=0,
                last_success_at=sync.ended_at,
                watermark_advanced_at=sync.ended_at if moved else state["watermark_advanced_at"],
                syncs_since_advance=0 if moved else state["syncs_since_advance"] + 1,
            )
        elif sync.count_failure:
            state["consecutive_failures"] += 1


@functools.cache
def _update_state() -> sa.Update:
    """One UPDATE of a whole state row, built (and compiled) once, run for each resource."""
    import sqlalchemy as sa

    from sync_observability.storage.schema import sync_state

    columns = [c.name for c in sync_state.c if c.name != "resource"]
    return (
        sa.update(sync_state)
        .where(sync_state.c.resource == sa.bindparam("p_resource"))
        .values({name: sa.bindparam(f"p_{name}") for name in columns})
    )


__all__ = ["ObservedSync", "record_observed_runs"]
