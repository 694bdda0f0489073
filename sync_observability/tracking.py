"""SyncTracker (the Dagster resource) and SyncRun (the handle a tracked sync works with)."""

from __future__ import annotations

import datetime as dt
import logging
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_observability.alerts.reaping import reap_if_orphaned
from sync_observability.clock import utcnow
from sync_observability.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    SyncAlreadyRunningError,
    SyncStateError,
    WatermarkError,
)
from sync_observability.metrics import RunMetricsMixin
from sync_observability.operations import MAX_MESSAGE_LENGTH, OperationLogMixin
from sync_observability.storage.constants import DEFAULT_SCHEMA
from sync_observability.storage.records import (
    RefusedChange,
    SyncOutcome,
    SyncRecord,
    SyncState,
    WatermarkChange,
)
from sync_observability.storage.watermark_rule import DEFAULT_MAX_AHEAD, refusal
from sync_observability.validation import (
    MAX_BIGINT,
    check_aware,
    check_count,
    check_json,
    check_name,
    check_sync_type,
    clean_json,
    clean_text,
)

if TYPE_CHECKING:
    # SQLAlchemy loads with the store, when the resource is set up or first used.
    from sync_observability.storage.store import SyncStore

log = logging.getLogger("sync_observability")

# One cap for every stored text: an error's message and traceback, as the operation events'.
TRACEBACK_LIMIT = MAX_MESSAGE_LENGTH
MAX_ERRORS = 100
"""At most this many ``add_error`` entries are kept per sync; later ones are only counted."""
RECORD_FAILED = "RECORD_FAILED"
ERRORS_DROPPED = "ERRORS_DROPPED"
CURSOR_SANITIZED = "CURSOR_SANITIZED"


class SyncRun(OperationLogMixin, RunMetricsMixin):
    """One running sync: read its starting watermark, record counts, advance the watermark.

    Also logs operational events (``log_dedup_conflict``, ``log_cast_error``, ... written in
    batches) and run metrics (``record_metrics``: cost, volume, memory, quality, tags).

    Made by :meth:`SyncTracker.track`; finished (success or failed) when the ``with`` block
    ends. ``metadata`` is ready for ``dg.MaterializeResult`` once the block has ended.

    Every value is checked when it is given, so that the sync's end can always be written:
    counts and their sums stay within a 64-bit integer (:data:`~.validation.MAX_BIGINT`);
    NUL characters and lone surrogates in error text, details and the cursor become U+FFFD
    (the entry then has ``"sanitized": true``); an error's message, traceback and detail
    strings are cut to :data:`TRACEBACK_LIMIT` characters (the cut marked in the text); and
    only the first :data:`MAX_ERRORS` ``add_error`` calls are kept, the rest counted in one
    ``{"code": "ERRORS_DROPPED", "count": n}`` entry after them (the block's own exception is
    always kept, last).
    """

    def __init__(
        self, record: SyncRecord, *, store: SyncStore, max_ahead: dt.timedelta | None = None
    ) -> None:
        self._record = record
        self._store = store
        self._init_operation_log()
        self._init_run_metrics()
        self._max_ahead = max_ahead
        self._allow_rewind = False
        self._refused: list[RefusedChange] = []
        self._refusals: list[WatermarkError] = []
        self._counts = {"processed": 0, "created": 0, "updated": 0, "failed": 0}
        self._errors: list[dict[str, Any]] = []
        self._errors_added = 0
        self._errors_dropped: dict[str, Any] | None = None
        self._cursor_sanitized = False
        self._watermark_after: dt.datetime | None = None
        self._cursor_after: Any = None
        self._cursor_advanced = False
        self._status = "running"
        self._ended_at: dt.datetime | None = None

    @property
    def sync_id(self) -> str:
        """This sync's id (the ``sync_history`` primary key)."""
        return self._record.sync_id

    @property
    def resource(self) -> str:
        """The resource being synced."""
        return self._record.resource

    @property
    def started_at(self) -> dt.datetime:
        """When this sync started (the default new watermark)."""
        return self._record.sync_start_time

    @property
    def watermark(self) -> dt.datetime | None:
        """The last successful sync's watermark; None the first time. Fetch rows modified since."""
        return self._record.watermark_before

    @property
    def cursor(self) -> Any:
        """The last successful sync's non-time watermark (any JSON value), None if never set."""
        return self._record.cursor_before

    @property
    def status(self) -> str:
        """``running`` inside the block, then ``success`` or ``failed``."""
        return self._status

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Errors recorded so far (a copy)."""
        return [dict(e) for e in self._errors]

    def record(
        self, *, processed: int = 0, created: int = 0, updated: int = 0, failed: int = 0
    ) -> None:
        """Add to this sync's record counts; call once or once per batch.

        Raises:
            InvalidInputError: naming the count, when a value is not a non-negative int or
                would bring its total past :data:`~.validation.MAX_BIGINT`; no count changes.
        """
        self._require_running()
        given = {"processed": processed, "created": created, "updated": updated, "failed": failed}
        for name, value in given.items():
            check_count(name, value)
            total = self._counts[name] + value
            if total > MAX_BIGINT:
                raise InvalidInputError(
                    name, value, f"would bring the total to {total}, beyond {MAX_BIGINT}"
                )
        for name, value in given.items():
            self._counts[name] += value

    def advance_watermark(self, value: Any, *, allow_rewind: bool = False) -> None:
        """Set the watermark the next sync starts from, written only if this sync succeeds.

        A ``datetime`` (timezone-aware) moves the time watermark (``last_sync_time``); any other
        JSON value moves the ``cursor``. Moving either backwards needs ``allow_rewind=True``; a
        time beyond now + the tracker's ``max_watermark_ahead_minutes`` is refused. Without a
        call, a successful sync moves the time watermark to its own start time.

        A cursor holding an int beyond 64 bits is refused (``InvalidInputError``: SQLite
        would read it back rounded); NUL characters and lone surrogates in its strings are
        replaced by U+FFFD, noted once in ``errors`` (code ``CURSOR_SANITIZED``).

        Raises:
            WatermarkRewindError: the value is older than the current one.
            WatermarkAheadError: the value is too far in the future.

        A refusal is kept in the sync's ``errors`` (code ``WATERMARK_REWIND`` or
        ``WATERMARK_AHEAD``) and in ``watermark_changes``; uncaught, it fails the sync. The
        final word is the store's at the end of the sync: a watermark changed meanwhile (by
        hand, or by another process) is never overwritten (``WatermarkConflictError``).
        """
        self._require_running()
        if isinstance(value, dt.datetime):
            value = check_aware("watermark", value)
            error = self._move_refusal(value, None, allow_rewind)
            if error is not None:
                self._refuse(error, value)
            self._watermark_after = value
            self._allow_rewind = self._allow_rewind or allow_rewind
            return
        check_json("cursor", value)
        if value is None:
            raise InvalidInputError("cursor", value, "must not be None")
        value, sanitized = clean_json(value)
        error = self._move_refusal(None, value, allow_rewind)
        if error is not None:
            self._refuse(error, cursor=value)
        if sanitized and not self._cursor_sanitized:
            self._cursor_sanitized = True
            self._errors.append(
                _error_entry(
                    CURSOR_SANITIZED,
                    "NUL characters or lone surrogates in the cursor were replaced by U+FFFD",
                    sanitized=True,
                )
            )
        self._cursor_after = value
        self._cursor_advanced = True
        self._allow_rewind = self._allow_rewind or allow_rewind

    def _move_refusal(
        self, time_value: dt.datetime | None, cursor: Any, allow_rewind: bool
    ) -> WatermarkError | None:
        """The watermark rule's word on a proposed time or cursor, from this sync's start."""
        return refusal(
            self.resource,
            self.watermark,
            self.cursor,
            time_value,
            cursor,
            allow_rewind=allow_rewind,
            now=utcnow(),
            max_ahead=self._max_ahead,
        )

    def _refuse(
        self, error: WatermarkError, watermark: dt.datetime | None = None, cursor: Any = None
    ) -> None:
        self._errors.append(_error_entry(error.code, str(error)))
        self._refusals.append(error)
        self._refused.append(
            RefusedChange(
                reason=clean_text(f"{error.code}: {error}", MAX_MESSAGE_LENGTH)[0],
                watermark_after=watermark,
                cursor_after=cursor,
            )
        )
        raise error

    def add_error(self, code: str, message: str, **details: Any) -> None:
        """Record an error (kept in ``errors``); the sync still succeeds unless the block raises.

        The message and detail strings are cut to :data:`TRACEBACK_LIMIT` characters, NUL
        characters and lone surrogates replaced (``"sanitized": true``); past :data:`MAX_ERRORS`
        calls an error is only counted, in the ``ERRORS_DROPPED`` entry's ``count``.
        """
        self._require_running()
        check_name("code", code)
        if not isinstance(message, str):
            raise InvalidInputError("message", message, "must be a string")
        for key, value in details.items():
            check_json(f"details[{key!r}]", value)
        if self._errors_added >= MAX_ERRORS:
            if self._errors_dropped is None:
                self._errors_dropped = _error_entry(
                    ERRORS_DROPPED, f"add_error was called more than {MAX_ERRORS} times", count=0
                )
                self._errors.append(self._errors_dropped)
            self._errors_dropped["count"] += 1
            self._errors_dropped["message"] = (
                f"{self._errors_dropped['count']} more errors after the first {MAX_ERRORS} "
                "were not kept"
            )
            return
        self._errors_added += 1
        self._errors.append(_error_entry(code, message, **details))

    @property
    def metadata(self) -> dict[str, dg.MetadataValue]:
        """Counts, duration, watermarks and status, typed for ``dg.MaterializeResult``."""
        duration_ms = None
        if self._ended_at is not None:
            duration_ms = max(0, round((self._ended_at - self.started_at).total_seconds() * 1000))
        after = self._new_watermark() if self._status == "success" else self.watermark
        return {
            "dagster/row_count": dg.MetadataValue.int(self._counts["processed"]),
            "records_processed": dg.MetadataValue.int(self._counts["processed"]),
            "records_created": dg.MetadataValue.int(self._counts["created"]),
            "records_updated": dg.MetadataValue.int(self._counts["updated"]),
            "records_failed": dg.MetadataValue.int(self._counts["failed"]),
            "duration_ms": _int_or_null(duration_ms),
            "watermark_before": _timestamp_or_null(self.watermark),
            "watermark_after": _timestamp_or_null(after),
            "sync_id": dg.MetadataValue.text(self.sync_id),
            "sync_status": dg.MetadataValue.text(self._status),
            "error_count": dg.MetadataValue.int(self._error_count()),
            **{
                f"operations/{category}": dg.MetadataValue.int(count)
                for category, count in self.operation_counts.items()
            },
            **_cost_metadata(self.run_metrics),
        }

    # -- used by SyncTracker.track ---------------------------------------------------------

    def _error_count(self) -> int:
        """Errors recorded, the dropped ones included (their summary entry is not one)."""
        dropped = self._errors_dropped
        return len(self._errors) if dropped is None else len(self._errors) - 1 + dropped["count"]

    def _require_running(self) -> None:
        if self._status != "running":
            raise InvalidInputError("sync", self.sync_id, f"is {self._status}, not running")

    def _new_watermark(self) -> dt.datetime:
        if self._watermark_after is not None:
            return self._watermark_after
        # Default: the start time, so rows modified while we ran are fetched again next time.
        # Never backwards: an advanced watermark may be ahead of this machine's clock.
        if self.watermark is not None and self.watermark > self.started_at:
            return self.watermark
        return self.started_at

    def _outcome(
        self, status: str, error_message: str | None = None, *, count_failure: bool = True
    ) -> SyncOutcome:
        if error_message is not None:
            error_message = clean_text(error_message, MAX_MESSAGE_LENGTH)[0]
        metadata, _ = clean_json({"metrics": self.run_metrics, "operations": self.operation_counts})
        return SyncOutcome(
            status=status,
            ended_at=utcnow(),
            records_processed=self._counts["processed"],
            records_created=self._counts["created"],
            records_updated=self._counts["updated"],
            records_failed=self._counts["failed"],
            errors=self.errors,
            error_message=error_message,
            watermark_after=self._new_watermark() if status == "success" else None,
            cursor_after=self._cursor_after,
            cursor_advanced=self._cursor_advanced,
            allow_rewind=self._allow_rewind,
            count_failure=count_failure,
            refused=tuple(self._refused),
            metadata=metadata,
        )

    def _add_exception(self, error: BaseException, **details: Any) -> str:
        text = _exception_text(error)
        if isinstance(error, WatermarkError):
            message = f"{error.code}: {text}"
            if any(error is refused for refused in self._refusals):
                return message  # recorded when it was refused
            code = error.code
        else:
            message = f"{type(error).__name__}: {text}"
            code = type(error).__name__
        try:
            trace = "".join(traceback.format_exception(error))
        except Exception as e:  # a broken __str__ or __notes__ must not leave the sync running
            trace = f"(no traceback: {type(e).__name__})"
        trace, sanitized = clean_text(trace, TRACEBACK_LIMIT, keep_end=True)
        entry = _error_entry(code, text, traceback=trace, **details)
        if sanitized:
            entry["sanitized"] = True
        self._errors.append(entry)
        return message

    def _add_refusal(self, error: WatermarkError) -> str:
        """The store refused the watermark at the end: the sync was recorded failed with it."""
        message = f"{error.code}: {error}"
        self._errors.append(_error_entry(error.code, str(error)))
        return message

    def _finished(self, outcome: SyncOutcome) -> None:
        self._status = outcome.status
        self._ended_at = max(outcome.ended_at, self.started_at)

    def _not_recorded(self, message: str) -> None:
        """The end could not be written: failed here too, as the next sync will record it."""
        self._errors.append(_error_entry(RECORD_FAILED, message))
        self._finished(self._outcome("failed", f"{RECORD_FAILED}: {message}"))


def _error_entry(code: str, message: str, **details: Any) -> dict[str, Any]:
    """One ``errors`` entry, its text made storable (see :class:`SyncRun`)."""
    code, code_sanitized = clean_text(code, MAX_MESSAGE_LENGTH)
    message, sanitized = clean_text(message, MAX_MESSAGE_LENGTH)
    cleaned, details_sanitized = clean_json(details, MAX_MESSAGE_LENGTH)
    entry = {"code": code, "message": message, "timestamp": utcnow().isoformat(), **cleaned}
    if code_sanitized or sanitized or details_sanitized:
        entry["sanitized"] = True
    return entry


def _exception_text(error: BaseException) -> str:
    """``str(error)``, even when the exception's ``__str__`` itself fails."""
    try:
        return str(error)
    except Exception as e:
        return f"<unprintable {type(error).__name__}: {type(e).__name__}>"


def _cost_metadata(metrics: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    cost = metrics.get("total_cost_usd")
    return {} if cost is None else {"total_cost_usd": dg.MetadataValue.float(float(cost))}


def _int_or_null(value: int | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.int(value)


def _timestamp_or_null(value: dt.datetime | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.timestamp(value)


class _DagsterContext:
    """What the tracker reads from an asset or op execution context (all optional)."""

    def __init__(self, context: Any) -> None:
        self.run_id: str | None = None
        self.asset_key: str | None = None
        self.partition_key: str | None = None
        self.retry_number = 0
        self.retry_policy: dg.RetryPolicy | None = None
        self.instance: Any = None
        self.log: Any = log
        if context is None:
            return
        self.run_id = context.run.run_id
        self.instance = context.instance
        self.log = context.log
        self.retry_number = context.retry_number
        # The op's own policy, else the job's op_retry_policy (what Dagster applies).
        self.retry_policy = context.op_def.retry_policy or context.job_def.op_retry_policy
        if context.has_partition_key:
            self.partition_key = context.partition_key
        if context.has_assets_def and len(context.assets_def.keys) == 1:
            self.asset_key = context.asset_key.to_user_string()

    def will_retry(self, error: BaseException) -> bool:
        """Whether Dagster will run this step again after ``error`` (op retries, not run retries).

        Mirrors Dagster's step error boundary: ``RetryRequested`` carries its own limit; a
        ``Failure(allow_retries=False)`` and Dagster's own errors are never retried; any other
        ``Exception`` is retried while the retry policy has attempts left.
        """
        if isinstance(error, dg.RetryRequested):
            return self.retry_number < error.max_retries
        if not isinstance(error, Exception) or isinstance(error, dg.DagsterError):
            return False
        if isinstance(error, dg.Failure) and not error.allow_retries:
            return False
        return self.retry_policy is not None and self.retry_number < self.retry_policy.max_retries


class SyncTracker(dg.ConfigurableResource):
    """Records every sync of a resource in ``sync_state`` and ``sync_history``.

    One sync per resource runs at a time: a second ``track`` of a resource that is running is
    refused with :class:`SyncAlreadyRunningError`, unless the running one's Dagster run has ended
    (crashed, killed, canceled), in which case that orphan is reaped first.

    Examples:
        .. code-block:: python

            @dg.asset
            def accounts(context: dg.AssetExecutionContext, sync_tracker: SyncTracker):
                with sync_tracker.track(context, source_system="vantage") as sync:
                    rows = fetch_accounts(modified_since=sync.watermark)
                    sync.record(processed=len(rows))
                return dg.MaterializeResult(metadata=sync.metadata)

            defs = dg.Definitions(assets=[accounts], resources={"sync_tracker": SyncTracker()})
    """

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the tracking database (sqlite:/// or postgresql://). Unset: "
            "SYNC_OBS_DATABASE_URL, else the Dagster instance's PostgreSQL, else a SQLite file "
            "under $DAGSTER_HOME. Pass secrets with dg.EnvVar."
        ),
    )
    schema_name: str = Field(
        default=DEFAULT_SCHEMA, description="PostgreSQL schema holding the tables."
    )
    max_retries: int | None = Field(
        default=None,
        description=(
            "At most this many retries of a transaction on transient database errors; null: "
            "retry until storage_timeout_seconds is spent."
        ),
    )
    storage_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "The time budget of every call on the tracking database (connect, lock waits, "
            "statements and retries): past it the call raises DatabaseUnavailableError."
        ),
    )
    reap_orphans: bool = Field(
        default=True,
        description=(
            "When a resource is still marked running by a sync whose Dagster run has ended, "
            "mark that sync failed (ORPHANED) and start the new one."
        ),
    )
    max_watermark_ahead_minutes: float | None = Field(
        default=DEFAULT_MAX_AHEAD.total_seconds() / 60,
        description=(
            "A time watermark beyond now + this many minutes (clock skew) is refused "
            "(WATERMARK_AHEAD); null: no limit."
        ),
    )
    watermark_ahead_overrides: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Per-resource max_watermark_ahead_minutes: resource name or fnmatch pattern "
            "(vantage/*) -> minutes. An exact name beats a pattern, a longer pattern a shorter "
            "one."
        ),
    )
    count_retried_failures: bool = Field(
        default=False,
        description=(
            "Count a failed attempt that Dagster will retry (op RetryPolicy) in "
            "consecutive_failures. By default only the last attempt's failure counts, so a "
            "step that succeeds on a retry raises no alert; every attempt is in sync_history."
        ),
    )
    raise_on_unrecorded_finish: bool = Field(
        default=True,
        description=(
            "When a sync's work succeeded but its end could not be recorded (the database stayed "
            "unavailable past storage_timeout_seconds): raise DatabaseUnavailableError (true) "
            "or log a warning and let the block end normally (false). Either way the watermark "
            "did not move, and the next sync of the resource by this tracker first marks that "
            "sync failed (RECORD_FAILED)."
        ),
    )

    _store: SyncStore | None = PrivateAttr(default=None)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() show the database URL with its password hidden.
        from sync_observability.storage.engine import redact

        for name, value in super().__repr_args__():
            yield (
                name,
                redact(value) if name == "database_url" and isinstance(value, str) else value,
            )

    # Syncs whose end this tracker could not record; reaped by the next track() they block.
    _unrecorded: set[str] = PrivateAttr(default_factory=set)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = self._open(context.instance)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            # A PostgreSQL engine outlives the resource, for the next run or tick in this
            # process; its idle connections close after a few seconds (storage/engine.py).
            if self._store.dialect != "postgresql":
                self._store.dispose()
            self._store = None

    def _open(self, instance: Any = None) -> SyncStore:
        from sync_observability.storage.engine import default_database_url
        from sync_observability.storage.store import SyncStore

        url = self.database_url or default_database_url(instance)
        return SyncStore.from_url(
            url,
            schema=self.schema_name,
            max_retries=self.max_retries,
            storage_timeout_seconds=self.storage_timeout_seconds,
        )

    @property
    def store(self) -> SyncStore:
        """The SyncStore (opened on first use when the resource is used outside Dagster)."""
        if self._store is None:
            self._store = self._open()
        return self._store

    def get_state(self, resource: str) -> SyncState | None:
        """The ``sync_state`` row of ``resource``; None when it never synced."""
        return self.store.get_state(resource)

    def get_watermark(self, resource: str) -> dt.datetime | None:
        """The time watermark the next sync of ``resource`` starts from."""
        state = self.get_state(resource)
        return None if state is None else state.last_sync_time

    def max_ahead(self, resource: str) -> dt.timedelta | None:
        """How far past now the watermark of ``resource`` may be set (None: no limit)."""
        minutes = self.max_watermark_ahead_minutes
        if resource in self.watermark_ahead_overrides:
            minutes = self.watermark_ahead_overrides[resource]
        else:
            patterns = sorted(
                (k for k in self.watermark_ahead_overrides if fnmatchcase(resource, k)),
                key=lambda k: (len(k), k),
            )
            if patterns:
                minutes = self.watermark_ahead_overrides[patterns[-1]]
        return None if minutes is None else dt.timedelta(minutes=minutes)

    def set_watermark(
        self,
        resource: str,
        value: Any,
        *,
        reason: str,
        changed_by: str | None = None,
        allow_rewind: bool = False,
    ) -> WatermarkChange:
        """Set the watermark (a datetime) or cursor (any other JSON value) of ``resource`` by hand.

        Kept in ``watermark_changes`` with ``changed_by`` (default: the OS user) and ``reason``.
        Refused while the resource is running, when it moves backwards without
        ``allow_rewind``, or beyond now + the resource's max ahead; see
        :meth:`SyncStore.set_watermark`.

        Examples:
            .. code-block:: python

                tracker.set_watermark(
                    "vantage/accounts",
                    datetime(2025, 11, 1, tzinfo=timezone.utc),
                    reason="re-fetch November after the upstream fix",
                    allow_rewind=True,
                )
        """
        return self.store.set_watermark(
            resource,
            value,
            reason=reason,
            changed_by=changed_by,
            allow_rewind=allow_rewind,
            max_ahead=self.max_ahead(resource),
        )

    def rewind_to_sync(
        self, resource: str, sync_id: str, *, reason: str, changed_by: str | None = None
    ) -> WatermarkChange:
        """Put the watermark of ``resource`` back to what the successful sync ``sync_id`` left.

        The next sync starts from it; the change is kept in ``watermark_changes``.
        """
        return self.store.rewind_to_sync(
            resource,
            sync_id,
            reason=reason,
            changed_by=changed_by,
            max_ahead=self.max_ahead(resource),
        )

    def watermark_changes(self, resource: str, *, limit: int = 50) -> list[WatermarkChange]:
        """The recent changes of the watermark of ``resource`` (and refused ones), newest first."""
        return self.store.watermark_changes(resource, limit=limit)

    @contextmanager
    def track(
        self,
        context: Any = None,
        *,
        resource: str | None = None,
        source_system: str | None = None,
        target_system: str | None = None,
        sync_type: str = "incremental",
    ) -> Iterator[SyncRun]:
        """Track one sync: running on entry, success on a clean exit, failed on an exception.

        Args:
            context: the asset or op execution context, or None outside Dagster.
            resource: what is being synced; defaults to the asset key (``vantage/accounts``).
            source_system: where the data comes from (``vantage``).
            target_system: where it goes (``warehouse``).
            sync_type: ``incremental`` or ``full``.

        An exception inside the block is recorded (type, message, truncated traceback) and
        re-raised unchanged; a failed sync never moves the watermark.

        No value given to the sync can keep its end from being written: they are checked when
        given (see :class:`SyncRun`). Should the database still refuse the end (any error but
        :class:`DatabaseUnavailableError`), a minimal end is written instead: status ``failed``,
        error code ``RECORD_FAILED`` with the reason, watermark unchanged. A clean block then
        raises the database's error; a failing block raises its own.

        When the database stays unavailable past ``storage_timeout_seconds`` at the end, nothing
        is written: the watermark did not move, so a rerun fetches the same rows again. A clean
        block then raises :class:`DatabaseUnavailableError`, or, with
        ``raise_on_unrecorded_finish=False``, logs a warning and ends normally (``sync.status``
        is ``failed``). The sync stays ``running`` in the database until the next ``track`` of
        the resource by this tracker marks it failed (``RECORD_FAILED``) and starts; in another
        process the orphan rule (its Dagster run has ended) does the same.
        """
        ctx = _DagsterContext(context)
        if resource is None:
            resource = ctx.asset_key
            if resource is None:
                raise InvalidInputError(
                    "resource", None, "pass resource=... (the context has no single asset key)"
                )
        check_name("resource", resource)
        check_name("source_system", source_system, optional=True)
        check_name("target_system", target_system, optional=True)
        check_sync_type(sync_type)

        max_ahead = self.max_ahead(resource)
        record = self._start(ctx, resource, source_system, target_system, sync_type)
        run = SyncRun(record, store=self.store, max_ahead=max_ahead)

        def finish(outcome: SyncOutcome) -> None:
            self.store.finish_sync(
                sync_id=run.sync_id,
                resource=resource,
                started_at=run.started_at,
                outcome=outcome,
                max_ahead=max_ahead,
            )

        def record_failed(finish_error: Exception, outcome: SyncOutcome) -> str:
            """Write the minimal end after the database refused the full one; say what happened."""
            reason = f"its end could not be recorded: {type(finish_error).__name__}: {finish_error}"
            if outcome.error_message:
                reason += f" (the sync failed with {outcome.error_message})"
            reason = clean_text(reason, MAX_MESSAGE_LENGTH)[0]
            try:
                self.store.reap_sync(run.sync_id, code=RECORD_FAILED, message=reason, now=utcnow())
            except Exception as reap_error:
                self._unrecorded.add(run.sync_id)
                return (
                    f"sync {run.sync_id} of {resource!r} could not be marked failed either "
                    f"({reap_error}); the next sync of it by this tracker does it"
                )
            return f"sync {run.sync_id} of {resource!r} recorded failed ({RECORD_FAILED})"

        def remember_unrecorded(finish_error: DatabaseUnavailableError) -> str:
            self._unrecorded.add(run.sync_id)
            return (
                f"the end of sync {run.sync_id} of {resource!r} could not be recorded "
                f"({finish_error}); its watermark did not move, and the next sync of "
                f"{resource!r} by this tracker marks it failed ({RECORD_FAILED})"
            )

        # The package's logger, not the step's: every context.log line is a row in Dagster's
        # event log (two of them cost a trivial step about 19 ms on dagster-postgres), and these
        # say nothing that sync_history and the materialization's metadata do not.
        log.debug("sync %s of %r started", run.sync_id, resource)
        try:
            yield run
            # Inside the try: events that cannot be written fail the sync instead of leaving it
            # running.
            run._flush_operation_log()
        except BaseException as error:
            try:
                run._flush_operation_log()
            except Exception as flush_error:
                ctx.log.error(f"sync_observability could not write operation events: {flush_error}")
            will_retry = ctx.will_retry(error)
            details = {"retry_number": ctx.retry_number, "will_retry": True} if will_retry else {}
            outcome = run._outcome(
                "failed",
                run._add_exception(error, **details),
                count_failure=self.count_retried_failures or not will_retry,
            )
            # The sync's own error is what the user must see, unchanged; a note says why it
            # was not recorded as it is.
            note = None
            try:
                finish(outcome)
            except DatabaseUnavailableError as finish_error:
                note = remember_unrecorded(finish_error)
            except SyncStateError as finish_error:  # reaped or finished elsewhere meanwhile
                note = str(finish_error)
            except Exception as finish_error:
                note = record_failed(finish_error, outcome)
            run._finished(outcome)
            if note is not None:
                note = f"sync_observability could not record this failure: {note}"
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(note)
                ctx.log.error(note)
            raise
        outcome = run._outcome("success")
        try:
            finish(outcome)
        except WatermarkError as refused:
            # Recorded failed by the store, with this error; the watermark did not move.
            run._finished(run._outcome("failed", run._add_refusal(refused)))
            ctx.log.error(f"sync_observability: sync {run.sync_id} of {resource!r}: {refused}")
            raise
        except DatabaseUnavailableError as finish_error:
            message = remember_unrecorded(finish_error)
            run._not_recorded(message)
            if self.raise_on_unrecorded_finish:
                ctx.log.error(f"sync_observability: {message}")
                raise
            ctx.log.warning(f"sync_observability: {message}")
            return
        except SyncStateError:
            raise
        except Exception as finish_error:
            message = record_failed(finish_error, outcome)
            run._not_recorded(f"{type(finish_error).__name__}: {finish_error}")
            ctx.log.error(f"sync_observability: {message}: {finish_error}")
            raise
        run._finished(outcome)
        log.debug("sync %s of %r succeeded", run.sync_id, resource)

    def _start(
        self,
        ctx: _DagsterContext,
        resource: str,
        source_system: str | None,
        target_system: str | None,
        sync_type: str,
    ) -> SyncRecord:
        def start() -> SyncRecord:
            return self.store.start_sync(
                sync_id=str(uuid.uuid4()),
                resource=resource,
                started_at=utcnow(),
                sync_type=sync_type,
                source_system=source_system,
                target_system=target_system,
                dagster_run_id=ctx.run_id,
                asset_key=ctx.asset_key,
                partition_key=ctx.partition_key,
                retry_number=ctx.retry_number,
            )

        try:
            return start()
        except SyncAlreadyRunningError as refused:
            if refused.running_sync_id in self._unrecorded:
                self._reap_unrecorded(ctx, refused.running_sync_id)
            elif not (self.reap_orphans and self._reap_if_orphaned(ctx, refused)):
                raise
        return start()

    def _reap_unrecorded(self, ctx: _DagsterContext, sync_id: str) -> None:
        """Mark failed a sync whose block ended here but whose end could not be written."""
        reaped = self.store.reap_sync(
            sync_id,
            code=RECORD_FAILED,
            message="the sync ended but its end could not be recorded (the tracking database "
            "was unavailable); the watermark did not move",
            now=utcnow(),
        )
        self._unrecorded.discard(sync_id)
        if reaped:
            ctx.log.warning(
                f"sync_observability: marked sync {sync_id} failed ({RECORD_FAILED}): its end "
                "could not be recorded"
            )

    def _reap_if_orphaned(self, ctx: _DagsterContext, refused: SyncAlreadyRunningError) -> bool:
        """Reap the running sync when its Dagster run, or its step attempt, is known to have ended.

        See :func:`sync_observability.alerts.reaping.reap_if_orphaned`.
        """
        return reap_if_orphaned(self.store, ctx, refused.running_sync_id)
