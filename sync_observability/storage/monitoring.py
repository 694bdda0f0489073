"""The reads behind the Prometheus exposition (``sync-obs metrics serve``): one snapshot a scrape.

A scrape reads ``sync_state`` (one row per resource) and the open rows of ``sync_alerts``
(counted by rule and severity on the ``(status, opened_at)`` index), never ``sync_history``, so
its cost grows with the number of resources, not with the history. The row counts of
``sync_history`` and ``sync_history_archive`` are estimates that scan nothing:

- PostgreSQL: the planner's statistics, ``pg_class.reltuples`` (summed over the partitions of a
  partitioned table), as of the table's last ``ANALYZE`` or ``VACUUM``; autovacuum refreshes
  them once 10% of a table has changed. A table never analyzed (or missing) has no estimate:
  ``None``, and no series.
- SQLite keeps no statistics unless someone runs ``ANALYZE``: the span of the table's rowids,
  ``max(rowid) - min(rowid) + 1``, two b-tree seeks. Exact while rows are appended and removed
  oldest first (what retention does); rows deleted from the middle leave it an upper bound.

The three statements run in one read transaction, within the store's time budget (or a tighter
deadline the caller sets with ``store.db.deadline``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import sqlalchemy as sa

from sync_observability.storage.schema import sync_alerts, sync_state
from sync_observability.storage.store import SyncStore

COUNTED_TABLES = ("sync_history", "sync_history_archive")


class ResourceGauges(NamedTuple):
    """One ``sync_state`` row, reduced to what the exposition shows.

    Times are Unix epoch seconds, computed by the database: 10,000 datetimes parsed in Python
    would cost more than the whole query.
    """

    resource: str
    last_sync_status: str
    last_success_epoch: float | None
    consecutive_failures: int
    duration_ms: int | None
    records_synced: int
    started_epoch: float | None


@dataclasses.dataclass(frozen=True)
class MonitoringSnapshot:
    """What one scrape read, in one transaction.

    Attributes:
        resources: every ``sync_state`` row, ordered by resource.
        open_alerts: ``{(rule, severity): number of open alerts}``, only pairs with one or more.
        table_rows: estimated rows of each of :data:`COUNTED_TABLES` (see the module docstring).
    """

    resources: list[ResourceGauges]
    open_alerts: dict[tuple[str, str], int]
    table_rows: dict[str, int | None]


def _epoch(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    if dialect == "postgresql":
        # EXTRACT returns numeric (a Decimal per row in Python): double precision instead.
        return sa.cast(sa.extract("epoch", column), sa.Float)
    # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" UTC text; julianday reads it to the microsecond.
    return (sa.func.julianday(column) - 2440587.5) * 86400.0


def _state_query(dialect: str) -> sa.Select[Any]:
    t = sync_state.c
    return sa.select(
        t.resource,
        t.last_sync_status,
        _epoch(dialect, t.last_success_at),
        t.consecutive_failures,
        t.duration_ms,
        t.records_synced,
        _epoch(dialect, t.started_at),
    ).order_by(t.resource)


_STATE = {dialect: _state_query(dialect) for dialect in ("postgresql", "sqlite")}

_OPEN_ALERTS = (
    sa.select(sync_alerts.c.rule, sync_alerts.c.severity, sa.func.count())
    .where(sync_alerts.c.status == "open")
    .group_by(sync_alerts.c.rule, sync_alerts.c.severity)
)

# The table itself when it is a plain one, its leaf partitions when it is partitioned
# (pg_partition_tree lists nothing for a plain table). to_regclass: NULL, not an error, for a
# table that is missing (an archive never created by an old schema). reltuples is -1 until a
# table's first ANALYZE: an estimate nobody has made is NULL, not 0.
_POSTGRES_ROWS = sa.text(
    """
    SELECT t.name,
        CASE WHEN bool_or(c.reltuples >= 0) THEN SUM(GREATEST(c.reltuples, 0)) END::bigint
            AS estimate
    FROM unnest(CAST(:tables AS text[])) AS t(name)
    CROSS JOIN LATERAL (SELECT to_regclass(format('%I.%I', :schema, t.name)) AS oid) AS r
    LEFT JOIN LATERAL (
        SELECT r.oid AS relid
        UNION ALL
        SELECT p.relid FROM pg_partition_tree(r.oid) AS p WHERE p.isleaf
    ) AS parts ON true
    LEFT JOIN pg_class AS c ON c.oid = parts.relid AND c.relkind = 'r'
    GROUP BY t.name
    """
)


def _sqlite_rows(table: str) -> sa.TextClause:
    # One MIN or MAX per SELECT: SQLite answers each with a single seek only then.
    return sa.text(
        f"SELECT COALESCE((SELECT max(rowid) FROM {table}) - (SELECT min(rowid) FROM {table}) + 1,"
        " 0)"
    )


_SQLITE_ROWS = {table: _sqlite_rows(table) for table in COUNTED_TABLES}


def read_monitoring_snapshot(store: SyncStore) -> MonitoringSnapshot:
    """Read :class:`MonitoringSnapshot` in one read transaction.

    Raises the package's storage errors (``DatabaseUnavailableError`` once the time budget is
    spent), like every other read.

    Examples:
        .. code-block:: python

            snapshot = read_monitoring_snapshot(SyncStore.from_url("sqlite:///sync.db"))
            print(len(snapshot.resources), snapshot.open_alerts)
    """
    schema = store.schema
    postgres = store.dialect == "postgresql"
    state = _STATE[store.dialect]

    def tx(conn: sa.Connection) -> MonitoringSnapshot:
        resources = list(map(ResourceGauges._make, conn.execute(state).tuples()))
        open_alerts = {(rule, severity): n for rule, severity, n in conn.execute(_OPEN_ALERTS)}
        if postgres:
            rows: dict[str, Any] = dict(
                conn.execute(_POSTGRES_ROWS, {"tables": list(COUNTED_TABLES), "schema": schema})
                .tuples()
                .all()
            )
        else:
            rows = {
                table: conn.execute(query).scalar_one() for table, query in _SQLITE_ROWS.items()
            }
        return MonitoringSnapshot(
            resources=resources,
            open_alerts=open_alerts,
            table_rows={
                table: None if rows.get(table) is None else int(rows[table])
                for table in COUNTED_TABLES
            },
        )

    return store.db.read(tx, "read the metrics snapshot")
