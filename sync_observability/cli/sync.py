"""``sync-obs status`` and ``sync-obs history``: the sync tables as rich tables or ``--json``.

Examples:
    .. code-block:: console

        $ sync-obs status --json
        $ sync-obs history --resource vantage/accounts --status failed --since 7d
        $ sync-obs history --resource vantage/accounts --include-cold --cold-url s3://audit/sync
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import textwrap
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sync_observability.cli.cold_query import name_files
from sync_observability.cli.options import (
    ROW_LIMIT,
    SINCE_HELP,
    DatabaseOption,
    Since,
    database_options,
    json_option,
)
from sync_observability.cli.output import (
    Column,
    add_columns,
    echo_json,
    fitted_table,
    make_console,
    number,
    when,
)
from sync_observability.clock import utcnow
from sync_observability.cold import require_extra
from sync_observability.cold.export import COLD_URL_ENV
from sync_observability.health import status_overview
from sync_observability.storage.records import SyncRecord, SyncState
from sync_observability.storage.schema import RUN_STATUSES

HEALTH_STYLES = {"red": "bold red", "yellow": "bold yellow", "green": "bold green"}
STATUS_STYLES = {"failed": "red", "running": "cyan", "success": "green", "never_run": "yellow"}
ERROR_WIDTH = 60
RIGHT = {"justify": "right", "no_wrap": True}
NO_WRAP = {"no_wrap": True}


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
    columns = [
        Column("Resource", lambda r: r["resource"], {"no_wrap": True}),
        Column("Status", lambda r: Text(r["status"], style=STATUS_STYLES.get(r["status"], ""))),
        Column("Last run (UTC)", lambda r: when(r["last_run_at"]), {"no_wrap": True}, drop=1),
        Column("Watermark (UTC)", lambda r: when(r["last_sync_time"]), {"no_wrap": True}, 6),
        Column("Age h", lambda r: number(r["hours_since_sync"], "{:,.1f}"), RIGHT, 2),
        Column("Running s", lambda r: number(r["running_seconds"]), RIGHT, 5),
        Column("Records", lambda r: number(r["records_synced"]), RIGHT, 3),
        Column("ms", lambda r: number(r["duration_ms"]), RIGHT, 4),
        Column("Errors", lambda r: str(r["error_count"]), RIGHT, 7),
        Column("Fails", lambda r: str(r["consecutive_failures"]), RIGHT),
        Column("Health", lambda r: Text(r["health"], style=HEALTH_STYLES[r["health"]]), NO_WRAP),
    ]
    table = fitted_table(
        console,
        columns,
        rows,
        title="Sync status",
        caption=where,
        title_justify="left",
        box=box.SIMPLE_HEAD,
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
@click.option(
    "--include-cold",
    is_flag=True,
    help="Also read sync_history_archive and the cold archive (--cold-url), merged newest "
    "first; each row says its tier (hot, archive, cold) and the cold files read are named on "
    "stderr.",
)
@click.option(
    "--cold-url",
    envvar=COLD_URL_ENV,
    show_envvar=True,
    metavar="URL",
    help="The cold archive for --include-cold: a local folder or s3://bucket/prefix (gs://, "
    "az://); credentials from the usual environment.",
)
@database_options
@json_option
def history(
    resource: str | None,
    status: str | None,
    since: dt.datetime | None,
    limit: int,
    include_cold: bool,
    cold_url: str | None,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """Past syncs from sync_history, newest first.

    With --include-cold, also the syncs retention moved to sync_history_archive and those
    exported to the cold archive, one row per sync (the database's copy wins over a cold one).
    """
    if include_cold and not (cold_url and cold_url.strip()):
        raise click.UsageError(f"--include-cold needs --cold-url URL or {COLD_URL_ENV}")
    if include_cold:
        require_extra("sync-obs history --include-cold")
    with database.open() as store:
        records = store.list_history(resource=resource, status=status, since=since, limit=limit)
        if not include_cold:
            if as_json:
                echo_json([dataclasses.asdict(record) for record in records])
            else:
                _print_history(make_console(), records, store.url)
            return
        archived = store.list_archived_history(
            resource=resource, status=status, since=since, limit=limit
        )
        where = store.url
    from sync_observability.cold.query import ColdSource, read_history

    source = ColdSource.open(cold_url)
    table, files = read_history(source, resource=resource, status=status, since=since, limit=limit)
    name_files(source.url, files, source.has_manifest)
    rows = merge_tiers(
        {
            "hot": [dataclasses.asdict(record) for record in records],
            "archive": archived,
            "cold": _cold_rows(table),
        },
        limit,
    )
    if as_json:
        echo_json(rows)
    else:
        _print_history(make_console(), [_record(row) for row in rows], where, rows, source.url)


TIERS = ("hot", "archive", "cold")
"""Where a history row lives, in the order a duplicate is resolved (the database wins)."""


def merge_tiers(tiers: dict[str, list[dict[str, Any]]], limit: int | None) -> list[dict[str, Any]]:
    """History rows of every tier as one list, newest first (start time, then sync id), one row
    per ``sync_id`` (the first tier of :data:`TIERS` holding it wins), each with its ``tier``
    and ``archived_at`` (None for hot rows).

    A sync is in two tiers only for a moment (an export killed between writing a file and
    deleting the rows it holds); the database's copy is the one still authoritative.
    """
    seen: set[str] = set()
    merged = []
    for tier in TIERS:
        for row in tiers.get(tier, ()):
            if row["sync_id"] in seen:
                continue
            seen.add(row["sync_id"])
            merged.append({**row, "archived_at": row.get("archived_at"), "tier": tier})
    merged.sort(key=lambda row: (row["sync_start_time"], row["sync_id"]), reverse=True)
    return merged if limit is None else merged[:limit]


def _cold_rows(table: Any) -> list[dict[str, Any]]:
    """Arrow rows as dicts with JSON decoded and timestamps in ``datetime.timezone.utc``."""
    from sync_observability.cold.layout import JSON_COLUMNS

    rows = table.to_pylist()
    for row in rows:
        for name, value in row.items():
            if value is None:
                continue
            if name in JSON_COLUMNS:
                row[name] = json.loads(value)
            elif isinstance(value, dt.datetime):
                row[name] = value.astimezone(dt.timezone.utc)
    return rows


def _record(row: dict[str, Any]) -> SyncRecord:
    fields = {field.name for field in dataclasses.fields(SyncRecord)}
    return SyncRecord(**{name: value for name, value in row.items() if name in fields})


def _print_history(
    console: Console,
    records: list[SyncRecord],
    where: str,
    tiers: list[dict[str, Any]] | None = None,
    cold_url: str | None = None,
) -> None:
    """The history table; with ``tiers`` (merged rows) a Tier column, and the cold root."""
    if cold_url is not None:
        where = f"{where} + cold archive {cold_url}"
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
    if tiers is not None:
        table.add_column("Tier", no_wrap=True)
    table.add_column("Resource", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    add_columns(table, "Records", "New", "Upd", "Fail", "ms", justify="right")
    # Whole messages (and sync ids) are one `--json` away; here they must not squeeze the rest.
    table.add_column("Error", max_width=ERROR_WIDTH)
    for index, record in enumerate(records):
        tier = [] if tiers is None else [tiers[index]["tier"]]
        table.add_row(
            when(record.sync_start_time),
            *tier,
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
