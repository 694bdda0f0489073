"""The ``sync_health_report`` asset: the dashboard and a daily chart, shown in the Dagster UI.

Each materialization reads the tables through the ``sync_tracker`` resource and attaches:

- ``dashboard``: seed 004's dashboard as a markdown table (metric, value, unit, status);
- ``chart``: a small PNG of the last days (records processed as blue bars, failed syncs as red
  ones), inline in markdown with a caption, which the UI's metadata table shows at once;
- ``chart_full``: the ``chart_days`` chart with axes and legend (1000 x 400 pixels), inline in
  markdown too, one "[Show Markdown]" click away;
- ``system_health_score``, ``success_rate_24h``, ``total_operations_24h`` and
  ``failed_operations_24h`` as typed numbers, which Dagster plots over materializations.

Both images travel in the metadata as data URIs: no file on the server, nothing a browser
elsewhere cannot load. Dagster 1.13's UI renders a markdown value in place only when it is
shorter than :data:`UI_INLINE_MARKDOWN_LIMIT` characters (``MetadataEntry.tsx`` in
dagster-webserver's ui-core), which only a few-colour image of plain bars stays under.

The full chart is drawn with matplotlib's Agg canvas directly (no pyplot, so no global backend
state and no display needed), the small one with Pillow (a matplotlib dependency); both are
imported when a chart is drawn, not by every process that loads the definitions.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameters' annotations.
import base64
import datetime as dt
import io
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from sync_observability.clock import utcnow
from sync_observability.tracking import SyncTracker

if TYPE_CHECKING:  # pandas and the reports load when the asset runs, not with the definitions
    import pandas as pd

CHART_SIZE_INCHES = (10.0, 4.0)
CHART_DPI = 100  # 1000 x 400 pixels
CHART_COLOURS = 32
VOLUME_COLOUR = (0x4C, 0x78, 0xA8)
FAILURE_COLOUR = (0xE4, 0x57, 0x56)
# Dagster 1.13's UI shows a markdown metadata value in place below this many characters, and
# behind a "[Show Markdown]" link from it on.
UI_INLINE_MARKDOWN_LIMIT = 1000
# The small chart: at most this many days (more bars cost more bytes), in this many pixels.
SMALL_CHART_DAYS = 31
SMALL_CHART_SIZE = (560, 120)


class SyncHealthReportConfig(dg.Config):
    """Run config of ``sync_health_report``."""

    chart_days: int = Field(
        default=14, ge=1, description="How many days of volume and failures the chart shows."
    )


def render_chart(daily: "pd.DataFrame") -> bytes:
    """A PNG of daily records processed (bars) and failed syncs (line), oldest day first.

    Args:
        daily: the :func:`~sync_observability.reports.daily_operations` report.

    Returns:
        The PNG's bytes, ``CHART_SIZE_INCHES`` x ``CHART_DPI`` pixels (1000 x 400), in
        ``CHART_COLOURS`` colours.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter
    from PIL import Image

    ordered = daily.sort_values("operation_date")
    days = [d.isoformat()[5:] for d in ordered["operation_date"]]
    positions = list(range(len(days)))
    figure = Figure(figsize=CHART_SIZE_INCHES, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    volume_axis = figure.add_subplot()
    volume_axis.bar(
        positions,
        [int(v) for v in ordered["records_processed"]],
        color=_hex(VOLUME_COLOUR),
        label="records processed",
    )
    volume_axis.set_ylabel("records processed")
    volume_axis.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    volume_axis.set_xticks(positions, days, rotation=45, ha="right", fontsize=8)
    failure_axis = volume_axis.twinx()
    failure_axis.plot(
        positions,
        [int(v) for v in ordered["failed_operations"]],
        color=_hex(FAILURE_COLOUR),
        marker="o",
        label="failed syncs",
    )
    failure_axis.set_ylabel("failed syncs")
    failure_axis.set_ylim(bottom=0)
    failure_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    # Title on the left and legend on the right, both above the plot: a legend placed on the
    # figure's corner sat over the left axis label, and inside the plot it hides bars.
    volume_axis.set_title("Sync volume and failures per day (UTC)", loc="left")
    handles = [*volume_axis.get_legend_handles_labels()[0], *failure_axis.get_lines()]
    volume_axis.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=2,
        frameon=False,
        fontsize=9,
        borderaxespad=0.2,
    )
    figure.tight_layout()
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png", dpi=CHART_DPI)
    # Every materialization's event carries the PNG: a palette looks the same at a third of
    # the size (about 15 kB instead of 50), the bar and line colours kept exactly.
    with Image.open(drawn) as image:
        paletted = image.convert("RGB").quantize(
            colors=CHART_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    buffer = io.BytesIO()
    paletted.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_small_chart(daily: "pd.DataFrame") -> bytes:
    """A small PNG of the last :data:`SMALL_CHART_DAYS` days, oldest first, for the UI's table.

    Per day a blue bar (records processed) and a narrow red one (failed syncs), each scaled to
    its own maximum, over a grey baseline; no text. Four colours, two bits per pixel, and only
    rectangles, which compress to a few hundred bytes.

    Args:
        daily: the :func:`~sync_observability.reports.daily_operations` report.

    Returns:
        The PNG's bytes, at most ``SMALL_CHART_SIZE`` pixels.
    """
    from PIL import Image, ImageDraw

    ordered = daily.sort_values("operation_date").tail(SMALL_CHART_DAYS)
    volumes = [int(v) for v in ordered["records_processed"]]
    failures = [int(v) for v in ordered["failed_operations"]]
    width, height = SMALL_CHART_SIZE
    step = width // max(len(volumes), 1)
    bar, narrow = round(step * 0.6), max(2, step // 5)
    image = Image.new("P", (step * max(len(volumes), 1), height), 0)
    image.putpalette([255, 255, 255, *VOLUME_COLOUR, *FAILURE_COLOUR, 0x99, 0x99, 0x99])
    draw = ImageDraw.Draw(image)
    draw.line([(0, height - 1), (image.width - 1, height - 1)], fill=3)
    for values, colour, left, bar_width in ((volumes, 1, 0, bar), (failures, 2, bar, narrow)):
        top = max(values, default=0) or 1
        for i, value in enumerate(values):
            bar_height = round(value / top * (height - 2))
            if bar_height:
                x = i * step + left
                draw.rectangle(  # above the baseline (inclusive corners)
                    [x, height - 1 - bar_height, x + bar_width - 1, height - 2], fill=colour
                )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, bits=2)
    return buffer.getvalue()


def small_chart_markdown(daily: "pd.DataFrame") -> str:
    """:func:`render_small_chart` as an inline markdown image with a caption saying what it shows.

    Stays under :data:`UI_INLINE_MARKDOWN_LIMIT` characters, so Dagster's UI shows it at once.
    """
    ordered = daily.sort_values("operation_date")
    shown = ordered.tail(SMALL_CHART_DAYS)
    if shown.empty:
        return "No days to chart."
    first, last = (d.isoformat()[5:] for d in shown["operation_date"].iloc[[0, -1]])
    span = f"{first} to {last} UTC"
    if len(shown) < len(ordered):
        span += f", the last {len(shown)} of {len(ordered)} days (all in chart_full)"
    encoded = base64.b64encode(render_small_chart(daily)).decode("ascii")
    most_records = max(int(v) for v in shown["records_processed"])
    most_failures = max(int(v) for v in shown["failed_operations"])
    return (
        f"![Records processed and failed syncs per day](data:image/png;base64,{encoded})\n\n"
        f"{span}. Blue: records processed (highest {most_records:,} a day); "
        f"red: failed syncs (highest {most_failures:,} a day). Axes and legend: chart_full."
    )


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*colour)


def markdown_table(frame: "pd.DataFrame") -> str:
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
    config: SyncHealthReportConfig, sync_tracker: SyncTracker
) -> dg.MaterializeResult:
    """Materialize the dashboard and the daily chart into this asset's metadata."""
    from sync_observability.reports import daily_operations, dashboard

    now = utcnow()
    store = sync_tracker.store
    board = dashboard(store, now=now)
    daily = daily_operations(store, days=config.chart_days, now=now)
    encoded = base64.b64encode(render_chart(daily)).decode("ascii")
    metadata: dict[str, Any] = {
        "dashboard": dg.MetadataValue.md(markdown_table(board)),
        "chart": dg.MetadataValue.md(small_chart_markdown(daily)),
        "chart_full": dg.MetadataValue.md(
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


__all__ = [
    "SyncHealthReportConfig",
    "markdown_table",
    "render_chart",
    "render_small_chart",
    "small_chart_markdown",
    "sync_health_report",
]
