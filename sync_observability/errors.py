"""Every error sync_observability raises, under one base class.

::

    SyncObservabilityError
    ├── InvalidInputError           bad argument; names the field and the value (also a ValueError)
    ├── ConfigurationError          no usable database URL, unknown dialect, ...
    ├── SyncStateError              a lifecycle rule refused the change
    │   ├── SyncAlreadyRunningError     a second sync of a resource that is already running
    │   ├── SyncNotRunningError         finishing a sync that was reaped or finished elsewhere
    │   ├── WatermarkBusyError          a manual watermark change while the resource is running
    │   └── WatermarkError              a watermark change was refused (recorded on the sync)
    │       ├── WatermarkRewindError        older than the current one, without allow_rewind
    │       ├── WatermarkAheadError         beyond now + the resource's max_ahead (clock skew)
    │       └── WatermarkConflictError      the watermark changed since the sync started
    └── StorageError                the database refused or failed
        ├── ConstraintViolationError    a CHECK / NOT NULL / unique constraint fired
        └── DatabaseUnavailableError    transient errors that outlasted every retry

Driver errors (psycopg2, sqlite3, SQLAlchemy) are translated into these at the storage boundary;
the original is kept as ``__cause__``. Messages never contain database passwords.
"""

from __future__ import annotations

from typing import Any


class SyncObservabilityError(Exception):
    """Base class of every error raised by sync_observability."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidInputError(SyncObservabilityError, ValueError):
    """An argument was rejected before anything was written."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(f"invalid {field}={shown}: {reason}")


class ConfigurationError(SyncObservabilityError):
    """sync_observability is not configured in a way it can use."""


class SyncStateError(SyncObservabilityError):
    """A sync lifecycle rule refused the change."""


class SyncAlreadyRunningError(SyncStateError):
    """Another sync of this resource is running; concurrent syncs of one resource are refused."""

    def __init__(self, resource: str, running_sync_id: str | None, started_at: Any) -> None:
        self.resource = resource
        self.running_sync_id = running_sync_id
        self.started_at = started_at
        super().__init__(
            f"resource {resource!r} is already being synced by sync {running_sync_id} "
            f"(started {started_at}); sync_observability runs one sync per resource at a time. "
            "Wait for it to finish; if its process is gone, sync_stuck_runs_sensor reaps it."
        )


class SyncNotRunningError(SyncStateError):
    """The sync is no longer running (reaped or finished elsewhere); its result was refused."""

    def __init__(self, sync_id: str, resource: str, status: str | None, detail: str = "") -> None:
        self.sync_id = sync_id
        self.resource = resource
        self.status = status
        super().__init__(
            f"sync {sync_id} of resource {resource!r} is no longer running (status {status!r}"
            f"{'; ' + detail if detail else ''}); its result was not recorded and the watermark "
            "was not moved. The next sync starts from the last successful watermark."
        )


class WatermarkBusyError(SyncStateError):
    """A manual watermark change was refused because a sync of the resource is running."""

    def __init__(self, resource: str, running_sync_id: str | None) -> None:
        self.resource = resource
        self.running_sync_id = running_sync_id
        super().__init__(
            f"watermark of resource {resource!r} cannot be changed while sync "
            f"{running_sync_id} is running; wait for it to finish (or reap it) and retry"
        )


class WatermarkError(SyncStateError):
    """A watermark change was refused; the watermark was not moved.

    Attributes:
        code: the error code recorded on the sync and in ``watermark_changes``.
        resource: the resource whose watermark it is.
        current: the watermark in place (a datetime, a cursor value, or None).
        proposed: the refused value.
    """

    code = "WATERMARK_REFUSED"

    def __init__(self, resource: str, current: Any, proposed: Any, message: str) -> None:
        self.resource = resource
        self.current = current
        self.proposed = proposed
        super().__init__(message)


class WatermarkRewindError(WatermarkError):
    """A watermark older than the current one was refused (pass allow_rewind=True to force it)."""

    code = "WATERMARK_REWIND"

    def __init__(self, resource: str, current: Any, proposed: Any) -> None:
        super().__init__(
            resource,
            current,
            proposed,
            f"watermark of resource {resource!r} would move backwards from {_show(current)} to "
            f"{_show(proposed)}; pass allow_rewind=True to rewind it on purpose",
        )


class WatermarkAheadError(WatermarkError):
    """A watermark too far in the future was refused: it would skip rows not yet written."""

    code = "WATERMARK_AHEAD"

    def __init__(self, resource: str, current: Any, proposed: Any, limit: Any) -> None:
        self.limit = limit
        super().__init__(
            resource,
            current,
            proposed,
            f"watermark of resource {resource!r} would move from {_show(current)} to "
            f"{_show(proposed)}, beyond now + the allowed clock skew ({_show(limit)}); a "
            "future-dated watermark would skip rows written until then",
        )


class WatermarkConflictError(WatermarkError):
    """The watermark changed since the sync (or the manual change) read it; nothing was written."""

    code = "WATERMARK_CONFLICT"

    def __init__(self, resource: str, current: Any, proposed: Any, expected: Any) -> None:
        self.expected = expected
        super().__init__(
            resource,
            current,
            proposed,
            f"watermark of resource {resource!r} is now {_show(current)}, not {_show(expected)} "
            f"as when this change began; {_show(proposed)} was not written so the newer value "
            "is kept",
        )


def _show(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    shown = repr(value)
    return shown if len(shown) <= 200 else shown[:200] + "..."


class StorageError(SyncObservabilityError):
    """The database refused or failed an operation."""


class ConstraintViolationError(StorageError):
    """The database rejected a row because it broke a constraint."""


class DatabaseUnavailableError(StorageError):
    """The database kept failing with transient errors after every retry."""
