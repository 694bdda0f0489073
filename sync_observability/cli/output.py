"""How every ``sync-obs`` command prints: JSON with ISO 8601 timestamps, rich consoles of a fixed
width when piped, and table cells (timestamps in UTC, numbers, ``-`` for nothing).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# Wide enough for the status table (eleven columns, two timestamps) with 26-character names;
# a table only takes the width it needs.
PIPED_WIDTH = 140


def echo_json(rows: Sequence[dict[str, Any]]) -> None:
    """Print rows as a JSON list; datetimes become ISO 8601 strings."""
    click.echo(json.dumps(list(rows), default=_json_default, indent=2, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def make_console() -> Console:
    """A rich console; piped or captured output gets a fixed width instead of 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # 80 columns would squeeze the tables into "…".
        console.width = PIPED_WIDTH
    return console


def when(value: dt.datetime | None) -> str:
    """A timestamp as UTC ``YYYY-MM-DD HH:MM:SS``, or ``-``."""
    return "-" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def number(value: float | None, fmt: str = "{:,}") -> str:
    """A number formatted with ``fmt``, or ``-``."""
    return "-" if value is None else fmt.format(value)


def add_columns(table: Table, *names: str, **options: Any) -> None:
    """Add the columns ``names`` to ``table``, each with ``options`` (``justify="right"``)."""
    for name in names:
        table.add_column(name, **options)
