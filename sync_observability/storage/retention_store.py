"""RetentionStore: every SQL statement of retention (archive, purge, count, the run lock).

Crash safety rests on one rule: a batch moves its rows in one transaction. On PostgreSQL that
transaction is a single statement, ``DELETE ... RETURNING`` feeding the ``INSERT`` into the
archive, whose batch is picked ``FOR UPDATE SKIP LOCKED`` so two runs never take the same row.
On SQLite the ``INSERT ... SELECT`` and the ``DELETE`` of the same batch run in one
``BEGIN IMMEDIATE`` transaction (the engine's default for writes), which holds the database's
write lock from its first statement, so nothing changes between the two. Either way a crash at
any instant leaves every row in exactly one of ``sync_history`` and ``sync_history_archive``,
and the archive's primary key refuses a second copy of a row.

Batches are walked by keyset, (time column, key column) on PostgreSQL and (time column, rowid)
on SQLite, rather than rescanned from the oldest row: on PostgreSQL deleted rows stay in the
indexes until vacuum, and rescanning them on every batch would make a long run quadratic.

State-aware: archival never moves the sync that produced a resource's current watermark, nor
the last ``keep_last`` syncs of each resource, whatever their age (see :func:`_unprotected`).
Both are conditions of the batch's own ``WHERE``, so the counts of a dry run are those of a real
run. On PostgreSQL the last-K rule is a hash join against one boundary per resource (the
(time, key) of its K-th newest sync, :class:`KeepBoundaries`), read once per run by skipping
through the ``(resource, sync_start_time)`` index; on SQLite it is evaluated per candidate row
through that index. The watermark owner is checked per row on both (a primary-key probe of
``sync_state``, rarely more), so a watermark moved by hand during a run is honoured at once.

One run at a time: on PostgreSQL a session advisory lock, held on a dedicated connection for the
whole run (released by the server if the process dies). SQLite has no such lock and needs none:
every batch is serialized by ``BEGIN IMMEDIATE`` and re-reads the rows it moves, so two runs at
once interleave their batches and still move each row once. On PostgreSQL too the lock only
saves work; correctness comes from the batch statements.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_observability.errors import StorageError
from sync_observability.storage import partitioning
from sync_observability.storage.constants import DEFAULT_KEEP_LAST
from sync_observability.storage.reporting import hourly_rollups
from sync_observability.storage.schema import (
    UTCDateTime,
    metadata,
    sync_history,
    sync_history_archive,
    sync_state,
)
from sync_observability.storage.store import SyncStore

HISTORY = sync_history.name
ARCHIVE = sync_history_archive.name
_HISTORY_COLUMNS = tuple(column.name for column in sync_history.c)


@dataclasses.dataclass(frozen=True)
class Keyset:
    """A position in a table's (time, key) order: the next batch starts after it."""

    time: dt.datetime
    key: Any


@dataclasses.dataclass(frozen=True)
class Batch:
    """What one batch did: how many rows it moved or deleted, and the last of them."""

    rows: int
    last: Keyset | None


@dataclasses.dataclass(frozen=True)
class KeepSnapshot:
    """What state-aware archival protects, read once at the start of a run (PostgreSQL).

    Last K: per resource, the (start time, sync_id) of its ``keep_last``-th newest sync. A row
    is not among its resource's last ``keep_last`` syncs exactly when it comes before that
    boundary in (time, key) order; a resource with fewer syncs has no boundary and keeps them
    all. Rows added later only push the boundaries forward, and the rows at or after a boundary
    are never archived, so a row before its boundary stays before it for the whole run.

    Watermark owners: per resource with a time watermark, that watermark and the sync that
    owned it (None when no successful sync in history has it). A batch compares a row with the
    *current* ``sync_state``: a row that does not match its resource's current watermark owns
    nothing; one that matches it is archivable only if the watermark is still the one of the
    snapshot and the row is not the snapshot's owner (later matching syncs are newer still).
    A watermark changed during the run keeps all of its matching rows until the next run.
    """

    keep_last: int
    resources: tuple[str, ...]
    times: tuple[dt.datetime, ...]
    keys: tuple[str, ...]
    owned_resources: tuple[str, ...]
    owned_watermarks: tuple[dt.datetime, ...]
    owner_ids: tuple[str, ...]

    def not_last(
        self, row: sa.FromClause, row_key: sa.ColumnElement[Any], before: dt.datetime
    ) -> sa.ColumnElement[bool]:
        """``row``, which started before ``before``, is not among its resource's last K.

        A resource whose boundary is at or after ``before`` (any resource still syncing) keeps
        none of the rows before it: an ``= ANY`` of a constant array, which PostgreSQL hashes.
        Only the other resources' rows are compared with their boundary, in a short list.
        """
        free = [r for r, t in zip(self.resources, self.times, strict=True) if t >= before]
        rest = [i for i, t in enumerate(self.times) if t < before]
        conditions = [row.c.resource == sa.any_(sa.literal(free, _TEXT_ARRAY))] if free else []
        if rest:
            bound = (
                sa.func.unnest(
                    sa.literal([self.resources[i] for i in rest], _TEXT_ARRAY),
                    sa.literal([self.times[i] for i in rest], _TIME_ARRAY),
                    sa.literal([self.keys[i] for i in rest], _TEXT_ARRAY),
                )
                .table_valued("resource", "boundary_time", "boundary_key")
                .render_derived(name="keep_boundary")
            )
            conditions.append(
                sa.exists(
                    sa.select(sa.literal(1))
                    .select_from(bound)
                    .where(
                        bound.c.resource == row.c.resource,
                        sa.tuple_(row.c.sync_start_time, row_key)
                        < sa.tuple_(bound.c.boundary_time, bound.c.boundary_key),
                    )
                )
            )
        return sa.or_(sa.false(), *conditions)

    def owned(self) -> sa.TableValuedAlias:
        """The snapshot's owned watermarks as a ``(resource, watermark)`` table (``unnest``)."""
        return (
            sa.func.unnest(
                sa.literal(list(self.owned_resources), _TEXT_ARRAY),
                sa.literal(list(self.owned_watermarks), _TIME_ARRAY),
            )
            .table_valued("resource", "watermark")
            .render_derived(name="keep_owned")
        )

    def owners(self) -> sa.TableValuedAlias:
        """The snapshot's owner sync ids as a one-column table (``unnest``)."""
        return (
            sa.func.unnest(sa.literal(list(self.owner_ids), _TEXT_ARRAY))
            .table_valued("owner_id")
            .render_derived(name="keep_owner")
        )


_TEXT_ARRAY = postgresql.ARRAY(sa.Text())
_TIME_ARRAY = postgresql.ARRAY(sa.DateTime(timezone=True))


@dataclasses.dataclass(frozen=True)
class PurgeTarget:
    """A table whose old rows retention deletes, oldest first.

    Args:
        table: the table's name in :data:`sync_observability.storage.schema.metadata`.
        time_column: a row is old when this column is before the cutoff.
        key_column: unique; breaks ties in the keyset order.
        only: an extra condition a row must meet to be deleted.
    """

    table: str
    time_column: str
    key_column: str
    only: Callable[[sa.Table], sa.ColumnElement[bool]] | None = None


# Tables retention may purge. A table that is not in the schema (yet) is skipped, so a new one
# (operation_log, for instance) is one line here plus its age in the policy.
PURGE_TARGETS: dict[str, PurgeTarget] = {
    # An archived sync that owns its resource's watermark stays (see _owns_watermark_archived).
    ARCHIVE: PurgeTarget(
        ARCHIVE, "sync_start_time", "sync_id", only=lambda t: ~_owns_watermark_archived(t)
    ),
    # Resolved alerts only, and only once the resolution was announced: deleting an alert whose
    # resolution is still due would drop a notification that delivery promises at least once.
    "sync_alerts": PurgeTarget(
        "sync_alerts",
        "resolved_at",
        "alert_id",
        only=lambda t: sa.and_(t.c.status == "resolved", t.c.resolution_notified_at.is_not(None)),
    ),
    # Kept unless an age is given: an audit trail. user-activity's baselines come from the
    # hourly roll-up, which stays.
    "ddl_events": PurgeTarget("ddl_events", "event_time", "event_id"),
}

# An arbitrary constant naming retention's advisory lock; the schema name is mixed in so that
# two deployments sharing a database do not block each other.
_LOCK_NAMESPACE = "sync_observability.retention"


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"{_LOCK_NAMESPACE}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RetentionStore:
    """Archive, purge and count old rows, sharing a :class:`SyncStore`'s engine and retries.

    Args:
        store: the store whose database holds the tables (migrated to revision 0003+).

    Examples:
        .. code-block:: python

            retention = RetentionStore(SyncStore.from_url("sqlite:///sync.db"))
            with retention.exclusive_run() as acquired:
                batch = retention.archive_batch(before=cutoff, after=None, limit=10_000, now=now)
    """

    def __init__(self, store: SyncStore) -> None:
        self.store = store

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.store.dialect

    # -- the run lock ----------------------------------------------------------------------

    @contextmanager
    def exclusive_run(self) -> Iterator[bool]:
        """Hold retention's run lock for the block; yields False when another run holds it.

        PostgreSQL: ``pg_try_advisory_lock`` on a dedicated autocommit connection (no open
        transaction, so vacuum is never held back), unlocked when the block ends. SQLite: always
        yields True (see the module docstring).
        """
        if self.dialect != "postgresql":
            yield True
            return
        key = _lock_key(self.store.schema)

        def connect_and_lock() -> tuple[sa.Connection, bool]:
            conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                acquired = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
                ).scalar_one()
            except BaseException:
                conn.close()
                raise
            return conn, bool(acquired)

        conn, acquired = self.store.db.retry(connect_and_lock, "take the retention lock")
        try:
            yield acquired
        finally:
            try:
                if acquired:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except sa.exc.DBAPIError:
                # The connection is gone, and the lock with it; never pool it.
                conn.invalidate()
            finally:
                conn.close()

    # -- what exists -----------------------------------------------------------------------

    def existing_purge_targets(self) -> list[PurgeTarget]:
        """The purge targets whose table is in the schema and in the database, in order."""

        def read(conn: sa.Connection) -> list[PurgeTarget]:
            inspector = sa.inspect(conn)
            return [
                target
                for name, target in PURGE_TARGETS.items()
                if name in metadata.tables and inspector.has_table(name)
            ]

        return self.store.db.read(read, "list retention tables")

    # -- counts (dry run and progress) -----------------------------------------------------

    def keep_snapshot(self, keep_last: int = DEFAULT_KEEP_LAST) -> KeepSnapshot | None:
        """What archival protects now, for a whole run (PostgreSQL; None on SQLite).

        Two queries. Boundaries: the distinct resources by a skip scan of the
        ``(resource, sync_start_time)`` index, then for each its ``keep_last``-th newest entry:
        resources x ``keep_last`` index entries, whatever the table's size. Owners: for each
        ``sync_state`` row with a time watermark, the latest successful sync that has it.
        """
        if self.dialect != "postgresql":
            return None
        boundaries = sa.text(
            """
            WITH RECURSIVE resources(resource) AS (
                (SELECT resource FROM sync_history ORDER BY resource LIMIT 1)
                UNION ALL
                SELECT (SELECT h.resource FROM sync_history h WHERE h.resource > r.resource
                        ORDER BY h.resource LIMIT 1)
                FROM resources r WHERE r.resource IS NOT NULL
            )
            SELECT r.resource, k.sync_start_time, k.sync_id
            FROM resources r CROSS JOIN LATERAL (
                SELECT h.sync_start_time, h.sync_id FROM sync_history h
                WHERE h.resource = r.resource
                ORDER BY h.sync_start_time DESC, h.sync_id DESC
                OFFSET :skip LIMIT 1
            ) k
            """
        ).columns(resource=sa.Text(), sync_start_time=UTCDateTime(), sync_id=sa.Text())
        owners = sa.text(
            """
            SELECT s.resource, s.last_sync_time, o.sync_id
            FROM sync_state s LEFT JOIN LATERAL (
                SELECT h.sync_id FROM sync_history h
                WHERE h.resource = s.resource AND h.sync_status = 'success'
                  AND h.watermark_after = s.last_sync_time
                ORDER BY h.sync_start_time DESC, h.sync_id DESC
                LIMIT 1
            ) o ON true
            WHERE s.last_sync_time IS NOT NULL
            """
        ).columns(resource=sa.Text(), last_sync_time=UTCDateTime(), sync_id=sa.Text())

        def read(conn: sa.Connection) -> KeepSnapshot:
            bounds = []
            if keep_last > 0:
                bounds = conn.execute(boundaries, {"skip": keep_last - 1}).all()
            owned = [row for row in conn.execute(owners) if row[2] is not None]
            return KeepSnapshot(
                keep_last=keep_last,
                resources=tuple(row[0] for row in bounds),
                times=tuple(row[1] for row in bounds),
                keys=tuple(row[2] for row in bounds),
                owned_resources=tuple(row[0] for row in owned),
                owned_watermarks=tuple(row[1] for row in owned),
                owner_ids=tuple(row[2] for row in owned),
            )

        # One snapshot: both reads see the same database.
        return self.store.db.write(read, "read what archival keeps")

    def count_archivable(
        self,
        before: dt.datetime,
        *,
        keep_last: int = DEFAULT_KEEP_LAST,
        boundaries: KeepSnapshot | None = None,
    ) -> int:
        """How many ``sync_history`` rows an archive with this cutoff would move.

        The same condition as :meth:`archive_batch`'s, so the count is exact. ``boundaries``:
        from :meth:`keep_snapshot` (read here when None on PostgreSQL).
        """
        boundaries = self._snapshot(keep_last, boundaries)
        key = self._key(sync_history, "sync_id")
        query = (
            sa.select(sa.func.count())
            .select_from(sync_history)
            .where(_archivable(sync_history, key, before, keep_last, boundaries))
        )
        return self.store.db.read(lambda conn: conn.execute(query).scalar_one(), "count history")

    def _snapshot(self, keep_last: int, snapshot: KeepSnapshot | None) -> KeepSnapshot | None:
        if snapshot is not None:
            if snapshot.keep_last != keep_last:
                raise ValueError(f"the snapshot is for keep_last={snapshot.keep_last}")
            return snapshot
        return self.keep_snapshot(keep_last)

    def count_purgeable(self, target: PurgeTarget, before: dt.datetime) -> int:
        """How many rows of ``target`` a purge with this cutoff would delete."""
        table = metadata.tables[target.table]
        if table is sync_history:
            hourly_rollups.retire_before(self.store, before)
        query = sa.select(sa.func.count()).select_from(table).where(_old(target, table, before))
        return self.store.db.read(
            lambda conn: conn.execute(query).scalar_one(), f"count {target.table}"
        )

    # -- batches ---------------------------------------------------------------------------

    def archive_batch(
        self,
        *,
        before: dt.datetime,
        after: Keyset | None,
        limit: int,
        now: dt.datetime,
        keep_last: int = DEFAULT_KEEP_LAST,
        boundaries: KeepSnapshot | None = None,
        partition: str | None = None,
    ) -> Batch:
        """Move up to ``limit`` finished history rows older than ``before`` into the archive.

        ``partition``: on a partitioned ``sync_history`` (PostgreSQL), the one partition to take
        the batch from; a batch deletes by ``ctid``, which is unique only within a partition.

        Rows are taken in keyset order after ``after``; ``running`` rows are never taken, nor a
        resource's watermark-owning sync and last ``keep_last`` syncs. One transaction;
        ``archived_at`` is ``now``. A run passes the ``boundaries`` it read once
        (:meth:`keep_snapshot`); without them each call reads its own.
        """
        boundaries = self._snapshot(keep_last, boundaries)

        def where(t: sa.FromClause) -> sa.ColumnElement[bool]:
            key = self._key(t, "sync_id")
            return sa.and_(
                _archivable(t, key, before, keep_last, boundaries),
                *_after(t.c.sync_start_time, key, after),
            )

        hourly_rollups.retire_before(self.store, before)
        if self.dialect == "postgresql":
            source = sync_history
            if partition is not None:
                source = sync_history.to_metadata(sa.MetaData(), name=partition)
            tx = _pg_archive(where, limit, now, source)
        else:
            tx = _sqlite_archive(where, limit, now)
        return self.store.db.write(tx, "archive a batch of sync_history")

    def purge_batch(
        self, target: PurgeTarget, *, before: dt.datetime, after: Keyset | None, limit: int
    ) -> Batch:
        """Delete up to ``limit`` rows of ``target`` older than ``before``, after ``after``."""
        table = metadata.tables[target.table]
        if table is sync_history:
            hourly_rollups.retire_before(self.store, before)

        def where(t: sa.FromClause) -> sa.ColumnElement[bool]:
            key = self._key(t, target.key_column)
            return sa.and_(_old(target, t, before), *_after(t.c[target.time_column], key, after))

        if self.dialect == "postgresql":
            gone = (
                _pg_delete_batch(table, where, target.time_column, target.key_column, limit)
                .returning(table.c[target.time_column], table.c[target.key_column])
                .cte("gone")
            )
            statement = _last_of(gone, target.time_column, target.key_column)

            def tx(conn: sa.Connection) -> Batch:
                return _batch(conn.execute(statement).one_or_none())

        else:
            picked, last = _sqlite_pick(table, target.time_column, where, limit)

            def tx(conn: sa.Connection) -> Batch:
                bound = conn.execute(last).first()
                if bound is None:
                    return Batch(0, None)
                deleted = conn.execute(sa.delete(table).where(_rowid(table).in_(picked))).rowcount
                return Batch(deleted, Keyset(bound[0], bound[1]))

        return self.store.db.write(tx, f"purge a batch of {target.table}")

    def partitioned(self) -> bool:
        """Whether ``sync_history`` is partitioned (PostgreSQL, after ``partition enable``)."""
        if self.dialect != "postgresql":
            return False
        return self.store.db.read(partitioning.is_partitioned, "check sync_history partitioning")

    def leaf_tables(self) -> list[str]:
        """A partitioned ``sync_history``'s partitions, oldest first, the default last."""
        return self.store.db.read(partitioning.leaf_tables, "list sync_history partitions")

    def must_stay(
        self, before: dt.datetime, keep_last: int, snapshot: KeepSnapshot | None
    ) -> Callable[[sa.FromClause], sa.ColumnElement[bool]]:
        """The condition "this history row may not be archived with this cutoff", by table."""
        return lambda t: ~_archivable(t, t.c.sync_id, before, keep_last, snapshot)

    def _key(self, table: sa.FromClause, key_name: str) -> sa.ColumnElement[Any]:
        """The keyset's tie-breaker after the time column: the key, or SQLite's rowid.

        A SQLite index ends with the rowid, so (time, rowid) is the time index's own order and a
        batch reads only its own rows; (time, sync_id) makes SQLite sort the whole remaining
        range on every batch. PostgreSQL sorts ties incrementally, so the key serves there.
        """
        return table.c[key_name] if self.dialect == "postgresql" else _rowid(table)


Where = Callable[[sa.FromClause], sa.ColumnElement[bool]]


def _rowid(table: sa.FromClause) -> sa.ColumnElement[int]:
    return sa.literal_column(f"{table.name}.rowid", sa.Integer()).label("rowid")


def _archivable(
    table: sa.FromClause,
    key: sa.ColumnElement[Any],
    before: dt.datetime,
    keep_last: int,
    boundaries: KeepSnapshot | None = None,
) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.sync_start_time < before,
        table.c.sync_status != "running",
        *(
            _unprotected(table, key, keep_last)
            if boundaries is None
            else _unprotected_in(table, key, boundaries, before)
        ),
    )


def _newer(
    row: sa.FromClause, row_key: sa.ColumnElement[Any], other: sa.FromClause
) -> list[sa.ColumnElement[bool]]:
    """``other`` is a later sync of ``row``'s resource, in the keyset's (time, key) order.

    ``other.sync_start_time >= ...`` is implied by the row comparison but bounds the scan of
    the ``(resource, sync_start_time)`` index to the rows after ``row``.
    """
    other_key = other.c.sync_id if row_key.name == "sync_id" else _rowid(other)
    return [
        other.c.resource == row.c.resource,
        other.c.sync_start_time >= row.c.sync_start_time,
        sa.tuple_(other.c.sync_start_time, other_key) > sa.tuple_(row.c.sync_start_time, row_key),
    ]


def _unprotected(
    row: sa.FromClause,
    row_key: sa.ColumnElement[Any],
    keep_last: int,
) -> list[sa.ColumnElement[bool]]:
    """``row`` (a history row) is neither one of its resource's last ``keep_last`` syncs nor
    the sync that produced its resource's current watermark.

    The rule itself, evaluated per row (SQLite, whose keyset key is the rowid; PostgreSQL runs
    :func:`_unprotected_in`, the same rule against a :class:`KeepSnapshot`).

    Last K: the K-th later sync of the resource exists (``OFFSET K-1``), read from the
    ``(resource, sync_start_time)`` index starting at the row: at most K entries per candidate,
    whatever the table's size. A scalar subquery rather than ``EXISTS``, whose ``OFFSET`` an
    engine may optimize away. Every row of the resource counts, running ones included. The K
    newest rows never have K later ones, so they are never archived, by this run or a
    concurrent one, and the invariant holds across runs.

    Watermark owner: the latest successful sync whose ``watermark_after`` equals the state's
    ``last_sync_time``, i.e. the sync ``watermark rewind --to-sync`` would name to restore the
    current watermark. Most rows fail the first, cheap tests (not a success, or another
    watermark); only a match looks for a later matching success.
    """
    conditions = []
    if keep_last > 0:
        later = sync_history.alias("later_sync")
        kth_later = (
            sa.select(later.c.sync_start_time)
            .where(*_newer(row, row_key, later))
            .limit(1)
            .offset(keep_last - 1)
            .correlate_except(later)
            .scalar_subquery()
        )
        conditions.append(kth_later.is_not(None))
    newer_owner = sync_history.alias("newer_owner")
    owns = _holds_watermark(row, newer_owner, *_newer(row, row_key, newer_owner))
    conditions.append(
        sa.or_(row.c.sync_status != "success", row.c.watermark_after.is_(None), ~owns)
    )
    return conditions


def _unprotected_in(
    row: sa.FromClause, row_key: sa.ColumnElement[Any], snapshot: KeepSnapshot, before: dt.datetime
) -> list[sa.ColumnElement[bool]]:
    """:func:`_unprotected` against a run's :class:`KeepSnapshot`: hash joins, no per-row scan.

    Last K: :meth:`KeepSnapshot.not_last`. Owner: ``(resource, watermark_after)`` not the
    current state's, or the snapshot's watermark and not its owner; both ``IN`` lists of a few
    rows per resource, which PostgreSQL hashes.
    """
    conditions: list[sa.ColumnElement[bool]] = []
    if snapshot.keep_last > 0:
        conditions.append(snapshot.not_last(row, row_key, before))
    marked = sa.tuple_(row.c.resource, row.c.watermark_after)
    current = sa.select(sync_state.c.resource, sync_state.c.last_sync_time).where(
        sync_state.c.last_sync_time.is_not(None)
    )
    owned, owners = snapshot.owned(), snapshot.owners()
    conditions.append(
        sa.or_(
            row.c.sync_status != "success",
            row.c.watermark_after.is_(None),
            marked.not_in(current),
            sa.and_(
                marked.in_(sa.select(owned.c.resource, owned.c.watermark)),
                row.c.sync_id.not_in(sa.select(owners.c.owner_id)),
            ),
        )
    )
    return conditions


def _owns_watermark_archived(row: sa.FromClause) -> sa.ColumnElement[bool]:
    """An archive row that may own its resource's watermark: a success whose
    ``watermark_after`` is the state's and no successful sync still in history has it.

    Archival never moves an owner, so this matters only for a row archived before it became
    the owner (an older policy, a manual ``set`` to an archived sync's value). Later archive
    rows are not looked for (the archive has no resource index): two archived matches both stay.
    """
    online = sync_history.alias("online_owner")
    return sa.and_(
        row.c.sync_status == "success",
        _holds_watermark(row, online, online.c.resource == row.c.resource),
    )


def _holds_watermark(
    row: sa.FromClause, others: sa.FromClause, *of_others: sa.ColumnElement[bool]
) -> sa.ColumnElement[bool]:
    """``row``'s ``watermark_after`` is its resource's current watermark and no successful sync
    among ``others`` (those matching ``of_others``) has that watermark too."""
    state = sync_state.alias("owner_state")
    return sa.exists(
        sa.select(sa.literal(1))
        .select_from(state)
        .where(
            state.c.resource == row.c.resource,
            state.c.last_sync_time == row.c.watermark_after,
            ~sa.exists(
                sa.select(sa.literal(1))
                .select_from(others)
                .where(
                    *of_others,
                    others.c.sync_status == "success",
                    others.c.watermark_after == state.c.last_sync_time,
                )
                .correlate_except(others)
            ),
        )
        .correlate_except(state)
    )


def _old(target: PurgeTarget, table: sa.FromClause, before: dt.datetime) -> sa.ColumnElement[bool]:
    condition = table.c[target.time_column] < before
    return condition if target.only is None else sa.and_(condition, target.only(table))


def _after(
    time_col: sa.ColumnElement[Any], key_col: sa.ColumnElement[Any], after: Keyset | None
) -> list[sa.ColumnElement[bool]]:
    """Rows strictly after ``after`` in (time, key) order.

    The plain ``time >= ...`` is implied by the row comparison but lets both engines start a
    scan of the time index at the right place.
    """
    if after is None:
        return []
    at = sa.literal(after.time, time_col.type)
    return [
        time_col >= at,
        sa.tuple_(time_col, key_col) > sa.tuple_(at, sa.literal(after.key, key_col.type)),
    ]


def _last_of(cte: sa.CTE, time_name: str, key_name: str) -> sa.Select[Any]:
    """One row: how many rows the DML ``cte`` returned, and the last of them in keyset order."""
    time_col, key_col = cte.c[time_name], cte.c[key_name]
    return (
        sa.select(sa.func.count().over(), time_col, key_col)
        .order_by(time_col.desc(), key_col.desc())
        .limit(1)
    )


def _batch(row: Any) -> Batch:
    if row is None:
        return Batch(0, None)
    return Batch(row[0], Keyset(row[1], row[2]))


def _pg_delete_batch(
    table: sa.Table, where: Where, time_name: str, key_name: str, limit: int
) -> sa.Delete:
    """``DELETE`` the next batch, picked in keyset order and locked ``FOR UPDATE SKIP LOCKED``.

    The batch is deleted by ``ctid = ANY(ARRAY(...))``: a TID scan of exactly the picked rows.
    ``sync_id IN (SELECT ...)`` lets the planner hash-join against a full scan of the table on
    every batch, which makes a long run quadratic.
    """
    candidate = table.alias("candidate")
    picked = (
        sa.select(sa.literal_column("candidate.ctid"))
        .where(where(candidate))
        .order_by(candidate.c[time_name], candidate.c[key_name])
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ctid = sa.literal_column(f"{table.name}.ctid")
    return sa.delete(table).where(ctid == sa.any_(sa.func.array(picked.scalar_subquery())))


def _pg_archive(
    where: Where, limit: int, now: dt.datetime, source: sa.Table
) -> Callable[[sa.Connection], Batch]:
    """One statement: pick and lock a batch of ``source``, delete it, insert what was deleted."""
    moved = (
        _pg_delete_batch(source, where, "sync_start_time", "sync_id", limit)
        .returning(*source.c)
        .cte("moved")
    )
    inserted = (
        sa.insert(sync_history_archive)
        .from_select(
            [*_HISTORY_COLUMNS, "archived_at"],
            sa.select(
                *(moved.c[name] for name in _HISTORY_COLUMNS), sa.literal(now, UTCDateTime())
            ),
        )
        .returning(sync_history_archive.c.sync_start_time, sync_history_archive.c.sync_id)
        .cte("inserted")
    )
    statement = _last_of(inserted, "sync_start_time", "sync_id")

    def tx(conn: sa.Connection) -> Batch:
        return _batch(conn.execute(statement).one_or_none())

    return tx


def _sqlite_pick(
    table: sa.Table, time_name: str, where: Where, limit: int
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The rowids of the next batch, and its last (time, rowid): the next keyset position.

    Under ``BEGIN IMMEDIATE`` nothing else writes, so every evaluation of the first query in
    the transaction picks the same rows.
    """
    time_col, rowid = table.c[time_name], _rowid(table)
    picked = sa.select(rowid).where(where(table)).order_by(time_col, rowid).limit(limit)
    batch = picked.add_columns(time_col.label("time")).subquery()
    last = sa.select(batch.c.time, batch.c.rowid).order_by(
        batch.c.time.desc(), batch.c.rowid.desc()
    )
    last = last.limit(1)
    return picked, last


def _sqlite_archive(where: Where, limit: int, now: dt.datetime) -> Callable[[sa.Connection], Batch]:
    """Copy then delete the same rows, inside the write lock of BEGIN IMMEDIATE."""
    picked, last = _sqlite_pick(sync_history, "sync_start_time", where, limit)
    in_batch = _rowid(sync_history).in_(picked)
    copy = sa.insert(sync_history_archive).from_select(
        [*_HISTORY_COLUMNS, "archived_at"],
        sa.select(*sync_history.c, sa.literal(now, UTCDateTime())).where(in_batch),
    )
    delete = sa.delete(sync_history).where(in_batch)

    def tx(conn: sa.Connection) -> Batch:
        bound = conn.execute(last).first()
        if bound is None:
            return Batch(0, None)
        copied = conn.execute(copy).rowcount
        deleted = conn.execute(delete).rowcount
        if copied != deleted:  # cannot happen under the write lock; never commit if it does
            raise StorageError(f"archive batch copied {copied} rows but deleted {deleted}")
        return Batch(deleted, Keyset(bound[0], bound[1]))

    return tx


__all__ = (
    "DEFAULT_KEEP_LAST",
    "PURGE_TARGETS",
    "Batch",
    "KeepSnapshot",
    "Keyset",
    "PurgeTarget",
    "RetentionStore",
)
