"""The ``sync_health_report`` asset, materialized on a real Dagster instance."""

from __future__ import annotations

import base64
import datetime as dt
import io
from pathlib import Path

import dagster as dg
import numpy as np
import pydantic
import pytest
from PIL import Image

from sync_observability.report_asset import (
    SyncHealthReportConfig,
    markdown_table,
    render_chart,
    sync_health_report,
)
from sync_observability.reports import daily_operations
from sync_observability.tracking import utcnow
from sync_observability_tests.reports.history import Run, add_runs

BAR = (0x4C, 0x78, 0xA8)
LINE = (0xE4, 0x57, 0x56)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    close = np.abs(_pixels(image) - np.array(colour)).max(axis=2) <= 8
    return int(close.sum())


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

    path = Path(metadata["chart"].value)
    assert path.parent == storage / "sync_observability" / "sync_health_report"
    assert path.name == f"{result.run_id}.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 400)
        assert len(np.unique(_pixels(image).reshape(-1, 3), axis=0)) > 10  # not blank
        assert _count(image, BAR) > 500  # the volume bars
        assert _count(image, LINE) > 50  # the failures line and its markers
    preview = metadata["chart_preview"].value
    prefix = "![Sync volume and failures per day](data:image/png;base64,"
    assert preview.startswith(prefix) and preview.endswith(")")
    assert base64.b64decode(preview[len(prefix) : -1]) == path.read_bytes()


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
