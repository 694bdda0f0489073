"""``sync-obs report NAME``: any report of :mod:`sync_observability.reports`, as a table or data.

Examples:
    .. code-block:: console

        $ sync-obs report dashboard
        $ sync-obs report failures --days 1 --json
        $ sync-obs report cost-trends --days 90 --csv > costs.csv
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from sync_observability.cli.options import (
    DAYS,
    SINCE_HELP,
    DatabaseOption,
    OneLineErrorsCommand,
    Since,
    database_options,
)
from sync_observability.cli.output import echo_json, make_console, when
from sync_observability.storage.store import ROLLUP_MODES

if TYPE_CHECKING:
    import pandas as pd

# Values that colour a cell, whichever column they are in (health, labels, trends).
VALUE_STYLES = {
    "red": "bold red",
    "yellow": "bold yellow",
    "green": "bold green",
    "CRITICAL": "bold red",
    "WARNING": "bold yellow",
    "NO_DATA": "dim",
    "GOOD": "green",
    "EXCELLENT": "bold green",
    "SPIKE_DETECTED": "bold yellow",
    "DROP_DETECTED": "bold yellow",
    "ANOMALY_HIGH": "bold yellow",
    "ANOMALY_LOW": "bold yellow",
    "declining": "yellow",
    "improving": "green",
    "failed": "red",
    "running": "cyan",
    "success": "green",
    "never_run": "yellow",
}
# Reports that take --all, and the keyword it sets; reports that take --resource.
ALL_OPTION = {
    "status": "include_healthy",
    "volume-anomalies": "include_normal",
    "cost-trends": "per_resource",
    "quality-trends": "per_resource",
}
RESOURCE_OPTION = ("cost-trends", "quality-trends")
CELL_WIDTH = 60
# Free text wraps within a width; ids, names and times never wrap (headers wrap at words).
WRAPPING_COLUMNS = {"error_message": 40, "error_summary": 40, "error_codes": 20, "statement": 40}
ONE_LINE_COLUMNS = {"sync_id", "resource", "source_system", "target_system", "category"}
ONE_LINE_COLUMNS |= {"db_session_user", "object_identity", "command_tag"}
SHORT_ID_COLUMNS = {"sync_id": 8}  # like a short git hash; --json has the whole id
# Reports too wide for a terminal show these columns in the table; --json and --csv have all.
TABLE_COLUMNS = {
    "ddl-history": ("event_time", "db_session_user", "command_tag", "object_identity", "statement")
}


class ReportName(click.Choice):
    """A choice among the names in ``reports.REPORTS``, read when a name is checked.

    The reports import pandas; reading their names at import time would make every command pay
    for it (``sync-obs status`` too).
    """

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from sync_observability.reports import REPORTS

        return tuple(sorted(REPORTS))

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # click.Choice.__init__ sets it; the names come from REPORTS


@click.command(cls=OneLineErrorsCommand)
@click.argument("name", type=ReportName(), metavar="NAME")
@click.option(
    "--days",
    type=DAYS,
    default=None,
    help="How many days back the report looks (default: the report's own, e.g. 30 for trends).",
)
@click.option(
    "--as-of",
    "as_of",
    type=Since(),
    default=None,
    help=f"Report as of this time instead of now: {SINCE_HELP}.",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="status: every resource, green ones too (default: red and yellow only). "
    "volume-anomalies: NORMAL resources too (default: anomalies only). cost-trends, "
    "quality-trends: one row per day and resource (default: one row per day overall).",
)
@click.option(
    "--resource",
    default=None,
    help="cost-trends, quality-trends: only this resource, one row per day.",
)
@click.option(
    "--rollups",
    type=click.Choice(ROLLUP_MODES),
    default="refresh",
    show_default=True,
    help="Hourly roll-ups: refresh them first; read them without writing (read-only replica or "
    "user); off (read every hour from sync_history).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of objects).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@database_options
def report(
    name: str,
    days: int | None,
    as_of: dt.datetime | None,
    show_all: bool,
    resource: str | None,
    rollups: str,
    as_json: bool,
    as_csv: bool,
    database: DatabaseOption,
) -> None:
    """Print the report NAME as a table (or --json, --csv).

    \b
    status            resources in red or yellow health (--all: every resource)
    dashboard         operations, success rate, duration, failures and a health score
    failures          recent failed syncs with their errors
    performance       duration of successful syncs by source and target system
    daily-volume      records processed per day and source system
    daily-operations  syncs, failures and success rate per day
    hourly-volume     syncs per hour with spike and drop detection
    volume-anomalies  resources syncing unusually often or rarely today (2 sigma; --all)
    top-errors        the most frequent failures by resource and message
    operation-events  operational events (operation_log) by category
    cost-trends       daily cost, executions and bytes (--resource NAME, --all)
    quality-trends    daily data-quality scores and their trend (--resource NAME, --all)
    ddl-history       DDL recorded by the event triggers (sync-obs ddl enable), newest first
    ddl-impact        the objects DDL changed most: creates, alters, drops, grants
    user-activity     DDL per session user, with today's 2 sigma anomaly (same hours)
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together.")
    import pandas as pd

    from sync_observability.reports import REPORTS

    kwargs: dict[str, Any] = {"now": as_of}
    if days is not None:
        kwargs["days"] = days
    if show_all:
        if name not in ALL_OPTION:
            raise click.UsageError(f"--all applies to {', '.join(ALL_OPTION)}, not {name}.")
        kwargs[ALL_OPTION[name]] = True
    if resource is not None:
        if name not in RESOURCE_OPTION:
            raise click.UsageError(
                f"--resource applies to {', '.join(RESOURCE_OPTION)}, not {name}."
            )
        kwargs["resource"] = resource
    with database.open(rollups=rollups) as store:
        try:
            frame = REPORTS[name](store, **kwargs)
        except OverflowError:
            if as_of is None:  # --days is bounded, so only --as-of can take a window that far
                raise
            raise click.BadParameter(
                f"the report's window around {as_of.isoformat()} falls outside the years 1-9999",
                param_hint="'--as-of'",
            ) from None
        where = store.url
    records = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    if as_json:
        echo_json(records)
    elif as_csv:
        click.echo(pd.DataFrame(records, columns=frame.columns).to_csv(index=False), nl=False)
    else:
        _print_table(name, days, as_of, frame, where)


def _plain(value: Any) -> Any:
    """A cell as plain JSON-able Python: ISO timestamps and dates, None for missing numbers."""
    import pandas as pd  # already loaded by the report; a lookup in sys.modules

    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _cell(value: Any) -> Text | str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, dt.datetime):
        return when(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    text = str(value)
    if len(text) > CELL_WIDTH:
        text = text[: CELL_WIDTH - 1] + "…"
    style = VALUE_STYLES.get(text)
    return Text(text, style=style) if style else text


def _print_table(
    name: str, days: int | None, as_of: dt.datetime | None, frame: pd.DataFrame, where: str
) -> None:
    console = make_console()
    title = f"Report: {name}"
    if days is not None:
        title += f", last {days} day(s)"
    if as_of is not None:
        title += f", as of {when(as_of)} UTC"
    if frame.empty:
        console.print(f"{title}: nothing to report in {where}.")
        return
    if name in TABLE_COLUMNS:
        frame = frame[list(TABLE_COLUMNS[name])]
        where += " (--json or --csv for every column)"
    table = Table(title=title, caption=where, title_justify="left", box=box.SIMPLE_HEAD)
    for column in frame.columns:
        numeric = all(
            isinstance(v, int | float) and not isinstance(v, bool)
            for v in frame[column]
            if v is not None
        )
        one_line = column in ONE_LINE_COLUMNS or any(
            isinstance(v, dt.date) for v in frame[column] if v is not None
        )
        table.add_column(
            str(column).replace("_", " "),
            justify="right" if numeric else "left",
            no_wrap=one_line,
            max_width=WRAPPING_COLUMNS.get(column),
        )
    for row in frame.to_dict(orient="records"):
        cells = []
        for column, value in row.items():
            if column in SHORT_ID_COLUMNS and isinstance(value, str):
                value = value[: SHORT_ID_COLUMNS[column]]
            cells.append(_cell(value))
        table.add_row(*cells)
    console.print(table)
