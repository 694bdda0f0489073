"""Input checks that run before anything is written; each error names the field and the value."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from sync_observability.errors import InvalidInputError
from sync_observability.storage.schema import MAX_NAME_LENGTH, SYNC_TYPES


def check_name(field: str, value: Any, *, optional: bool = False) -> str | None:
    """A resource or system name: a non-blank string of at most 255 characters, kept verbatim."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(field, value, "must be a string")
    if not value.strip():
        raise InvalidInputError(field, value, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            field, value, f"is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    return value


def check_sync_type(value: Any) -> str:
    """``full`` or ``incremental``."""
    if value not in SYNC_TYPES:
        raise InvalidInputError("sync_type", value, f"must be one of {', '.join(SYNC_TYPES)}")
    return value


def check_count(field: str, value: Any) -> int:
    """A record count: a non-negative int (bools are refused, they are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, value, "must be an int")
    if value < 0:
        raise InvalidInputError(field, value, "must not be negative")
    return value


def check_aware(field: str, value: Any) -> dt.datetime:
    """A timezone-aware datetime (a naive one is ambiguous across machines)."""
    if not isinstance(value, dt.datetime):
        raise InvalidInputError(field, value, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            field, value, "is a naive datetime; pass an aware one, e.g. datetime.now(timezone.utc)"
        )
    return value.astimezone(dt.timezone.utc)


def check_json(field: str, value: Any) -> Any:
    """A value that round-trips through JSON as stored (no NaN, no sets, no custom objects)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field, value, f"is not JSON-serializable ({e})") from e
    return value


def check_number(field: str, value: Any, *, minimum: float | None = 0) -> float:
    """A finite number, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(field, value, "must be a finite number")
    if minimum is not None and value < minimum:
        raise InvalidInputError(field, value, f"must be >= {minimum}")
    return value
