"""``sync-obs watermark``: show, set and rewind a resource's watermark, with an audit trail.

Every change made here is kept in ``watermark_changes`` with who made it (``--by``, default
the OS user) and why (``--reason``, required). A change is refused while the resource is
running, when it moves backwards without ``--allow-rewind``, beyond now + 5 minutes, and for a
resource that has no ``sync_state`` row unless ``--create`` is given.

Examples:
    .. code-block:: console

        $ sync-obs watermark show vantage/accounts
        $ sync-obs watermark set vantage/accounts 2025-11-01T00:00:00Z \\
              --reason "re-fetch November after the upstream fix" --allow-rewind
        $ sync-obs watermark set vantage/cashflows '{"page": 41}' --cursor --reason "skip page"
        $ sync-obs watermark rewind vantage/accounts --to-sync 3f2a... --reason "bad load"
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import click
from rich import box
from rich.table import Table

from sync_observability.cli.options import (
    ROW_LIMIT,
    DatabaseOption,
    OneLineErrorsGroup,
    database_options,
    json_option,
    parse_iso_datetime,
)
from sync_observability.cli.output import echo_json, make_console, when
from sync_observability.storage.records import WatermarkChange

_KIND_STYLES = {"advance": "green", "set": "cyan", "rewind": "yellow", "refused": "bold red"}


@click.group(
    cls=OneLineErrorsGroup, short_help="Show, set or rewind a resource's watermark (audited)."
)
def watermark() -> None:
    """Show, set or rewind a resource's watermark (every change is audited)."""


@watermark.command()
@click.argument("resource")
@click.option("--limit", type=ROW_LIMIT, default=20, show_default=True)
@database_options
@json_option
def show(
    resource: str,
    limit: int,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """The current watermark of RESOURCE and its recent changes (refused ones too)."""
    with database.open() as store:
        state = store.get_state(resource)
        changes = store.watermark_changes(resource, limit=limit)
    if state is None and not changes:
        raise click.ClickException(f"no resource {resource!r} in sync_state")
    current = {
        "resource": resource,
        "last_sync_time": state.last_sync_time if state else None,
        "cursor": state.cursor if state else None,
        "last_sync_status": state.last_sync_status if state else None,
        "watermark_advanced_at": state.watermark_advanced_at if state else None,
        "syncs_since_advance": state.syncs_since_advance if state else None,
        "changes": [dataclasses.asdict(c) for c in changes],
    }
    if as_json:
        echo_json([current])
        return
    console = make_console()
    console.print(f"[bold]{resource}[/bold]  status {current['last_sync_status'] or '-'}")
    console.print(f"  watermark  {when(current['last_sync_time'])}")
    console.print(f"  cursor     {_json(current['cursor'])}")
    console.print(
        f"  last moved {when(current['watermark_advanced_at'])}, "
        f"{current['syncs_since_advance'] or 0} successful syncs since"
    )
    console.print(_changes_table(changes))


@watermark.command(name="set")
@click.argument("resource")
@click.argument("value")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.option("--by", "changed_by", default=None, help="Who (default: the OS user).")
@click.option("--allow-rewind", is_flag=True, help="Allow a value older than the current one.")
@click.option("--cursor", "as_cursor", is_flag=True, help="VALUE is a JSON cursor, not a time.")
@click.option(
    "--create",
    is_flag=True,
    help="Allow a RESOURCE that never synced (no sync_state row; a misspelt name is refused "
    "without it).",
)
@database_options
@json_option
def set_(
    resource: str,
    value: str,
    reason: str,
    changed_by: str | None,
    allow_rewind: bool,
    as_cursor: bool,
    create: bool,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """Set the watermark of RESOURCE to VALUE (ISO 8601 datetime, UTC if no offset).

    With --cursor, VALUE is a JSON value ('42', '"token"', '{"page": 3}') for the cursor.
    """
    parsed = _parse_cursor(value) if as_cursor else _parse_time(value)
    with database.open(create=create) as store:
        if not create and store.get_state(resource) is None:
            raise click.ClickException(
                f"no resource {resource!r} in sync_state; pass --create to give a new resource "
                "its first watermark"
            )
        change = store.set_watermark(
            resource, parsed, reason=reason, changed_by=changed_by, allow_rewind=allow_rewind
        )
    _done(change, as_json)


@watermark.command()
@click.argument("resource")
@click.option("--to-sync", "sync_id", required=True, help="A successful sync of RESOURCE.")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.option("--by", "changed_by", default=None, help="Who (default: the OS user).")
@database_options
@json_option
def rewind(
    resource: str,
    sync_id: str,
    reason: str,
    changed_by: str | None,
    database: DatabaseOption,
    as_json: bool,
) -> None:
    """Put the watermark of RESOURCE back to what sync SYNC_ID left it at."""
    with database.open() as store:
        change = store.rewind_to_sync(resource, sync_id, reason=reason, changed_by=changed_by)
    _done(change, as_json)


def _done(change: WatermarkChange, as_json: bool) -> None:
    if as_json:
        echo_json([dataclasses.asdict(change)])
        return
    click.echo(
        f"{change.kind}: {change.resource} watermark {when(change.watermark_before)} -> "
        f"{when(change.watermark_after)}, cursor {_json(change.cursor_before)} -> "
        f"{_json(change.cursor_after)} (change {change.change_id} by {change.changed_by})"
    )


def _changes_table(changes: list[WatermarkChange]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="recent changes, newest first")
    for name in ("changed at", "kind", "watermark", "cursor", "sync / by", "reason"):
        table.add_column(name)
    for c in changes:
        table.add_row(
            when(c.changed_at),
            f"[{_KIND_STYLES.get(c.kind, '')}]{c.kind}[/]",
            f"{when(c.watermark_before)} -> {when(c.watermark_after)}",
            f"{_json(c.cursor_before)} -> {_json(c.cursor_after)}",
            c.sync_id or c.changed_by or "-",
            c.reason or "",
        )
    return table


def _json(value: Any) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False)


def _parse_time(text: str) -> dt.datetime:
    try:
        return parse_iso_datetime(text).astimezone(dt.timezone.utc)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 datetime (2025-11-05T10:30:00Z); use --cursor for a "
            "JSON cursor",
            param_hint="VALUE",
        ) from None
    except OverflowError:
        raise click.BadParameter(
            f"{text!r} is outside the years 1-9999 in UTC", param_hint="VALUE"
        ) from None


def _parse_cursor(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not JSON", param_hint="VALUE") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; JSON has none


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400
        raise ValueError(f"{text} is too large")
    return number


__all__ = ["watermark"]
