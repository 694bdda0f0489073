"""The reports' decisions as pure functions: windows, labels, scores, spikes and 2 sigma.

No SQL, no pandas, no Dagster: numbers in, numbers or labels out, so each rule is tested on its own.
Thresholds come from the seeds (docs/seeds.md) where they give them (seed 004's performance
categories at 1, 10 and 60 seconds, its spike at twice and drop at half the previous hour, its
anomaly at two standard deviations); where the seed shows only example labels (its dashboard's
``EXCELLENT``, ``GOOD``, ``NORMAL``, ``WARNING``), the bands below are ours and named as constants.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Literal

Label = Literal["EXCELLENT", "GOOD", "NORMAL", "WARNING", "CRITICAL", "NO_DATA"]

# Success rate (percent of finished syncs) -> label, best band first.
SUCCESS_RATE_BANDS: tuple[tuple[float, Label], ...] = (
    (99.0, "EXCELLENT"),
    (95.0, "GOOD"),
    (90.0, "WARNING"),
)
# Seed 004's performance categories: FAST up to 1 s, MODERATE to 10 s, SLOW to 60 s, VERY_SLOW.
DURATION_BANDS_MS: tuple[tuple[float, Label], ...] = (
    (1_000.0, "GOOD"),
    (10_000.0, "NORMAL"),
    (60_000.0, "WARNING"),
)
# A failure share above this (percent of finished syncs) makes the failure count CRITICAL.
CRITICAL_FAILURE_PERCENT = 10.0
# Health score (0-100) -> label.
HEALTH_SCORE_BANDS: tuple[tuple[float, Label], ...] = (
    (95.0, "EXCELLENT"),
    (85.0, "GOOD"),
    (70.0, "WARNING"),
)
# How the health score weighs the window's success rate against the resources' colours.
SUCCESS_RATE_WEIGHT = 0.7
RESOURCE_HEALTH_WEIGHT = 0.3
# Points a resource earns by its seed-001 colour.
COLOUR_POINTS = {"green": 1.0, "yellow": 0.5, "red": 0.0}
SPIKE_FACTOR = 2.0
DROP_FACTOR = 0.5
ANOMALY_SIGMAS = 2.0
QUALITY_TREND_TOLERANCE = 0.01


def start_of_day_window(now: dt.datetime, days: int) -> dt.datetime:
    """Midnight UTC ``days`` days before ``now``'s date: seed 000's ``CURRENT_DATE - N days``."""
    today = now.astimezone(dt.timezone.utc).date()
    return dt.datetime.combine(today, dt.time(), tzinfo=dt.timezone.utc) - dt.timedelta(days=days)


def rolling_window(now: dt.datetime, days: int) -> dt.datetime:
    """``days`` x 24 hours before ``now``, as seed 004's ``CURRENT_TIMESTAMP - INTERVAL`` does."""
    return now - dt.timedelta(days=days)


def percent(part: int, whole: int) -> float | None:
    """``part`` as a percentage of ``whole``, rounded to 2 places; None when ``whole`` is 0."""
    return None if whole == 0 else round(part / whole * 100, 2)


def _band(
    value: float | None, bands: Sequence[tuple[float, Label]], *, higher_is_better: bool
) -> Label:
    if value is None:
        return "NO_DATA"
    for bound, label in bands:
        if (value >= bound) if higher_is_better else (value <= bound):
            return label
    return "CRITICAL"


def success_rate_label(rate: float | None) -> Label:
    """EXCELLENT from 99 %, GOOD from 95 %, WARNING from 90 %, else CRITICAL; NO_DATA if None."""
    return _band(rate, SUCCESS_RATE_BANDS, higher_is_better=True)


def duration_label(avg_duration_ms: float | None) -> Label:
    """Seed 004's speed bands: GOOD up to 1 s, NORMAL to 10 s, WARNING to 60 s, else CRITICAL."""
    return _band(avg_duration_ms, DURATION_BANDS_MS, higher_is_better=False)


def operations_label(operations: int) -> Label:
    """NORMAL when anything ran in the window, WARNING when nothing did."""
    return "NORMAL" if operations > 0 else "WARNING"


def failures_label(failed: int, finished: int) -> Label:
    """NORMAL with no failures; WARNING; CRITICAL above 10 % of the finished syncs."""
    if failed == 0:
        return "NORMAL"
    if finished and failed / finished * 100 > CRITICAL_FAILURE_PERCENT:
        return "CRITICAL"
    return "WARNING"


def colour_count_label(colour: str, count: int) -> Label:
    """A count of red resources is CRITICAL, of yellow ones WARNING, when above zero."""
    if count == 0:
        return "NORMAL"
    return "CRITICAL" if colour == "red" else "WARNING"


def resource_health_from_counts(counts: Mapping[str, int]) -> float | None:
    """Mean colour of the resources (green 100, yellow 50, red 0), from the number of resources
    of each colour; None without any."""
    total = sum(counts.values())
    if not total:
        return None
    points = sum(COLOUR_POINTS[colour] * count for colour, count in counts.items())
    return points / total * 100


def health_score(success_rate: float | None, resource_health: float | None) -> float | None:
    """0-100: 70 % the window's success rate, 30 % the resources' colours.

    Either part alone when the other has no data (no finished syncs, or no resources); None
    when neither has. Rounded to 1 place, as seed 004 shows it (``98.5``).
    """
    if success_rate is None:
        return None if resource_health is None else round(resource_health, 1)
    if resource_health is None:
        return round(success_rate, 1)
    score = SUCCESS_RATE_WEIGHT * success_rate + RESOURCE_HEALTH_WEIGHT * resource_health
    return round(score, 1)


def health_score_label(score: float | None) -> Label:
    """EXCELLENT from 95, GOOD from 85, WARNING from 70, else CRITICAL; NO_DATA if None."""
    return _band(score, HEALTH_SCORE_BANDS, higher_is_better=True)


def hourly_trend(operations: int, previous: int | None) -> str:
    """Seed 004's trend: SPIKE_DETECTED above twice the previous hour, DROP_DETECTED below half.

    The first hour of the window has no previous hour and is NORMAL (SQL's NULL comparison).
    """
    if previous is None:
        return "NORMAL"
    if operations > previous * SPIKE_FACTOR:
        return "SPIKE_DETECTED"
    if operations < previous * DROP_FACTOR:
        return "DROP_DETECTED"
    return "NORMAL"


def count_stats(days: int, total: int, squares: int) -> tuple[float, float | None]:
    """The mean and sample standard deviation (PostgreSQL's ``STDDEV``; None below 2 values) of
    ``days`` counts summing to ``total``, their squares to ``squares``; exact until the root."""
    mean = total / days
    if days < 2:
        return mean, None
    return mean, math.sqrt((days * squares - total * total) / (days * (days - 1)))


def count_anomaly(today: int, days: int, total: int, squares: int) -> str:
    """Seed 004's 2 sigma rule on integer counts: ANOMALY_HIGH above mean + 2 sd, ANOMALY_LOW
    below mean - 2 sd, else NORMAL (also without deviation).

    ``today`` is one of the ``days`` counts that sum to ``total`` (squares to ``squares``). The
    test is done in integers, ``(n today - total)² (n - 1) > 4 n (n squares - total²)``, so a
    count exactly on the bound is NORMAL whatever the floats would round to.
    """
    spread = days * squares - total * total
    distance = days * today - total
    if spread <= 0 or distance * distance * (days - 1) <= ANOMALY_SIGMAS**2 * days * spread:
        return "NORMAL"
    return "ANOMALY_HIGH" if distance > 0 else "ANOMALY_LOW"


def quality_trend(score: float | None, previous: float | None) -> str | None:
    """Seed 002's quality trend against the previous score: improving, declining or stable.

    Changes within ``QUALITY_TREND_TOLERANCE`` are stable; None without both scores.
    """
    if score is None or previous is None:
        return None
    if score > previous + QUALITY_TREND_TOLERANCE:
        return "improving"
    if score < previous - QUALITY_TREND_TOLERANCE:
        return "declining"
    return "stable"


__all__: Sequence[str] = (
    "colour_count_label",
    "count_anomaly",
    "count_stats",
    "duration_label",
    "failures_label",
    "health_score",
    "health_score_label",
    "hourly_trend",
    "operations_label",
    "percent",
    "quality_trend",
    "resource_health_from_counts",
    "rolling_window",
    "start_of_day_window",
    "success_rate_label",
)
