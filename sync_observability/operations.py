"""Operational events of a sync (seed 003's operation logs), written to ``operation_log``.

Seeds 003 and 004 are described in docs/seeds.md.

A ``SyncRun`` logs what went wrong with single records while the sync as a whole carries on:
data-quality errors, dedup and source-authority conflicts, cast errors, upsert failures, lock
conflicts; and, for manual operations outside Dagster (seed 004), backups, maintenance,
migrations, imports and exports. Every event is validated when it is logged, kept in a buffer and
written in batches of :attr:`OperationLogMixin.operation_log_batch_size` events (one multi-row
``INSERT`` each), the rest when the sync ends; logging 100,000 events costs about 100 round trips.

Examples:
    .. code-block:: python

        with sync_tracker.track(context, source_system="vendor_a") as sync:
            for row in rows:
                if row.duplicate_of is not None:
                    sync.log_dedup_conflict(
                        row.key, row.duplicate_of, row.data, resolution="kept_existing"
                    )

    A manual operation (seed 004's ``track_operation`` / ``complete_operation``)::

        with sync_tracker.track(None, resource="maintenance/vacuum", sync_type="full") as op:
            vacuum()
            op.log_event("maintenance", "VACUUM ANALYZE", details={"tables": 12})
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError
from sync_observability.storage.constants import OPERATION_CATEGORIES, OPERATION_LOG_BATCH_ROWS
from sync_observability.storage.records import PendingEvent
from sync_observability.validation import (
    check_aware,
    check_length,
    check_name,
    check_number,
    check_text,
)

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore

MAX_ENTITY_KEY_LENGTH = 1000
MAX_MESSAGE_LENGTH = 10_000
_CATEGORIES = frozenset(OPERATION_CATEGORIES)


def _check_entity_key(value: Any, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            "entity_key", value, "must be a string (join composite keys, e.g. 'AAPL|2024-01-02')"
        )
    if not value:
        raise InvalidInputError("entity_key", value, "must not be empty")
    check_length("entity_key", value, MAX_ENTITY_KEY_LENGTH)
    return value


def _check_text(field: str, value: Any, *, optional: bool = False) -> str | None:
    """A free-text field: a string (may be empty), at most MAX_MESSAGE_LENGTH characters."""
    if value is None and optional:
        return None
    return check_text(field, value, MAX_MESSAGE_LENGTH)


def _details_json(value: Any) -> str:
    """``details`` as JSON text: a mapping with string keys that round-trips through JSON."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidInputError("details", value, "must be a mapping (a dict)")
    for key in value:
        if not isinstance(key, str):
            raise InvalidInputError(f"details key {key!r}", key, "must be a string")
    try:
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError("details", value, f"is not JSON-serializable ({e})") from e


def _check_json_value(field: str, value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field, value, f"is not JSON-serializable ({e})") from e
    return value


class OperationLogMixin:
    """Operational event logging for :class:`~sync_observability.SyncRun`.

    The host provides ``sync_id``, ``resource`` and ``_store`` (a
    :class:`~sync_observability.SyncStore`), calls :meth:`_init_operation_log` when it is created
    and :meth:`_flush_operation_log` before it records the sync's end. A host that has a
    ``_require_running()`` method (``SyncRun`` does) refuses events once the sync has ended.
    """

    #: Buffered events are written once this many are waiting (and at the end of the sync).
    operation_log_batch_size: int = OPERATION_LOG_BATCH_ROWS

    sync_id: str
    resource: str
    _store: SyncStore

    def _init_operation_log(self) -> None:
        self._op_buffer: list[PendingEvent] = []
        self._op_counts: Counter[str] = Counter()
        self._op_written = 0
        self._op_lock = threading.Lock()

    def _flush_operation_log(self) -> None:
        """Write every buffered event now. On a database error the events stay buffered."""
        with self._op_lock:
            self._write_buffer()

    def _write_buffer(self) -> None:
        if not self._op_buffer:
            return
        from sync_observability.storage.operation_store import insert_operations

        batch = self._op_buffer
        insert_operations(
            self._store,
            batch,
            resource=self.resource,
            sync_id=self.sync_id,
            written_before=self._op_written,
            log_time=utcnow(),
        )
        self._op_written += len(batch)
        self._op_buffer = []

    @property
    def operation_counts(self) -> dict[str, int]:
        """Events logged by this sync per category (categories with none are left out)."""
        with self._op_lock:
            return dict(sorted(self._op_counts.items()))

    def log_event(
        self,
        category: str,
        message: str,
        *,
        entity_key: str | None = None,
        details: Mapping[str, Any] | None = None,
        event_time: dt.datetime | None = None,
    ) -> None:
        """Log one operational event of this sync.

        Args:
            category: one of ``OPERATION_CATEGORIES`` (``data_quality_error``, ``dedup_conflict``,
                ``authority_conflict``, ``cast_error``, ``upsert_failure``, ``concurrency_issue``,
                ``backup``, ``maintenance``, ``migration``, ``data_import``, ``export``).
            message: what happened, for people.
            entity_key: the record concerned, as a string (``"AAPL|2024-01-02T15:30:00Z"``).
            details: anything else, as a JSON-serializable mapping with string keys.
            event_time: when it happened (timezone-aware); defaults to now.

        Raises:
            InvalidInputError: naming the field and value; nothing is logged.
            StorageError: when this event filled a batch and writing it failed after every
                retry; the batch stays buffered and is written by the next flush.
        """
        if not isinstance(category, str) or category not in _CATEGORIES:
            raise InvalidInputError(
                "category", category, f"must be one of {', '.join(OPERATION_CATEGORIES)}"
            )
        self._log(
            category,
            _check_text("message", message),
            _check_entity_key(entity_key),
            _details_json(details),
            event_time,
        )

    def _log(
        self,
        category: str,
        message: Any,
        entity_key: str | None,
        details_json: str,
        event_time: dt.datetime | None,
    ) -> None:
        event_time = utcnow() if event_time is None else check_aware("event_time", event_time)
        require_running = getattr(self, "_require_running", None)
        if require_running is not None:
            require_running()
        with self._op_lock:
            self._op_buffer.append(
                PendingEvent(
                    category=category,
                    entity_key=entity_key,
                    event_time=event_time,
                    message=message,
                    details_json=details_json,
                )
            )
            self._op_counts[category] += 1
            if len(self._op_buffer) >= self.operation_log_batch_size:
                self._write_buffer()

    # -- typed helpers, one per seed 003 table -----------------------------------------------

    def log_data_quality_error(
        self,
        error_type: str,
        detail: str,
        *,
        entity_key: str | None = None,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """A record broke a validation rule (seed 003's ``data_quality_errors``).

        Args:
            error_type: the rule, e.g. ``constraint_violation``, ``fractional_volume``.
            detail: what was wrong.
            entity_key: the record concerned.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details.
        """
        check_name("error_type", error_type)
        _check_text("detail", detail)
        self._typed(
            "data_quality_error",
            f"{error_type}: {detail}",
            entity_key,
            {"error_type": error_type, "detail": detail},
            extra,
            event_time,
        )

    def log_dedup_conflict(
        self,
        entity_key: str,
        existing: Mapping[str, Any],
        incoming: Mapping[str, Any],
        resolution: str,
        *,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """Two versions of one record disagree (seed 003's ``dedup_conflicts``).

        Args:
            entity_key: the duplicated key.
            existing: the row already stored (JSON-serializable mapping).
            incoming: the row that arrived (JSON-serializable mapping).
            resolution: what was done, e.g. ``kept_existing``, ``replaced``, ``merged``.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details.
        """
        _check_entity_key(entity_key, optional=False)
        for field, row in (("existing", existing), ("incoming", incoming)):
            if not isinstance(row, Mapping):
                raise InvalidInputError(field, row, "must be a mapping (the row as a dict)")
            _check_json_value(field, dict(row))
        check_name("resolution", resolution)
        self._typed(
            "dedup_conflict",
            f"duplicate {entity_key}: {resolution}",
            entity_key,
            {"existing": dict(existing), "incoming": dict(incoming), "resolution": resolution},
            extra,
            event_time,
        )

    def log_authority_conflict(
        self,
        entity_key: str,
        source_a: str,
        source_b: str,
        preferred: str,
        *,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """Two sources disagree about a record (seed 003's ``authority_conflicts``).

        Args:
            entity_key: the record concerned.
            source_a: one source.
            source_b: the other source.
            preferred: the source whose value was kept; must be ``source_a`` or ``source_b``.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details (e.g. both values).
        """
        _check_entity_key(entity_key, optional=False)
        check_name("source_a", source_a)
        check_name("source_b", source_b)
        if preferred not in (source_a, source_b):
            raise InvalidInputError(
                "preferred",
                preferred,
                f"must be source_a ({source_a!r}) or source_b ({source_b!r})",
            )
        self._typed(
            "authority_conflict",
            f"{source_a} and {source_b} disagree on {entity_key}; kept {preferred}",
            entity_key,
            {"source_a": source_a, "source_b": source_b, "preferred_source": preferred},
            extra,
            event_time,
        )

    def log_cast_error(
        self,
        column: str,
        raw_value: Any,
        target_type: str,
        detail: str,
        *,
        entity_key: str | None = None,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """A value could not be converted to its column's type (seed 003's ``cast_errors``).

        Args:
            column: the column being converted.
            raw_value: the value as received; kept as text (``str(raw_value)`` unless a string).
            target_type: the type it should have had, e.g. ``numeric(18,4)``.
            detail: the conversion error.
            entity_key: the record concerned.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details.
        """
        check_name("column", column)
        check_name("target_type", target_type)
        _check_text("detail", detail)
        raw = raw_value if isinstance(raw_value, str) else repr(raw_value)
        self._typed(
            "cast_error",
            f"cannot cast {column}={raw[:200]!r} to {target_type}: {detail}",
            entity_key,
            {"column_name": column, "raw_value": raw, "target_type": target_type, "detail": detail},
            extra,
            event_time,
        )

    def log_upsert_failure(
        self,
        table_name: str,
        detail: str,
        *,
        entity_key: str | None = None,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """An insert or update of a record failed (seed 003's ``upsert_failures``).

        Args:
            table_name: the table written to.
            detail: the database's error.
            entity_key: the record concerned.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details.
        """
        check_name("table_name", table_name)
        _check_text("detail", detail)
        self._typed(
            "upsert_failure",
            f"upsert into {table_name} failed: {detail}",
            entity_key,
            {"table_name": table_name, "detail": detail},
            extra,
            event_time,
        )

    def log_concurrency_issue(
        self,
        table_name: str,
        lock_type: str,
        detail: str,
        *,
        pid: int | None = None,
        entity_key: str | None = None,
        event_time: dt.datetime | None = None,
        **extra: Any,
    ) -> None:
        """A lock conflict or deadlock (seed 003's ``concurrency_issues``).

        Args:
            table_name: the table concerned.
            lock_type: e.g. ``RowExclusiveLock``, ``deadlock``.
            detail: what happened.
            pid: the blocking (or blocked) database process id, when known.
            entity_key: the record concerned.
            event_time: when it happened; defaults to now.
            **extra: further JSON-serializable details.
        """
        check_name("table_name", table_name)
        check_name("lock_type", lock_type)
        _check_text("detail", detail)
        if pid is not None:
            if isinstance(pid, bool) or not isinstance(pid, int):
                raise InvalidInputError("pid", pid, "must be an int")
            check_number("pid", pid, minimum=0)
        self._typed(
            "concurrency_issue",
            f"{lock_type} on {table_name}: {detail}",
            entity_key,
            {"table_name": table_name, "lock_type": lock_type, "pid": pid, "detail": detail},
            extra,
            event_time,
        )

    def _typed(
        self,
        category: str,
        message: str,
        entity_key: str | None,
        fields: dict[str, Any],
        extra: Mapping[str, Any],
        event_time: dt.datetime | None,
    ) -> None:
        _check_entity_key(entity_key)
        for key, value in extra.items():
            if key in fields:
                raise InvalidInputError(key, value, "is a field of this event; pass it once")
            _check_json_value(key, value)
        self._log(category, message, entity_key, _details_json(fields | dict(extra)), event_time)
