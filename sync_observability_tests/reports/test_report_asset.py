"""The ``sync_health_report`` asset, materialized on a real Dagster instance."""

from __future__ import annotations

import base64
import datetime as dt
import io
import random
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pydantic
import pytest
from PIL import Image

from sync_observability.clock import utcnow
from sync_observability.report_asset import (
    SMALL_CHART_DAYS,
    SMALL_CHART_SIZE,
    UI_INLINE_MARKDOWN_LIMIT,
    SyncHealthReportConfig,
    markdown_table,
    render_chart,
    render_small_chart,
    small_chart_markdown,
    sync_health_report,
)
from sync_observability.reports import daily_operations
from sync_observability_tests.reports.history import Run, add_runs

BAR = (0x4C, 0x78, 0xA8)
LINE = (0xE4, 0x57, 0x56)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _close(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return np.abs(_pixels(image) - np.array(colour)).max(axis=2) <= 8


def _count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return int(_close(image, colour).sum())


IMAGE = "![Records processed and failed syncs per day](data:image/png;base64,"
FULL_IMAGE = "![Sync volume and failures per day](data:image/png;base64,"


def _inline_png(markdown: str, prefix: str) -> Image.Image:
    """The PNG of a markdown ``![alt](data:image/png;base64,...)`` that starts ``markdown``."""
    assert markdown.startswith(prefix), markdown[:100]
    encoded = markdown[len(prefix) :].partition(")")[0]
    return Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))


def _daily(volumes: list[int], failures: list[int], last: dt.date) -> pd.DataFrame:
    """A daily_operations frame (the columns the charts read), newest day first like it."""
    days = [last - dt.timedelta(days=i) for i in range(len(volumes))][::-1]
    frame = pd.DataFrame(
        {"operation_date": days, "records_processed": volumes, "failed_operations": failures}
    )
    return frame.iloc[::-1].reset_index(drop=True)


def _recent_history(store) -> None:
    now = utcnow()
    day = dt.timedelta(days=1)
    add_runs(
        store,
        [
            Run("crm/contacts", now - 3 * day, 10, records=500),
            Run("crm/contacts", now - 2 * day, 10, status="failed", error="API_TIMEOUT: slow"),
            Run("crm/contacts", now - 2 * day + dt.timedelta(hours=1), 10, records=800),
            Run("vantage/accounts", now - dt.timedelta(hours=2), 20, records=300),
            Run("vantage/accounts", now - dt.timedelta(hours=1), 40, records=100),
        ],
    )


def test_materialization_has_dashboard_chart_and_numbers(backend, store, tmp_path):
    _recent_history(store)
    tracker = backend.tracker()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize(
            [sync_health_report], resources={"sync_tracker": tracker}, instance=instance
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("sync_health_report")
        metadata = materialization.metadata
        storage = Path(instance.storage_directory())

    table = metadata["dashboard"].value
    assert table.splitlines()[0] == "| metric_name | metric_value | metric_unit | status |"
    assert "| total_operations_24h | 2 | count | NORMAL |" in table
    assert "| success_rate_24h | 100.0 | percentage | EXCELLENT |" in table
    assert "| avg_duration_ms | 30000.0 | milliseconds | WARNING |" in table
    assert metadata["total_operations_24h"] == dg.MetadataValue.int(2)
    assert metadata["failed_operations_24h"] == dg.MetadataValue.int(0)
    assert metadata["success_rate_24h"] == dg.MetadataValue.float(100.0)
    # 0.7 * 100 + 0.3 * (crm/contacts is stale: yellow, 50; vantage/accounts green, 100)
    assert metadata["system_health_score"] == dg.MetadataValue.float(92.5)

    # The UI shows a markdown value in place below 1000 characters: the small chart is one.
    chart = metadata["chart"]
    assert isinstance(chart, dg.MarkdownMetadataValue)
    assert len(chart.value) < UI_INLINE_MARKDOWN_LIMIT == 1000
    today = dt.datetime.fromtimestamp(metadata["generated_at"].value, dt.timezone.utc).date()
    first = (today - dt.timedelta(days=14)).isoformat()[5:]
    assert chart.value.endswith(
        f"\n\n{first} to {today.isoformat()[5:]} UTC. Blue: records processed (highest 800 a "
        "day); red: failed syncs (highest 1 a day). Axes and legend: chart_full."
    )
    with _inline_png(chart.value, IMAGE) as image:
        assert (image.format, image.mode) == ("PNG", "P")
        assert image.size == (15 * (SMALL_CHART_SIZE[0] // 15), SMALL_CHART_SIZE[1])
        assert _count(image, BAR) > 200 and _count(image, LINE) > 50
    full = metadata["chart_full"]
    assert isinstance(full, dg.MarkdownMetadataValue) and full.value.endswith(")")
    assert len(full.value) < 30_000  # in every materialization event: a 32-colour palette
    with _inline_png(full.value, FULL_IMAGE) as image:
        assert (image.format, image.mode) == ("PNG", "P")
        assert image.size == (1000, 400)
        assert len(np.unique(_pixels(image).reshape(-1, 3), axis=0)) > 10  # not blank
        assert _count(image, BAR) > 500  # the volume bars
        assert _count(image, LINE) > 50  # the failures line and its markers
    assert set(metadata) == {
        "dashboard",
        "chart",
        "chart_full",
        "generated_at",
        "total_operations_24h",
        "failed_operations_24h",
        "success_rate_24h",
        "system_health_score",
    }
    assert not (storage / "sync_observability").exists()  # no file left on the server


# Just after midnight UTC "an hour ago" is yesterday: the chart must not depend on the hour.
@pytest.mark.parametrize("now", ["2025-06-15T00:30:00Z", "2025-06-15T12:00:00Z"])
def test_chart_bars_follow_the_volume(store, now):
    """More records on a day means a taller bar: the chart draws the report's numbers."""
    now = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    midnight = now.replace(hour=0, minute=0)
    add_runs(
        store,
        [
            Run("a", midnight - dt.timedelta(hours=12), 1, records=1000),  # yesterday noon
            Run("a", midnight + dt.timedelta(minutes=15), 1, records=250),  # today
        ],
    )
    daily = daily_operations(store, days=2, now=now)
    with Image.open(io.BytesIO(render_chart(daily))) as image:
        is_bar = (_pixels(image) == np.array(BAR)).all(axis=2)
    heights = is_bar.sum(axis=0)  # bar pixels per x
    bars = [int(h) for h in heights if h > 0]
    assert bars, "no bars drawn"
    tallest = max(bars)
    # Yesterday's bar is four times today's: the short bar's height is about a quarter.
    assert any(abs(h - tallest / 4) <= 3 for h in bars)


def test_the_legend_stays_clear_of_the_left_axis_label():
    """Left of the plot (the y-axis label and its ticks) is no legend swatch, bar or line."""
    daily = _daily([40_000] * 14, [4] * 14, dt.date(2025, 6, 14))
    with Image.open(io.BytesIO(render_chart(daily))) as image:
        coloured = _close(image, BAR) | _close(image, LINE)
    columns = np.flatnonzero(coloured.any(axis=0))
    rows = np.flatnonzero(coloured.any(axis=1))
    assert columns.min() > 100, columns.min()  # "records processed" and "40,000" end at ~90
    # The legend sits above the plot, right-aligned: its swatches are the topmost colour.
    top = coloured[rows.min() : rows.min() + 12]
    assert np.flatnonzero(top.any(axis=0)).min() > 600


def test_small_chart_draws_each_day_against_its_own_maximum():
    # Oldest to newest: volumes 1000, 0, 250, 500 and failures 0, 2, 0, 1.
    daily = _daily([1000, 0, 250, 500], [0, 2, 0, 1], dt.date(2025, 6, 15))
    with Image.open(io.BytesIO(render_small_chart(daily))) as image:
        assert (image.mode, image.size) == ("P", (560, 120))
        blue, red = _close(image, BAR), _close(image, LINE)
    step = 560 // 4
    blue_heights = [int(blue[:, i * step : (i + 1) * step].any(axis=1).sum()) for i in range(4)]
    red_heights = [int(red[:, i * step : (i + 1) * step].any(axis=1).sum()) for i in range(4)]
    assert blue_heights == [118, 0, 30, 59]  # 118 pixels for the highest day
    assert red_heights == [0, 118, 0, 59]


def test_small_chart_markdown_shows_the_last_31_days_under_the_ui_limit():
    rng = random.Random(7)
    # Worst case for the PNG's size: every day a different, huge volume.
    volumes = [rng.choice([0, rng.randrange(2**62)]) for _ in range(91)]
    failures = [rng.randrange(1000) for _ in range(91)]
    daily = _daily(volumes, failures, dt.date(2025, 6, 15))
    markdown = small_chart_markdown(daily)
    assert len(markdown) < UI_INLINE_MARKDOWN_LIMIT
    shown = volumes[-SMALL_CHART_DAYS:]
    assert markdown.endswith(
        "\n\n05-16 to 06-15 UTC, the last 31 of 91 days (all in chart_full). Blue: records "
        f"processed (highest {max(shown):,} a day); red: failed syncs (highest "
        f"{max(failures[-SMALL_CHART_DAYS:])} a day). Axes and legend: chart_full."
    )
    with _inline_png(markdown, IMAGE) as image:
        assert image.size == (31 * (560 // 31), 120)


def test_small_chart_markdown_of_no_days():
    assert small_chart_markdown(_daily([], [], dt.date(2025, 6, 15))) == "No days to chart."


def test_markdown_table_escapes_pipes_and_marks_missing_values():
    import pandas as pd

    frame = pd.DataFrame({"a": ["x|y", None], "b": [1, 2.5]}, dtype=object)
    assert markdown_table(frame).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| x\\|y | 1 |",
        "| - | 2.5 |",
    ]


@pytest.mark.parametrize("days", [0, -3])
def test_chart_days_must_be_positive(days):
    with pytest.raises(pydantic.ValidationError, match="chart_days"):
        SyncHealthReportConfig(chart_days=days)
