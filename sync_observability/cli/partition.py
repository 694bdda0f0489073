"""``sync-obs partition``: PostgreSQL monthly partitioning of ``sync_history`` (opt-in).

Examples:
    .. code-block:: console

        $ sync-obs partition enable --database-url postgresql://...
        $ sync-obs partition status --json
"""

from __future__ import annotations

import json

import click
import sqlalchemy as sa

from sync_observability.cli.options import DatabaseOption, OneLineErrorsGroup, database_options
from sync_observability.cli.output import make_console
from sync_observability.clock import utcnow
from sync_observability.errors import SyncObservabilityError
from sync_observability.storage import partitioning

MAX_MONTHS_AHEAD = 120  # ten years of empty partitions is already more than anyone needs


@click.group(cls=OneLineErrorsGroup, short_help="Partition sync_history by month (PostgreSQL).")
def partition() -> None:
    """Partition sync_history by month (PostgreSQL; see docs: past ~100 MB)."""


@partition.command("enable")
@database_options
@click.option(
    "--months-ahead",
    type=click.IntRange(min=0, max=MAX_MONTHS_AHEAD),
    default=partitioning.DEFAULT_MONTHS_AHEAD,
    show_default=True,
    help="Create the partitions of this many months after the current one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def enable(
    database: DatabaseOption,
    months_ahead: int,
    as_json: bool,
) -> None:
    """Convert sync_history into a table partitioned by month, keeping every row.

    Takes an ACCESS EXCLUSIVE lock on sync_history while it copies the table: syncs wait.
    Safe to rerun; a partitioned table is left as is.
    """
    try:
        with database.open(create=True) as store:
            result = partitioning.enable_partitioning(
                store, now=utcnow(), months_ahead=months_ahead
            )
    except SyncObservabilityError as e:
        raise click.ClickException(str(e)) from e
    payload = {
        "converted": result.converted,
        "rows": result.rows,
        "partitions": list(result.partitions),
    }
    if as_json:
        click.echo(json.dumps(payload))
    elif result.converted:
        make_console().print(
            f"partitioned sync_history: {result.rows:,} rows in "
            f"{len(result.partitions)} monthly partitions plus a default one"
        )
    else:
        make_console().print("sync_history is already partitioned; future months ensured")


@partition.command("status")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def status(database: DatabaseOption, as_json: bool) -> None:
    """Whether sync_history is partitioned, and its monthly partitions."""
    try:
        with database.open() as store:
            if store.dialect != "postgresql":
                raise click.ClickException("partitioning needs PostgreSQL (SQLite has none)")

            def read(conn: sa.Connection) -> tuple[bool, list[partitioning.Partition]]:
                return partitioning.is_partitioned(conn), partitioning.partitions(conn)

            partitioned, parts = store.db.read(read, "list sync_history partitions")
    except SyncObservabilityError as e:
        raise click.ClickException(str(e)) from e
    names = [p.name for p in parts]
    if as_json:
        click.echo(json.dumps({"partitioned": partitioned, "partitions": names}))
    else:
        click.echo(f"partitioned: {'yes' if partitioned else 'no'}")
        for name in names:
            click.echo(name)
