"""``sync-obs archive query "SQL"``: DuckDB over the cold files as a table, ``--json`` or ``--csv``.

The views are ``sync_history_cold`` and ``operation_log_cold``, over the files the cold root's
manifest lists and no other. The files a query read are named on stderr, so stdout stays
machine-readable. A bad SQL is one line and exit code 1; a usage error exit code 2.

Examples:
    .. code-block:: console

        $ export SYNC_OBS_COLD_URL=s3://audit/sync-obs
        $ sync-obs archive query "SELECT resource, count(*) AS failures FROM sync_history_cold
              WHERE sync_status = 'failed' GROUP BY resource ORDER BY failures DESC"
        $ sync-obs archive query --from ./cold --csv "SELECT * FROM operation_log_cold" > ops.csv
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import uuid
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.table import Table

from sync_observability.cli.options import OneLineErrorsCommand
from sync_observability.cli.output import make_console, when
from sync_observability.cold import require_extra
from sync_observability.cold.export import COLD_URL_ENV

# A table is for reading: as DuckDB's own shell does, show the first rows and say how many more
# there are. Rendering thousands of rows with rich would also take seconds.
MAX_TABLE_ROWS = 100
COLD_URL_HELP = (
    "The cold root: a local folder or an fsspec URL (s3://bucket/prefix, gs://, az://). "
    "S3 credentials and endpoint come from the usual environment (AWS_ACCESS_KEY_ID, "
    "AWS_ENDPOINT_URL, ...)."
)


@click.command("query", cls=OneLineErrorsCommand)
@click.argument("sql")
@click.option(
    "--from",
    "cold_url",
    envvar=COLD_URL_ENV,
    show_envvar=True,
    metavar="URL",
    help=COLD_URL_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.option(
    "--max-rows",
    type=click.IntRange(min=0),
    default=MAX_TABLE_ROWS,
    show_default=True,
    help="Rows the table shows at most (0: all); --json and --csv print every row.",
)
def query(sql: str, cold_url: str | None, as_json: bool, as_csv: bool, max_rows: int) -> None:
    """Run SQL (DuckDB) over the cold archive's views sync_history_cold and operation_log_cold.

    Only the files listed in the root's _manifest.json are read; the files a query used are
    named on stderr. JSON columns (errors, metadata, cursor_before/after, details) are JSON
    text: use json_extract(metadata, '$.cost'). The SQL runs as given, with your rights: DuckDB
    can read and write local files (COPY ... TO), so this is no sandbox.
    """
    from sync_observability.cold.query import run_query

    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together.")
    if not cold_url or not cold_url.strip():
        raise click.UsageError(f"no cold archive: give --from URL or set {COLD_URL_ENV}")
    require_extra("sync-obs archive query")
    result = run_query(cold_url, sql)
    name_files(result.url, result.files, result.has_manifest)
    if as_json:
        objects = _objects(result.columns, result.rows)
        click.echo(json.dumps(objects, default=_json_value, indent=2, ensure_ascii=False))
    elif as_csv:
        _write_csv(result.columns, result.rows)
    else:
        _print_table(result.columns, result.rows, result.url, max_rows)


def name_files(url: str, files: Sequence[str], has_manifest: bool) -> None:
    """Name the cold files a read used, on stderr (stdout stays machine-readable)."""
    if not has_manifest:
        click.echo(f"cold archive {url} has no manifest yet: no cold data", err=True)
        return
    click.echo(f"read {len(files)} cold file(s) under {url}", err=True)
    for name in files:
        click.echo(f"  {name}", err=True)


def _objects(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _json_value(value: Any) -> Any:
    """What DuckDB returns beyond JSON's types: timestamps as ISO 8601, decimals as numbers."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=_json_value, ensure_ascii=False)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _write_csv(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
    click.echo(out.getvalue(), nl=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return when(value) if value.tzinfo is not None else value.isoformat(sep=" ")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=_json_value, ensure_ascii=False)
    return str(value)


def _print_table(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], url: str, max_rows: int
) -> None:
    console = make_console()
    if not columns:
        console.print("The statement returned no result.")
        return
    # Above the table, not its title: a narrow result would wrap a title letter by letter.
    console.print(f"Cold archive query, {len(rows):,} row{'s' if len(rows) != 1 else ''} ({url})")
    shown = rows if max_rows == 0 else rows[:max_rows]
    table = Table(box=box.SIMPLE_HEAD)
    for index, name in enumerate(columns):
        numeric = any(
            isinstance(row[index], int | float | decimal.Decimal)
            and not isinstance(row[index], bool)
            for row in shown
        )
        table.add_column(name, justify="right" if numeric else "left")
    for row in shown:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)
    if len(shown) < len(rows):
        console.print(
            f"{len(rows) - len(shown):,} more rows not shown: --max-rows 0 shows them all, "
            "--json or --csv print them for a program"
        )
