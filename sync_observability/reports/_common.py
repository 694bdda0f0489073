"""What every report shares: its ``now``, its ``days`` and building the DataFrame."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError
from sync_observability.validation import check_aware


def as_of(now: dt.datetime | None) -> dt.datetime:
    """``now`` as aware UTC (refusing a naive one), or the current time."""
    return utcnow() if now is None else check_aware("now", now)


def check_days(days: Any) -> int:
    """A window length in days: a whole number from 1."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInputError("days", days, "must be a whole number of days, at least 1")
    return days


def frame(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (also when there are no rows).

    Columns keep Python objects (ints stay ints, None stays None) so that a report prints and
    serializes the same on both engines instead of turning counts into floats around a NULL.
    """
    rows = list(rows)
    return frame_from_columns(
        {column: [row[column] for row in rows] for column in columns}, columns
    )


def frame_from_columns(data: Mapping[str, Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    """:func:`frame` from values already grouped by column (cheaper for many rows)."""
    # One object block from the lists as they are: no per-column Series, no type inference.
    return pd.DataFrame({c: data[c] for c in columns}, columns=list(columns), dtype=object)


def parse_day(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` bucket from the database as a date."""
    return dt.date.fromisoformat(text)


def parse_hour(text: str) -> dt.datetime:
    """A ``YYYY-MM-DDTHH:00`` bucket from the database as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
