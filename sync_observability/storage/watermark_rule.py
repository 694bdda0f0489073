"""The watermark move rule, written once: when a proposed watermark is refused.

A watermark never moves backwards unless the caller allows it (a rewind), and a time watermark
never lands beyond ``now + max_ahead`` (clock skew between workers, no more). The same rule
decides three times: when an asset calls ``SyncRun.advance_watermark``, when the sync's finish
writes the watermark (the store's word), and when someone sets it by hand. A pure function of
plain values: tested without a database.

Examples:
    .. code-block:: python

        error = refusal(
            "orders", current_time, None, proposed_time, None,
            allow_rewind=False, now=utcnow(), max_ahead=DEFAULT_MAX_AHEAD,
        )
        if error is not None:
            raise error
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sync_observability.errors import WatermarkAheadError, WatermarkError, WatermarkRewindError

DEFAULT_MAX_AHEAD = dt.timedelta(minutes=5)
"""How far past now a watermark may be set: clock skew between workers, no more."""


def time_is_rewind(current: dt.datetime | None, proposed: dt.datetime | None) -> bool:
    """Whether a time watermark moves backwards (False when either is missing)."""
    return current is not None and proposed is not None and proposed < current


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


def is_rewind(
    current_time: dt.datetime | None,
    current_cursor: Any,
    proposed_time: dt.datetime | None,
    proposed_cursor: Any,
) -> bool:
    """Whether the proposal moves the time watermark or the cursor backwards."""
    return time_is_rewind(current_time, proposed_time) or cursor_is_rewind(
        current_cursor, proposed_cursor
    )


def refusal(
    resource: str,
    current_time: dt.datetime | None,
    current_cursor: Any,
    proposed_time: dt.datetime | None,
    proposed_cursor: Any,
    *,
    allow_rewind: bool,
    now: dt.datetime,
    max_ahead: dt.timedelta | None,
) -> WatermarkError | None:
    """The error refusing a proposed watermark, None when it may be written.

    Args:
        resource: whose watermark (named in the error).
        current_time: the time watermark now (None: never set).
        current_cursor: the cursor now (None: never set).
        proposed_time: the new time watermark; None when the time watermark is not changed
            (then it is not checked, not even against ``max_ahead``).
        proposed_cursor: the new cursor; None when the cursor is not changed.
        allow_rewind: moving backwards is allowed.
        now: the time ``max_ahead`` counts from.
        max_ahead: how far past ``now`` a time watermark may be; None: no limit.

    Returns:
        :class:`WatermarkRewindError` when the time (checked first) or the cursor moves
        backwards without ``allow_rewind``; :class:`WatermarkAheadError` when
        ``proposed_time`` is beyond ``now + max_ahead``; otherwise None.
    """
    if not allow_rewind:
        if time_is_rewind(current_time, proposed_time):
            return WatermarkRewindError(resource, current_time, proposed_time)
        if cursor_is_rewind(current_cursor, proposed_cursor):
            return WatermarkRewindError(resource, current_cursor, proposed_cursor)
    if proposed_time is not None and max_ahead is not None and proposed_time > now + max_ahead:
        return WatermarkAheadError(resource, current_time, proposed_time, now + max_ahead)
    return None


__all__: Sequence[str] = (
    "DEFAULT_MAX_AHEAD",
    "cursor_is_rewind",
    "is_rewind",
    "refusal",
    "time_is_rewind",
)
