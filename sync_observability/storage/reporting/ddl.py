"""The DDL reports' SQL (ddl-history, ddl-impact, user-activity) and the ``ddl_events`` roll-up.

``ddl_events_hourly`` holds the events per hour, session user and client address, derived from
``ddl_events`` by query. It is kept by a *transaction horizon*, not by time: on PostgreSQL each
refresh rolls up the events whose ``transaction_id`` lies between the last refresh's horizon and
the oldest transaction still running now (``pg_snapshot_xmin``). Every transaction below that
horizon has ended, so a DDL transaction that commits late (a long migration) is rolled up by a
later refresh instead of being skipped. Reports read the roll-up plus the events above the
horizon, so they are exact whatever the refresh missed.

The roll-up is PostgreSQL's (the triggers are PostgreSQL-only); on SQLite, whose ``ddl_events``
nothing fills, the reports read ``ddl_events`` itself. ``SyncStore.rollups`` applies as to the
other reports: ``refresh`` (default), ``read`` (no write) and ``off`` (``ddl_events`` only).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from sync_observability.clock import as_utc, utcnow
from sync_observability.storage.reporting.queries import read_rows
from sync_observability.storage.schema import (
    ddl_events,
    ddl_events_hourly,
    ddl_rollup_state,
    sync_alerts,
)
from sync_observability.storage.store import SyncStore

_MAY_REFRESH: weakref.WeakKeyDictionary[SyncStore, bool] = weakref.WeakKeyDictionary()
_KINDS = {"creates": "CREATE", "alters": "ALTER", "drops": "DROP"}
# Constants inlined as SQL literals: PostgreSQL matches a GROUP BY expression with the SELECT
# one textually, and two bound parameters would make them differ.
_HOUR = sa.literal_column("'hour'")
_UTC = sa.literal_column("'UTC'")
_NONE = sa.literal_column("''")


def horizon_sql(store: SyncStore) -> sa.ColumnElement[int]:
    """The key below which every ``ddl_events`` row is final: the oldest running transaction
    on PostgreSQL, one past the last ``event_id`` on SQLite (whose writers commit in id order)."""
    if store.dialect == "postgresql":
        return sa.literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return sa.select(sa.func.coalesce(sa.func.max(ddl_events.c.event_id), 0) + 1).scalar_subquery()


def horizon_key(store: SyncStore) -> sa.ColumnElement[int]:
    """The ``ddl_events`` column :func:`horizon_sql` bounds."""
    e = ddl_events.c
    return e.transaction_id if store.dialect == "postgresql" else e.event_id


def _mode(store: SyncStore) -> str:
    if store.dialect != "postgresql":
        return "off"
    if store.rollups != "refresh":
        return store.rollups
    may = _MAY_REFRESH.get(store)
    if may is None:
        checks = " AND ".join(
            f"has_table_privilege('{table}', '{privilege}')"
            for table in ("ddl_events_hourly", "ddl_rollup_state")
            for privilege in ("INSERT", "UPDATE")
        )
        query = sa.text(f"SELECT NOT pg_is_in_recovery() AND {checks}")
        may = _MAY_REFRESH[store] = bool(
            store.db.read(lambda conn: conn.execute(query).scalar_one(), "check roll-up rights")
        )
    return "refresh" if may else "read"


def _kind_counts(tag: sa.ColumnElement[str], count: Any) -> list[sa.ColumnElement[Any]]:
    """creates, alters, drops and grants (GRANT and REVOKE) among ``count`` rows, by tag."""
    columns = [
        sa.func.sum(sa.case((tag.startswith(prefix), count), else_=0)).label(name)
        for name, prefix in _KINDS.items()
    ]
    grants = sa.case((tag.in_(("GRANT", "REVOKE")), count), else_=0)
    return [*columns, sa.func.sum(grants).label("grants")]


def refresh_ddl_rollup(store: SyncStore) -> int:
    """Roll up the events of the transactions that ended since the last refresh (PostgreSQL).

    Returns the new horizon. Idempotent and safe to run concurrently: the state row is locked,
    and each event is added to its hour once.
    """
    e = ddl_events.c
    hourly = ddl_events_hourly.c
    hour = sa.func.date_trunc(_HOUR, e.event_time, _UTC)
    address = sa.func.coalesce(e.client_address, _NONE)

    def tx(conn: sa.Connection) -> int:
        conn.execute(
            store.db.insert(ddl_rollup_state)
            .values(id=1, rolled_below=0, refreshed_at=utcnow())
            .on_conflict_do_nothing()
        )
        below = conn.execute(
            sa.select(ddl_rollup_state.c.rolled_below).with_for_update()
        ).scalar_one()
        # Taken after the lock: a refresh that waited for another one sees its horizon.
        horizon = conn.execute(sa.select(horizon_sql(store))).scalar_one()
        if horizon <= below:
            return below
        rolled = (
            sa.select(
                hour.label("hour"),
                e.db_session_user,
                address.label("client_address"),
                sa.func.count().label("events"),
                *_kind_counts(e.command_tag, 1),
                sa.func.max(e.event_time).label("last_event_time"),
            )
            .where(e.transaction_id >= below, e.transaction_id < horizon)
            .group_by(hour, e.db_session_user, address)
        )
        insert = store.db.insert(ddl_events_hourly).from_select(
            [
                "hour",
                "db_session_user",
                "client_address",
                "events",
                "creates",
                "alters",
                "drops",
                "grants",
                "last_event_time",
            ],
            rolled,
        )
        excluded = insert.excluded
        added = {
            name: getattr(hourly, name) + getattr(excluded, name)
            for name in ("events", "creates", "alters", "drops", "grants")
        }
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["hour", "db_session_user", "client_address"],
                set_={
                    **added,
                    "last_event_time": sa.func.greatest(
                        hourly.last_event_time, excluded.last_event_time
                    ),
                },
            )
        )
        conn.execute(
            sa.update(ddl_rollup_state).values(rolled_below=horizon, refreshed_at=utcnow())
        )
        return int(horizon)

    return store.db.write(tx, "refresh the DDL roll-up", unbounded_statements=True)


def _hourly(store: SyncStore, since: dt.datetime, until: dt.datetime) -> sa.Subquery:
    """Events per hour, user and address in ``[since, until]``: the roll-up's rows plus the
    events above its horizon (or ``ddl_events`` alone when the roll-up is off)."""
    e = ddl_events.c
    mode = _mode(store)
    if mode == "refresh":
        below: int | None = refresh_ddl_rollup(store)
    elif mode == "read":
        below = store.db.read(
            lambda conn: conn.execute(sa.select(ddl_rollup_state.c.rolled_below)).scalar(),
            "read the DDL roll-up's horizon",
        )
    if store.dialect == "postgresql":
        hour: sa.ColumnElement[Any] = sa.func.date_trunc(_HOUR, e.event_time, _UTC)
    else:
        hour = sa.func.strftime(sa.literal_column("'%Y-%m-%d %H:00:00'"), e.event_time)
    address = sa.func.coalesce(e.client_address, _NONE)

    def raw(since: dt.datetime, until: dt.datetime, before: bool = False) -> sa.Select[Any]:
        """``ddl_events`` per hour, user and address in ``[since, until]`` (``until`` excluded
        when ``before``)."""
        end = e.event_time < until if before else e.event_time <= until
        return (
            sa.select(
                hour.label("hour"),
                e.db_session_user.label("db_session_user"),
                address.label("client_address"),
                sa.func.count().label("events"),
                *_kind_counts(e.command_tag, 1),
                sa.func.max(e.event_time).label("last_event_time"),
            )
            .where(e.event_time >= since, end)
            .group_by(hour, e.db_session_user, address)
        )

    if mode == "off":
        return raw(since, until).subquery("hourly")
    # The roll-up's whole hours before the hour of `until`, which is read from ddl_events (it
    # may end before its hour does: --as-of), and the events above the roll-up's horizon.
    last_hour = _floor_hour(until)
    # The state row read in the same statement keeps the roll-up's rows and the events above its
    # horizon consistent (a refresh may commit meanwhile); the value read before, which that
    # can only have raised, lets the planner use the transaction_id index for the few events
    # above the horizon instead of the window's millions on the time index.
    current = sa.select(ddl_rollup_state.c.rolled_below).scalar_subquery()
    above = raw(since, last_hour, before=True).where(
        e.transaction_id >= (below or 0), e.transaction_id >= sa.func.coalesce(current, 0)
    )
    h = ddl_events_hourly.c
    rolled = sa.select(
        h.hour,
        h.db_session_user,
        h.client_address,
        h.events,
        h.creates,
        h.alters,
        h.drops,
        h.grants,
        h.last_event_time,
    ).where(h.hour >= _floor_hour(since), h.hour < last_hour)
    return sa.union_all(rolled, above, raw(max(since, last_hour), until)).subquery("hourly")


def _floor_hour(value: dt.datetime) -> dt.datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def user_days(
    store: SyncStore,
    *,
    since: dt.datetime,
    until: dt.datetime,
    same_hours: int,
) -> list[dict[str, Any]]:
    """Per session user, client address and UTC day in ``[since, until]``: the events of the
    day, by kind, its last event, and ``early``: the events of its first ``same_hours`` hours.

    ``since`` must be an hour's start (events are counted per hour on the roll-up).
    """
    hourly = _hourly(store, since, until)
    c = hourly.c
    if store.dialect == "postgresql":
        # A date cast and epoch arithmetic: to_char and extract(hour) on each of up to
        # days x 24 x users x addresses rows cost more than the rest of the query.
        day: sa.ColumnElement[Any] = sa.cast(sa.func.timezone(_UTC, c.hour), sa.Date)
        second_of_day = sa.cast(sa.extract("epoch", c.hour), sa.BigInteger) % 86_400
        early = second_of_day < same_hours * 3600
    else:
        day = sa.func.strftime(sa.literal_column("'%Y-%m-%d'"), c.hour)
        hour_of_day = sa.cast(sa.func.strftime(sa.literal_column("'%H'"), c.hour), sa.Integer)
        early = hour_of_day < same_hours

    def total(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # An hour's count fits an int4, whose SUM adds in int8 instead of numeric (faster).
        return sa.func.sum(sa.cast(column, sa.Integer))

    query = sa.select(
        c.db_session_user.label("db_session_user"),
        c.client_address.label("client_address"),
        day.label("day"),
        total(c.events).label("events"),
        total(c.creates).label("creates"),
        total(c.alters).label("alters"),
        total(c.drops).label("drops"),
        total(c.grants).label("grants"),
        total(sa.case((early, c.events), else_=0)).label("early"),
        sa.func.max(c.last_event_time).label("last_event_time"),
    ).group_by(c.db_session_user, c.client_address, day)
    rows = read_rows(store, query, "read DDL activity per user", serial=True)
    for row in rows:
        if not isinstance(row["day"], str):
            row["day"] = row["day"].isoformat()
        for key in ("events", "creates", "alters", "drops", "grants", "early"):
            row[key] = int(row[key] or 0)
        row["last_event_time"] = as_utc(row["last_event_time"])
    return rows


def history(
    store: SyncStore,
    *,
    since: dt.datetime,
    until: dt.datetime,
    limit: int,
    schemas: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` DDL events in ``[since, until]`` (of ``schemas`` when given)."""
    e = ddl_events.c
    query = (
        sa.select(ddl_events)
        .where(e.event_time >= since, e.event_time <= until)
        .order_by(e.event_time.desc(), e.event_id.desc())
        .limit(limit)
    )
    if schemas is not None:
        query = query.where(e.schema_name.in_(list(schemas)))
    return read_rows(store, query, "read DDL history")


def impact(
    store: SyncStore, *, since: dt.datetime, until: dt.datetime, limit: int
) -> list[dict[str, Any]]:
    """Per object changed in ``[since, until]``: its changes by kind, users and last change;
    the ``limit`` objects changed most first (then the latest change)."""
    e = ddl_events.c
    last = sa.func.max(e.event_id)
    ranked = (
        sa.select(
            e.schema_name,
            e.object_type,
            e.object_identity,
            sa.func.count().label("changes"),
            *_kind_counts(e.command_tag, 1),
            sa.func.count(sa.distinct(e.db_session_user)).label("users"),
            sa.func.max(e.event_time).label("last_change"),
            last.label("last_event_id"),
        )
        .where(e.event_time >= since, e.event_time <= until)
        .group_by(e.schema_name, e.object_type, e.object_identity)
        .order_by(sa.desc("changes"), sa.desc("last_change"))
        .limit(limit)
        .subquery("ranked")
    )
    r = ranked.c
    query = (
        sa.select(ranked, e.command_tag.label("last_command"), e.db_session_user.label("last_by"))
        .join(ddl_events, e.event_id == r.last_event_id)
        .order_by(r.changes.desc(), r.last_change.desc())
    )
    rows = read_rows(store, query, "read DDL impact")
    for row in rows:
        for key in ("changes", "creates", "alters", "drops", "grants", "users"):
            row[key] = int(row[key] or 0)
        row["last_change"] = as_utc(row["last_change"])
    return rows


def changes_since(
    store: SyncStore,
    *,
    after: int | None,
    schemas: Sequence[str],
    object_types: Sequence[str],
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """The DROP and ALTER events on ``object_types`` in ``schemas`` whose horizon key is at
    least ``after``, oldest first, and the key to pass as ``after`` next time.

    Every committed event from ``after`` on is returned, including those of transactions above
    the current horizon (committed, but with an older transaction still running somewhere):
    those come again on the next call, until the horizon passes them, so a caller must
    de-duplicate by ``event_id``; an event that commits late is returned once it is visible.
    ``after`` None: nothing, and the current horizon. At most ``limit`` events, whole
    transactions only (a bigger transaction is returned whole); the rest come next time.
    """
    e = ddl_events.c
    key = horizon_key(store)
    is_change = sa.or_(e.command_tag.startswith("DROP "), e.command_tag.startswith("ALTER "))
    watched = sa.and_(
        is_change, e.schema_name.in_(list(schemas)), e.object_type.in_(list(object_types))
    )
    columns = (ddl_events, key.label("horizon_key"))

    def read(conn: sa.Connection) -> tuple[list[dict[str, Any]], int]:
        horizon = int(conn.execute(sa.select(horizon_sql(store))).scalar_one())
        if after is None:
            return [], horizon
        query = sa.select(*columns).where(key >= after, watched).order_by(key, e.event_id)
        rows = [dict(row) for row in conn.execute(query.limit(limit + 1)).mappings()]
        if len(rows) <= limit:
            return rows, horizon
        cut = rows[limit]["horizon_key"]
        rows = [r for r in rows if r["horizon_key"] < cut]
        if not rows:  # one transaction with more than `limit` changes: take it whole
            whole = query.where(key == cut)
            return [dict(r) for r in conn.execute(whole).mappings()], min(cut + 1, horizon)
        return rows, min(cut, horizon)

    return store.db.read(read, "read schema changes")


def alerted_fingerprints(
    store: SyncStore, fingerprints: Sequence[str], *, opened_since: dt.datetime
) -> set[str]:
    """Those of ``fingerprints`` with an alert (open or resolved) opened at or after
    ``opened_since``: the events :func:`changes_since` reads again were alerted already."""
    if not fingerprints:
        return set()
    t = sync_alerts.c
    query = sa.select(t.fingerprint).where(
        t.opened_at >= opened_since, t.fingerprint.in_(list(fingerprints))
    )
    return set(store.db.read(lambda conn: conn.execute(query).scalars().all(), "read alerts"))


__all__: Sequence[str] = (
    "alerted_fingerprints",
    "changes_since",
    "history",
    "horizon_key",
    "horizon_sql",
    "impact",
    "refresh_ddl_rollup",
    "user_days",
)
