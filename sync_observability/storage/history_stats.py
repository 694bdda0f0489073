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

The sensors call :func:`slow_sync_candidates` and :func:`volume_anomaly_candidates`: on PostgreSQL
they compute each resource's median (or mean and deviation) in the same query and return only the
``sync_state`` rows the rule could flag, with their values; the rule then decides on those. The
filter is a superset of the rule (the loosest thresholds of any resource, a rounding margin), so
the rule finds what it would find on every row. SQLite returns every row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_observability.storage.records import SyncState
from sync_observability.storage.schema import sync_history, sync_state
from sync_observability.storage.store import SyncStore

DEFAULT_DURATION_WINDOW = 20
DEFAULT_VOLUME_WINDOW = 30
# Relative margin of the SQL filters over the rules' float arithmetic: keeps them a superset.
_MARGIN = 1e-6


@dataclasses.dataclass(frozen=True)
class RuleInput:
    """The ``sync_state`` rows a history rule could flag, with their recent values."""

    states: list[SyncState]
    values: dict[str, list[int]]


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

    return store.db.read(read, f"read recent {column} per resource")


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


def slow_sync_candidates(
    store: SyncStore,
    *,
    limit: int = DEFAULT_DURATION_WINDOW,
    slow_after_ms: float,
    slow_factor: float | None,
    min_samples: int,
) -> RuleInput:
    """The rows whose latest sync may be slow, with their recent durations.

    Give the loosest thresholds of any resource (the smallest ``slow_after_ms``, ``slow_factor``
    and ``min_samples`` among the defaults and overrides; ``slow_factor`` None when no resource
    has one). On PostgreSQL only rows whose last sync succeeded and took longer than
    ``slow_after_ms``, or ``slow_factor`` x the median of at least ``min_samples`` recent
    durations, are returned (within a rounding margin); on SQLite every row.

    Returns:
        The rows, and as :func:`recent_durations_ms` (``limit`` runs) the durations of those rows.
    """
    if store.dialect != "postgresql":
        return RuleInput(store.list_states(), recent_durations_ms(store, limit=limit))
    recent = _recent_runs(
        "duration_ms",
        limit,
        True,
        sync_history.c.sync_status == "success",
        sync_history.c.duration_ms.label("value"),
        sync_history.c.sync_start_time,
    ).subquery("recent")
    stats = (
        sa.select(
            _values_array(recent),
            sa.func.count().label("samples"),
            sa.func.percentile_cont(0.5).within_group(recent.c.value).label("median"),
        )
        .select_from(recent)
        .lateral("agg")
    )
    duration = sync_state.c.duration_ms
    slow = [duration >= slow_after_ms * (1 - _MARGIN)]
    if slow_factor is not None:
        slow.append(
            sa.and_(
                stats.c.samples >= min_samples,
                duration >= slow_factor * (1 - _MARGIN) * stats.c.median,
            )
        )
    query = (
        sa.select(sync_state, stats.c.vals)
        .select_from(sync_state.join(stats, sa.true()))
        .where(sync_state.c.last_sync_status == "success", duration.is_not(None), sa.or_(*slow))
        .order_by(sync_state.c.resource)
    )
    return store.db.read(lambda conn: _rule_input(conn, query), "read slow-sync candidates")


def volume_anomaly_candidates(
    store: SyncStore,
    *,
    limit: int = DEFAULT_VOLUME_WINDOW + 1,
    sigma: float | None,
    min_samples: int,
) -> RuleInput:
    """The rows whose latest successful sync may have processed an unusual record count.

    Give the loosest thresholds of any resource: the smallest ``volume_sigma`` and
    ``volume_min_samples``, and ``limit`` = 1 + the largest ``volume_window``. ``sigma`` None
    when the resources' windows differ (the mean in SQL is over ``limit - 1`` runs, which is
    then not every resource's baseline): only the sample count filters. On PostgreSQL only rows
    whose latest count lies outside mean +/- ``sigma`` standard deviations of the runs before
    it (within a rounding margin), over at least ``min_samples`` of them, are returned; on
    SQLite every row.

    Returns:
        The rows, and as :func:`recent_volumes` (``limit`` runs) the volumes of those rows.
    """
    if store.dialect != "postgresql":
        return RuleInput(store.list_states(), recent_volumes(store, limit=limit))
    value = sync_history.c.records_processed
    recent = _recent_runs(
        "records_processed",
        limit,
        False,
        sync_history.c.sync_status == "success",
        value.label("value"),
        sync_history.c.sync_start_time,
        sa.func.row_number().over(order_by=sync_history.c.sync_start_time.desc()).label("position"),
    ).subquery("recent")
    earlier = recent.c.position > 1
    as_float = sa.cast(recent.c.value, postgresql.DOUBLE_PRECISION)
    stats = (
        sa.select(
            _values_array(recent),
            (sa.func.count() - 1).label("samples"),
            sa.func.max(as_float).filter(recent.c.position == 1).label("latest"),
            sa.func.avg(as_float).filter(earlier).label("mean"),
            sa.func.stddev_samp(as_float).filter(earlier).label("stdev"),
        )
        .select_from(recent)
        .lateral("agg")
    )
    conditions = [sync_state.c.last_success_at.is_not(None), stats.c.samples >= min_samples]
    if sigma is not None:
        distance, band = sa.func.abs(stats.c.latest - stats.c.mean), sigma * stats.c.stdev
        # Equal to the mean is inside any band; else outside the band, give or take rounding.
        conditions += [
            stats.c.latest != stats.c.mean,
            distance >= band - _MARGIN * (sa.func.abs(stats.c.mean) + band),
        ]
    query = (
        sa.select(sync_state, stats.c.vals)
        .select_from(sync_state.join(stats, sa.true()))
        .where(*conditions)
        .order_by(sync_state.c.resource)
    )
    return store.db.read(lambda conn: _rule_input(conn, query), "read volume-anomaly candidates")


def _values_array(recent: sa.Subquery) -> sa.Label[Any]:
    return postgresql.array_agg(
        postgresql.aggregate_order_by(recent.c.value, recent.c.sync_start_time.desc())
    ).label("vals")


def _rule_input(conn: sa.Connection, query: sa.Select[Any]) -> RuleInput:
    conn.exec_driver_sql("SET LOCAL jit = off")
    states, values = [], {}
    for row in conn.execute(query).mappings():
        fields = dict(row)
        vals = fields.pop("vals")
        states.append(SyncState(**fields))
        # As the recent_* reads: no values for a row without a success.
        if vals is not None and states[-1].last_success_at is not None:
            values[states[-1].resource] = [int(v) for v in vals]
    return RuleInput(states, values)


__all__: Sequence[str] = (
    "RuleInput",
    "recent_durations_ms",
    "recent_volumes",
    "slow_sync_candidates",
    "volume_anomaly_candidates",
)
