"""PostgreSQL only, opt-in: ``sync_history`` partitioned by month on ``sync_start_time``.

Turn it on when ``sync_history`` grows past about 100 MB (seed 000, docs/seeds.md), with ``sync-obs
partition enable`` (:func:`enable_partitioning`). It is not an Alembic step: the conversion rewrites
the table under an exclusive lock, which an operator should choose to do, and SQLite has nothing
like it. What changes:

- ``sync_history`` becomes ``PARTITION BY RANGE (sync_start_time)``: one partition per month
  (``sync_history_pYYYYMM``), a ``sync_history_default`` partition for rows outside them (a
  backfill far in the past, a clock far ahead), so no insert is ever refused. The primary key
  becomes ``(sync_id, sync_start_time)`` (PostgreSQL requires the partition key in it); sync
  ids are UUIDs and a replayed start carries its own start time, so ``ON CONFLICT DO NOTHING``
  still makes the replay a no-op. The same indexes as before, on every partition.
- Partitions are created ahead of time (:func:`ensure_partitions`, ``months_ahead``, by the
  conversion and by every retention run); a month whose rows already sit in the default
  partition is moved out of it in the transaction that creates it.
- Retention archives a whole month by detaching it (:func:`archive_partitions`) when the month
  ended before the cutoff and every row of it may go (none running, none the state-aware rule
  keeps); everything else takes the batched row path, partition by partition.

Archiving a month is one transaction, so a crash at any instant leaves every row in exactly one
of ``sync_history`` and ``sync_history_archive``: lock the month's partition (SHARE: no writes
to it, reads go on), check under that lock that every row may go, copy the partition into the
archive, then detach and drop it. ``sync_history``'s own ACCESS EXCLUSIVE lock, which the
detach needs, is asked for only after the copy and held for the catalog change and the commit
(milliseconds); ``lock_timeout`` bounds the wait for it, and a month whose lock is not granted
goes the batched way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from sync_observability.errors import DatabaseUnavailableError, InvalidInputError, StorageError
from sync_observability.storage.schema import UTCDateTime, sync_history
from sync_observability.storage.store import SyncStore

DEFAULT_MONTHS_AHEAD = 3
DEFAULT_PARTITION = "sync_history_default"
_MONTH_NAME = re.compile(r"^sync_history_p(\d{4})(\d{2})$")
_COLUMNS = ", ".join(c.name for c in sync_history.c)
# The longest a detach or a new month waits for sync_history's lock. Those transactions are
# tried once (max_retries=0): a retried lock wait would hold sync_history's queue that long again.
LOCK_TIMEOUT = "5s"


@dataclasses.dataclass(frozen=True)
class Partition:
    """One monthly partition of ``sync_history``: its table name and ``[start, end)``."""

    name: str
    start: dt.datetime
    end: dt.datetime


def month_start(when: dt.datetime) -> dt.datetime:
    """The first instant (UTC) of ``when``'s month."""
    when = when.astimezone(dt.timezone.utc)
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.timezone.utc)


def next_month(start: dt.datetime) -> dt.datetime:
    """The first instant of the month after ``start``'s."""
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def partition_for(start: dt.datetime) -> Partition:
    """The monthly partition holding rows that started in ``start``'s month."""
    first = month_start(start)
    return Partition(f"sync_history_p{first:%Y%m}", first, next_month(first))


def _require_postgres(store: SyncStore) -> None:
    if store.dialect != "postgresql":
        raise InvalidInputError(
            "database_url", store.dialect, "partitioning needs PostgreSQL (SQLite has none)"
        )


def is_partitioned(conn: sa.Connection) -> bool:
    """Whether ``sync_history`` (in the connection's search path) is a partitioned table."""
    return bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
                "WHERE partrelid = to_regclass('sync_history'))"
            )
        ).scalar_one()
    )


def partitions(conn: sa.Connection) -> list[Partition]:
    """The attached monthly partitions, oldest first (the default partition is not listed)."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('sync_history')"
        )
    ).scalars()
    found = []
    for name in names:
        match = _MONTH_NAME.match(name)
        if match:
            first = dt.datetime(int(match[1]), int(match[2]), 1, tzinfo=dt.timezone.utc)
            found.append(Partition(name, first, next_month(first)))
    return sorted(found, key=lambda p: p.start)


def leaf_tables(conn: sa.Connection) -> list[str]:
    """Every attached partition, default included, oldest month first, default last."""
    return [p.name for p in partitions(conn)] + [DEFAULT_PARTITION]


def _ts(value: dt.datetime) -> str:
    return f"'{value.isoformat()}'"


def _create_month(conn: sa.Connection, part: Partition) -> None:
    """Create ``part``, moving its month's rows out of the default partition if any are there."""
    conn.execute(
        sa.text(
            f'CREATE TABLE "{part.name}" (LIKE sync_history INCLUDING DEFAULTS INCLUDING '
            "CONSTRAINTS)"
        )
    )
    conn.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE sync_start_time >= :lo "
            f"AND sync_start_time < :hi RETURNING {_COLUMNS}) "
            f'INSERT INTO "{part.name}" ({_COLUMNS}) SELECT {_COLUMNS} FROM moved'
        ).bindparams(
            sa.bindparam("lo", part.start, UTCDateTime()),
            sa.bindparam("hi", part.end, UTCDateTime()),
        )
    )
    conn.execute(
        sa.text(
            f'ALTER TABLE sync_history ATTACH PARTITION "{part.name}" '
            f"FOR VALUES FROM ({_ts(part.start)}) TO ({_ts(part.end)})"
        )
    )


def ensure_partitions(
    store: SyncStore,
    *,
    now: dt.datetime,
    months_ahead: int = DEFAULT_MONTHS_AHEAD,
) -> list[str]:
    """Create the partitions of ``now``'s month and the ``months_ahead`` after it, if missing.

    Returns the names created. Does nothing (returns []) when ``sync_history`` is not
    partitioned. Each month is its own transaction; ATTACH takes a SHARE UPDATE EXCLUSIVE lock
    on ``sync_history`` (inserts and reads go on) and ACCESS EXCLUSIVE on the default
    partition while checking it. Safe to rerun and to run twice at once (the loser's CREATE
    fails on the existing name and is skipped).
    """
    _require_postgres(store)
    if months_ahead < 0:
        raise InvalidInputError("months_ahead", months_ahead, "must be >= 0")
    wanted = [partition_for(now)]
    for _ in range(months_ahead):
        wanted.append(partition_for(wanted[-1].end))

    def existing(conn: sa.Connection) -> tuple[bool, set[str]]:
        return is_partitioned(conn), {p.name for p in partitions(conn)}

    partitioned, have = store.db.read(existing, "list sync_history partitions")
    if not partitioned:
        return []
    created = []
    for part in wanted:
        if part.name in have:
            continue

        def tx(conn: sa.Connection, part: Partition = part) -> bool:
            if conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": part.name}).scalar():
                return False
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            _create_month(conn, part)
            return True

        try:
            if store.db.write(tx, f"create partition {part.name}", max_retries=0):
                created.append(part.name)
        except StorageError:
            # A concurrent run created it first (or the lock wait timed out): check, not fail.
            if part.name not in store.db.read(existing, "list sync_history partitions")[1]:
                raise
    return created


@dataclasses.dataclass(frozen=True)
class EnableResult:
    """What :func:`enable_partitioning` did: ``converted`` False when already partitioned."""

    converted: bool
    rows: int
    partitions: tuple[str, ...]


def enable_partitioning(
    store: SyncStore, *, now: dt.datetime, months_ahead: int = DEFAULT_MONTHS_AHEAD
) -> EnableResult:
    """Convert ``sync_history`` into a table partitioned by month, keeping every row.

    One transaction, under an ACCESS EXCLUSIVE lock on ``sync_history`` for its whole length
    (every sync start and finish waits; plan it like a migration: about the time of copying
    the table): the table is renamed, a partitioned one created in its place with a partition
    per month that has rows up to ``months_ahead`` after ``now`` plus a default one, every row
    copied, the counts compared, the indexes built, the old table dropped. A crash rolls all of
    it back. Safe to rerun: a partitioned table is left as is (its future months are ensured);
    a second conversion started at once waits for the lock, then finds it done.
    """
    _require_postgres(store)

    def tx(conn: sa.Connection) -> EnableResult:
        conn.execute(sa.text("LOCK TABLE sync_history IN ACCESS EXCLUSIVE MODE"))
        if is_partitioned(conn):
            return EnableResult(False, 0, ())
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                "current_schema() AND tablename = 'sync_history'"
            )
        ).all()
        conn.execute(sa.text("ALTER TABLE sync_history RENAME TO sync_history_unpartitioned"))
        for name, _ in indexes:
            conn.execute(sa.text(f'ALTER INDEX "{name}" RENAME TO "{name}_unpartitioned"'))
        conn.execute(
            sa.text(
                "CREATE TABLE sync_history (LIKE sync_history_unpartitioned INCLUDING DEFAULTS "
                "INCLUDING CONSTRAINTS) PARTITION BY RANGE (sync_start_time)"
            )
        )
        bounds = conn.execute(
            sa.text("SELECT min(sync_start_time), count(*) FROM sync_history_unpartitioned")
        ).one()
        first = month_start(min(bounds[0] or now, now))
        last = partition_for(now)
        for _ in range(months_ahead):
            last = partition_for(last.end)
        names = []
        part = partition_for(first)
        while part.start <= last.start:
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{part.name}" PARTITION OF sync_history FOR VALUES FROM '
                    f"({_ts(part.start)}) TO ({_ts(part.end)})"
                )
            )
            names.append(part.name)
            part = partition_for(part.end)
        conn.execute(sa.text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF sync_history DEFAULT"))
        copied = conn.execute(
            sa.text(
                f"INSERT INTO sync_history ({_COLUMNS}) "
                f"SELECT {_COLUMNS} FROM sync_history_unpartitioned"
            )
        ).rowcount
        if copied != bounds[1]:  # cannot happen under the lock; never commit if it does
            raise StorageError(f"partitioning copied {copied} of {bounds[1]} rows")
        conn.execute(
            sa.text(
                "ALTER TABLE sync_history ADD CONSTRAINT pk_sync_history "
                "PRIMARY KEY (sync_id, sync_start_time)"
            )
        )
        for name, definition in indexes:
            if name != "pk_sync_history":
                conn.execute(sa.text(definition.replace(" ONLY ", " ")))
        conn.execute(sa.text("DROP TABLE sync_history_unpartitioned"))
        return EnableResult(True, copied, tuple(names))

    result = store.db.write(tx, "partition sync_history", unbounded_statements=True)
    ensure_partitions(store, now=now, months_ahead=months_ahead)
    return result


# -- archival by detach ---------------------------------------------------------------------


def archive_partitions(
    store: SyncStore,
    *,
    before: dt.datetime,
    now: dt.datetime,
    keeps: Any,
    observe: Callable[[str, int, float, float], None] | None = None,
) -> tuple[int, list[str]]:
    """Archive, by detach, every month that ended by ``before`` and whose rows may all go.

    ``keeps(table)`` is the SQL condition "this row of ``table`` must stay" (running, or kept by
    the state-aware rule). Returns (rows moved, partitions moved). A month that holds a row
    that must stay, or whose detach cannot get ``sync_history``'s lock in time, is left to the
    row path. ``observe(month, rows, copy_seconds, detach_seconds)`` is called after each month.
    """
    _require_postgres(store)
    lock_timeout = LOCK_TIMEOUT
    moved = 0
    done = []

    def candidates(conn: sa.Connection) -> list[Partition]:
        if not is_partitioned(conn):
            return []
        return [p for p in partitions(conn) if p.end <= before]

    for part in store.db.read(candidates, "list old partitions"):
        table = sync_history.to_metadata(sa.MetaData(), name=part.name)
        blocked = sa.select(sa.exists().where(keeps(table)))
        if store.db.read(lambda conn, q=blocked: conn.execute(q).scalar_one(), "check partition"):
            continue
        timings: list[float] = []

        def archive_month(
            conn: sa.Connection, part: Partition = part, q: Any = blocked, timings: Any = timings
        ) -> int:
            started = time.perf_counter()
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
            if not conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": part.name}).scalar():
                raise _Keep()  # a concurrent run archived it
            conn.execute(sa.text(f'LOCK TABLE "{part.name}" IN SHARE MODE'))
            # Again under the lock: a row inserted or a watermark moved since the first look.
            if conn.execute(q).scalar_one():
                raise _Keep()
            rows = conn.execute(
                sa.text(
                    f"INSERT INTO sync_history_archive ({_COLUMNS}, archived_at) "
                    f'SELECT {_COLUMNS}, :now FROM "{part.name}"'
                ).bindparams(sa.bindparam("now", now, UTCDateTime()))
            ).rowcount
            copied = time.perf_counter()
            conn.execute(sa.text(f'ALTER TABLE sync_history DETACH PARTITION "{part.name}"'))
            conn.execute(sa.text(f'DROP TABLE "{part.name}"'))
            timings[:] = [started, copied]
            return rows

        try:
            rows = store.db.write(
                archive_month, f"archive {part.name}", max_retries=0, unbounded_statements=True
            )
        except (_Keep, DatabaseUnavailableError):
            # A row must stay, or the lock on sync_history was not granted within the lock
            # timeout (a long query holds it): the month goes the batched way.
            continue
        if observe is not None:
            started, copied = timings
            observe(part.name, rows, copied - started, time.perf_counter() - copied)
        moved += rows
        done.append(part.name)
    return moved, done


class _Keep(Exception):
    """Rolls a detach back: the month holds a row that must stay."""


__all__ = (
    "DEFAULT_MONTHS_AHEAD",
    "EnableResult",
    "Partition",
    "archive_partitions",
    "enable_partitioning",
    "ensure_partitions",
    "is_partitioned",
    "leaf_tables",
    "partition_for",
    "partitions",
)
