"""Every error sync_observability raises, under one base class.

::

    SyncObservabilityError
    ├── InvalidInputError           bad argument; names the field and the value (also a ValueError)
    ├── ConfigurationError          no usable database URL, unknown dialect, ...
    ├── SyncStateError              a lifecycle rule refused the change
    │   ├── SyncAlreadyRunningError     a second sync of a resource that is already running
    │   ├── SyncNotRunningError         finishing a sync that was reaped or finished elsewhere
    │   └── WatermarkRewindError        a watermark older than the current one, without allow_rewind
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
            "Wait for it to finish, or reap it if its process is gone."
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


class WatermarkRewindError(SyncStateError):
    """A watermark older than the current one was refused (pass allow_rewind=True to force it)."""

    def __init__(self, resource: str, current: Any, proposed: Any) -> None:
        self.resource = resource
        self.current = current
        self.proposed = proposed
        super().__init__(
            f"watermark of resource {resource!r} would move backwards from {current!r} to "
            f"{proposed!r}; pass allow_rewind=True to rewind it on purpose"
        )


class StorageError(SyncObservabilityError):
    """The database refused or failed an operation."""


class ConstraintViolationError(StorageError):
    """The database rejected a row because it broke a constraint."""


class DatabaseUnavailableError(StorageError):
    """The database kept failing with transient errors after every retry."""
