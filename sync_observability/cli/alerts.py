"""``sync-obs alerts``: open and recent alerts from ``sync_alerts``, as a table or ``--json``.

Examples:
    .. code-block:: console

        $ sync-obs alerts                     # open alerts, and those resolved in the last 7 days
        $ sync-obs alerts --status open --json
        $ sync-obs alerts --status resolved --since 24h
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import click
from rich import box
from rich.table import Table
from rich.text import Text

from sync_observability.cli.options import (
    ROW_LIMIT,
    SINCE_HELP,
    DatabaseOption,
    OneLineErrorsCommand,
    Since,
    database_options,
    json_option,
)
from sync_observability.cli.output import echo_json, make_console, when
from sync_observability.storage.alert_store import Alert, AlertStore

_STATUS_STYLES = {"open": "bold red", "resolved": "green"}
_SEVERITY_STYLES = {"critical": "red", "warning": "yellow"}


@click.command(cls=OneLineErrorsCommand)
@click.option(
    "--status",
    type=click.Choice(["open", "resolved", "all"]),
    default="all",
    show_default=True,
    help="Only open alerts, only resolved ones, or both.",
)
@click.option(
    "--since",
    type=Since(),
    default="7d",
    show_default=True,
    help=f"Resolved alerts only when resolved at or after this (open alerts always show): "
    f"{SINCE_HELP}.",
)
@click.option("--limit", type=ROW_LIMIT, default=50, show_default=True)
@database_options
@json_option
def alerts(
    status: str,
    since: dt.datetime,
    limit: int,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """Open alerts and recently resolved ones, newest first."""
    with database.open() as store:
        rows = AlertStore(store).list_alerts(
            status=None if status == "all" else status, since=since, limit=limit
        )
        where = store.url
    if as_json:
        echo_json([dataclasses.asdict(a) for a in rows])
        return
    _print_alerts(rows, where)


def _print_alerts(rows: list[Alert], where: str) -> None:
    console = make_console()
    if not rows:
        console.print(f"No matching alerts in {where}.")
        return
    table = Table(
        title="Sync alerts (newest first)", caption=where, title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("Status", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule")
    table.add_column("Resource", overflow="fold")
    table.add_column("Opened (UTC)")
    table.add_column("Resolved")
    table.add_column("Sent", justify="right", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for alert in rows:
        table.add_row(
            Text(alert.status, style=_STATUS_STYLES.get(alert.status, "")),
            Text(alert.severity, style=_SEVERITY_STYLES.get(alert.severity, "")),
            alert.rule,
            alert.resource,
            when(alert.opened_at),
            when(alert.resolved_at),
            str(alert.notify_count),
            alert.resolution_message
            if alert.status == "resolved" and alert.resolution_message
            else alert.message,
        )
    console.print(table)


__all__ = ["alerts"]
