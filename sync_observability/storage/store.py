"""SyncStore: a sync's lifecycle (start, finish, reap) and the reads of the sync tables.

The rows it returns are in :mod:`.records`; manual watermark changes, which it offers as
methods, in :mod:`.watermarks`; the rule deciding a watermark's move in :mod:`.watermark_rule`.

State changes are guarded updates (``UPDATE ... WHERE sync_status = 'running' ... RETURNING``),
never read-then-write in Python: a sync that was reaped or finished elsewhere cannot be
overwritten. Each public write is one transaction, retried whole on transient errors; writes
that may be replayed after a lost commit acknowledgement recognise their own earlier commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from sync_observability.clock import utcnow
from sync_observability.errors import (
    InvalidInputError,
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncStateError,
    WatermarkConflictError,
    WatermarkError,
)
from sync_observability.storage import migrate
from sync_observability.storage.database import Database
from sync_observability.storage.engine import DEFAULT_SCHEMA, DEFAULT_TIMEOUT, create_engine
from sync_observability.storage.records import (
    RefusedChange,
    SyncOutcome,
    SyncRecord,
    SyncState,
)
from sync_observability.storage.reporting.backfills import is_backfill, reopen_statement
from sync_observability.storage.schema import (
    JSONType,
    UTCDateTime,
    sync_history,
    sync_history_archive,
    sync_state,
)
from sync_observability.storage.watermark_rule import DEFAULT_MAX_AHEAD, refusal, time_is_rewind
from sync_observability.storage.watermarks import (
    INSERT_CHANGE,
    Refused,
    WatermarkChangesMixin,
    same_cursor,
)
from sync_observability.validation import check_aware

T = TypeVar("T")

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
    -- No conflict target: a partitioned sync_history's key is (sync_id, sync_start_time),
    -- and a replayed start carries both.
    ON CONFLICT DO NOTHING
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
        # The partition key too: a partitioned sync_history then locks and probes one month.
        sync_history.c.sync_start_time == sa.bindparam("p_started_at"),
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
    # What the sync started from: the compare-and-swap of the state update checks against it.
    .returning(
        sync_history.c.sync_id, sync_history.c.watermark_before, sync_history.c.cursor_before
    )
)
# A successful finish whose default watermark (its start time) would move backwards keeps the
# watermark in place instead; history says so too (rare: only after an advance ahead of time).
_FIX_HISTORY_WATERMARK = (
    sa.update(sync_history)
    .where(
        sync_history.c.sync_id == sa.bindparam("p_sync_id"),
        sync_history.c.sync_start_time == sa.bindparam("p_started_at"),
    )
    .values(watermark_after=sa.bindparam("p_watermark_after"))
)


def _finish_state(dialect: str, success: bool, cursor_advanced: bool, count: bool) -> sa.Update:
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
    guard = [
        sync_state.c.resource == sa.bindparam("p_resource"),
        sync_state.c.current_sync_id == sa.bindparam("p_sync_id"),
        sync_state.c.last_sync_status == "running",
    ]
    if success:
        moved = sa.bindparam("p_moved", type_=sa.Boolean())
        values |= {
            "last_sync_time": sa.bindparam("p_watermark_after"),
            "consecutive_failures": 0,
            "last_success_at": sa.bindparam("p_ended_at"),
            "watermark_advanced_at": sa.case(
                (moved, sa.bindparam("p_ended_at")), else_=sync_state.c.watermark_advanced_at
            ),
            "syncs_since_advance": sa.case((moved, 0), else_=sync_state.c.syncs_since_advance + 1),
        }
        if cursor_advanced:
            values["cursor"] = sa.bindparam("p_cursor_after")
        # Compare-and-swap: the watermark must still be the one this sync started from.
        guard += [
            sync_state.c.last_sync_time.is_not_distinct_from(
                sa.bindparam("p_watermark_before", type_=UTCDateTime())
            ),
            same_cursor(
                dialect, sync_state.c.cursor, sa.bindparam("p_cursor_before", type_=JSONType)
            ),
        ]
    elif count:
        values["consecutive_failures"] = sync_state.c.consecutive_failures + 1
    return sa.update(sync_state).where(*guard).values(values).returning(sync_state.c.resource)


@functools.cache  # the same statement objects for every store: compiled once per engine
def _finish_statements(dialect: str) -> dict[tuple[bool, bool, bool], sa.Update]:
    """One state UPDATE per outcome shape: (success, cursor advanced, failure counted)."""
    return {
        (success, cursor, count): _finish_state(dialect, success, cursor, count)
        for success in (True, False)
        for cursor in (True, False)
        for count in (True, False)
        if (success and count) or not (success or cursor)
    }


def _duration_ms(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, round((end - start).total_seconds() * 1000))


ROLLUP_MODES = ("refresh", "read", "off")


def _check_rollups(rollups: str) -> str:
    if rollups not in ROLLUP_MODES:
        raise InvalidInputError("rollups", rollups, f"must be one of {', '.join(ROLLUP_MODES)}")
    return rollups


class SyncStore(WatermarkChangesMixin):
    """Every query on the sync tables, on SQLite or PostgreSQL; its :class:`Database` runs them.

    Manual watermark changes (``set_watermark``, ``rewind_to_sync``, ``watermark_changes``)
    come from :class:`~.watermarks.WatermarkChangesMixin`.

    Args:
        engine: an Engine from :func:`sync_observability.storage.engine.create_engine`.
        schema: the PostgreSQL schema the tables live in (ignored on SQLite).
        max_retries: at most this many retries of a transaction on transient errors, besides
            the time budget (None: retry until ``storage_timeout_seconds`` is spent).
        auto_migrate: apply pending migrations now.
        rollups: how reports use the hourly roll-ups (``storage/reporting/hourly_rollups.py``):
            ``"refresh"`` (default) aggregates the hours closed since the last report, then reads
            them; ``"read"`` reads what is already rolled up and writes nothing (a read-only
            replica, or a read-only database user; the primary's reports keep them fresh);
            ``"off"`` reads every hour from ``sync_history`` (slower, same answers).
        storage_timeout_seconds: the time budget of every call (connect, lock waits,
            statements, retries); past it the call raises ``DatabaseUnavailableError``.

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
        max_retries: int | None = None,
        auto_migrate: bool = True,
        rollups: str = "refresh",
        storage_timeout_seconds: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.rollups = _check_rollups(rollups)
        self.db = Database(
            engine, schema=schema, timeout_seconds=storage_timeout_seconds, max_retries=max_retries
        )
        self.schema = schema
        self._finish_state = _finish_statements(engine.dialect.name)
        # PostgreSQL: start and finish skip SQLAlchemy's per-statement machinery (driver.py).
        self.db.prepare(
            [
                _START_STATE,
                _INSERT_HISTORY,
                _FINISH_HISTORY,
                _FIX_HISTORY_WATERMARK,
                INSERT_CHANGE,
                *self._finish_state.values(),
            ]
        )
        if auto_migrate:
            # The common case, a schema at head, costs one small read.
            current = self.db.read(migrate.stored_revision, "read the schema revision")
            if current != migrate.HEAD_REVISION:
                self.db.retry(lambda: migrate.ensure_schema(engine, schema, current), "migrate")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_retries: int | None = None,
        auto_migrate: bool = True,
        rollups: str = "refresh",
        storage_timeout_seconds: float = DEFAULT_TIMEOUT,
    ) -> SyncStore:
        """A store on a new engine for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
        _check_rollups(rollups)  # before an engine is made
        return cls(
            create_engine(url, schema, timeout_seconds=storage_timeout_seconds),
            schema=schema,
            max_retries=max_retries,
            auto_migrate=auto_migrate,
            rollups=rollups,
            storage_timeout_seconds=storage_timeout_seconds,
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy Engine (its Database's)."""
        return self.db.engine

    @property
    def max_retries(self) -> int | None:
        """The cap on retries of one call, besides the time budget (None: the budget only)."""
        return self.db.max_retries

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self.db.url

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.db.dispose()

    def migrate(self) -> str | None:
        """Apply pending migrations; returns the revision the database was at before."""
        return self.db.retry(lambda: migrate.upgrade(self.engine, self.schema), "migrate")

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

        # A start in the past may land in an hour the reports' roll-ups already hold.
        backfill = is_backfill(started_at, utcnow())

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
            if backfill:
                conn.execute(reopen_statement(started_at))
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

        return self.db.write_hot(tx, f"start sync of resource {resource!r}")

    def finish_sync(
        self,
        *,
        sync_id: str,
        resource: str,
        started_at: dt.datetime,
        outcome: SyncOutcome,
        max_ahead: dt.timedelta | None = DEFAULT_MAX_AHEAD,
    ) -> None:
        """Record a sync's end (success or failed) in history and state, in one transaction.

        On success the watermark moves to ``outcome.watermark_after`` (default: the start time,
        never backwards) and consecutive failures reset; the move is kept in
        ``watermark_changes``. On failure the watermark stays and ``consecutive_failures`` grows
        by one (unless ``outcome.count_failure`` is False: an attempt that will be retried).

        A success is turned into a failure, recorded with the error's code and a ``refused``
        row in ``watermark_changes``, when its watermark moves backwards without
        ``outcome.allow_rewind`` (:class:`WatermarkRewindError`), lies beyond ``ended_at +
        max_ahead`` (:class:`WatermarkAheadError`), or the state's watermark is no longer the
        one the sync started from (:class:`WatermarkConflictError`); that error is then raised.
        Raises :class:`SyncNotRunningError` when the sync was reaped or finished elsewhere.
        """
        if outcome.status not in ("success", "failed"):
            raise ValueError(f"finish status must be success or failed, not {outcome.status!r}")
        ended_at = max(outcome.ended_at, started_at)
        success = outcome.status == "success"
        cursor_advanced = success and outcome.cursor_advanced
        params = {
            "p_sync_id": sync_id,
            "p_started_at": started_at,
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
        finish_state = self._finish_state[
            (success, cursor_advanced, success or outcome.count_failure)
        ]

        def tx(conn: sa.Connection) -> None:
            row = conn.execute(_FINISH_HISTORY, params).one_or_none()
            if row is None:
                self._refuse_finish(conn, sync_id, resource, started_at, outcome.status, ended_at)
                return
            changes = [
                _change(
                    resource,
                    sync_id,
                    "refused",
                    row,
                    r.watermark_after,
                    r.cursor_after,
                    ended_at,
                    reason=r.reason,
                )
                for r in outcome.refused
            ]
            state_params = params
            if success:
                after = params["p_watermark_after"]
                if outcome.watermark_after is None and time_is_rewind(row.watermark_before, after):
                    # The default never moves a watermark (advanced ahead of time) backwards.
                    after = row.watermark_before
                    conn.execute(_FIX_HISTORY_WATERMARK, params | {"p_watermark_after": after})
                cursor_after = params["p_cursor_after"] if cursor_advanced else row.cursor_before
                time_moved = after != row.watermark_before
                moved = time_moved or (cursor_advanced and cursor_after != row.cursor_before)
                change = _change(resource, sync_id, "advance", row, after, cursor_after, ended_at)
                error = refusal(
                    resource,
                    row.watermark_before,
                    row.cursor_before,
                    after if time_moved else None,
                    cursor_after if cursor_advanced else None,
                    allow_rewind=outcome.allow_rewind,
                    now=ended_at,
                    max_ahead=max_ahead,
                )
                if error is not None:
                    raise Refused(error, change)
                state_params = params | {
                    "p_watermark_after": after,
                    "p_watermark_before": row.watermark_before,
                    "p_cursor_before": row.cursor_before,
                    "p_moved": moved,
                }
                if moved:
                    changes.append(change)
            if conn.execute(finish_state, state_params).one_or_none() is None:
                held = conn.execute(
                    sa.select(
                        sync_state.c.current_sync_id,
                        sync_state.c.last_sync_status,
                        sync_state.c.last_sync_time,
                        sync_state.c.cursor,
                    ).where(sync_state.c.resource == resource)
                ).one_or_none()
                ours = (
                    held is not None
                    and held.current_sync_id == sync_id
                    and held.last_sync_status == "running"
                )
                if success and ours:
                    raise Refused(_conflict(resource, row, held, change), change)
                # History said running but the state moved on: never half-write.
                raise SyncStateError(
                    f"sync_state of resource {resource!r} no longer belongs to sync {sync_id}; "
                    "nothing was recorded"
                )
            if changes:
                conn.execute(INSERT_CHANGE, changes)

        what = f"finish sync {sync_id} of resource {resource!r}"
        try:
            self.db.write_hot(tx, what)
        except Refused as refused:
            self._finish_refused(sync_id, resource, started_at, outcome, refused)
            raise refused.error from None

    def _finish_refused(
        self,
        sync_id: str,
        resource: str,
        started_at: dt.datetime,
        outcome: SyncOutcome,
        refused: Refused,
    ) -> None:
        """Finish the sync failed with the refusal's error, and keep the refused change."""
        error = refused.error
        code = getattr(error, "code", type(error).__name__)
        entry = {"code": code, "message": str(error), "timestamp": outcome.ended_at.isoformat()}
        failed = dataclasses.replace(
            outcome,
            status="failed",
            errors=[*outcome.errors, entry],
            error_message=f"{code}: {error}",
            watermark_after=None,
            cursor_after=None,
            cursor_advanced=False,
            count_failure=True,
            refused=[
                *outcome.refused,
                RefusedChange(
                    reason=f"{code}: {error}",
                    watermark_after=refused.change["watermark_after"],
                    cursor_after=refused.change["cursor_after"],
                ),
            ],
        )
        self.finish_sync(sync_id=sync_id, resource=resource, started_at=started_at, outcome=failed)

    def _refuse_finish(
        self,
        conn: sa.Connection,
        sync_id: str,
        resource: str,
        started_at: dt.datetime,
        status: str,
        ended_at: dt.datetime,
    ) -> None:
        """Raise unless the guarded update found our own earlier commit (a retried finish)."""
        row = conn.execute(
            sa.select(
                sync_history.c.sync_start_time,
                sync_history.c.sync_status,
                sync_history.c.sync_end_time,
                sync_history.c.error_message,
            ).where(sync_history.c.sync_id == sync_id)
        ).one_or_none()
        if row is None:
            raise SyncNotRunningError(sync_id, resource, None, "no such sync in sync_history")
        if row.sync_start_time != started_at:
            raise InvalidInputError(
                "started_at", started_at, f"sync {sync_id} started at {row.sync_start_time}"
            )
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
                .where(
                    sync_history.c.sync_id == sync_id,
                    sync_history.c.sync_start_time == running.sync_start_time,
                    sync_history.c.sync_status == "running",
                )
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

        return self.db.write(tx, f"reap sync {sync_id}")

    # -- reads -----------------------------------------------------------------------------

    def get_state(self, resource: str) -> SyncState | None:
        """The ``sync_state`` row of ``resource``, None when it never synced."""
        return self.db.read(
            lambda conn: _one(
                conn, sa.select(sync_state).where(sync_state.c.resource == resource), SyncState
            ),
            f"read state of {resource!r}",
        )

    def list_states(
        self,
        *,
        status: str | Collection[str] | None = None,
        min_consecutive_failures: int | None = None,
        last_success_before: dt.datetime | None = None,
        min_syncs_since_advance: int | None = None,
    ) -> list[SyncState]:
        """Every resource's state, by resource; the filters, all applied in SQL, narrow it.

        Args:
            status: only rows whose ``last_sync_status`` is this (or one of these).
            min_consecutive_failures: only rows with at least this many failures in a row.
            last_success_before: only rows whose last success (else their watermark time,
                else their creation) is at or before this time.
            min_syncs_since_advance: only rows with at least this many successful syncs since
                the watermark last moved.
        """
        t = sync_state.c
        query = sa.select(sync_state).order_by(t.resource)
        if isinstance(status, str):
            query = query.where(t.last_sync_status == status)
        elif status is not None:
            query = query.where(t.last_sync_status.in_(sorted(status)))
        if min_consecutive_failures is not None:
            query = query.where(t.consecutive_failures >= min_consecutive_failures)
        if last_success_before is not None:
            last_success = sa.func.coalesce(t.last_success_at, t.last_sync_time, t.created_at)
            query = query.where(
                last_success <= check_aware("last_success_before", last_success_before)
            )
        if min_syncs_since_advance is not None:
            query = query.where(t.syncs_since_advance >= min_syncs_since_advance)
        return self.db.read(lambda conn: _all(conn, query, SyncState), "list states")

    def count_states(self) -> int:
        """How many resources have a ``sync_state`` row."""
        query = sa.select(sa.func.count()).select_from(sync_state)
        return self.db.read(lambda conn: conn.execute(query).scalar_one(), "count states")

    def list_resources(self) -> list[str]:
        """Every resource with a ``sync_state`` row, sorted."""
        query = sa.select(sync_state.c.resource).order_by(sync_state.c.resource)
        return self.db.read(lambda conn: list(conn.execute(query).scalars()), "list resources")

    def get_sync(self, sync_id: str) -> SyncRecord | None:
        """One ``sync_history`` row by id."""
        query = sa.select(sync_history).where(sync_history.c.sync_id == sync_id)
        return self.db.read(lambda conn: _one(conn, query, SyncRecord), f"read sync {sync_id}")

    def list_history(
        self,
        *,
        resource: str | None = None,
        status: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[SyncRecord]:
        """History rows, newest first, filtered by resource, status and start time."""
        query = _history_query(sync_history, resource, status, since, limit)
        return self.db.read(lambda conn: _all(conn, query, SyncRecord), "list history")

    def list_archived_history(
        self,
        *,
        resource: str | None = None,
        status: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """``sync_history_archive`` rows (each column, ``archived_at`` included) as
        :meth:`list_history` reads ``sync_history``."""
        query = _history_query(sync_history_archive, resource, status, since, limit)
        return self.db.read(
            lambda conn: [dict(row) for row in conn.execute(query).mappings()], "list archive"
        )


def _history_query(
    table: sa.Table,
    resource: str | None,
    status: str | None,
    since: dt.datetime | None,
    limit: int | None,
) -> sa.Select[Any]:
    query = sa.select(table).order_by(table.c.sync_start_time.desc(), table.c.sync_id.desc())
    if resource is not None:
        query = query.where(table.c.resource == resource)
    if status is not None:
        query = query.where(table.c.sync_status == status)
    if since is not None:
        query = query.where(table.c.sync_start_time >= since)
    if limit is not None:
        query = query.limit(limit)
    return query


def _change(
    resource: str,
    sync_id: str,
    kind: str,
    before: Any,
    watermark_after: dt.datetime | None,
    cursor_after: Any,
    changed_at: dt.datetime,
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """A ``watermark_changes`` row made by a sync (``before`` holds what it started from)."""
    return {
        "resource": resource,
        "sync_id": sync_id,
        "kind": kind,
        "watermark_before": before.watermark_before,
        "watermark_after": watermark_after,
        "cursor_before": before.cursor_before,
        "cursor_after": cursor_after,
        "changed_at": changed_at,
        "changed_by": None,
        "reason": reason,
    }


def _conflict(resource: str, before: Any, held: Any, change: dict[str, Any]) -> WatermarkError:
    if held.last_sync_time != before.watermark_before:
        return WatermarkConflictError(
            resource, held.last_sync_time, change["watermark_after"], before.watermark_before
        )
    return WatermarkConflictError(
        resource, held.cursor, change["cursor_after"], before.cursor_before
    )


def _one(conn: sa.Connection, query: sa.Select[Any], record: type[T]) -> T | None:
    row = conn.execute(query).mappings().one_or_none()
    return None if row is None else record(**row)


def _all(conn: sa.Connection, query: sa.Select[Any], record: type[T]) -> list[T]:
    return [record(**row) for row in conn.execute(query).mappings()]


__all__: Sequence[str] = ("ROLLUP_MODES", "SyncStore")
