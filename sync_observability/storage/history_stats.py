"""Recent durations and volumes per resource, for the slow-sync and volume-anomaly rules.

Both rules need the last few successful runs of *every* resource on each sensor tick: at 10,000
resources and millions of history rows that must not scan the history. Each query walks the
``(resource, sync_start_time)`` index backwards from every ``sync_state`` row and stops after
``limit`` successful runs, so its cost grows with resources x limit, not with the history:

- PostgreSQL: a ``LATERAL`` subquery per resource with ``ORDER BY sync_start_time DESC LIMIT n``;
- SQLite (no LATERAL): the same correlated, limited subquery as the ``IN`` list of a primary-key
  lookup, which SQLite runs once per ``sync_state`` row.

PostgreSQL runs these reads with JIT compilation off: the plan is ten thousand small index scans,
which JIT cannot speed up, while compiling it costs hundreds of milliseconds per tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_observability.storage.schema import sync_history, sync_state
from sync_observability.storage.store import SyncStore

DEFAULT_DURATION_WINDOW = 20
DEFAULT_VOLUME_WINDOW = 30


def recent_durations_ms(
    store: SyncStore, *, limit: int = DEFAULT_DURATION_WINDOW
) -> dict[str, list[int]]:
    """Durations of each resource's recent successful syncs, newest first, without its latest.

    The latest sync (the one ``sync_state`` points at) is left out: the slow-sync rule compares
    it against the runs before it.

    Args:
        store: the store to read.
        limit: how many runs per resource, at most.

    Returns:
        ``{resource: [duration_ms, ...]}``; resources without earlier successful runs are absent.
    """
    return _recent_values(store, "duration_ms", limit=limit, exclude_latest=True)


def recent_volumes(store: SyncStore, *, limit: int = DEFAULT_VOLUME_WINDOW) -> dict[str, list[int]]:
    """``records_processed`` of each resource's recent successful syncs, newest first.

    Includes the latest sync (index 0), which the volume rule compares against the others.

    Args:
        store: the store to read.
        limit: how many runs per resource, at most.

    Returns:
        ``{resource: [records_processed, ...]}``; resources that never succeeded are absent.
    """
    return _recent_values(store, "records_processed", limit=limit, exclude_latest=False)


def _recent_values(
    store: SyncStore, column: str, *, limit: int, exclude_latest: bool
) -> dict[str, list[int]]:
    if limit < 1:
        return {}
    if store.dialect == "postgresql":
        query = _lateral_query(column, limit, exclude_latest)

        def read(conn: sa.Connection) -> dict[str, list[int]]:
            conn.exec_driver_sql("SET LOCAL jit = off")
            return {resource: [int(v) for v in values] for resource, values in conn.execute(query)}

    else:
        query = _correlated_query(column, limit, exclude_latest)

        def read(conn: sa.Connection) -> dict[str, list[int]]:
            values: dict[str, list[int]] = {}
            for resource, value in conn.execute(query):
                values.setdefault(resource, []).append(int(value))
            return values

    return store._read(read, f"read recent {column} per resource")


def _recent_runs(
    column: str, limit: int, exclude_latest: bool, success: sa.ColumnElement[bool], *columns: Any
) -> sa.Select[Any]:
    """The newest ``limit`` successful runs of the outer query's ``sync_state`` row."""
    query = (
        sa.select(*columns)
        .where(
            sync_history.c.resource == sync_state.c.resource,
            success,
            sync_history.c[column].is_not(None),
        )
        .order_by(sync_history.c.sync_start_time.desc())
        .limit(limit)
    )
    if exclude_latest:
        query = query.where(sync_history.c.sync_id.is_distinct_from(sync_state.c.current_sync_id))
    return query.correlate(sync_state)


def _lateral_query(column: str, limit: int, exclude_latest: bool) -> sa.Select[Any]:
    """One row per resource with its values as an array, newest first."""
    recent = _recent_runs(
        column,
        limit,
        exclude_latest,
        sync_history.c.sync_status == "success",
        sync_history.c[column].label("value"),
        sync_history.c.sync_start_time,
    ).subquery("recent")
    # array_agg keeps the answer at one row per resource instead of one per run.
    values = (
        sa.select(
            postgresql.array_agg(
                postgresql.aggregate_order_by(recent.c.value, recent.c.sync_start_time.desc())
            ).label("vals")
        )
        .select_from(recent)
        .lateral("agg")
    )
    return (
        sa.select(sync_state.c.resource, values.c.vals)
        .select_from(sync_state.join(values, sa.true()))
        .where(sync_state.c.last_success_at.is_not(None), values.c.vals.is_not(None))
    )


def _correlated_query(column: str, limit: int, exclude_latest: bool) -> sa.Select[Any]:
    history = sync_history.alias("h")
    # `|| ''` keeps SQLite off ix_sync_history_status_time: without statistics (SQLite databases
    # are rarely ANALYZEd) it would walk every successful run of every resource. PostgreSQL has
    # statistics and walks (resource, sync_start_time) backwards; there the same trick would hide
    # the status' selectivity and lead it to read every run of each resource instead.
    success = sync_history.c.sync_status.concat("") == "success"
    recent_ids = _recent_runs(column, limit, exclude_latest, success, sync_history.c.sync_id)
    return (
        sa.select(sync_state.c.resource, history.c[column])
        .select_from(sync_state.join(history, history.c.sync_id.in_(recent_ids.scalar_subquery())))
        .where(sync_state.c.last_success_at.is_not(None))
        .order_by(sync_state.c.resource, history.c.sync_start_time.desc())
    )


__all__: Sequence[str] = ("recent_durations_ms", "recent_volumes")
