"""The ``sync_health_report`` asset: the dashboard and a daily chart, shown in the Dagster UI.

Each materialization reads the tables through the ``sync_tracker`` resource and attaches:

- ``dashboard``: seed 004's dashboard as a markdown table (metric, value, unit, status);
- ``chart``: the path of a PNG of the last ``chart_days`` days (records processed as bars,
  failed syncs as a line), written under the Dagster instance's storage directory;
- ``chart_preview``: the same PNG inlined as a markdown image, so the UI shows it;
- ``system_health_score``, ``success_rate_24h``, ``total_operations_24h`` and
  ``failed_operations_24h`` as typed numbers, which Dagster plots over materializations.

The chart is drawn with matplotlib's Agg canvas directly: no pyplot, so no global backend
state and no display needed.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameters' annotations.
import base64
import datetime as dt
import io
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import Field

from sync_observability.reports import daily_operations, dashboard
from sync_observability.tracking import SyncTracker, utcnow

CHART_SIZE_INCHES = (10.0, 4.0)
CHART_DPI = 100  # 1000 x 400 pixels
CHART_FOLDER = ("sync_observability", "sync_health_report")


class SyncHealthReportConfig(dg.Config):
    """Run config of ``sync_health_report``."""

    chart_days: int = Field(
        default=14, ge=1, description="How many days of volume and failures the chart shows."
    )


def render_chart(daily: pd.DataFrame) -> bytes:
    """A PNG of daily records processed (bars) and failed syncs (line), oldest day first.

    Args:
        daily: the :func:`~sync_observability.reports.daily_operations` report.

    Returns:
        The PNG's bytes, ``CHART_SIZE_INCHES`` x ``CHART_DPI`` pixels (1000 x 400).
    """
    ordered = daily.sort_values("operation_date")
    days = [d.isoformat()[5:] for d in ordered["operation_date"]]
    positions = list(range(len(days)))
    figure = Figure(figsize=CHART_SIZE_INCHES, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    volume_axis = figure.add_subplot()
    volume_axis.bar(
        positions,
        [int(v) for v in ordered["records_processed"]],
        color="#4C78A8",
        label="records processed",
    )
    volume_axis.set_ylabel("records processed")
    volume_axis.set_xticks(positions, days, rotation=45, ha="right", fontsize=8)
    failure_axis = volume_axis.twinx()
    failure_axis.plot(
        positions,
        [int(v) for v in ordered["failed_operations"]],
        color="#E45756",
        marker="o",
        label="failed syncs",
    )
    failure_axis.set_ylabel("failed syncs")
    failure_axis.set_ylim(bottom=0)
    volume_axis.set_title("Sync volume and failures per day (UTC)")
    figure.legend(loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub-style markdown table; missing values as ``-``."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def _chart_path(context: dg.AssetExecutionContext) -> Path:
    folder = Path(context.instance.storage_directory()).joinpath(*CHART_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{context.run.run_id}.png"


@dg.asset(
    name="sync_health_report",
    group_name="sync_observability",
    description=(
        "Sync health dashboard (operations, success rate, duration, failures, health score) "
        "and a chart of daily volume and failures, from the sync_observability tables."
    ),
    kinds={"python"},
)
def sync_health_report(
    context: dg.AssetExecutionContext,
    config: SyncHealthReportConfig,
    sync_tracker: SyncTracker,
) -> dg.MaterializeResult:
    """Materialize the dashboard and the daily chart into this asset's metadata."""
    now = utcnow()
    store = sync_tracker.store
    board = dashboard(store, now=now)
    png = render_chart(daily_operations(store, days=config.chart_days, now=now))
    path = _chart_path(context)
    path.write_bytes(png)
    encoded = base64.b64encode(png).decode("ascii")
    metadata: dict[str, Any] = {
        "dashboard": dg.MetadataValue.md(markdown_table(board)),
        "chart": dg.MetadataValue.path(str(path)),
        "chart_preview": dg.MetadataValue.md(
            f"![Sync volume and failures per day](data:image/png;base64,{encoded})"
        ),
        "generated_at": dg.MetadataValue.timestamp(now),
    }
    values = dict(zip(board["metric_name"], board["metric_value"], strict=True))
    for name in ("total_operations_24h", "failed_operations_24h"):
        metadata[name] = dg.MetadataValue.int(int(values[name]))
    for name in ("success_rate_24h", "system_health_score"):
        if values[name] is not None:
            metadata[name] = dg.MetadataValue.float(float(values[name]))
    return dg.MaterializeResult(metadata=metadata)


__all__ = ["SyncHealthReportConfig", "markdown_table", "render_chart", "sync_health_report"]
