"""The watermark move rule as a pure function: no database, no Dagster, boundaries exact."""

from __future__ import annotations

import datetime as dt

import pytest

from sync_observability.errors import WatermarkAheadError, WatermarkRewindError
from sync_observability.storage.watermark_rule import (
    DEFAULT_MAX_AHEAD,
    cursor_is_rewind,
    is_rewind,
    refusal,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
EARLIER = NOW - dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)


def check(
    current_time: dt.datetime | None,
    current_cursor: object,
    proposed_time: dt.datetime | None,
    proposed_cursor: object,
    *,
    allow_rewind: bool = False,
    max_ahead: dt.timedelta | None = DEFAULT_MAX_AHEAD,
) -> object:
    return refusal(
        "orders",
        current_time,
        current_cursor,
        proposed_time,
        proposed_cursor,
        allow_rewind=allow_rewind,
        now=NOW,
        max_ahead=max_ahead,
    )


def test_a_time_moving_forward_or_staying_is_allowed() -> None:
    assert check(EARLIER, None, NOW, None) is None
    assert check(EARLIER, None, EARLIER, None) is None
    assert check(None, None, EARLIER, None) is None  # the first watermark


def test_a_time_moving_back_one_microsecond_is_refused_naming_both_values() -> None:
    error = check(EARLIER, None, EARLIER - TICK, None)
    assert isinstance(error, WatermarkRewindError)
    assert (error.current, error.proposed) == (EARLIER, EARLIER - TICK)
    assert check(EARLIER, None, EARLIER - TICK, None, allow_rewind=True) is None


def test_a_time_exactly_at_the_limit_passes_and_one_microsecond_more_is_refused() -> None:
    limit = NOW + DEFAULT_MAX_AHEAD
    assert check(EARLIER, None, limit, None) is None
    error = check(EARLIER, None, limit + TICK, None)
    assert isinstance(error, WatermarkAheadError)
    assert (error.current, error.proposed, error.limit) == (EARLIER, limit + TICK, limit)
    # allow_rewind never lifts the limit; max_ahead=None does.
    assert isinstance(
        check(EARLIER, None, limit + TICK, None, allow_rewind=True), WatermarkAheadError
    )
    assert check(EARLIER, None, limit + TICK, None, max_ahead=None) is None


def test_a_time_not_proposed_is_not_checked_even_when_it_is_ahead() -> None:
    ahead = NOW + DEFAULT_MAX_AHEAD + dt.timedelta(hours=1)
    assert check(ahead, 5, None, 6) is None


def test_the_time_is_checked_before_the_cursor() -> None:
    error = check(NOW, 5, EARLIER, 4)
    assert isinstance(error, WatermarkRewindError)
    assert (error.current, error.proposed) == (NOW, EARLIER)


@pytest.mark.parametrize(
    ("current", "proposed", "backwards"),
    [
        (5, 4, True),
        (5, 5, False),
        (5, 5.5, False),
        (2.5, 2, True),
        ("b", "a", True),
        ("a", "b", False),
        (True, False, False),  # bools have no order here
        (5, "4", False),  # nor do mixed types
        ({"page": 2}, {"page": 1}, False),
        (5, None, False),  # None: the cursor is not changed
        (None, 4, False),
    ],
)
def test_only_numbers_and_strings_have_an_order(
    current: object, proposed: object, backwards: bool
) -> None:
    assert cursor_is_rewind(current, proposed) is backwards
    assert is_rewind(None, current, None, proposed) is backwards
    error = check(None, current, None, proposed)
    assert isinstance(error, WatermarkRewindError) if backwards else error is None
