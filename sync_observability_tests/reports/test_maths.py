"""The reports' rules as pure functions: no database, no Dagster."""

from __future__ import annotations

import datetime as dt
import statistics
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_observability.reports import maths

UTC = dt.timezone.utc


def test_start_of_day_window_is_midnight_utc_n_days_back():
    now = dt.datetime(2025, 6, 15, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    # 00:30 at +02:00 is 22:30 UTC on the 14th: the UTC date decides.
    assert maths.start_of_day_window(now, 7) == dt.datetime(2025, 6, 7, tzinfo=UTC)


def test_rolling_window():
    now = dt.datetime(2025, 6, 15, 12, 30, tzinfo=UTC)
    assert maths.rolling_window(now, 1) == dt.datetime(2025, 6, 14, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rate", "label"),
    [
        (None, "NO_DATA"),
        (100.0, "EXCELLENT"),
        (99.0, "EXCELLENT"),
        (98.99, "GOOD"),
        (95.0, "GOOD"),
        (94.9, "WARNING"),
        (90.0, "WARNING"),
        (89.9, "CRITICAL"),
    ],
)
def test_success_rate_label(rate, label):
    assert maths.success_rate_label(rate) == label


@pytest.mark.parametrize(
    ("ms", "label"),
    [
        (23.5, "GOOD"),  # seed 004's sample: 23.5 ms is GOOD
        (1_000, "GOOD"),
        (1_001, "NORMAL"),
        (10_000, "NORMAL"),
        (10_001, "WARNING"),
        (60_000, "WARNING"),
        (60_001, "CRITICAL"),
        (None, "NO_DATA"),
    ],
)
def test_duration_label_uses_seed_004_speed_bands(ms, label):
    assert maths.duration_label(ms) == label


def test_failures_label():
    assert maths.failures_label(0, 100) == "NORMAL"
    assert maths.failures_label(3, 1247) == "WARNING"  # seed 004's sample row
    assert maths.failures_label(10, 100) == "WARNING"
    assert maths.failures_label(11, 100) == "CRITICAL"


def test_operations_and_colour_labels():
    assert maths.operations_label(1247) == "NORMAL"
    assert maths.operations_label(0) == "WARNING"
    assert maths.colour_count_label("red", 1) == "CRITICAL"
    assert maths.colour_count_label("yellow", 2) == "WARNING"
    assert maths.colour_count_label("red", 0) == "NORMAL"


def test_health_score_weights_and_missing_parts():
    assert maths.resource_health_from_counts({"green": 2, "yellow": 1, "red": 1}) == 62.5
    assert maths.resource_health_from_counts({"green": 0, "yellow": 0, "red": 0}) is None
    assert maths.resource_health_from_counts({}) is None
    assert maths.health_score(99.8, 100.0) == 99.9  # 69.86 + 30
    assert maths.health_score(None, 62.5) == 62.5
    assert maths.health_score(80.0, None) == 80.0
    assert maths.health_score(None, None) is None
    assert maths.health_score_label(98.5) == "EXCELLENT"  # seed 004's sample
    assert maths.health_score_label(85.0) == "GOOD"
    assert maths.health_score_label(70.0) == "WARNING"
    assert maths.health_score_label(69.9) == "CRITICAL"
    assert maths.health_score_label(None) == "NO_DATA"


@pytest.mark.parametrize(
    ("operations", "previous", "trend"),
    [
        (5, None, "NORMAL"),
        (9, 4, "SPIKE_DETECTED"),
        (8, 4, "NORMAL"),  # exactly twice is not a spike (strict, as the seed's >)
        (2, 4, "NORMAL"),  # exactly half is not a drop
        (1, 4, "DROP_DETECTED"),
        (0, 0, "NORMAL"),
        (1, 0, "SPIKE_DETECTED"),
    ],
)
def test_hourly_trend(operations, previous, trend):
    assert maths.hourly_trend(operations, previous) == trend


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40))
def test_count_stats_match_postgres_stddev_samp(counts):
    mean, sd = maths.count_stats(len(counts), sum(counts), sum(c * c for c in counts))
    assert mean == pytest.approx(statistics.mean(counts))
    if len(counts) < 2:
        assert sd is None
    else:
        assert sd == pytest.approx(statistics.stdev(counts), abs=1e-9)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40))
def test_count_anomaly_is_the_exact_two_sigma_rule(counts):
    today, n = counts[-1], len(counts)
    mean = Fraction(sum(counts), n)
    variance = sum((c - mean) ** 2 for c in counts) / (n - 1) if n > 1 else Fraction(0)
    # today beyond mean +/- 2 sd  <=>  (today - mean)² > 4 variance, on the right side
    beyond = variance > 0 and (today - mean) ** 2 > 4 * variance
    expected = "NORMAL" if not beyond else ("ANOMALY_HIGH" if today > mean else "ANOMALY_LOW")
    assert maths.count_anomaly(today, n, sum(counts), sum(c * c for c in counts)) == expected


def test_count_anomaly_on_the_bound_is_normal():
    counts = [0, 0, 0, 0, 1, 5]  # 5 is exactly mean + 2 sd
    assert (statistics.mean(counts) + 2 * statistics.stdev(counts)) == pytest.approx(5)
    assert maths.count_anomaly(5, 6, 6, 26) == "NORMAL"
    assert maths.count_anomaly(6, 6, 7, 37) == "ANOMALY_HIGH"  # [0, 0, 0, 0, 1, 6]
    assert maths.count_anomaly(0, 3, 14, 98) == "NORMAL"  # [7, 7, 0]: within 2 sd of 4.67
    assert maths.count_anomaly(3, 1, 3, 9) == "NORMAL"  # one day: no deviation


def test_quality_trend():
    assert maths.quality_trend(0.95, 0.93) == "improving"
    assert maths.quality_trend(0.90, 0.93) == "declining"
    assert maths.quality_trend(0.935, 0.93) == "stable"
    assert maths.quality_trend(0.9, None) is None
    assert maths.quality_trend(None, 0.9) is None


def test_percent():
    assert maths.percent(2, 3) == 66.67
    assert maths.percent(0, 0) is None
