"""The reports' SQL: aggregations over ``sync_history`` (and ``operation_log``), on both engines.

Each function takes a time window ``[since, until]`` on ``sync_start_time`` (``event_time`` for
the operation log) and returns plain dicts with Python numbers: PostgreSQL's ``numeric`` sums and
averages become ``int``/``float`` here, so a report reads the same on SQLite and PostgreSQL. The
maths on top (health scores, labels, spikes, 2 sigma) lives in :mod:`sync_observability.reports`.

Days and hours are UTC buckets rendered as text (``YYYY-MM-DD`` and ``YYYY-MM-DDTHH:00``) by
each dialect's own function, so grouping happens in the database and only the buckets travel.
Bucket formats are inlined as SQL literals: PostgreSQL compares a ``GROUP BY`` expression with
the ``SELECT`` one textually, and two bound parameters would make them differ.

"Seed 00N" below: the document a report comes from (docs/seeds.md).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from sync_observability.clock import as_utc
from sync_observability.storage.reporting import hourly_rollups as rollup
from sync_observability.storage.schema import (
    Float,
    UTCDateTime,
    operation_log,
    sync_history,
    sync_history_archive,
    sync_state,
)
from sync_observability.storage.store import SyncStore

_FORMATS = {
    "postgresql": {"day": "'YYYY-MM-DD'", "hour": "'YYYY-MM-DD\"T\"HH24:00'"},
    "sqlite": {"day": "'%Y-%m-%d'", "hour": "'%Y-%m-%dT%H:00'"},
}


def _bucket(store: SyncStore, column: sa.ColumnElement[Any], unit: str) -> sa.ColumnElement[str]:
    """``column`` truncated to its UTC day or hour, as text."""
    fmt = sa.literal_column(_FORMATS[store.dialect][unit])
    if store.dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone(sa.literal_column("'UTC'"), column), fmt)
    # SQLite stores naive UTC text (see UTCDateTime), which strftime reads as UTC.
    return sa.func.strftime(fmt, column)


def _window(column: sa.ColumnElement[Any], since: dt.datetime, until: dt.datetime) -> Any:
    return sa.and_(column >= since, column <= until)


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _bytewise(store: SyncStore, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """``column`` compared by code point (``COLLATE "C"``), as SQLite compares text."""
    return column.collate("C") if store.dialect == "postgresql" else column


def read_rows(
    store: SyncStore,
    query: sa.Select[Any],
    what: str,
    *,
    serial: bool = False,
    params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``query``'s rows as dicts (``params``: values of its bound parameters). ``serial``: no
    parallel workers (PostgreSQL), for a query whose costly branch is skipped at run time but
    would start them anyway."""

    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        if store.dialect == "postgresql":
            # Report queries run in milliseconds to a second: compiling them costs more.
            conn.exec_driver_sql(
                "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0"
                if serial
                else "SET LOCAL jit = off"
            )
        return [dict(row) for row in conn.execute(query, params).mappings()]

    return store.db.read(read, what)


def _typed(
    rows: list[dict[str, Any]],
    *,
    ints: Sequence[str] = (),
    floats: Sequence[str] = (),
    times: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``rows`` with the columns named in ``ints``, ``floats`` and ``times`` read as ``int`` (NULL
    as 0), ``float`` and aware UTC datetimes (:func:`~sync_observability.clock.as_utc`): the same
    Python values from PostgreSQL's ``numeric`` aggregates and SQLite's."""
    for row in rows:
        for key in ints:
            row[key] = _int(row[key])
        for key in floats:
            row[key] = _float(row[key])
        for key in times:
            row[key] = as_utc(row[key])
    return rows


def _columns(
    store: SyncStore, query: sa.Select[Any], params: dict[str, Any], what: str
) -> dict[str, list[Any]]:
    """``query``'s result column by column: no per-row dict for reports with many rows."""

    def read(conn: sa.Connection) -> dict[str, list[Any]]:
        result = conn.execute(query, params)
        names = list(result.keys())
        rows = result.all()
        return (
            dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
            if rows
            else {n: [] for n in names}
        )

    return store.db.read(read, what)


def _partials(
    store: SyncStore,
    since: dt.datetime,
    until: dt.datetime,
    measures: Sequence[str],
    *,
    status: str | None = None,
) -> sa.Subquery:
    """The roll-ups' closed hours plus the live rest of ``[since, until]`` (see hourly_rollups)."""
    coverage = rollup.report_coverage(store)
    only = None if status is None else (lambda column: column == status)
    return rollup.hourly_partials(store, coverage, since, until, measures, only=only)


def failed_syncs(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime, limit: int
) -> list[dict[str, Any]]:
    """Failed syncs started in the window, newest first (seed 000's failed-syncs query)."""
    h = sync_history.c
    query = (
        sa.select(
            h.sync_id,
            h.resource,
            h.source_system,
            h.target_system,
            h.sync_start_time,
            h.sync_end_time,
            h.error_message,
            h.errors,
        )
        .where(h.sync_status == "failed", _window(h.sync_start_time, since, until))
        .order_by(h.sync_start_time.desc(), h.sync_id.desc())
        .limit(limit)
    )
    return read_rows(store, query, "read failed syncs")


def performance_by_system(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Successful syncs per (source, target) with their mean and longest duration (seed 000)."""
    p = _partials(
        store,
        since,
        until,
        ("operations", "durations", "duration_ms_sum", "duration_ms_max"),
        status="success",
    ).c
    query = sa.select(
        p.source_system,
        p.target_system,
        sa.func.sum(p.operations).label("sync_count"),
        rollup.mean(store.dialect, p.duration_ms_sum, p.durations).label("avg_duration_ms"),
        sa.func.max(p.duration_ms_max).label("max_duration_ms"),
    ).group_by(p.source_system, p.target_system)
    rows = read_rows(store, query, "read performance by system")
    return _typed(rows, ints=("sync_count",), floats=("avg_duration_ms", "max_duration_ms"))


def daily_volume_by_source(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Records processed by successful syncs per UTC day and source system (seed 000)."""
    p = _partials(store, since, until, ("operations", "records_processed"), status="success").c
    day = _bucket(store, p.hour, "day").label("day")
    query = sa.select(
        day,
        p.source_system,
        sa.func.sum(p.operations).label("sync_count"),
        sa.func.sum(p.records_processed).label("total_records"),
    ).group_by(day, p.source_system)
    rows = read_rows(store, query, "read daily volume")
    return _typed(rows, ints=("sync_count", "total_records"))


def window_summary(store: SyncStore, *, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """Counts by status and the mean duration of the finished syncs started in the window."""
    p = _partials(store, since, until, ("operations", "durations", "duration_ms_sum")).c

    def count(status: str) -> sa.ColumnElement[int]:
        return sa.func.sum(p.operations).filter(p.sync_status == status)

    # Running syncs have no duration, so the mean over durations is the finished syncs' mean.
    query = sa.select(
        sa.func.sum(p.operations).label("operations"),
        count("success").label("successful"),
        count("failed").label("failed"),
        count("running").label("running"),
        rollup.mean(store.dialect, p.duration_ms_sum, p.durations).label("avg_duration_ms"),
    )
    rows = read_rows(store, query, "read dashboard summary")
    (row,) = _typed(
        rows, ints=("operations", "successful", "failed", "running"), floats=("avg_duration_ms",)
    )
    return row


def hourly_counts(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Syncs started and records processed per UTC hour (hours without syncs are absent)."""
    p = _partials(store, since, until, ("operations", "records_processed")).c
    hour = _bucket(store, p.hour, "hour").label("hour")
    query = sa.select(
        hour,
        sa.func.sum(p.operations).label("operations"),
        sa.func.sum(p.records_processed).label("records_processed"),
    ).group_by(hour)
    return _typed(
        read_rows(store, query, "read hourly volume"), ints=("operations", "records_processed")
    )


def daily_volume_stats(
    store: SyncStore,
    *,
    until: dt.datetime,
    days: int,
    beyond_sigmas: float | None = None,
) -> list[dict[str, Any]]:
    """Per resource that synced on ``until``'s UTC day: its daily sync counts in the same hours.

    The hours compared are the whole hours of ``until``'s UTC day that have ended
    (:func:`~.hourly_rollups.compared_hours`; none in a day's first hour, and then no rows):
    today's syncs in them and, for each of the ``days`` UTC days before today, its syncs in the
    same hours of that day. ``today`` (today's count), ``days`` (days with syncs in those hours,
    today's included), ``operations`` and ``squares`` (the sum of the counts and of their
    squares): the exact integers the 2 sigma rule needs
    (:func:`sync_observability.reports.maths.count_anomaly`). Only resources whose counts vary;
    with ``beyond_sigmas``, only those whose count today is more than that many standard
    deviations from their mean, decided in SQL by the same integer test. Most syncs today
    first, then by resource.
    """
    if rollup.compared_hours(until) == 0:
        return []
    coverage = rollup.report_coverage(store)
    parts = rollup.daily_volume_parts(store, coverage, until, days)
    t = parts.today.c
    joined: sa.FromClause = parts.today
    for part in parts.before:
        joined = joined.outerjoin(part, part.c.resource == t.resource)

    def before(name: str) -> sa.ColumnElement[Any]:
        return sum((sa.func.coalesce(part.c[name], 0) for part in parts.before), sa.literal(0))

    # In doubles: exact for integers below 2**53 (squared daily counts of millions of syncs),
    # never an overflow error, and cheaper than numeric on thousands of rows.
    today = sa.cast(t.today, Float)
    n = sa.cast(before("days"), Float) + 1
    total = sa.cast(before("operations"), Float) + today
    squares = sa.cast(before("squares"), Float) + today * today
    spread = n * squares - total * total  # n (n - 1) variance: > 0 when the counts vary
    distance = n * today - total  # n (today - mean)
    where = [spread > 0]
    if beyond_sigmas is not None:
        # |today - mean| > k sd  <=>  distance² (n - 1) > k² n spread: no division, no root.
        k2 = sa.literal(beyond_sigmas**2, Float)
        where.append(distance * distance * (n - 1) > k2 * n * spread)
    resource = _bytewise(store, t.resource)
    query = (
        sa.select(
            resource.label("resource"),
            today.label("today"),
            n.label("days"),
            total.label("operations"),
            squares.label("squares"),
        )
        .select_from(joined)
        .where(*where)
        .order_by(today.desc(), resource.asc())
    )
    # serial: the baseline's fallback branch, skipped when the baseline exists, is planned
    # parallel and would start its workers anyway.
    rows = read_rows(store, query, "read daily operations per resource", serial=True)
    return _typed(rows, ints=("today", "days", "operations", "squares"))


def daily_operations(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Per UTC day: syncs, failures, mean duration and records processed (seed 004)."""
    p = _partials(
        store, since, until, ("operations", "durations", "duration_ms_sum", "records_processed")
    ).c
    day = _bucket(store, p.hour, "day").label("day")
    query = sa.select(
        day,
        sa.func.sum(p.operations).label("operations"),
        sa.func.sum(p.operations).filter(p.sync_status == "failed").label("failed"),
        rollup.mean(store.dialect, p.duration_ms_sum, p.durations).label("avg_duration_ms"),
        sa.func.sum(p.records_processed).label("records_processed"),
    ).group_by(day)
    rows = read_rows(store, query, "read daily operations")
    return _typed(
        rows, ints=("operations", "failed", "records_processed"), floats=("avg_duration_ms",)
    )


def error_groups(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime, limit: int
) -> list[dict[str, Any]]:
    """Failures grouped by resource and the first 100 characters of their message (seed 004)."""
    coverage = rollup.report_coverage(store)
    window = rollup.error_window(store, coverage, since, until, top=limit)
    query = _error_groups_query(store.dialect, window.shape, limit)
    rows = read_rows(store, query, "read top errors", params=window.params)
    # MIN/MAX of a timestamp lose the column type (SQLite returns text): re-read them.
    return _typed(
        rows,
        ints=("error_count",),
        floats=("avg_duration_before_failure_ms",),
        times=("first_occurrence", "last_occurrence"),
    )


@functools.cache
def _error_groups_query(
    dialect: str, shape: tuple[bool, tuple[bool, ...]], limit: int
) -> sa.Select[Any]:
    """Built once per shape of window: building and cache-keying it cost more than its SQL."""
    p = rollup.error_partials(dialect, shape, top=limit).c

    def bytewise(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        return column.collate("C") if dialect == "postgresql" else column

    # Compared byte-wise on PostgreSQL as on SQLite: the same tie order on both engines, and
    # grouping thousands of groups does not go through the locale's collation.
    resource, summary = bytewise(p.resource), bytewise(p.error_summary)
    error_count = sa.func.sum(p.failures).label("error_count")
    last = sa.func.max(p.last_start).label("last_occurrence")
    return (
        sa.select(
            resource.label("resource"),
            summary.label("error_summary"),
            error_count,
            sa.func.min(p.first_start).label("first_occurrence"),
            last,
            rollup.mean(dialect, p.duration_ms_sum, p.durations).label(
                "avg_duration_before_failure_ms"
            ),
        )
        .group_by(resource, summary)
        .order_by(error_count.desc(), last.desc(), resource.asc(), summary.asc().nulls_first())
        .limit(limit)
    )


def daily_quality(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime, resource: str | None = None
) -> list[dict[str, Any]]:
    """Per UTC day and resource: mean quality scores of the runs that recorded one (seed 002).

    The scores are those :meth:`SyncRun.record_metrics` stores under ``metadata["metrics"]
    ["data_quality"]``: ``completeness_score``, ``accuracy_score``, ``overall_score``. Runs that
    retention moved to ``sync_history_archive`` count, as in :func:`daily_totals`.
    """
    names = ("completeness", "accuracy", "overall")

    def scored_runs(table: sa.Table) -> sa.Select[Any]:
        c = table.c
        scores = [rollup.quality_score(table, f"{name}_score").label(name) for name in names]
        return sa.select(
            _bucket(store, c.sync_start_time, "day").label("day"), c.resource, *scores
        ).where(
            _window(c.sync_start_time, since, until),
            sa.or_(*(score.is_not(None) for score in scores)),
            *([] if resource is None else [c.resource == resource]),
        )

    runs = sa.union_all(scored_runs(sync_history), scored_runs(sync_history_archive)).subquery()
    r = runs.c
    query = sa.select(
        r.day,
        r.resource,
        sa.func.count().label("runs"),
        sa.func.avg(r.completeness).label("completeness"),
        sa.func.avg(r.accuracy).label("accuracy"),
        sa.func.avg(r.overall).label("overall_quality"),
    ).group_by(r.day, r.resource)
    rows = read_rows(store, query, "read daily quality")
    return _typed(rows, ints=("runs",), floats=("completeness", "accuracy", "overall_quality"))


def operation_events_by_category(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Operational events per category in the window: counts, resources, syncs, first and last."""
    log = operation_log.c
    # The window's blocks come from ix_operation_log_event_time_brin (PostgreSQL); the sorts
    # behind GROUP BY and DISTINCT compare bytes, not the locale's collation (same counts).
    category = _bytewise(store, log.category)
    query = (
        sa.select(
            category.label("category"),
            sa.func.count().label("events"),
            sa.func.count(sa.distinct(_bytewise(store, log.resource))).label("resources"),
            sa.func.count(sa.distinct(_bytewise(store, log.sync_id))).label("syncs"),
            sa.func.min(log.event_time).label("first_event"),
            sa.func.max(log.event_time).label("last_event"),
        )
        .where(_window(log.event_time, since, until))
        .group_by(category)
    )
    rows = read_rows(store, query, "read operational events")
    return _typed(rows, ints=("events", "resources", "syncs"), times=("first_event", "last_event"))


__all__: Sequence[str] = (
    "daily_operations",
    "daily_quality",
    "daily_volume_by_source",
    "daily_volume_stats",
    "error_groups",
    "failed_syncs",
    "hourly_counts",
    "operation_events_by_category",
    "performance_by_system",
    "read_rows",
    "window_summary",
)


def health_case(
    now: dt.datetime, *, stuck_after: dt.timedelta, stale_after: dt.timedelta
) -> sa.ColumnElement[str]:
    """Seed 001's colour of a ``sync_state`` row in SQL: ``health.health_indicator``'s rules,
    with the limits its callers pass (the reports pass ``health``'s defaults)."""
    return _colour(now - stuck_after, now - stale_after)


def _colour(stuck_before: Any, stale_before: Any) -> sa.ColumnElement[str]:
    s = sync_state.c
    return sa.case(
        (s.last_sync_status == "failed", "red"),
        (sa.and_(s.last_sync_status == "running", s.started_at < stuck_before), "red"),
        (s.last_sync_time < stale_before, "yellow"),
        (s.last_sync_status == "never_run", "yellow"),
        else_="green",
    )


def colour_counts(
    store: SyncStore, *, now: dt.datetime, stuck_after: dt.timedelta, stale_after: dt.timedelta
) -> dict[str, int]:
    """How many resources are red, yellow and green ``now``, by :func:`health_case`."""
    colour = health_case(now, stuck_after=stuck_after, stale_after=stale_after)
    query = sa.select(
        *(sa.func.count().filter(colour == c).label(c) for c in ("red", "yellow", "green"))
    ).select_from(sync_state)
    (row,) = read_rows(store, query, "count resources by health")
    return {c: _int(row[c]) for c in ("red", "yellow", "green")}


@functools.cache
def _state_health_query(dialect: str, include_healthy: bool) -> sa.Select[Any]:
    """Built once: building and walking the colour's CASE cost more than reading 700 rows."""
    s = sync_state.c
    stale_before = sa.bindparam("stale_before", type_=UTCDateTime())
    length = sa.func.jsonb_array_length if dialect == "postgresql" else sa.func.json_array_length
    query = sa.select(
        s.resource,
        s.last_sync_status.label("status"),
        s.last_sync_time,
        s.started_at,
        s.records_synced,
        s.duration_ms,
        length(s.errors).label("error_count"),
        s.consecutive_failures,
        _colour(sa.bindparam("stuck_before", type_=UTCDateTime()), stale_before).label("health"),
    )
    if include_healthy:
        return query
    # Only rows the two indexes find can be red or yellow; the colour then drops the green ones.
    unhealthy = query.where(
        sa.or_(s.last_sync_status != "success", s.last_sync_time < stale_before)
    ).subquery("unhealthy")
    return sa.select(unhealthy).where(unhealthy.c.health != "green")


def state_health(
    store: SyncStore,
    *,
    now: dt.datetime,
    include_healthy: bool,
    stuck_after: dt.timedelta,
    stale_after: dt.timedelta,
) -> dict[str, list[Any]]:
    """The columns of the status report with each resource's colour (:func:`health_case`), red
    and yellow only unless ``include_healthy``, unordered.

    The unhealthy rows are found through ``ix_sync_state_not_success`` (failed, running, never
    run) and ``ix_sync_state_last_sync_time`` (stale)."""
    query = _state_health_query(store.dialect, include_healthy)
    params = {"stuck_before": now - stuck_after, "stale_before": now - stale_after}
    return _columns(store, query, params, "read resource health")


def daily_totals(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime
) -> list[dict[str, Any]]:
    """Per UTC day over every resource: seed 002's CostTrends figures and quality sums.

    Closed hours come from the roll-ups; the rest, and ``sync_history_archive`` (where retention
    moved older rows; ``daily_rollups`` counts them too), are read live.
    """
    measures = (
        "operations",
        "duration_ms_sum",
        "records_processed",
        "cost_usd",
        "bytes_read",
        "bytes_written",
        "quality_runs",
        "completeness_sum",
        "completeness_n",
        "accuracy_sum",
        "accuracy_n",
        "overall_sum",
        "overall_n",
    )
    coverage = rollup.report_coverage(store)
    history = rollup.hourly_partials(store, coverage, since, until, measures)
    archived = rollup.live_hourly(
        store.dialect,
        sync_history_archive,
        _window(sync_history_archive.c.sync_start_time, since, until),
        measures,
    )
    p = sa.union_all(sa.select(history), archived).subquery("with_archive").c
    day = _bucket(store, p.hour, "day").label("day")

    def by_status(status: str) -> Any:
        return sa.func.sum(p.operations).filter(p.sync_status == status)

    def avg(name: str) -> Any:
        return sa.func.sum(p[f"{name}_sum"]) / sa.func.nullif(sa.func.sum(p[f"{name}_n"]), 0)

    query = sa.select(
        day,
        sa.func.sum(p.operations).label("executions"),
        by_status("success").label("successes"),
        by_status("failed").label("failures"),
        sa.func.round(sa.func.sum(p.cost_usd), rollup_cost_decimals()).label("total_cost_usd"),
        sa.func.sum(p.duration_ms_sum).label("total_duration_ms"),
        sa.func.sum(p.records_processed).label("records_processed"),
        sa.func.sum(p.bytes_read).label("bytes_read"),
        sa.func.sum(p.bytes_written).label("bytes_written"),
        sa.func.sum(p.quality_runs).label("quality_runs"),
        avg("completeness").label("completeness"),
        avg("accuracy").label("accuracy"),
        avg("overall").label("overall_quality"),
    ).group_by(day)
    rows = read_rows(store, query, "read daily totals")
    _typed(
        rows,
        ints=(
            "executions",
            "successes",
            "failures",
            "total_duration_ms",
            "records_processed",
            "bytes_read",
            "bytes_written",
            "quality_runs",
        ),
        floats=("total_cost_usd", "completeness", "accuracy", "overall_quality"),
    )
    for row in rows:
        row["total_cost_usd"] = row["total_cost_usd"] or 0.0
    return rows


def rollup_cost_decimals() -> int:
    from sync_observability.storage.reporting.daily_costs import COST_DECIMALS

    return COST_DECIMALS
