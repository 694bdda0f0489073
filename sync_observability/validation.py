"""Input checks that run before anything is written; each error names the field and the value."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from sync_observability.errors import InvalidInputError
from sync_observability.storage.constants import MAX_NAME_LENGTH, SYNC_TYPES

MAX_BIGINT = 2**63 - 1
"""The largest count the database holds (BIGINT; SQLite's INTEGER is the same 64 bits)."""
MIN_BIGINT = -(2**63)
REPLACEMENT_CHARACTER = "\ufffd"
# PostgreSQL refuses NUL in text and jsonb; a lone surrogate cannot be encoded as UTF-8 at all
# (sqlite3 and psycopg2 raise). A str holds surrogates only as lone code points.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_name(field: str, value: Any, *, optional: bool = False) -> str | None:
    """A resource or system name: a non-blank string of at most 255 characters, kept verbatim.

    A NUL character or a lone surrogate is refused: neither can be stored on both engines, and a
    name is a key, so it is never rewritten.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(field, value, "must be a string")
    if not value.strip():
        raise InvalidInputError(field, value, "must not be empty")
    if _UNSTORABLE.search(value):
        raise InvalidInputError(
            field, value, "must not contain a NUL character or a lone surrogate"
        )
    check_length(field, value, MAX_NAME_LENGTH)
    return value


def check_text(field: str, value: Any, limit: int) -> str:
    """Free text: a string (may be empty) of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise InvalidInputError(field, value, "must be a string")
    check_length(field, value, limit)
    return value


def check_length(field: str, value: str, limit: int) -> None:
    """Refuse ``value`` when it is longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidInputError(
            field, value, f"is {len(value)} characters long; the limit is {limit}"
        )


def check_sync_type(value: Any) -> str:
    """``full`` or ``incremental``."""
    if value not in SYNC_TYPES:
        raise InvalidInputError("sync_type", value, f"must be one of {', '.join(SYNC_TYPES)}")
    return value


def check_count(field: str, value: Any) -> int:
    """A record count: a non-negative int up to :data:`MAX_BIGINT` (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(field, value, "must be an int")
    if value < 0:
        raise InvalidInputError(field, value, "must not be negative")
    if value > MAX_BIGINT:
        raise InvalidInputError(field, value, f"is beyond the largest count, {MAX_BIGINT}")
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
    """A value that round-trips through JSON as stored (no NaN, no sets, no custom objects).

    An int beyond 64 bits anywhere in it is refused too: SQLite's JSON functions would read it
    back as a float (``10**40`` as ``1e+40``). Pass such a number as a string.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(field, value, f"is not JSON-serializable ({e})") from e
    big = _int_beyond_64_bits(value)
    if big is not None:
        raise InvalidInputError(
            field, value, f"holds {big}, beyond a 64-bit integer (pass it as a string)"
        )
    return value


def clean_text(value: str, limit: int | None = None, *, keep_end: bool = False) -> tuple[str, bool]:
    """``value`` made storable on both engines: returns the text and whether it was sanitized.

    NUL characters and lone surrogates become U+FFFD (PostgreSQL refuses NUL, and a lone
    surrogate is not UTF-8); the bool says whether any was replaced. Text longer than ``limit``
    is cut to exactly ``limit`` characters, the cut marked in the text: the start is kept, or the
    end with ``keep_end`` (a traceback's last frames).

    Examples:
        >>> clean_text("a\x00b")
        ('a\ufffdb', True)
    """
    if limit is not None and len(value) > limit:
        value = _cut(value, limit, keep_end)
    cleaned, replaced = _UNSTORABLE.subn(REPLACEMENT_CHARACTER, value)
    return cleaned, replaced > 0


def clean_json(value: Any, limit: int | None = None) -> tuple[Any, bool]:
    """A copy of a JSON value with every string in it, keys included, passed to :func:`clean_text`.

    Check the value with :func:`check_json` first. Returns the copy and whether anything was
    replaced; tuples become lists, as JSON stores them.
    """
    replaced = False

    def walk(item: Any) -> Any:
        nonlocal replaced
        if isinstance(item, str):
            text, changed = clean_text(item, limit)
            replaced = replaced or changed
            return text
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value), replaced


def _int_beyond_64_bits(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if not MIN_BIGINT <= value <= MAX_BIGINT else None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            big = _int_beyond_64_bits(item)
            if big is not None:
                return big
    return None


def _cut(value: str, limit: int, keep_end: bool) -> str:
    """``value`` cut to ``limit`` characters, saying how many were cut."""
    cut = len(value) - limit
    while True:  # the marker's own length changes the count by a digit at most
        marker = f"[... {cut} characters cut]"
        kept = max(0, limit - len(marker))
        if len(value) - kept == cut:
            break
        cut = len(value) - kept
    if kept == 0:
        return marker[:limit]
    return marker + value[-kept:] if keep_end else value[:kept] + marker


def check_number(field: str, value: Any, *, minimum: float | None = 0) -> float:
    """A finite number, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(field, value, "must be a finite number")
    if minimum is not None and value < minimum:
        raise InvalidInputError(field, value, f"must be >= {minimum}")
    return value
