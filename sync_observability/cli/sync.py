"""``sync-obs status`` and ``sync-obs history``: the sync tables as rich tables or ``--json``.

Examples:
    .. code-block:: console

        $ sync-obs status --json
        $ sync-obs history --resource vantage/accounts --status failed --since 7d
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sync_observability.cli.options import (
    ROW_LIMIT,
    SINCE_HELP,
    DatabaseOption,
    Since,
    database_options,
    json_option,
)
from sync_observability.cli.output import add_columns, echo_json, make_console, number, when
from sync_observability.clock import utcnow
from sync_observability.health import status_overview
from sync_observability.storage.records import SyncRecord, SyncState
from sync_observability.storage.schema import RUN_STATUSES

HEALTH_STYLES = {"red": "bold red", "yellow": "bold yellow", "green": "bold green"}
STATUS_STYLES = {"failed": "red", "running": "cyan", "success": "green", "never_run": "yellow"}
ERROR_WIDTH = 60


@click.command()
@database_options
@json_option
def status(database: DatabaseOption, as_json: bool) -> None:
    """Every resource's last sync with a red/yellow/green health.

    Last run is when the last sync finished (or started, while one runs); Watermark is how far
    the syncs have read (last_sync_time, which an asset may set to any time) and Age h its age.
    Red: the last sync failed, or it has been running for over 30 minutes. Yellow: the
    watermark is over 24 hours old, or the resource never ran. Green: otherwise.
    """
    with database.open() as store:
        rows = status_rows(store.list_states(), utcnow())
        if as_json:
            echo_json(rows)
        else:
            print_status(make_console(), rows, store.url)


def status_rows(states: Sequence[SyncState], now: dt.datetime) -> list[dict[str, Any]]:
    """The status overview's rows plus ``last_run_at``, when the last sync ran.

    ``last_sync_time`` is the watermark, which an asset may move anywhere
    (``advance_watermark(now - 1 h)``): it cannot tell when the sync ran. ``last_run_at`` is
    when the last sync finished, or when it started while it is running.
    """
    last_run = {state.resource: state.completed_at or state.started_at for state in states}
    return [
        {**row, "last_run_at": last_run[row["resource"]]} for row in status_overview(states, now)
    ]


def print_status(console: Console, rows: list[dict[str, Any]], where: str) -> None:
    """Print :func:`status_rows` as the ``sync-obs status`` table."""
    if not rows:
        console.print(f"No syncs recorded yet in {where}.")
        return
    table = Table(title="Sync status", caption=where, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("Resource", no_wrap=True)
    table.add_column("Status")
    table.add_column("Last run (UTC)")
    table.add_column("Watermark (UTC)")
    add_columns(table, "Age h", "Running s", "Records", "ms", "Errors", "Fails", justify="right")
    table.add_column("Health", no_wrap=True)
    for row in rows:
        table.add_row(
            row["resource"],
            Text(row["status"], style=STATUS_STYLES.get(row["status"], "")),
            when(row["last_run_at"]),
            when(row["last_sync_time"]),
            number(row["hours_since_sync"], "{:,.1f}"),
            number(row["running_seconds"]),
            number(row["records_synced"]),
            number(row["duration_ms"]),
            str(row["error_count"]),
            str(row["consecutive_failures"]),
            Text(row["health"], style=HEALTH_STYLES[row["health"]]),
        )
    console.print(table)


@click.command()
@click.option("--resource", help="Only this resource (e.g. vantage/accounts).")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only syncs with this status.")
@click.option(
    "--since",
    type=Since(),
    help=f"Only syncs started at or after this: {SINCE_HELP}.",
)
@click.option("--limit", type=ROW_LIMIT, default=50, show_default=True)
@database_options
@json_option
def history(
    resource: str | None,
    status: str | None,
    since: dt.datetime | None,
    limit: int,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """Past syncs from sync_history, newest first."""
    with database.open() as store:
        records = store.list_history(resource=resource, status=status, since=since, limit=limit)
        if as_json:
            echo_json([dataclasses.asdict(record) for record in records])
        else:
            _print_history(make_console(), records, store.url)


def _print_history(console: Console, records: list[SyncRecord], where: str) -> None:
    if not records:
        console.print(f"No matching syncs in {where}.")
        return
    table = Table(
        title="Sync history (newest first)",
        caption=where,
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("Started (UTC)", no_wrap=True)
    table.add_column("Resource", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    add_columns(table, "Records", "New", "Upd", "Fail", "ms", justify="right")
    # Whole messages (and sync ids) are one `--json` away; here they must not squeeze the rest.
    table.add_column("Error", max_width=ERROR_WIDTH)
    for record in records:
        table.add_row(
            when(record.sync_start_time),
            record.resource,
            Text(record.sync_status, style=STATUS_STYLES.get(record.sync_status, "")),
            number(record.records_processed),
            number(record.records_created),
            number(record.records_updated),
            number(record.records_failed),
            number(record.duration_ms),
            textwrap.shorten(record.error_message or "", ERROR_WIDTH, placeholder="…"),
        )
    console.print(table)
