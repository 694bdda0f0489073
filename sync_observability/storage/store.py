"""SyncStore: every query and transaction on the sync tables.

State changes are guarded updates (``UPDATE ... WHERE sync_status = 'running' ... RETURNING``),
never read-then-write in Python: a sync that was reaped or finished elsewhere cannot be
overwritten. Each public write is one transaction, retried whole on transient errors; writes
that may be replayed after a lost commit acknowledgement recognise their own earlier commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from sync_observability.errors import (
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncStateError,
)
from sync_observability.storage import migrate
from sync_observability.storage.engine import (
    DEFAULT_SCHEMA,
    create_engine,
    redact,
    run_with_retries,
)
from sync_observability.storage.schema import JSONType, UTCDateTime, sync_history, sync_state

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncState:
    """One row of ``sync_state``: a resource's watermark and its last sync."""

    resource: str
    source_system: str | None
    target_system: str | None
    last_sync_time: dt.datetime | None
    cursor: Any
    last_sync_status: str
    records_synced: int
    records_created: int
    records_updated: int
    errors: list[dict[str, Any]]
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_ms: int | None
    consecutive_failures: int
    last_success_at: dt.datetime | None
    current_sync_id: str | None
    dagster_run_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncRecord:
    """One row of ``sync_history``: one sync run."""

    sync_id: str
    resource: str
    source_system: str | None
    target_system: str | None
    sync_type: str
    sync_start_time: dt.datetime
    sync_end_time: dt.datetime | None
    sync_status: str
    records_processed: int
    records_created: int
    records_updated: int
    records_failed: int
    error_message: str | None
    errors: list[dict[str, Any]]
    watermark_before: dt.datetime | None
    watermark_after: dt.datetime | None
    cursor_before: Any
    cursor_after: Any
    duration_ms: int | None
    dagster_run_id: str | None
    asset_key: str | None
    partition_key: str | None
    retry_number: int
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncOutcome:
    """What a finished sync writes: its status, counts, errors and new watermark."""

    status: str
    ended_at: dt.datetime
    records_processed: int = 0
    records_created: int = 0
    records_updated: int = 0
    records_failed: int = 0
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error_message: str | None = None
    watermark_after: dt.datetime | None = None
    cursor_after: Any = None
    cursor_advanced: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


# The hot path's statements, built once. SQLAlchemy 2.0 cannot cache its dialect-specific
# INSERT ... ON CONFLICT constructs (they are recompiled on every call), so the two upserts are
# typed text: the same SQL runs on PostgreSQL and SQLite >= 3.35. bench/bench_tracking.py
# measures what this saves.
_START_STATE = (
    sa.text(
        """
        INSERT INTO sync_state (resource, source_system, target_system, last_sync_status,
            started_at, current_sync_id, dagster_run_id, created_at, updated_at)
        VALUES (:resource, :source_system, :target_system, 'running',
            :started_at, :sync_id, :dagster_run_id, :started_at, :started_at)
        ON CONFLICT (resource) DO UPDATE SET
            last_sync_status = 'running',
            started_at = excluded.started_at,
            completed_at = NULL,
            duration_ms = NULL,
            current_sync_id = excluded.current_sync_id,
            dagster_run_id = excluded.dagster_run_id,
            source_system = COALESCE(excluded.source_system, sync_state.source_system),
            target_system = COALESCE(excluded.target_system, sync_state.target_system),
            updated_at = excluded.updated_at
        -- The guard: only a resource that is not running can start (and not with the id of a
        -- sync that already ended). The second arm makes a retry after a lost commit
        -- acknowledgement a no-op instead of a refusal.
        WHERE (sync_state.last_sync_status <> 'running'
               AND (sync_state.current_sync_id IS NULL
                    OR sync_state.current_sync_id <> excluded.current_sync_id))
           OR (sync_state.last_sync_status = 'running'
               AND sync_state.current_sync_id = excluded.current_sync_id)
        RETURNING last_sync_time, cursor
        """
    )
    .bindparams(sa.bindparam("started_at", type_=UTCDateTime()))
    .columns(last_sync_time=UTCDateTime(), cursor=JSONType)
)
_INSERT_HISTORY = sa.text(
    """
    INSERT INTO sync_history (sync_id, resource, source_system, target_system, sync_type,
        sync_start_time, sync_status, watermark_before, cursor_before, dagster_run_id,
        asset_key, partition_key, retry_number, metadata)
    VALUES (:sync_id, :resource, :source_system, :target_system, :sync_type,
        :started_at, 'running', :watermark_before, :cursor_before, :dagster_run_id,
        :asset_key, :partition_key, :retry_number, :metadata)
    ON CONFLICT (sync_id) DO NOTHING
    """
).bindparams(
    sa.bindparam("started_at", type_=UTCDateTime()),
    sa.bindparam("watermark_before", type_=UTCDateTime()),
    sa.bindparam("cursor_before", type_=JSONType),
    sa.bindparam("metadata", type_=JSONType),
)
_FINISH_HISTORY = (
    sa.update(sync_history)
    .where(
        sync_history.c.sync_id == sa.bindparam("p_sync_id"),
        sync_history.c.sync_status == "running",
    )
    .values(
        sync_status=sa.bindparam("p_status"),
        sync_end_time=sa.bindparam("p_ended_at"),
        records_processed=sa.bindparam("p_processed"),
        records_created=sa.bindparam("p_created"),
        records_updated=sa.bindparam("p_updated"),
        records_failed=sa.bindparam("p_failed"),
        error_message=sa.bindparam("p_error_message"),
        errors=sa.bindparam("p_errors"),
        watermark_after=sa.bindparam("p_watermark_after"),
        cursor_after=sa.bindparam("p_cursor_after"),
        duration_ms=sa.bindparam("p_duration_ms"),
        metadata=sa.bindparam("p_metadata"),
    )
    .returning(sync_history.c.sync_id)
)


def _finish_state(success: bool, cursor_advanced: bool) -> sa.Update:
    values: dict[str, Any] = {
        "last_sync_status": sa.bindparam("p_status"),
        "records_synced": sa.bindparam("p_processed"),
        "records_created": sa.bindparam("p_created"),
        "records_updated": sa.bindparam("p_updated"),
        "errors": sa.bindparam("p_errors"),
        "completed_at": sa.bindparam("p_ended_at"),
        "duration_ms": sa.bindparam("p_duration_ms"),
        "updated_at": sa.bindparam("p_ended_at"),
    }
    if success:
        values |= {
            "last_sync_time": sa.bindparam("p_watermark_after"),
            "consecutive_failures": 0,
            "last_success_at": sa.bindparam("p_ended_at"),
        }
        if cursor_advanced:
            values["cursor"] = sa.bindparam("p_cursor_after")
    else:
        values["consecutive_failures"] = sync_state.c.consecutive_failures + 1
    return (
        sa.update(sync_state)
        .where(
            sync_state.c.resource == sa.bindparam("p_resource"),
            sync_state.c.current_sync_id == sa.bindparam("p_sync_id"),
            sync_state.c.last_sync_status == "running",
        )
        .values(values)
        .returning(sync_state.c.resource)
    )


# One state UPDATE per outcome shape: (success, cursor advanced).
_FINISH_STATE = {
    (success, cursor): _finish_state(success, cursor)
    for success in (True, False)
    for cursor in (True, False)
    if success or not cursor
}


def _duration_ms(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, round((end - start).total_seconds() * 1000))


class SyncStore:
    """Owns the engine and every query on the sync tables, on SQLite or PostgreSQL.

    Args:
        engine: an Engine from :func:`sync_observability.storage.engine.create_engine`.
        schema: the PostgreSQL schema the tables live in (ignored on SQLite).
        max_retries: how many times a transaction is retried on transient errors.
        auto_migrate: apply pending migrations now.

    Examples:
        .. code-block:: python

            store = SyncStore.from_url("sqlite:///sync.db")
            print(store.get_state("accounts"))
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_retries: int = 5,
        auto_migrate: bool = True,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.max_retries = max_retries
        if engine.dialect.name == "postgresql":
            self._insert: Callable[..., Any] = postgresql.insert
        else:
            self._insert = sqlite.insert
        if auto_migrate:
            self._retry(lambda: migrate.ensure_schema(engine, schema), "migrate")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_retries: int = 5,
        auto_migrate: bool = True,
    ) -> SyncStore:
        """A store on a new engine for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
        return cls(
            create_engine(url, schema),
            schema=schema,
            max_retries=max_retries,
            auto_migrate=auto_migrate,
        )

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return redact(self.engine.url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def migrate(self) -> str | None:
        """Apply pending migrations; returns the revision the database was at before."""
        return self._retry(lambda: migrate.upgrade(self.engine, self.schema), "migrate")

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return run_with_retries(fn, what=what, max_retries=self.max_retries)

    def _read(self, fn: Callable[[sa.Connection], T], what: str) -> T:
        def attempt() -> T:
            with self.engine.connect() as conn:
                return fn(conn.execution_options(readonly=True))

        return self._retry(attempt, what)

    def _write(self, fn: Callable[[sa.Connection], T], what: str) -> T:
        def attempt() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return self._retry(attempt, what)

    # -- lifecycle -------------------------------------------------------------------------

    def start_sync(
        self,
        *,
        sync_id: str,
        resource: str,
        started_at: dt.datetime,
        sync_type: str = "incremental",
        source_system: str | None = None,
        target_system: str | None = None,
        dagster_run_id: str | None = None,
        asset_key: str | None = None,
        partition_key: str | None = None,
        retry_number: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> SyncRecord:
        """Mark ``resource`` running and insert its history row, in one transaction.

        Returns the new history row; its ``watermark_before``/``cursor_before`` are the last
        successful watermark. Raises :class:`SyncAlreadyRunningError` when another sync of the
        resource is running (the rule: one sync per resource at a time).
        """

        params = {
            "sync_id": sync_id,
            "resource": resource,
            "source_system": source_system,
            "target_system": target_system,
            "sync_type": sync_type,
            "started_at": started_at,
            "dagster_run_id": dagster_run_id,
            "asset_key": asset_key,
            "partition_key": partition_key,
            "retry_number": retry_number,
            "metadata": metadata or {},
        }

        def tx(conn: sa.Connection) -> SyncRecord:
            started = conn.execute(_START_STATE, params).one_or_none()
            if started is None:
                held = conn.execute(
                    sa.select(
                        sync_state.c.current_sync_id,
                        sync_state.c.started_at,
                        sync_state.c.last_sync_status,
                    ).where(sync_state.c.resource == resource)
                ).one()
                if held.current_sync_id == sync_id:
                    raise SyncNotRunningError(
                        sync_id, resource, held.last_sync_status, "it cannot be started again"
                    )
                raise SyncAlreadyRunningError(resource, held.current_sync_id, held.started_at)
            before = {"watermark_before": started.last_sync_time, "cursor_before": started.cursor}
            conn.execute(_INSERT_HISTORY, params | before)
            return SyncRecord(
                sync_id=sync_id,
                resource=resource,
                source_system=source_system,
                target_system=target_system,
                sync_type=sync_type,
                sync_start_time=started_at,
                sync_end_time=None,
                sync_status="running",
                records_processed=0,
                records_created=0,
                records_updated=0,
                records_failed=0,
                error_message=None,
                errors=[],
                watermark_before=started.last_sync_time,
                watermark_after=None,
                cursor_before=started.cursor,
                cursor_after=None,
                duration_ms=None,
                dagster_run_id=dagster_run_id,
                asset_key=asset_key,
                partition_key=partition_key,
                retry_number=retry_number,
                metadata=params["metadata"],
            )

        return self._write(tx, f"start sync of resource {resource!r}")

    def finish_sync(
        self, *, sync_id: str, resource: str, started_at: dt.datetime, outcome: SyncOutcome
    ) -> None:
        """Record a sync's end (success or failed) in history and state, in one transaction.

        On success the watermark moves to ``outcome.watermark_after`` and consecutive failures
        reset; on failure the watermark stays and ``consecutive_failures`` grows by one. Raises
        :class:`SyncNotRunningError` when the sync was reaped or finished elsewhere meanwhile.
        """
        if outcome.status not in ("success", "failed"):
            raise ValueError(f"finish status must be success or failed, not {outcome.status!r}")
        ended_at = max(outcome.ended_at, started_at)
        success = outcome.status == "success"
        cursor_advanced = success and outcome.cursor_advanced
        params = {
            "p_sync_id": sync_id,
            "p_resource": resource,
            "p_status": outcome.status,
            "p_ended_at": ended_at,
            "p_processed": outcome.records_processed,
            "p_created": outcome.records_created,
            "p_updated": outcome.records_updated,
            "p_failed": outcome.records_failed,
            "p_error_message": outcome.error_message,
            "p_errors": outcome.errors,
            # A success always leaves a watermark: the rule's default is the start time.
            "p_watermark_after": (outcome.watermark_after or started_at) if success else None,
            "p_cursor_after": outcome.cursor_after if cursor_advanced else None,
            "p_duration_ms": _duration_ms(started_at, ended_at),
            "p_metadata": outcome.metadata,
        }
        finish_state = _FINISH_STATE[(success, cursor_advanced)]

        def tx(conn: sa.Connection) -> None:
            if conn.execute(_FINISH_HISTORY, params).one_or_none() is None:
                self._refuse_finish(conn, sync_id, resource, outcome.status, ended_at)
                return
            if conn.execute(finish_state, params).one_or_none() is None:
                # History said running but the state moved on: never half-write.
                raise SyncStateError(
                    f"sync_state of resource {resource!r} no longer belongs to sync {sync_id}; "
                    "nothing was recorded"
                )

        self._write(tx, f"finish sync {sync_id} of resource {resource!r}")

    def _refuse_finish(
        self, conn: sa.Connection, sync_id: str, resource: str, status: str, ended_at: dt.datetime
    ) -> None:
        """Raise unless the guarded update found our own earlier commit (a retried finish)."""
        row = conn.execute(
            sa.select(
                sync_history.c.sync_status,
                sync_history.c.sync_end_time,
                sync_history.c.error_message,
            ).where(sync_history.c.sync_id == sync_id)
        ).one_or_none()
        if row is None:
            raise SyncNotRunningError(sync_id, resource, None, "no such sync in sync_history")
        if row.sync_status == status and row.sync_end_time == ended_at:
            return
        raise SyncNotRunningError(
            sync_id,
            resource,
            row.sync_status,
            f"marked at {row.sync_end_time}: {row.error_message}" if row.error_message else "",
        )

    def reap_sync(self, sync_id: str, *, code: str, message: str, now: dt.datetime) -> bool:
        """Mark a running sync failed (an orphan or a timed-out run); the watermark stays.

        Returns False when the sync was not running any more (finished or reaped meanwhile).
        """
        error = {"code": code, "message": message, "timestamp": now.isoformat()}

        def tx(conn: sa.Connection) -> bool:
            running = conn.execute(
                sa.select(sync_history.c.resource, sync_history.c.sync_start_time).where(
                    sync_history.c.sync_id == sync_id, sync_history.c.sync_status == "running"
                )
            ).one_or_none()
            if running is None:
                return False
            ended_at = max(now, running.sync_start_time)
            duration = _duration_ms(running.sync_start_time, ended_at)
            done = conn.execute(
                sa.update(sync_history)
                .where(sync_history.c.sync_id == sync_id, sync_history.c.sync_status == "running")
                .values(
                    sync_status="failed",
                    sync_end_time=ended_at,
                    error_message=f"{code}: {message}",
                    errors=[error],
                    duration_ms=duration,
                )
                .returning(sync_history.c.sync_id)
            ).one_or_none()
            if done is None:
                return False
            reaped = conn.execute(
                sa.update(sync_state)
                .where(
                    sync_state.c.resource == running.resource,
                    sync_state.c.current_sync_id == sync_id,
                    sync_state.c.last_sync_status == "running",
                )
                .values(
                    last_sync_status="failed",
                    errors=[error],
                    completed_at=ended_at,
                    duration_ms=duration,
                    consecutive_failures=sync_state.c.consecutive_failures + 1,
                    updated_at=ended_at,
                )
                .returning(sync_state.c.resource)
            ).one_or_none()
            if reaped is None:  # the tables disagree: roll the history update back too
                raise SyncStateError(
                    f"sync_state of resource {running.resource!r} no longer belongs to sync "
                    f"{sync_id}; nothing was reaped"
                )
            return True

        return self._write(tx, f"reap sync {sync_id}")

    # -- reads -----------------------------------------------------------------------------

    def get_state(self, resource: str) -> SyncState | None:
        """The ``sync_state`` row of ``resource``, None when it never synced."""
        return self._read(
            lambda conn: _one(
                conn, sa.select(sync_state).where(sync_state.c.resource == resource), SyncState
            ),
            f"read state of {resource!r}",
        )

    def list_states(self, *, status: str | None = None) -> list[SyncState]:
        """Every resource's state (optionally only those with ``status``), by resource."""
        query = sa.select(sync_state).order_by(sync_state.c.resource)
        if status is not None:
            query = query.where(sync_state.c.last_sync_status == status)
        return self._read(lambda conn: _all(conn, query, SyncState), "list states")

    def get_sync(self, sync_id: str) -> SyncRecord | None:
        """One ``sync_history`` row by id."""
        query = sa.select(sync_history).where(sync_history.c.sync_id == sync_id)
        return self._read(lambda conn: _one(conn, query, SyncRecord), f"read sync {sync_id}")

    def list_history(
        self,
        *,
        resource: str | None = None,
        status: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[SyncRecord]:
        """History rows, newest first, filtered by resource, status and start time."""
        query = sa.select(sync_history).order_by(
            sync_history.c.sync_start_time.desc(), sync_history.c.sync_id.desc()
        )
        if resource is not None:
            query = query.where(sync_history.c.resource == resource)
        if status is not None:
            query = query.where(sync_history.c.sync_status == status)
        if since is not None:
            query = query.where(sync_history.c.sync_start_time >= since)
        if limit is not None:
            query = query.limit(limit)
        return self._read(lambda conn: _all(conn, query, SyncRecord), "list history")


def _one(conn: sa.Connection, query: sa.Select[Any], record: type[T]) -> T | None:
    row = conn.execute(query).mappings().one_or_none()
    return None if row is None else record(**row)


def _all(conn: sa.Connection, query: sa.Select[Any], record: type[T]) -> list[T]:
    return [record(**row) for row in conn.execute(query).mappings()]


__all__: Sequence[str] = ("SyncOutcome", "SyncRecord", "SyncState", "SyncStore")
