"""Time in UTC: the one clock every layer reads, and the UTC hour and day boundaries.

It imports nothing of the package: storage, the tracker, the sensors and the reports all read
the time here without loading each other (or Dagster).
"""

from __future__ import annotations

import datetime as dt

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """The start of ``moment``'s UTC hour."""
    return moment.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: dt.datetime) -> dt.datetime:
    """The first hour start at or after ``moment``."""
    start = floor_hour(moment)
    return start if start == moment else start + HOUR


def floor_day(moment: dt.datetime) -> dt.datetime:
    """Midnight UTC of ``moment``'s day."""
    return floor_hour(moment).replace(hour=0)


def ceil_day(moment: dt.datetime) -> dt.datetime:
    """The first midnight UTC at or after ``moment``."""
    start = floor_day(moment)
    return start if start == moment else start + DAY


def as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A database timestamp as aware UTC: SQLite hands aggregates (MIN, MAX) back as naive UTC
    text, PostgreSQL as aware datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


__all__ = ["DAY", "HOUR", "as_utc", "ceil_day", "ceil_hour", "floor_day", "floor_hour", "utcnow"]
