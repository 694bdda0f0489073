"""Hourly roll-ups of ``sync_history`` for the reports: closed hours aggregated once, by query.

The reports' 30-day aggregations would read 1.7 million rows at 10,000 resources; instead they
read ``sync_history_hourly`` (per UTC hour, source, target and status: counts, durations,
records, cost, bytes and quality sums) and ``sync_history_hourly_errors`` (failed runs per hour,
resource and message) for the *closed* hours of their window, and ``sync_history`` itself for
the rest, so the answer is the one a query over ``sync_history`` alone gives.

The same refresh adds the closed hours to ``sync_history_daily`` (syncs per resource and UTC
day; a day's row counts its hours before ``rolled_until``), and the volume-anomalies report sums
a range of its whole days per resource once into ``sync_volume_baseline``.

There is no second write path: the tables are filled from ``sync_history`` by
``INSERT ... SELECT ... GROUP BY`` in :func:`refresh_rollups`, which every report that reads
them calls first (a few milliseconds when nothing closed since the last call; the first call on
an existing history aggregates all of it once). ``sync_rollup_state`` says which hours the
roll-ups hold: exactly ``[rolled_from, rolled_until)``.

An hour is closed (rolled up) once it ended at least ``GRACE`` ago by the refreshing process's
clock (a sync that starts is inserted with ``started_at`` = now by the tracker, and commits well
within ``GRACE``). Its runs are final then, except those still running: their status, duration
and records change when they finish. Those are listed in ``sync_rollup_pending`` instead of
being aggregated; the reports read them from ``sync_history`` (a few index lookups), and the
first refresh after they finish adds them to the roll-ups. A sync stuck running costs one
lookup per report, not every later hour read live.

Rows that change an already-rolled hour anyway are handled where they are written:

- a sync started with a ``started_at`` more than ``BACKFILL_AFTER`` in the past (a backfill)
  moves ``rolled_until`` back to its day's midnight in the same transaction
  (:mod:`.backfills`, which the tracker's hot path imports instead of this module), so the next
  refresh aggregates that day again; normal syncs pay nothing;
- retention, before it deletes history rows older than a cutoff, moves ``rolled_from`` up past
  the cutoff and drops the roll-ups below it (:func:`retire_before`): hours that lose rows are
  read live from then on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sync_observability.clock import (
    DAY,
    HOUR,
    ceil_day,
    ceil_hour,
    floor_day,
    floor_hour,
    utcnow,
)
from sync_observability.storage.schema import (
    UTCDateTime,
    sync_error_group_sums,
    sync_history,
    sync_history_daily,
    sync_history_hourly,
    sync_history_hourly_errors,
    sync_rollup_pending,
    sync_rollup_state,
    sync_volume_baseline,
)

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore

GRACE = dt.timedelta(minutes=5)
ERROR_SUMMARY_LENGTH = 100  # seed 004's LEFT(error_message, 100) (docs/seeds.md)
ANALYZE_AFTER = dt.timedelta(hours=24)  # a refresh spanning this many hours analyzes the tables
FILL_STEP = dt.timedelta(hours=24)  # the most history one refresh transaction rolls up


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The hours the roll-ups hold: ``[rolled_from, rolled_until)``."""

    rolled_from: dt.datetime
    rolled_until: dt.datetime


_TRUNCATED = {"hour": "'%Y-%m-%d %H:00:00.000000'", "day": "'%Y-%m-%d 00:00:00.000000'"}


def time_bucket(
    dialect: str, column: sa.ColumnElement[Any], unit: str = "hour"
) -> sa.ColumnElement[dt.datetime]:
    """``column`` truncated to its UTC hour (or day), typed like the roll-ups' ``hour``."""
    if dialect == "postgresql":
        return sa.func.date_trunc(
            sa.literal_column(f"'{unit}'"), column, sa.literal_column("'UTC'"), type_=UTCDateTime()
        )
    # SQLite stores naive UTC text in UTCDateTime's fixed format (microseconds included).
    return sa.func.strftime(sa.literal_column(_TRUNCATED[unit]), column, type_=UTCDateTime())


def hour_of_day(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """The UTC hour (0 to 23) of ``column``."""
    if dialect == "postgresql":
        return sa.cast(
            sa.func.date_part(
                sa.literal_column("'hour'"), sa.func.timezone(sa.literal_column("'UTC'"), column)
            ),
            sa.Integer,
        )
    return sa.cast(sa.func.strftime(sa.literal_column("'%H'"), column), sa.Integer)


# sync_history_daily's counts of the syncs started before 01:00, ..., 23:00 UTC.
BEFORE_HOURS = tuple(range(1, 24))


def before_column(table: sa.FromClause, hours: int) -> sa.ColumnElement[int]:
    """A daily roll-up's count of the day's syncs before ``hours``:00 UTC (1 to 24)."""
    return table.c["operations"] if hours == 24 else table.c[f"before_{hours:02d}"]


def keyed_daily_counts(
    dialect: str, time: sa.ColumnElement[dt.datetime], key: sa.ColumnElement[str], where: Any
) -> sa.Select[Any]:
    """Rows matching ``where`` counted per UTC day of ``time`` and ``key``, as ``day``, ``key``,
    ``operations`` and ``before_01`` .. ``before_23`` (those before 01:00 .. 23:00 UTC), in day
    order: the shape of ``sync_history_daily``, for any table with a time and a key column (the
    same-hours comparison of :func:`daily_volume_parts` reads one value per key and day).
    """
    runs = sa.select(
        time_bucket(dialect, time, "day").label("day"),
        key.label("key"),
        hour_of_day(dialect, time).label("hour"),
    ).where(where)
    r = runs.subquery("runs").c
    return (
        sa.select(
            r.day,
            r.key,
            sa.func.count().label("operations"),
            *(
                sa.func.count().filter(r.hour < hour).label(f"before_{hour:02d}")
                for hour in BEFORE_HOURS
            ),
        )
        .group_by(r.day, r.key)
        .order_by(r.day)
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
    hour = time_bucket(dialect, table.c.sync_start_time)
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
    hour = time_bucket(dialect, h.sync_start_time)
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


def _range(column: sa.ColumnElement[Any], since: Any, until: Any) -> Any:
    return sa.and_(column >= since, column < until)


# A sync_rollup_pending row and the sync_history row of the same run (the start time lets a
# partitioned sync_history find it in one partition).
_LISTED_RUN = sa.and_(
    sync_rollup_pending.c.sync_id == sync_history.c.sync_id,
    sync_rollup_pending.c.sync_start_time == sync_history.c.sync_start_time,
)


def refresh_rollups(store: SyncStore) -> Coverage | None:
    """Aggregate the hours that closed since the last refresh; returns what the roll-ups hold.

    Idempotent and safe to run concurrently (the state row is locked; SQLite serializes
    writers). None while ``sync_history`` is empty.
    """
    dialect = store.dialect
    h = sync_history.c

    p = sync_rollup_pending.c
    # A listed run that is no longer running (or is gone): its hour's roll-up misses it.
    ended = ~sa.exists(sa.select(h.sync_id).where(_LISTED_RUN, h.sync_status == "running"))

    def check(conn: sa.Connection) -> Coverage | None:
        """Without a lock: the coverage when nothing closed or finished since the last refresh."""
        s = sync_rollup_state.c
        state = conn.execute(  # one round trip: the state and whether a listed run ended
            sa.select(
                s.rolled_from,
                s.rolled_until,
                sa.exists().select_from(sync_rollup_pending).where(ended).label("ended"),
            )
        ).one_or_none()
        if state is None or floor_hour(utcnow() - GRACE) > state.rolled_until or state.ended:
            return None
        return Coverage(state.rolled_from, state.rolled_until)

    # Hours close at most once an hour: most calls stop at this read and write nothing.
    unchanged = store.db.read(check, "check report roll-ups")
    if unchanged is not None:
        return unchanged

    def tx(conn: sa.Connection) -> tuple[Coverage | None, bool, dt.timedelta]:
        """One step: the coverage, whether more hours closed than it rolled up, and how long a
        stretch it rolled up."""
        wall = utcnow()
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None:
            first = conn.execute(sa.select(sa.func.min(h.sync_start_time))).scalar()
            if first is None:
                return None, False, dt.timedelta(0)
            start = floor_hour(first)
            conn.execute(
                store.db.insert(sync_rollup_state)
                .values(id=1, rolled_from=start, rolled_until=start, refreshed_at=wall)
                .on_conflict_do_nothing()
            )
            state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one()
        closed = floor_hour(wall - GRACE)
        current = state.rolled_until
        until = closed
        if closed > current:
            # At most FILL_STEP of history per transaction (from the next run on, so that
            # empty stretches cost nothing): a first fill does not hold the state row, which
            # backfills and retention wait for, nor SQLite's write lock, for its whole length.
            following = conn.execute(
                sa.select(sa.func.min(h.sync_start_time)).where(h.sync_start_time >= current)
            ).scalar()
            if following is not None:
                until = min(closed, max(current, floor_hour(following)) + FILL_STEP)
        measures = list(hourly_measures(dialect, sync_history))  # not built by the check above
        sums = sync_error_group_sums.c
        if until > current:  # after a backfill, current's hours may be rolled: redone below
            for table in (sync_history_hourly, sync_history_hourly_errors):
                conn.execute(sa.delete(table).where(table.c.hour >= current))
            conn.execute(sa.delete(sync_rollup_pending).where(p.sync_start_time >= current))
            conn.execute(sa.delete(sync_error_group_sums).where(sums.until_hour > current))
        # Listed runs that have finished (or are gone) are marked first, so that the rows
        # added and the rows deleted below are the same ones whatever finishes meanwhile (a
        # finished run never changes again).
        marked = conn.execute(sa.update(sync_rollup_pending).where(ended).values(finished=True))
        if marked.rowcount:  # their failures join rolled hours that cached sums may cover
            conn.execute(sa.delete(sync_error_group_sums))
        done = sa.exists().where(_LISTED_RUN, p.finished)
        _insert_rollups(conn, dialect, done, measures)
        conn.execute(sa.delete(sync_rollup_pending).where(p.finished))
        if until <= current:
            return Coverage(state.rolled_from, current), False, dt.timedelta(0)
        # The new hours. Runs still running are listed first; the rest of each hour is final.
        window = _range(h.sync_start_time, current, until)
        conn.execute(
            sa.insert(sync_rollup_pending).from_select(
                ["sync_id", "sync_start_time"],
                sa.select(h.sync_id, h.sync_start_time).where(window, h.sync_status == "running"),
            )
        )
        listed = sa.exists().where(_LISTED_RUN)
        _insert_rollups(conn, dialect, sa.and_(window, ~listed), measures)
        _refresh_days(conn, store, Coverage(state.rolled_from, current), until)
        conn.execute(sa.update(sync_rollup_state).values(rolled_until=until, refreshed_at=wall))
        return Coverage(state.rolled_from, until), until < closed, until - current

    def analyze(conn: sa.Connection) -> None:
        conn.exec_driver_sql(
            "ANALYZE sync_history_hourly, sync_history_hourly_errors, sync_history_daily"
        )

    # A first fill or a long backfill: without fresh statistics the planner expects a handful
    # of rows per range (reports then sort thousands by collation; the next steps scan the
    # growing tables instead of their indexes). Autovacuum's analyze comes later, and is
    # enough for hourly refreshes.
    rolled, analyzed = dt.timedelta(0), dt.timedelta(0)
    _ENSURED.pop(store, None)  # this refresh may drop cached sums: look again
    more = True
    while more:
        coverage, more, step = store.db.write(tx, "refresh report roll-ups")
        rolled += step
        if dialect == "postgresql" and rolled >= max(ANALYZE_AFTER, 2 * analyzed):
            store.db.write(analyze, "analyze report roll-ups")
            analyzed = rolled
    return coverage


def _insert_rollups(conn: sa.Connection, dialect: str, where: Any, measures: Sequence[str]) -> None:
    """Aggregate the history rows matching ``where`` into both hourly roll-up tables."""
    # In hour order, so that a report's range of hours reads adjacent pages (a backfill of
    # many hours would otherwise land in the aggregate's hash order).
    live = live_hourly(dialect, sync_history, where, measures)
    conn.execute(
        sa.insert(sync_history_hourly).from_select(
            ["hour", *GROUP_COLUMNS, *measures], live.order_by(sa.literal_column("hour"))
        )
    )
    errors = live_errors(dialect, where)
    conn.execute(
        sa.insert(sync_history_hourly_errors).from_select(
            [column.name for column in errors.selected_columns],
            errors.order_by(sa.literal_column("hour")),
        )
    )


def pending_runs(rolled: tuple[Any, Any]) -> Any:
    """The ``sync_history`` rows of the rolled hours ``rolled`` that the roll-ups left out
    (running when their hour was rolled up): reports read them live."""
    return sa.exists().where(_LISTED_RUN, _range(sync_rollup_pending.c.sync_start_time, *rolled))


def daily_coverage(coverage: Coverage) -> tuple[dt.datetime, dt.datetime]:
    """The whole UTC days of ``coverage``: those ``sync_history_daily`` holds whole (maybe none).

    The day after them, when it starts inside the coverage, is held too, for its hours up to
    ``rolled_until`` (today's closed hours).
    """
    return ceil_day(coverage.rolled_from), floor_day(coverage.rolled_until)


def _refresh_days(
    conn: sa.Connection, store: SyncStore, before: Coverage, until: dt.datetime
) -> None:
    """Add the hours ``[before.rolled_until, until)`` to the syncs per resource and day.

    A day's row counts the hours of that day before ``rolled_until``. A backfill moves
    ``rolled_until`` back to a midnight (:func:`.backfills.reopen_statement`): the rows from
    there on are dropped and counted again, with the baselines that summed them.
    """
    current = before.rolled_until
    d = sync_history_daily.c
    conn.execute(sa.delete(sync_history_daily).where(d.day >= current))
    baseline = sync_volume_baseline.c
    conn.execute(sa.delete(sync_volume_baseline).where(baseline.until_day > floor_day(current)))
    start = max(current, ceil_day(before.rolled_from))
    if until <= start:
        return
    h = sync_history.c
    counts = keyed_daily_counts(
        store.dialect, h.sync_start_time, h.resource, _range(h.sync_start_time, start, until)
    )
    befores = [f"before_{hour:02d}" for hour in BEFORE_HOURS]
    statement = store.db.insert(sync_history_daily).from_select(
        ["day", "resource", "operations", *befores], counts
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["day", "resource"],
            set_={name: d[name] + statement.excluded[name] for name in ("operations", *befores)},
        )
    )


_MAY_REFRESH: weakref.WeakKeyDictionary[SyncStore, bool] = weakref.WeakKeyDictionary()
# Per store, the cached sums (baseline, error groups) this process last found or made, by what
# they cache: a report asks the database again only when its range changes (hourly). A cache
# dropped since (by a backfill, retention, another process's range) costs nothing but speed:
# the reports' statements read the roll-ups themselves when their cached sums are missing.
_ENSURED: weakref.WeakKeyDictionary[SyncStore, dict[str, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _ensured(store: SyncStore, what: str, key: tuple[Any, ...]) -> bool:
    return _ENSURED.get(store, {}).get(what) == key


def _remember(store: SyncStore, what: str, key: tuple[Any, ...]) -> None:
    _ENSURED.setdefault(store, {})[what] = key


_ROLLUP_TABLES = (
    sync_error_group_sums,
    sync_history_hourly,
    sync_history_hourly_errors,
    sync_history_daily,
    sync_volume_baseline,
    sync_rollup_pending,
    sync_rollup_state,
)


def rollups_mode(store: SyncStore) -> str:
    """The store's ``rollups`` mode, but ``"read"`` for ``"refresh"`` when the database role
    cannot write the roll-ups (a reader, a hot standby): reports degrade to reading them.

    Checked once per store on PostgreSQL (``has_table_privilege``, ``pg_is_in_recovery``). A
    role restricted to some resources (``sync-obs roles restrict``) sees no roll-up state, so
    its reports read ``sync_history``, which its policy filters.
    """
    if store.rollups != "refresh" or store.dialect != "postgresql":
        return store.rollups
    may = _MAY_REFRESH.get(store)
    if may is None:
        checks = " AND ".join(
            f"has_table_privilege('{table.name}', '{privilege}')"
            for table in _ROLLUP_TABLES
            for privilege in ("INSERT", "UPDATE", "DELETE")
        )
        query = sa.text(f"SELECT NOT pg_is_in_recovery() AND {checks}")
        may = _MAY_REFRESH[store] = bool(
            store.db.read(lambda conn: conn.execute(query).scalar_one(), "check roll-up rights")
        )
    return "refresh" if may else "read"


def report_coverage(store: SyncStore) -> Coverage | None:
    """The hours a report may read from the roll-ups, per :func:`rollups_mode`.

    ``"refresh"``: :func:`refresh_rollups` first. ``"read"``: what is rolled up already, with no
    write (a read-only replica or user). ``"off"``: None, every hour read from ``sync_history``.
    """
    mode = rollups_mode(store)
    if mode == "refresh":
        return refresh_rollups(store)
    if mode == "off":
        return None

    def read(conn: sa.Connection) -> Coverage | None:
        state = conn.execute(sa.select(sync_rollup_state)).one_or_none()
        return None if state is None else Coverage(state.rolled_from, state.rolled_until)

    return store.db.read(read, "read report roll-ups coverage")


def retire_before(store: SyncStore, before: dt.datetime) -> None:
    """Stop using the roll-ups for hours that start before ``before`` (retention calls this).

    Rows older than ``before`` may be deleted after this; the hours that hold them are then
    read from ``sync_history`` by the reports.
    """
    boundary = ceil_hour(before)

    def tx(conn: sa.Connection) -> None:
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None:
            # Nothing rolled up yet: start the roll-ups at the boundary, so that a first
            # refresh running meanwhile does not roll up the rows being deleted.
            conn.execute(
                store.db.insert(sync_rollup_state)
                .values(id=1, rolled_from=boundary, rolled_until=boundary, refreshed_at=utcnow())
                .on_conflict_do_nothing()
            )
            state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one()
        if state.rolled_from >= boundary:
            return
        for table in (sync_history_hourly, sync_history_hourly_errors):
            conn.execute(sa.delete(table).where(table.c.hour < boundary))
        sums = sync_error_group_sums.c
        conn.execute(sa.delete(sync_error_group_sums).where(sums.from_hour < boundary))
        conn.execute(
            sa.delete(sync_rollup_pending).where(sync_rollup_pending.c.sync_start_time < boundary)
        )
        first_day = ceil_day(boundary)
        conn.execute(sa.delete(sync_history_daily).where(sync_history_daily.c.day < first_day))
        conn.execute(
            sa.delete(sync_volume_baseline).where(sync_volume_baseline.c.from_day < first_day)
        )
        conn.execute(
            sa.update(sync_rollup_state).values(
                rolled_from=boundary, rolled_until=max(state.rolled_until, boundary)
            )
        )

    store.db.write(tx, "retire report roll-ups")


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


def live_where(column: sa.ColumnElement[Any], part: tuple[Any, Any, bool]) -> Any:
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
        where = pending_runs(split.rolled)
        if only is not None:
            where = sa.and_(where, only(sync_history.c.sync_status))
        parts.append(live_hourly(store.dialect, sync_history, where, measures))
    for live in split.live:
        where = live_where(sync_history.c.sync_start_time, live)
        if only is not None:
            where = sa.and_(where, only(sync_history.c.sync_status))
        parts.append(live_hourly(store.dialect, sync_history, where, measures))
    return sa.union_all(*parts).subquery("partials")


_ERROR_COLUMNS = (
    "resource",
    "error_summary",
    "failures",
    "durations",
    "duration_ms_sum",
    "first_start",
    "last_start",
)


@dataclasses.dataclass(frozen=True)
class ErrorWindow:
    """A window of :func:`error_partials`: its shape (whether it has rolled hours; whether each
    live range includes its end) and the bound values of its ranges."""

    shape: tuple[bool, tuple[bool, ...]]
    params: dict[str, dt.datetime]


def error_window(
    store: SyncStore,
    coverage: Coverage | None,
    since: dt.datetime,
    until: dt.datetime,
    *,
    top: int | None = None,
) -> ErrorWindow:
    """``[since, until]`` split for :func:`error_partials`; with ``top``, the failure groups of
    its rolled hours are summed first when they are not yet (:func:`ensure_error_group_sums`)."""
    split = split_window(coverage, since, until)
    params: dict[str, dt.datetime] = {}
    if split.rolled is not None:
        params["rolled_from"], params["rolled_until"] = split.rolled
        if top is not None and rollups_mode(store) == "refresh":
            ensure_error_group_sums(store, *split.rolled)
    for i, (start, end, _) in enumerate(split.live):
        params[f"live{i}_from"], params[f"live{i}_until"] = start, end
    shape = (split.rolled is not None, tuple(inclusive for _, _, inclusive in split.live))
    return ErrorWindow(shape, params)


def _bound(name: str) -> sa.BindParameter[dt.datetime]:
    return sa.bindparam(name, type_=UTCDateTime())


def error_partials(
    dialect: str, shape: tuple[bool, tuple[bool, ...]], *, top: int | None = None
) -> sa.Subquery:
    """Failed runs per (hour, resource, message summary) over an :class:`ErrorWindow` of
    ``shape``, its ranges as bound parameters (the statement is the same for every window of
    that shape: built once, see ``queries.error_groups``).

    With ``top``: only the groups that can be among the ``top`` most frequent, for a report
    that keeps those. The rolled hours then come from their sums per group
    (:func:`ensure_error_group_sums`): those whose sum reaches the ``top``-th largest, and those
    that also failed in the hours read live. Any other group has fewer failures than ``top``
    groups, so it cannot rank among them (ties included: it is strictly below).
    """
    has_rolled, live_shape = shape
    rolled = (_bound("rolled_from"), _bound("rolled_until"))
    live: list[sa.Select[Any]] = []
    if has_rolled:
        live.append(live_errors(dialect, pending_runs(rolled)))
    for i, inclusive in enumerate(live_shape):
        part = (_bound(f"live{i}_from"), _bound(f"live{i}_until"), inclusive)
        live.append(live_errors(dialect, live_where(sync_history.c.sync_start_time, part)))
    if not has_rolled:
        return sa.union_all(*live).subquery("error_partials")
    e = sync_history_hourly_errors.c
    hourly = sa.select(e.hour, *(e[name] for name in _ERROR_COLUMNS)).where(_range(e.hour, *rolled))
    if top is None:
        return sa.union_all(hourly, *live).subquery("error_partials")
    live_failures = sa.union_all(*live).cte("live_failures")  # read once, used twice
    parts = _summed_errors(rolled, live_failures, top, hourly)
    return sa.union_all(*parts, sa.select(live_failures)).subquery("error_partials")


def _summed_errors(
    rolled: tuple[Any, Any],
    live: sa.CTE,
    top: int,
    hourly: sa.Select[Any],
) -> list[sa.Select[Any]]:
    """The rolled hours' groups that can reach the ``top``: from the cached sums when there are
    some for ``rolled``, else every hourly row (both in one statement)."""
    g = sync_error_group_sums.c
    key = sa.and_(g.from_hour == rolled[0], g.until_hour == rolled[1])
    kth = sa.func.coalesce(
        sa.select(g.failures)
        .where(key)
        .order_by(g.failures.desc())
        .offset(top - 1)
        .limit(1)
        .scalar_subquery(),
        0,
    )
    columns = (g.from_hour.label("hour"), *(g[name] for name in _ERROR_COLUMNS))
    reaching = sa.select(*columns).where(key, g.failures >= kth)
    groups = sa.select(live.c.resource, live.c.error_summary).distinct().subquery("live_groups")
    also_live = (
        sa.select(*columns)
        .join_from(
            sync_error_group_sums,
            groups,
            sa.and_(
                g.resource == groups.c.resource,
                g.error_summary.is_not_distinct_from(groups.c.error_summary),
            ),
        )
        .where(key, g.failures < kth)
    )
    return [reaching, also_live, hourly.where(~sa.exists().where(key))]


def ensure_error_group_sums(
    store: SyncStore, from_hour: dt.datetime, until_hour: dt.datetime
) -> None:
    """Sum ``sync_history_hourly_errors`` over ``[from_hour, until_hour)`` per (resource, message
    summary), once per range, while those hours are rolled up (checked under the state row's
    lock); the sums of any other range are dropped (the top-errors window moves hourly)."""
    if _ensured(store, "errors", (from_hour, until_hour)):
        return
    g = sync_error_group_sums.c
    key = sa.and_(g.from_hour == from_hour, g.until_hour == until_hour)
    found = sa.select(sa.exists().where(key))
    if store.db.read(lambda conn: conn.execute(found).scalar_one(), "check error group sums"):
        _remember(store, "errors", (from_hour, until_hour))
        return

    def tx(conn: sa.Connection) -> None:
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None or conn.execute(found).scalar_one():
            return
        if not state.rolled_from <= from_hour < until_hour <= state.rolled_until:
            return
        e = sync_history_hourly_errors.c
        sums = (
            sa.select(
                sa.literal(from_hour, UTCDateTime()),
                sa.literal(until_hour, UTCDateTime()),
                e.resource,
                e.error_summary,
                sa.func.sum(e.failures),
                sa.func.sum(e.durations),
                sa.func.sum(e.duration_ms_sum),
                sa.func.min(e.first_start),
                sa.func.max(e.last_start),
            )
            .where(_range(e.hour, from_hour, until_hour))
            .group_by(e.resource, e.error_summary)
        )
        conn.execute(sa.delete(sync_error_group_sums).where(~key))
        columns = ["from_hour", "until_hour", *_ERROR_COLUMNS]
        conn.execute(sa.insert(sync_error_group_sums).from_select(columns, sums))
        if store.dialect == "postgresql":  # a new range: the planner's estimates need it
            conn.exec_driver_sql("ANALYZE sync_error_group_sums")

    store.db.write(tx, "sum the error groups")
    _remember(store, "errors", (from_hour, until_hour))


def ensure_baseline(
    store: SyncStore, from_day: dt.datetime, until_day: dt.datetime, hours: int = 24
) -> None:
    """Sum ``sync_history_daily``'s counts before ``hours``:00 UTC over ``[from_day, until_day)``
    per resource, once per range and hour (24: whole days).

    Only while those days are rolled up (checked under the state row's lock, which refreshes,
    backfills and retention take to change them); the sums of any other range or hour are
    dropped (a report's range and hour change at most once an hour).
    """
    if _ensured(store, "volume", (from_day, until_day, hours)):
        return
    b = sync_volume_baseline.c
    key = sa.and_(b.from_day == from_day, b.until_day == until_day, b.hours == hours)
    found = sa.select(sa.exists().where(key))
    if store.db.read(lambda conn: conn.execute(found).scalar_one(), "check volume baseline"):
        _remember(store, "volume", (from_day, until_day, hours))
        return

    def tx(conn: sa.Connection) -> None:
        state = conn.execute(sa.select(sync_rollup_state).with_for_update()).one_or_none()
        if state is None or conn.execute(found).scalar_one():
            return
        first, end = daily_coverage(Coverage(state.rolled_from, state.rolled_until))
        if not first <= from_day < until_day <= end:
            return
        d = sync_history_daily.c
        counted = before_column(sync_history_daily, hours)
        sums = (
            sa.select(
                sa.literal(from_day, UTCDateTime()),
                sa.literal(until_day, UTCDateTime()),
                sa.literal(hours, sa.Integer),
                d.resource,
                sa.func.count(),
                sa.func.sum(counted),
                sa.func.sum(counted * counted),
            )
            .where(_range(d.day, from_day, until_day), counted > 0)
            .group_by(d.resource)
            .order_by(d.resource)  # a range's rows on adjacent pages
        )
        conn.execute(sa.delete(sync_volume_baseline).where(~key))
        columns = ["from_day", "until_day", "hours", "resource", "days", "operations", "squares"]
        conn.execute(sa.insert(sync_volume_baseline).from_select(columns, sums))
        if store.dialect == "postgresql":  # a new range: the planner's estimates need it
            conn.exec_driver_sql("ANALYZE sync_volume_baseline")

    store.db.write(tx, "sum the volume baseline")
    _remember(store, "volume", (from_day, until_day, hours))


def _bigint(value: Any) -> Any:
    """A SUM of bigints as a bigint (PostgreSQL's is numeric, slow to convert row by row)."""
    return sa.cast(value, sa.BigInteger)


def compared_hours(until: dt.datetime) -> int:
    """How many whole hours of ``until``'s UTC day have ended: the hours the volume report
    compares, today's and the same ones of earlier days (0 in a day's first hour)."""
    return (floor_hour(until) - floor_day(until)) // HOUR


@dataclasses.dataclass(frozen=True)
class VolumeParts:
    """A resource's daily sync counts over a window, in parts that each hold a resource once.

    ``today``: ``(resource, today)``, the syncs of the window's last day in the compared hours,
    for every resource with any. ``before``: ``(resource, days, operations, squares)`` over the
    days before it, each counted in the same hours (days with syncs in them, their syncs, their
    squared daily syncs), each a selection with at most one row per resource; a resource's
    figures are their sum.
    """

    today: sa.Subquery
    before: tuple[sa.Subquery, ...]


def daily_volume_parts(
    store: SyncStore, coverage: Coverage | None, until: dt.datetime, days: int
) -> VolumeParts:
    """The syncs per resource in today's ended hours (:func:`compared_hours`, at least 1) and
    in the same hours of each of the ``days`` UTC days before today, as :class:`VolumeParts`.

    The earlier days the roll-ups hold come from one baseline row per resource
    (:func:`ensure_baseline`, or ``sync_history_daily`` when there is none for the range and
    hour), today's from its ``sync_history_daily`` row when its hours are rolled up, the rest
    from ``sync_history``: the same figures as the history alone gives.
    """
    h, d = sync_history.c, sync_history_daily.c
    today = floor_day(until)
    hours = compared_hours(until)
    cut = today + hours * HOUR
    start = today - days * DAY
    count = sa.func.count()
    today_parts: list[sa.Select[Any]] = []
    before: list[sa.Subquery] = []
    live_days: list[tuple[dt.datetime, dt.datetime]] = [(start, today)]
    today_from = today
    if coverage is not None:
        first, end = daily_coverage(coverage)
        low, high = max(first, start), min(end, today)
        if low < high:
            live_days = [(start, low), (high, today)]
            if rollups_mode(store) == "refresh":
                ensure_baseline(store, low, high, hours)
            b = sync_volume_baseline.c
            key = sa.and_(b.from_day == low, b.until_day == high, b.hours == hours)
            counted = before_column(sync_history_daily, hours)
            fallback = (
                sa.select(
                    d.resource,
                    count.label("days"),
                    _bigint(sa.func.sum(counted)).label("operations"),
                    _bigint(sa.func.sum(counted * counted)).label("squares"),
                )
                .where(_range(d.day, low, high), counted > 0, ~sa.exists().where(key))
                .group_by(d.resource)
            )
            baseline = sa.select(b.resource, b.days, b.operations, b.squares).where(key)
            before.append(sa.union_all(baseline, fallback).subquery("baseline"))
        if first <= today and (today < end or coverage.rolled_until >= cut):
            # Today's compared hours are all rolled up.
            today_parts.append(
                sa.select(
                    d.resource, before_column(sync_history_daily, hours).label("today")
                ).where(d.day == today)
            )
            today_from = cut
        elif first <= today == end:
            # Today's hours up to rolled_until, counted by the refreshes.
            today_parts.append(
                sa.select(d.resource, d.operations.label("today")).where(d.day == today)
            )
            today_from = coverage.rolled_until
    if today_from < cut:
        today_parts.append(  # one row per sync: summed once with the row above
            sa.select(h.resource, sa.literal(1, sa.BigInteger).label("today")).where(
                _range(h.sync_start_time, today_from, cut)
            )
        )
    gaps = [_range(h.sync_start_time, a, z) for a, z in live_days if a < z]
    if gaps:
        day = time_bucket(store.dialect, h.sync_start_time, "day")
        per_day = (
            sa.select(h.resource, count.label("operations"))
            .where(sa.or_(*gaps), hour_of_day(store.dialect, h.sync_start_time) < hours)
            .group_by(h.resource, day)
            .subquery("per_day")
        )
        before.append(
            sa.select(
                per_day.c.resource,
                sa.func.count().label("days"),
                _bigint(sa.func.sum(per_day.c.operations)).label("operations"),
                _bigint(sa.func.sum(per_day.c.operations * per_day.c.operations)).label("squares"),
            )
            .group_by(per_day.c.resource)
            .subquery("live_days")
        )
    parts = sa.union_all(*today_parts).subquery("today_parts")
    today_sum = (
        sa.select(parts.c.resource, _bigint(sa.func.sum(parts.c.today)).label("today"))
        .group_by(parts.c.resource)
        .having(sa.func.sum(parts.c.today) > 0)
        .subquery("today")
    )
    return VolumeParts(today_sum, tuple(before))


def mean(dialect: str, total: Any, count: Any) -> Any:
    """``SUM(total) / SUM(count)`` computed as the engine's ``AVG`` computes it (NULL for 0)."""
    numerator = sa.cast(sa.func.sum(total), sa.Numeric() if dialect == "postgresql" else sa.Float())
    return numerator / sa.func.nullif(sa.func.sum(count), 0)


__all__: Sequence[str] = (
    "GRACE",
    "Coverage",
    "refresh_rollups",
    "report_coverage",
    "retire_before",
)
