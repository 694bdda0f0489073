"""SyncStore: every query and transaction on the sync tables.

State changes are guarded updates (``UPDATE ... WHERE sync_status = 'running' ... RETURNING``),
never read-then-write in Python: a sync that was reaped or finished elsewhere cannot be
overwritten. Each public write is one transaction, retried whole on transient errors; writes
that may be replayed after a lost commit acknowledgement recognise their own earlier commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from sync_observability.errors import (
    InvalidInputError,
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncStateError,
    WatermarkAheadError,
    WatermarkBusyError,
    WatermarkConflictError,
    WatermarkError,
    WatermarkRewindError,
)
from sync_observability.storage import history_rollup, migrate
from sync_observability.storage.database import Database
from sync_observability.storage.engine import DEFAULT_SCHEMA, DEFAULT_TIMEOUT, create_engine
from sync_observability.storage.schema import (
    JSONType,
    UTCDateTime,
    sync_history,
    sync_state,
    watermark_changes,
)
from sync_observability.validation import check_aware, check_json, check_name

T = TypeVar("T")

DEFAULT_MAX_AHEAD = dt.timedelta(minutes=5)
"""How far past now a watermark may be set: clock skew between workers, no more."""
MAX_REASON_LENGTH = 2000


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
    watermark_advanced_at: dt.datetime | None = None
    syncs_since_advance: int = 0


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
    allow_rewind: bool = False
    count_failure: bool = True
    refused: Sequence[RefusedChange] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefusedChange:
    """A watermark the sync proposed and was refused (kept in ``watermark_changes``)."""

    reason: str
    watermark_after: dt.datetime | None = None
    cursor_after: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatermarkChange:
    """One row of ``watermark_changes``: a change of a resource's watermark, or a refused one.

    ``kind`` is ``advance`` (a successful sync moved it), ``set`` or ``rewind`` (a manual
    change; ``rewind`` when it moved backwards) or ``refused``. ``sync_id`` is None for manual
    changes, which carry ``changed_by`` and ``reason``.
    """

    change_id: int
    resource: str
    sync_id: str | None
    kind: str
    watermark_before: dt.datetime | None
    watermark_after: dt.datetime | None
    cursor_before: Any
    cursor_after: Any
    changed_at: dt.datetime
    changed_by: str | None
    reason: str | None


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
_INSERT_CHANGE = sa.insert(watermark_changes).values(
    resource=sa.bindparam("resource"),
    sync_id=sa.bindparam("sync_id"),
    kind=sa.bindparam("kind"),
    watermark_before=sa.bindparam("watermark_before"),
    watermark_after=sa.bindparam("watermark_after"),
    cursor_before=sa.bindparam("cursor_before"),
    cursor_after=sa.bindparam("cursor_after"),
    changed_at=sa.bindparam("changed_at"),
    changed_by=sa.bindparam("changed_by"),
    reason=sa.bindparam("reason"),
)


def _same_json(dialect: str, column: Any, value: Any) -> Any:
    """NULL-safe JSON equality: jsonb compares by value; SQLite's json() canonicalises text."""
    if dialect == "postgresql":
        return column.is_not_distinct_from(value)
    return sa.func.json(column).is_not_distinct_from(sa.func.json(value))


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
            _same_json(
                dialect, sync_state.c.cursor, sa.bindparam("p_cursor_before", type_=JSONType)
            ),
        ]
    elif count:
        values["consecutive_failures"] = sync_state.c.consecutive_failures + 1
    return sa.update(sync_state).where(*guard).values(values).returning(sync_state.c.resource)


def _finish_statements(dialect: str) -> dict[tuple[bool, bool, bool], sa.Update]:
    """One state UPDATE per outcome shape: (success, cursor advanced, failure counted)."""
    return {
        (success, cursor, count): _finish_state(dialect, success, cursor, count)
        for success in (True, False)
        for cursor in (True, False)
        for count in (True, False)
        if (success and count) or not (success or cursor)
    }


class _Refused(Exception):
    """Raised inside a transaction to roll it back before a refusal is recorded."""

    def __init__(self, error: WatermarkError | WatermarkBusyError, change: dict[str, Any]):
        super().__init__(str(error))
        self.error = error
        self.change = change


def _duration_ms(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, round((end - start).total_seconds() * 1000))


ROLLUP_MODES = ("refresh", "read", "off")


def _check_rollups(rollups: str) -> str:
    if rollups not in ROLLUP_MODES:
        raise InvalidInputError("rollups", rollups, f"must be one of {', '.join(ROLLUP_MODES)}")
    return rollups


class SyncStore:
    """Every query on the sync tables, on SQLite or PostgreSQL; its :class:`Database` runs them.

    Args:
        engine: an Engine from :func:`sync_observability.storage.engine.create_engine`.
        schema: the PostgreSQL schema the tables live in (ignored on SQLite).
        max_retries: at most this many retries of a transaction on transient errors, besides
            the time budget (None: retry until ``storage_timeout_seconds`` is spent).
        auto_migrate: apply pending migrations now.
        rollups: how reports use the hourly roll-ups (``storage/history_rollup.py``):
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
                _INSERT_CHANGE,
                *self._finish_state.values(),
            ]
        )
        if auto_migrate:
            self.db.retry(lambda: migrate.ensure_schema(engine, schema), "migrate")

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
        backfill = history_rollup.is_backfill(started_at, utcnow())

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
                conn.execute(history_rollup.reopen_statement(started_at))
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
                if outcome.watermark_after is None and _later(row.watermark_before, after):
                    # The default never moves a watermark (advanced ahead of time) backwards.
                    after = row.watermark_before
                    conn.execute(_FIX_HISTORY_WATERMARK, params | {"p_watermark_after": after})
                cursor_after = params["p_cursor_after"] if cursor_advanced else row.cursor_before
                time_moved = after != row.watermark_before
                moved = time_moved or (cursor_advanced and cursor_after != row.cursor_before)
                change = _change(resource, sync_id, "advance", row, after, cursor_after, ended_at)
                refusal = self._check_move(
                    resource,
                    row,
                    after,
                    cursor_after,
                    time_moved,
                    outcome.allow_rewind,
                    cursor_advanced,
                    ended_at,
                    max_ahead,
                )
                if refusal is not None:
                    raise _Refused(refusal, change)
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
                    raise _Refused(_conflict(resource, row, held, change), change)
                # History said running but the state moved on: never half-write.
                raise SyncStateError(
                    f"sync_state of resource {resource!r} no longer belongs to sync {sync_id}; "
                    "nothing was recorded"
                )
            if changes:
                conn.execute(_INSERT_CHANGE, changes)

        what = f"finish sync {sync_id} of resource {resource!r}"
        try:
            self.db.write_hot(tx, what)
        except _Refused as refused:
            self._finish_refused(sync_id, resource, started_at, outcome, refused)
            raise refused.error from None

    def _check_move(
        self,
        resource: str,
        before: Any,
        after: dt.datetime,
        cursor_after: Any,
        time_moved: bool,
        allow_rewind: bool,
        cursor_advanced: bool,
        now: dt.datetime,
        max_ahead: dt.timedelta | None,
    ) -> WatermarkError | None:
        """The refusal of a sync's proposed watermark, None when it may be written."""
        if not allow_rewind:
            if _later(before.watermark_before, after):
                return WatermarkRewindError(resource, before.watermark_before, after)
            if cursor_advanced and cursor_is_rewind(before.cursor_before, cursor_after):
                return WatermarkRewindError(resource, before.cursor_before, cursor_after)
        if time_moved and max_ahead is not None and after > now + max_ahead:
            return WatermarkAheadError(resource, before.watermark_before, after, now + max_ahead)
        return None

    def _finish_refused(
        self,
        sync_id: str,
        resource: str,
        started_at: dt.datetime,
        outcome: SyncOutcome,
        refused: _Refused,
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

    # -- manual watermark changes ----------------------------------------------------------

    def set_watermark(
        self,
        resource: str,
        value: Any,
        *,
        reason: str,
        changed_by: str | None = None,
        allow_rewind: bool = False,
        max_ahead: dt.timedelta | None = DEFAULT_MAX_AHEAD,
        now: dt.datetime | None = None,
    ) -> WatermarkChange:
        """Set a resource's watermark by hand; the change is kept with who made it and why.

        A ``datetime`` sets the time watermark (``last_sync_time``); any other JSON value sets
        the ``cursor``. The next sync starts from it. A resource that never synced gets a
        ``never_run`` state row holding it.

        Args:
            resource: the resource whose watermark to set.
            value: the new watermark (a timezone-aware datetime) or cursor (JSON, not None).
            reason: why, for the audit trail (required).
            changed_by: who; default the OS user running this process.
            allow_rewind: allow a value older than the current one (kind ``rewind``).
            max_ahead: refuse a time watermark beyond ``now + max_ahead``; None: no limit.
            now: the time of the change (default: now).

        Raises:
            WatermarkBusyError: a sync of the resource is running.
            WatermarkRewindError: the value is older than the current one, without allow_rewind.
            WatermarkAheadError: the value is beyond now + max_ahead.
            WatermarkConflictError: the watermark changed while this change was being made.
            InvalidInputError: a naive datetime, a non-JSON or None cursor, an empty reason.

        A refusal is kept in ``watermark_changes`` (kind ``refused``) and nothing else changes.
        """
        check_name("resource", resource)
        if isinstance(value, dt.datetime):
            time_value: dt.datetime | None = check_aware("value", value)
            cursor_value: Any = None
        else:
            check_json("value", value)
            if value is None:
                raise InvalidInputError("value", value, "must be a datetime or a JSON cursor")
            time_value, cursor_value = None, value
        return self._change_watermark(
            resource,
            time_value,
            cursor_value,
            set_time=time_value is not None,
            set_cursor=time_value is None,
            kind=None,
            allow_rewind=allow_rewind,
            reason=reason,
            changed_by=changed_by,
            max_ahead=max_ahead,
            now=now,
        )

    def rewind_to_sync(
        self,
        resource: str,
        sync_id: str,
        *,
        reason: str,
        changed_by: str | None = None,
        max_ahead: dt.timedelta | None = DEFAULT_MAX_AHEAD,
        now: dt.datetime | None = None,
    ) -> WatermarkChange:
        """Put a resource's watermark back to what a successful sync left it at.

        The time watermark becomes that sync's ``watermark_after`` and the cursor its
        ``cursor_after`` (or, when it did not advance the cursor, the cursor it started from).
        The change is kept in ``watermark_changes`` (kind ``rewind``) with who and why; the
        next sync starts from it. Same refusals as :meth:`set_watermark`, except that moving
        backwards is the point and always allowed.

        Raises:
            InvalidInputError: ``sync_id`` is not a successful sync of ``resource``.
        """
        check_name("resource", resource)
        target = self.get_sync(sync_id)
        if target is None or target.resource != resource:
            raise InvalidInputError("sync_id", sync_id, f"is not a sync of resource {resource!r}")
        if target.sync_status != "success" or target.watermark_after is None:
            raise InvalidInputError(
                "sync_id",
                sync_id,
                f"is a {target.sync_status} sync; only a successful sync left a watermark",
            )
        cursor = target.cursor_after if target.cursor_after is not None else target.cursor_before
        return self._change_watermark(
            resource,
            target.watermark_after,
            cursor,
            set_time=True,
            set_cursor=True,
            kind="rewind",
            allow_rewind=True,
            reason=reason,
            changed_by=changed_by,
            max_ahead=max_ahead,
            now=now,
        )

    def _change_watermark(
        self,
        resource: str,
        time_value: dt.datetime | None,
        cursor_value: Any,
        *,
        set_time: bool,
        set_cursor: bool,
        kind: str | None,
        allow_rewind: bool,
        reason: str,
        changed_by: str | None,
        max_ahead: dt.timedelta | None,
        now: dt.datetime | None,
    ) -> WatermarkChange:
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInputError("reason", reason, "give a reason for the audit trail")
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidInputError("reason", reason, f"is over {MAX_REASON_LENGTH} characters")
        changed_by = check_name("changed_by", _os_user() if changed_by is None else changed_by)
        now = check_aware("now", now) if now is not None else utcnow()

        def tx(conn: sa.Connection) -> dict[str, Any]:
            held = conn.execute(
                sa.select(
                    sync_state.c.last_sync_status,
                    sync_state.c.current_sync_id,
                    sync_state.c.last_sync_time,
                    sync_state.c.cursor,
                ).where(sync_state.c.resource == resource)
            ).one_or_none()
            before_time = held.last_sync_time if held is not None else None
            before_cursor = held.cursor if held is not None else None
            after_time = time_value if set_time else before_time
            after_cursor = cursor_value if set_cursor else before_cursor
            change = {
                "resource": resource,
                "sync_id": None,
                "kind": kind,
                "watermark_before": before_time,
                "watermark_after": after_time,
                "cursor_before": before_cursor,
                "cursor_after": after_cursor,
                "changed_at": now,
                "changed_by": changed_by,
                "reason": reason,
            }
            if held is not None and held.last_sync_status == "running":
                raise _Refused(WatermarkBusyError(resource, held.current_sync_id), change)
            backwards = _later(before_time, after_time) or (
                set_cursor and cursor_is_rewind(before_cursor, after_cursor)
            )
            if backwards and not allow_rewind:
                shown = (before_time, after_time) if set_time else (before_cursor, after_cursor)
                raise _Refused(WatermarkRewindError(resource, *shown), change)
            if (
                set_time
                and max_ahead is not None
                and after_time is not None
                and after_time > now + max_ahead
            ):
                raise _Refused(
                    WatermarkAheadError(resource, before_time, after_time, now + max_ahead), change
                )
            change["kind"] = kind or ("rewind" if backwards else "set")
            values = {
                "last_sync_time": after_time,
                "cursor": after_cursor,
                "watermark_advanced_at": now,
                "syncs_since_advance": 0,
                "updated_at": now,
            }
            if held is None:
                inserted = conn.execute(
                    self.db.insert(sync_state)
                    .values(
                        resource=resource, last_sync_status="never_run", created_at=now, **values
                    )
                    .on_conflict_do_nothing(index_elements=["resource"])
                    .returning(sync_state.c.resource)
                ).one_or_none()
                done = inserted is not None
            else:
                done = (
                    conn.execute(
                        sa.update(sync_state)
                        .where(
                            sync_state.c.resource == resource,
                            sync_state.c.last_sync_status != "running",
                            sync_state.c.last_sync_time.is_not_distinct_from(
                                sa.bindparam("p_before_time", before_time, type_=UTCDateTime())
                            ),
                            _same_json(
                                self.dialect,
                                sync_state.c.cursor,
                                sa.bindparam("p_before_cursor", before_cursor, type_=JSONType),
                            ),
                        )
                        .values(values)
                        .returning(sync_state.c.resource)
                    ).one_or_none()
                    is not None
                )
            if not done:  # a sync started or the watermark changed since we read it
                now_held = conn.execute(
                    sa.select(
                        sync_state.c.last_sync_status,
                        sync_state.c.current_sync_id,
                        sync_state.c.last_sync_time,
                        sync_state.c.cursor,
                    ).where(sync_state.c.resource == resource)
                ).one()
                if now_held.last_sync_status == "running":
                    raise _Refused(WatermarkBusyError(resource, now_held.current_sync_id), change)
                current = now_held.last_sync_time if set_time else now_held.cursor
                expected = before_time if set_time else before_cursor
                proposed = after_time if set_time else after_cursor
                raise _Refused(
                    WatermarkConflictError(resource, current, proposed, expected), change
                )
            change_id = conn.execute(
                _INSERT_CHANGE.returning(watermark_changes.c.change_id), change
            ).scalar_one()
            return change | {"change_id": change_id}

        try:
            written = self.db.write(tx, f"set the watermark of resource {resource!r}")
        except _Refused as refused:
            self._record_refusal(refused)
            raise refused.error from None
        return WatermarkChange(**written)

    def _record_refusal(self, refused: _Refused) -> None:
        code = getattr(refused.error, "code", type(refused.error).__name__)
        change = refused.change | {
            "kind": "refused",
            "reason": f"{code}: {refused.error}"
            + (f" (reason given: {refused.change['reason']})" if refused.change["reason"] else ""),
        }
        self.db.write(lambda conn: conn.execute(_INSERT_CHANGE, change), "record a refused change")

    def watermark_changes(
        self, resource: str | None = None, *, limit: int | None = 50
    ) -> list[WatermarkChange]:
        """Changes of watermarks (and refused ones), newest first; one resource's or all."""
        query = sa.select(watermark_changes).order_by(
            watermark_changes.c.changed_at.desc(), watermark_changes.c.change_id.desc()
        )
        if resource is not None:
            query = query.where(watermark_changes.c.resource == resource)
        if limit is not None:
            query = query.limit(limit)
        return self.db.read(
            lambda conn: _all(conn, query, WatermarkChange), "list watermark changes"
        )

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
        return self.db.read(lambda conn: _all(conn, query, SyncRecord), "list history")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the one clock every layer reads)."""
    return dt.datetime.now(dt.timezone.utc)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _later(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    """Whether ``a`` is later than ``b`` (False when either is missing)."""
    return a is not None and b is not None and a > b


def cursor_is_rewind(current: Any, proposed: Any) -> bool:
    """Whether a cursor moves backwards; only numbers and strings have an order to check."""
    numbers = (int, float)
    if isinstance(current, bool) or isinstance(proposed, bool):
        return False
    if isinstance(current, numbers) and isinstance(proposed, numbers):
        return proposed < current
    if isinstance(current, str) and isinstance(proposed, str):
        return proposed < current
    return False


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


__all__: Sequence[str] = (
    "DEFAULT_MAX_AHEAD",
    "RefusedChange",
    "SyncOutcome",
    "SyncRecord",
    "SyncState",
    "SyncStore",
    "WatermarkChange",
    "cursor_is_rewind",
)
