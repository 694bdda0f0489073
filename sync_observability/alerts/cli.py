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
import json
import os
import re
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sync_observability.errors import SyncObservabilityError
from sync_observability.storage.alert_store import Alert, AlertStore
from sync_observability.storage.engine import DEFAULT_SCHEMA, default_database_url
from sync_observability.storage.store import SyncStore

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_STATUS_STYLES = {"open": "bold red", "resolved": "green"}
_SEVERITY_STYLES = {"critical": "red", "warning": "yellow"}
_PIPED_WIDTH = 140


class _Since(click.ParamType):
    """An ISO 8601 datetime (UTC when it has no offset) or a duration back from now: 24h, 7d."""

    name = "ISO-DATETIME|DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        match = _DURATION.match(text.lower())
        if match:
            amount, unit = match.groups()
            return _utcnow() - dt.timedelta(**{_UNITS[unit]: float(amount)})
        try:
            parsed = dt.datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
        except ValueError:
            self.fail(
                f"{value!r} is neither an ISO 8601 datetime (2025-11-05T10:30:00Z) nor a "
                "duration (30m, 24h, 7d, 2w)",
                param,
                ctx,
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.astimezone(dt.timezone.utc)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@click.command()
@click.option(
    "--status",
    type=click.Choice(["open", "resolved", "all"]),
    default="all",
    show_default=True,
    help="Only open alerts, only resolved ones, or both.",
)
@click.option(
    "--since",
    type=_Since(),
    default="7d",
    show_default=True,
    help="Resolved alerts only when resolved at or after this (open alerts always show): an "
    "ISO 8601 datetime (UTC if no offset) or a duration back from now such as 24h, 7d.",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="sqlite:///path or postgresql://user@host/db. Default: $SYNC_OBS_DATABASE_URL, else a "
    "SQLite file under $DAGSTER_HOME, else ./.sync_observability/sync_observability.db.",
)
@click.option(
    "--schema",
    default=DEFAULT_SCHEMA,
    show_default=True,
    help="PostgreSQL schema holding the tables (ignored on SQLite).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (a list of objects) instead of a table."
)
def alerts(
    status: str,
    since: dt.datetime,
    limit: int,
    database_url: str | None,
    schema: str,
    as_json: bool,
) -> None:
    """Open alerts and recently resolved ones, newest first."""
    try:
        store = SyncStore.from_url(database_url or default_database_url(), schema=schema)
    except SyncObservabilityError as error:
        raise click.ClickException(" ".join(str(error).split())) from error
    try:
        rows = AlertStore(store).list_alerts(
            status=None if status == "all" else status, since=since, limit=limit
        )
        where = store.url
    except SyncObservabilityError as error:
        raise click.ClickException(" ".join(str(error).split())) from error
    finally:
        store.dispose()
    if as_json:
        click.echo(
            json.dumps(
                [dataclasses.asdict(a) for a in rows],
                default=_json_default,
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    _print_alerts(rows, where)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _print_alerts(rows: list[Alert], where: str) -> None:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH
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
            _when(alert.opened_at),
            _when(alert.resolved_at),
            str(alert.notify_count),
            alert.resolution_message
            if alert.status == "resolved" and alert.resolution_message
            else alert.message,
        )
    console.print(table)


__all__ = ["alerts"]
