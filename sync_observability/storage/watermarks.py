"""Manual watermark changes: set one by hand, rewind it to a sync, and read the trail of changes.

Every change, and every refused one, is a ``watermark_changes`` row with who made it and why.
A change is a compare-and-swap on ``sync_state``: it reads the watermark, decides by
:mod:`~sync_observability.storage.watermark_rule`, and writes only if the row still holds what
it read and no sync is running (``UPDATE ... WHERE ... RETURNING``); otherwise it is refused
(:class:`WatermarkBusyError`, :class:`WatermarkConflictError`) and nothing but the refusal is
written. :class:`WatermarkChangesMixin` gives :class:`~sync_observability.storage.store.SyncStore`
these methods.

Examples:
    .. code-block:: python

        store.set_watermark("orders", dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
                            reason="replay May after the vendor's fix", allow_rewind=True)
        store.rewind_to_sync("orders", sync_id, reason="bad load")
        store.watermark_changes("orders")
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sync_observability.clock import utcnow
from sync_observability.errors import (
    InvalidInputError,
    WatermarkBusyError,
    WatermarkConflictError,
    WatermarkError,
)
from sync_observability.storage.records import SyncRecord, WatermarkChange
from sync_observability.storage.schema import (
    JSONType,
    UTCDateTime,
    sync_state,
    watermark_changes,
)
from sync_observability.storage.watermark_rule import DEFAULT_MAX_AHEAD, is_rewind, refusal
from sync_observability.validation import check_aware, check_json, check_name

if TYPE_CHECKING:
    from sync_observability.storage.database import Database

MAX_REASON_LENGTH = 2000

INSERT_CHANGE = sa.insert(watermark_changes).values(
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
"""Inserts one ``watermark_changes`` row (a sync's finish writes them too)."""


def same_cursor(dialect: str, column: Any, value: Any) -> Any:
    """NULL-safe JSON equality: jsonb compares by value; SQLite's json() canonicalises text."""
    if dialect == "postgresql":
        return column.is_not_distinct_from(value)
    return sa.func.json(column).is_not_distinct_from(sa.func.json(value))


class Refused(Exception):
    """Raised inside a transaction to roll it back before a refusal is recorded."""

    def __init__(self, error: WatermarkError | WatermarkBusyError, change: dict[str, Any]):
        super().__init__(str(error))
        self.error = error
        self.change = change


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Request:
    """One manual change, its arguments checked: what to set, the rule's options, the audit."""

    resource: str
    time: dt.datetime | None  # the new time watermark; None: it stays
    cursor: Any  # the new cursor, when ``set_cursor`` (None then clears it)
    set_cursor: bool
    kind: str | None  # None: "set", or "rewind" when the change moves backwards
    allow_rewind: bool
    max_ahead: dt.timedelta | None
    reason: str
    changed_by: str | None
    now: dt.datetime

    @classmethod
    def checked(
        cls, *, reason: Any, changed_by: str | None, now: dt.datetime | None, **fields: Any
    ) -> _Request:
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInputError("reason", reason, "give a reason for the audit trail")
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidInputError("reason", reason, f"is over {MAX_REASON_LENGTH} characters")
        return cls(
            reason=reason,
            changed_by=check_name("changed_by", _os_user() if changed_by is None else changed_by),
            now=check_aware("now", now) if now is not None else utcnow(),
            **fields,
        )

    def row(self, before_time: dt.datetime | None, before_cursor: Any) -> dict[str, Any]:
        """The ``watermark_changes`` row of this change from the watermark it read."""
        return {
            "resource": self.resource,
            "sync_id": None,
            "kind": self.kind,
            "watermark_before": before_time,
            "watermark_after": self.time if self.time is not None else before_time,
            "cursor_before": before_cursor,
            "cursor_after": self.cursor if self.set_cursor else before_cursor,
            "changed_at": self.now,
            "changed_by": self.changed_by,
            "reason": self.reason,
        }


class WatermarkChangesMixin:
    """Manual watermark changes and their trail, as methods of :class:`SyncStore`."""

    if TYPE_CHECKING:
        db: Database

        def get_sync(self, sync_id: str) -> SyncRecord | None: ...

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
        return _change(
            self.db,
            _Request.checked(
                resource=resource,
                time=time_value,
                cursor=cursor_value,
                set_cursor=time_value is None,
                kind=None,
                allow_rewind=allow_rewind,
                max_ahead=max_ahead,
                reason=reason,
                changed_by=changed_by,
                now=now,
            ),
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
        return _change(
            self.db,
            _Request.checked(
                resource=resource,
                time=target.watermark_after,
                cursor=target.cursor_after
                if target.cursor_after is not None
                else target.cursor_before,
                set_cursor=True,
                kind="rewind",
                allow_rewind=True,
                max_ahead=max_ahead,
                reason=reason,
                changed_by=changed_by,
                now=now,
            ),
        )

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
            lambda conn: [WatermarkChange(**row) for row in conn.execute(query).mappings()],
            "list watermark changes",
        )


def _change(db: Database, request: _Request) -> WatermarkChange:
    """Apply ``request`` in one transaction; a refusal is recorded, then raised."""

    def tx(conn: sa.Connection) -> dict[str, Any]:
        held = conn.execute(_state(request.resource)).one_or_none()
        before_time = held.last_sync_time if held is not None else None
        before_cursor = held.cursor if held is not None else None
        change = request.row(before_time, before_cursor)
        if held is not None and held.last_sync_status == "running":
            raise Refused(WatermarkBusyError(request.resource, held.current_sync_id), change)
        proposed_cursor = request.cursor if request.set_cursor else None
        error = refusal(
            request.resource,
            before_time,
            before_cursor,
            request.time,
            proposed_cursor,
            allow_rewind=request.allow_rewind,
            now=request.now,
            max_ahead=request.max_ahead,
        )
        if error is not None:
            raise Refused(error, change)
        backwards = is_rewind(before_time, before_cursor, request.time, proposed_cursor)
        change["kind"] = request.kind or ("rewind" if backwards else "set")
        if not _write_state(conn, db, change, new_row=held is None):
            raise _not_written(conn, request, change)
        change_id = conn.execute(
            INSERT_CHANGE.returning(watermark_changes.c.change_id), change
        ).scalar_one()
        return change | {"change_id": change_id}

    try:
        written = db.write(tx, f"set the watermark of resource {request.resource!r}")
    except Refused as refused:
        _record_refusal(db, refused)
        raise refused.error from None
    return WatermarkChange(**written)


def _state(resource: str) -> sa.Select[Any]:
    """What a change reads of the resource's ``sync_state`` row."""
    return sa.select(
        sync_state.c.last_sync_status,
        sync_state.c.current_sync_id,
        sync_state.c.last_sync_time,
        sync_state.c.cursor,
    ).where(sync_state.c.resource == resource)


def _write_state(
    conn: sa.Connection, db: Database, change: dict[str, Any], *, new_row: bool
) -> bool:
    """Write the change's watermark; False when the state is no longer what the change read."""
    now = change["changed_at"]
    values = {
        "last_sync_time": change["watermark_after"],
        "cursor": change["cursor_after"],
        "watermark_advanced_at": now,
        "syncs_since_advance": 0,
        "updated_at": now,
    }
    if new_row:
        statement: Any = (
            db.insert(sync_state)
            .values(
                resource=change["resource"], last_sync_status="never_run", created_at=now, **values
            )
            .on_conflict_do_nothing(index_elements=["resource"])
        )
    else:
        before_time = sa.bindparam("p_before_time", change["watermark_before"], type_=UTCDateTime())
        before_cursor = sa.bindparam("p_before_cursor", change["cursor_before"], type_=JSONType)
        statement = (
            sa.update(sync_state)
            .where(
                sync_state.c.resource == change["resource"],
                sync_state.c.last_sync_status != "running",
                sync_state.c.last_sync_time.is_not_distinct_from(before_time),
                same_cursor(db.dialect, sync_state.c.cursor, before_cursor),
            )
            .values(values)
        )
    return conn.execute(statement.returning(sync_state.c.resource)).one_or_none() is not None


def _not_written(conn: sa.Connection, request: _Request, change: dict[str, Any]) -> Refused:
    """Why the guarded write found no row: a sync started, or the watermark changed since."""
    held = conn.execute(_state(request.resource)).one()
    if held.last_sync_status == "running":
        return Refused(WatermarkBusyError(request.resource, held.current_sync_id), change)
    if request.time is not None:
        current, expected = held.last_sync_time, change["watermark_before"]
        proposed = change["watermark_after"]
    else:
        current, expected = held.cursor, change["cursor_before"]
        proposed = change["cursor_after"]
    return Refused(WatermarkConflictError(request.resource, current, proposed, expected), change)


def _record_refusal(db: Database, refused: Refused) -> None:
    code = getattr(refused.error, "code", type(refused.error).__name__)
    change = refused.change | {
        "kind": "refused",
        "reason": f"{code}: {refused.error}"
        + (f" (reason given: {refused.change['reason']})" if refused.change["reason"] else ""),
    }
    db.write(lambda conn: conn.execute(INSERT_CHANGE, change), "record a refused change")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


__all__: Sequence[str] = ("MAX_REASON_LENGTH", "WatermarkChangesMixin")
