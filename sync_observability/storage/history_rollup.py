"""Hourly roll-ups of ``sync_history`` for the reports: closed hours aggregated once, by query.

The reports' 30-day aggregations would read 1.7 million rows at 10,000 resources; instead they
read ``sync_history_hourly`` (per UTC hour, source, target and status: counts, durations,
records, cost, bytes and quality sums) and ``sync_history_hourly_errors`` (failed runs per hour,
resource and message) for the *closed* hours of their window, and ``sync_history`` itself for
the rest, so the answer is the one a query over ``sync_history`` alone gives.

There is no second write path: the tables are filled from ``sync_history`` by
``INSERT ... SELECT ... GROUP BY`` in :func:`refresh_rollups`, which every report that reads
them calls first (a few milliseconds when nothing closed since the last call; the first call on
an existing history aggregates all of it once). ``sync_rollup_state`` says which hours the
roll-ups hold: exactly ``[rolled_from, rolled_until)``.

When an hour is closed (final), so that its aggregate never changes:

- it ended at least ``GRACE`` ago by the refreshing process's clock (a sync that starts is
  inserted with ``started_at`` = now by the tracker, and commits well within ``GRACE``); and
- no sync that started in it, or in any earlier hour, is still running: a running row's status,
  duration and records change when it finishes, so ``rolled_until`` never passes the start hour
  of the oldest running row (a sync stuck running holds it back until the stuck-run sensor
  reaps it; the reports stay correct, reading more hours live).

Rows that change an already-rolled hour anyway are handled where they are written:

- a sync started with a ``started_at`` more than ``BACKFILL_AFTER`` in the past (a backfill)
  moves ``rolled_until`` back to its hour in the same transaction (:func:`reopen_statement`),
  so the next refresh aggregates that hour again; normal syncs pay nothing;
- retention, before it deletes history rows older than a cutoff, moves ``rolled_from`` up past
  the cutoff and drops the roll-ups below it (:func:`retire_before`): hours that lose rows are
  read live from then on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from sync_observability.storage.schema import (
    UTCDateTime,
    sync_history,
    sync_history_hourly,
    sync_history_hourly_errors,
    sync_rollup_state,
)

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore

GRACE = dt.timedelta(minutes=5)
BACKFILL_AFTER = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
ERROR_SUMMARY_LENGTH = 100  # seed 004: LEFT(error_message, 100)
ANALYZE_AFTER = dt.timedelta(hours=24)  # a refresh spanning this many hours analyzes the tables


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The hours the roll-ups hold: ``[rolled_from, rolled_until)``."""

    rolled_from: dt.datetime
    rolled_until: dt.datetime


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """The start of ``moment``'s UTC hour."""
    return moment.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: dt.datetime) -> dt.datetime:
    """The first hour start at or after ``moment``."""
    start = floor_hour(moment)
    return start if start == moment else start + HOUR


def hour_bucket(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[dt.datetime]:
    """``column`` truncated to its UTC hour, typed like the roll-ups' ``hour``."""
    if dialect == "postgresql":
        return sa.func.date_trunc(
            sa.literal_column("'hour'"), column, sa.literal_column("'UTC'"), type_=UTCDateTime()
        )
    # SQLite stores naive UTC text in UTCDateTime's fixed format (microseconds included).
    return sa.func.strftime(
        sa.literal_column("'%Y-%m-%d %H:00:00.000000'"), column, type_=UTCDateTime()
    )


def _metric(dialect: str, table: sa.FromClause, name: str, sql_type: Any) -> Any:
    """A run metric from ``metadata["metrics"]``, NULL when the run did not record it."""
    if dialect == "postgresql":
        return sa.cast(table.c["metadata"][("metrics", name)].as_string(), sql_type)
    return sa.func.json_extract(table.c["metadata"], f"$.metrics.{name}")


# Where sync_observability.metrics stores the quality scores in sync_history.metadata.
QUALITY_PATH = ("metrics", "data_quality")


def quality_score(table: sa.FromClause, name: str) -> Any:
    """A quality score from ``table.metadata``, NULL when the run did not record it."""
    return table.c["metadata"][(*QUALITY_PATH, name)].as_float()


def hourly_measures(dialect: str, table: sa.FromClause) -> dict[str, Any]:
    """The aggregates of ``sync_history_hourly``, computed from history rows of ``table``."""
    c = table.c
    scores = {
        n: quality_score(table, f"{n}_score") for n in ("completeness", "accuracy", "overall")
    }
    cost_type = sa.Numeric() if dialect == "postgresql" else sa.Float()
    measures: dict[str, Any] = {
        "operations": sa.func.count(),
        "durations": sa.func.count(c.duration_ms),
        "duration_ms_sum": sa.func.coalesce(sa.func.sum(c.duration_ms), 0),
        "duration_ms_max": sa.func.max(c.duration_ms),
        "records_processed": sa.func.coalesce(sa.func.sum(c.records_processed), 0),
        "cost_usd": sa.func.sum(_metric(dialect, table, "total_cost_usd", cost_type)),
        "bytes_read": sa.func.coalesce(
            sa.func.sum(_metric(dialect, table, "bytes_read", sa.BigInteger())), 0
        ),
        "bytes_written": sa.func.coalesce(
            sa.func.sum(_metric(dialect, table, "bytes_written", sa.BigInteger())), 0
        ),
        "quality_runs": sa.func.count().filter(
            sa.or_(*(score.is_not(None) for score in scores.values()))
        ),
    }
    for name, score in scores.items():
        measures[f"{name}_sum"] = sa.func.sum(score)
        measures[f"{name}_n"] = sa.func.count(score)
    return measures


GROUP_COLUMNS = ("source_system", "target_system", "sync_status")


def live_hourly(
    dialect: str, table: sa.FromClause, where: Any, measures: Sequence[str]
) -> sa.Select[Any]:
    """History rows of ``table`` matching ``where``, aggregated to the roll-up's grain."""
    hour = hour_bucket(dialect, table.c.sync_start_time)
    exprs = hourly_measures(dialect, table)
    return (
        sa.select(
            hour.label("hour"),
            *(table.c[name] for name in GROUP_COLUMNS),
            *(exprs[name].label(name) for name in measures),
        )
        .where(where)
        .group_by(hour, *(table.c[name] for name in GROUP_COLUMNS))
    )


def live_errors(dialect: str, where: Any) -> sa.Select[Any]:
    """Failed history rows matching ``where``, aggregated to ``sync_history_hourly_errors``."""
    h = sync_history.c
    hour = hour_bucket(dialect, h.sync_start_time)
    summary = sa.func.substr(h.error_message, 1, ERROR_SUMMARY_LENGTH)
    return (
        sa.select(
            hour.label("hour"),
            h.resource,
            summary.label("error_summary"),
            sa.func.count().label("failures"),
            sa.func.count(h.duration_ms).label("durations"),
            sa.func.coalesce(sa.func.sum(h.duration_ms), 0).label("duration_ms_sum"),
            sa.func.min(h.sync_start_time).label("first_start"),
            sa.func.max(h.sync_start_time).label("last_start"),
        )
        .where(h.sync_status == "failed", where)
        .group_by(hour, h.resource, summary)
    )


def _range(column: sa.ColumnElement[Any], since: dt.datetime, until: dt.datetime) -> Any:
    return sa.and_(column >= since, column < until)


def refresh_rollups(store: SyncStore) -> Coverage | None:
    """Aggregate the hours that closed since the last refresh; returns what the roll-ups hold.

    Idempotent and safe to run concurrently (the state row is locked; SQLite serializes
    writers). None while ``sync_history`` is empty.
    """
    from sync_observability.storage.store import utcnow

    dialect = store.dialect
    h = sync_history.c
    insert = postgresql.insert if dialect == "postgresql" else sqlite_dialect.insert

    def closable(conn: sa.Connection, wall: dt.datetime) -> dt.datetime:
        """The end of the last hour that may be closed now."""
        until = floor_hour(wall - GRACE)
        running = conn.execute(
            sa.select(sa.func.min(h.sync_start_time)).where(h.sync_status == "running")
        ).scalar()
        return until if running is None else min(until, floor_hour(running))

    def check(conn: sa.Connection) -> Coverage | None:
        """Without a lock: the coverage when nothing closed since the last refresh."""
        state = conn.execute(sa.select(sync_rollup_state)).one_or_none()
        if state is None or closable(conn, utcnow()) > state.rolled_until:
            return None
        return Coverage(state.rolled_from, state.rolled_until)

    # Hours close at most once an hour: most calls stop at this read and write nothing.
    unchanged = store._read(check, "check report roll-ups")
    if unchanged is not None:
        return unchanged

    def tx(conn: sa.Connection) -> Coverage | None:
        wall = utcnow()
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None:
            first = conn.execute(sa.select(sa.func.min(h.sync_start_time))).scalar()
            if first is None:
                return None
            start = floor_hour(first)
            conn.execute(
                insert(sync_rollup_state)
                .values(id=1, rolled_from=start, rolled_until=start, refreshed_at=wall)
                .on_conflict_do_nothing()
            )
            state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one()
        until = closable(conn, wall)
        current = state.rolled_until
        if until <= current:
            return Coverage(state.rolled_from, current)
        for table in (sync_history_hourly, sync_history_hourly_errors):
            conn.execute(sa.delete(table).where(table.c.hour >= current))
        window = _range(h.sync_start_time, current, until)
        measures = list(hourly_measures(dialect, sync_history))  # built only when needed
        # In hour order, so that a report's range of hours reads adjacent pages (a backfill of
        # many hours would otherwise land in the aggregate's hash order).
        live = live_hourly(dialect, sync_history, window, measures)
        conn.execute(
            sa.insert(sync_history_hourly).from_select(
                ["hour", *GROUP_COLUMNS, *measures], live.order_by(sa.literal_column("hour"))
            )
        )
        errors = live_errors(dialect, window)
        conn.execute(
            sa.insert(sync_history_hourly_errors).from_select(
                [column.name for column in errors.selected_columns],
                errors.order_by(sa.literal_column("hour")),
            )
        )
        conn.execute(sa.update(sync_rollup_state).values(rolled_until=until, refreshed_at=wall))
        if dialect == "postgresql" and until - current >= ANALYZE_AFTER:
            # A first fill or a long backfill: without fresh statistics the planner expects a
            # handful of rows per range and sorts thousands by collation (autovacuum's analyze
            # comes later). Hourly refreshes leave it to autovacuum.
            conn.exec_driver_sql("ANALYZE sync_history_hourly, sync_history_hourly_errors")
        return Coverage(state.rolled_from, until)

    return store._write(tx, "refresh report roll-ups")


def report_coverage(store: SyncStore) -> Coverage | None:
    """The hours a report may read from the roll-ups, per the store's ``rollups`` mode.

    ``"refresh"``: :func:`refresh_rollups` first. ``"read"``: what is rolled up already, with no
    write (a read-only replica or user). ``"off"``: None, every hour read from ``sync_history``.
    """
    if store.rollups == "refresh":
        return refresh_rollups(store)
    if store.rollups == "off":
        return None

    def read(conn: sa.Connection) -> Coverage | None:
        state = conn.execute(sa.select(sync_rollup_state)).one_or_none()
        return None if state is None else Coverage(state.rolled_from, state.rolled_until)

    return store._read(read, "read report roll-ups coverage")


def reopen_statement(started_at: dt.datetime) -> sa.Update:
    """The UPDATE that makes the hour of a backfilled ``started_at`` (and later ones) open.

    Run in the transaction that inserts the history row; it waits for a concurrent refresh's
    lock, so the refresh either saw the row or is undone from that hour by this update.
    """
    hour = floor_hour(started_at)
    state = sync_rollup_state.c
    return (
        sa.update(sync_rollup_state)
        .where(state.rolled_until > hour)
        .values(
            rolled_until=sa.case(
                (state.rolled_from < hour, sa.literal(hour, UTCDateTime())),
                else_=state.rolled_from,
            )
        )
    )


def is_backfill(started_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a sync starting at ``started_at`` may land in an hour already rolled up."""
    if started_at.tzinfo is None:
        return False  # refused with its own error when the row is written
    return started_at < now - BACKFILL_AFTER


def retire_before(store: SyncStore, before: dt.datetime) -> None:
    """Stop using the roll-ups for hours that start before ``before`` (retention calls this).

    Rows older than ``before`` may be deleted after this; the hours that hold them are then
    read from ``sync_history`` by the reports.
    """
    boundary = ceil_hour(before)

    def tx(conn: sa.Connection) -> None:
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None or state.rolled_from >= boundary:
            return
        for table in (sync_history_hourly, sync_history_hourly_errors):
            conn.execute(sa.delete(table).where(table.c.hour < boundary))
        conn.execute(
            sa.update(sync_rollup_state).values(
                rolled_from=boundary, rolled_until=max(state.rolled_until, boundary)
            )
        )

    store._write(tx, "retire report roll-ups")


@dataclasses.dataclass(frozen=True)
class Split:
    """A report window split into rolled-up hours and the history ranges read live."""

    rolled: tuple[dt.datetime, dt.datetime] | None
    live: tuple[tuple[dt.datetime, dt.datetime, bool], ...]  # (since, until, until included)


def split_window(coverage: Coverage | None, since: dt.datetime, until: dt.datetime) -> Split:
    """``[since, until]`` as whole rolled hours plus the live ranges around them."""
    if coverage is None or until < since:
        return Split(None, ((since, until, True),))
    low = max(ceil_hour(since), coverage.rolled_from)
    high = min(coverage.rolled_until, floor_hour(until))
    if low >= high:
        return Split(None, ((since, until, True),))
    live = []
    if since < low:
        live.append((since, low, False))
    live.append((high, until, True))
    return Split((low, high), tuple(live))


def live_where(column: sa.ColumnElement[Any], part: tuple[dt.datetime, dt.datetime, bool]) -> Any:
    since, until, inclusive = part
    return sa.and_(column >= since, column <= until if inclusive else column < until)


def hourly_partials(
    store: SyncStore,
    coverage: Coverage | None,
    since: dt.datetime,
    until: dt.datetime,
    measures: Sequence[str],
    *,
    only: Any = None,
) -> sa.Subquery:
    """Per (hour, source, target, status) over ``[since, until]``: rolled hours plus live ones.

    Args:
        only: an extra condition on ``sync_status`` (a callable taking the column).
    """
    split = split_window(coverage, since, until)
    parts: list[sa.Select[Any]] = []
    if split.rolled is not None:
        r = sync_history_hourly.c
        part = sa.select(
            r.hour, *(r[name] for name in GROUP_COLUMNS), *(r[name] for name in measures)
        ).where(_range(r.hour, *split.rolled))
        if only is not None:
            part = part.where(only(r.sync_status))
        parts.append(part)
    for live in split.live:
        where = live_where(sync_history.c.sync_start_time, live)
        if only is not None:
            where = sa.and_(where, only(sync_history.c.sync_status))
        parts.append(live_hourly(store.dialect, sync_history, where, measures))
    return sa.union_all(*parts).subquery("partials")


def error_partials(
    store: SyncStore, coverage: Coverage | None, since: dt.datetime, until: dt.datetime
) -> sa.Subquery:
    """Failed runs per (hour, resource, message summary) over ``[since, until]``."""
    split = split_window(coverage, since, until)
    parts: list[sa.Select[Any]] = []
    if split.rolled is not None:
        e = sync_history_hourly_errors.c
        parts.append(
            sa.select(
                e.hour,
                e.resource,
                e.error_summary,
                e.failures,
                e.durations,
                e.duration_ms_sum,
                e.first_start,
                e.last_start,
            ).where(_range(e.hour, *split.rolled))
        )
    for live in split.live:
        parts.append(live_errors(store.dialect, live_where(sync_history.c.sync_start_time, live)))
    return sa.union_all(*parts).subquery("error_partials")


def mean(dialect: str, total: Any, count: Any) -> Any:
    """``SUM(total) / SUM(count)`` computed as the engine's ``AVG`` computes it (NULL for 0)."""
    numerator = sa.cast(sa.func.sum(total), sa.Numeric() if dialect == "postgresql" else sa.Float())
    return numerator / sa.func.nullif(sa.func.sum(count), 0)


__all__: Sequence[str] = (
    "BACKFILL_AFTER",
    "GRACE",
    "Coverage",
    "refresh_rollups",
    "report_coverage",
    "retire_before",
)
