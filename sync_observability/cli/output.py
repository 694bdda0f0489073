"""How every ``sync-obs`` command prints: JSON with ISO 8601 timestamps, rich consoles of a fixed
width when piped, and table cells (timestamps in UTC, numbers, ``-`` for nothing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

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


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of :func:`fitted_table`: its header, its cell for a row, rich's column options,
    and ``drop``: 0 to show it always, else its rank among the columns left out when the table
    is wider than the terminal (the highest goes first)."""

    header: str
    cell: Callable[[dict[str, Any]], str | Text]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    drop: int = 0


def fitted_table(
    console: Console, columns: Sequence[Column], rows: Sequence[dict[str, Any]], **table: Any
) -> Table:
    """A rich table of ``rows`` that fits ``console``'s width without squeezing cells into "…":
    columns are left out in their ``drop`` order until it does, and the caption names them
    (``--json`` has every column)."""
    cells = [[column.cell(row) for column in columns] for row in rows]
    # The widest cell of each column, in one row: a table as wide as the whole one.
    widest = (
        [max((row[i] for row in cells), key=_cell_width) for i in range(len(columns))]
        if cells
        else []
    )
    shown = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)

    def build(indexes: list[int], data: Sequence[Sequence[str | Text]]) -> Table:
        built = Table(**table)
        for i in indexes:
            built.add_column(columns[i].header, **columns[i].options)
        for row in data:
            built.add_row(*(row[i] for i in indexes))
        return built

    def width(indexes: list[int]) -> int:
        unbounded = console.options.update(max_width=sys.maxsize)
        return Measurement.get(console, unbounded, build(indexes, [widest])).maximum

    while cells and droppable and width(shown) > console.width:
        shown.remove(droppable.pop(0))
    fitted = build(shown, cells)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    if hidden:
        note = f"{', '.join(hidden)}: hidden at {console.width} columns (see --json)"
        fitted.caption = f"{fitted.caption}\n{note}" if fitted.caption else note
    return fitted


def _cell_width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)
