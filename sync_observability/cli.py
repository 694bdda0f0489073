"""The ``sync-obs`` command: migrate, status, history and demo, as rich tables or ``--json``.

Every command takes ``--database-url`` (default: ``SYNC_OBS_DATABASE_URL``, else a SQLite file
under ``$DAGSTER_HOME`` or ``./.sync_observability/``, as the resource resolves it), ``--schema``
(PostgreSQL only) and ``--storage-timeout`` (``SYNC_OBS_STORAGE_TIMEOUT``, default 30 s). A value
out of range is one line on stderr and exit code 2; errors from sync_observability are one line
and exit code 1; database passwords are never printed. Commands that only read refuse a SQLite
file that does not exist instead of creating it.

Examples:
    .. code-block:: console

        $ sync-obs demo --runs 3
        $ sync-obs status --json
        $ sync-obs history --resource vantage/accounts --status failed --since 7d
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import textwrap
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sync_observability.alerts.cli import alerts as alerts_command
from sync_observability.cli_support import (
    ROW_LIMIT,
    OneLineErrorsGroup,
    Since,
    database_options,
    echo_json,
    json_option,
    make_console,
    number,
    open_store,
    when,
)
from sync_observability.health import status_overview
from sync_observability.partition_cli import partition_command
from sync_observability.report_cli import report as report_command
from sync_observability.retention_cli import archive as archive_command
from sync_observability.storage import migrate as migrations
from sync_observability.storage.engine import default_database_url
from sync_observability.storage.schema import RUN_STATUSES
from sync_observability.storage.store import SyncRecord
from sync_observability.tracking import utcnow
from sync_observability.watermark_cli import watermark as watermark_command

HEALTH_STYLES = {"red": "bold red", "yellow": "bold yellow", "green": "bold green"}
STATUS_STYLES = {"failed": "red", "running": "cyan", "success": "green", "never_run": "yellow"}
# Dagster's console logger on step failures would bury the demo's output; our tables tell it.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
ERROR_WIDTH = 60
MAX_DEMO_RUNS = 1_000


@click.group(cls=OneLineErrorsGroup)
@click.option(
    "-v", "--verbose", is_flag=True, help="Also show retries of transient database errors."
)
@click.version_option(package_name="sync_observability")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Sync state and history of your Dagster syncs, from the sync_observability tables."""
    # Retry warnings would turn a clean one-line error into a page; -v brings them back.
    logger = logging.getLogger("sync_observability")
    previous = logger.level
    logger.setLevel(logging.WARNING if verbose else logging.ERROR)
    ctx.call_on_close(lambda: logger.setLevel(previous))


@main.command()
@database_options
def migrate(database_url: str | None, schema: str, storage_timeout: float) -> None:
    """Create or upgrade the tables (Alembic); prints the revision before and after."""
    with open_store(
        database_url, schema, storage_timeout, create=True, auto_migrate=False
    ) as store:
        before = store.migrate()
        after = store.db.read(migrations.current_revision, "read revision")
        where = store.url if store.dialect == "sqlite" else f"{store.url} (schema {schema})"
        click.echo(f"database:        {where}")
        click.echo(f"revision before: {before or '(none: new database)'}")
        click.echo(f"revision after:  {after}")
        click.echo("already up to date" if before == after else "migrated")


@main.command()
@database_options
@json_option
def status(database_url: str | None, schema: str, storage_timeout: float, as_json: bool) -> None:
    """Every resource's last sync with a red/yellow/green health (seed 001's dashboard).

    Red: the last sync failed, or it has been running for over 30 minutes. Yellow: the
    watermark is over 24 hours old, or the resource never ran. Green: otherwise.
    """
    with open_store(database_url, schema, storage_timeout) as store:
        rows = status_overview(store.list_states(), utcnow())
        if as_json:
            echo_json(rows)
        else:
            _print_status(make_console(), rows, store.url)


def _print_status(console: Console, rows: list[dict[str, Any]], where: str) -> None:
    if not rows:
        console.print(f"No syncs recorded yet in {where}.")
        return
    table = Table(title="Sync status", caption=where, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("Resource", no_wrap=True)
    table.add_column("Status")
    table.add_column("Last sync (UTC)")
    table.add_column("Age h", justify="right")
    table.add_column("Running s", justify="right")
    table.add_column("Records", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("Errors", justify="right")
    table.add_column("Fails", justify="right")
    table.add_column("Health", no_wrap=True)
    for row in rows:
        table.add_row(
            row["resource"],
            Text(row["status"], style=STATUS_STYLES.get(row["status"], "")),
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


@main.command()
@click.option("--resource", help="Only this resource (e.g. vantage/accounts).")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only syncs with this status.")
@click.option(
    "--since",
    type=Since(),
    help="Only syncs started at or after this: an ISO 8601 datetime (UTC if no offset) or a "
    "duration back from now such as 30m, 24h, 7d.",
)
@click.option("--limit", type=ROW_LIMIT, default=50, show_default=True)
@database_options
@json_option
def history(
    resource: str | None,
    status: str | None,
    since: dt.datetime | None,
    limit: int,
    database_url: str | None,
    schema: str,
    storage_timeout: float,
    as_json: bool,
) -> None:
    """Past syncs from sync_history, newest first."""
    with open_store(database_url, schema, storage_timeout) as store:
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
    table.add_column("Records", justify="right")
    table.add_column("New", justify="right")
    table.add_column("Upd", justify="right")
    table.add_column("Fail", justify="right")
    table.add_column("ms", justify="right")
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


@main.command()
@click.option(
    "--runs",
    type=click.IntRange(min=1, max=MAX_DEMO_RUNS),
    default=3,
    show_default=True,
    help="How many times to materialize the example assets.",
)
@database_options
def demo(runs: int, database_url: str | None, schema: str, storage_timeout: float) -> None:
    """Materialize the example Vantage assets a few times, then print the status table.

    Runs on an ephemeral Dagster instance; the syncs are recorded in the database (by default a
    SQLite file, created on first use). About 15% of syncs fail with a simulated API timeout
    (SYNC_OBS_DEMO_FAILURE_RATE); they are recorded and the demo carries on.
    """
    import dagster as dg

    from sync_observability.examples.vantage import vantage_assets
    from sync_observability.tracking import SyncTracker

    console = make_console()
    url = database_url or default_database_url()
    unrecorded = 0
    with open_store(url, schema, storage_timeout, create=True) as store:
        console.print(
            f"Materializing the {len(vantage_assets)} example Vantage assets {runs} time(s).",
            soft_wrap=True,
        )
        console.print(f"Database: {store.url}", soft_wrap=True)
        tracker = SyncTracker(
            database_url=url, schema_name=schema, storage_timeout_seconds=storage_timeout
        )
        for number in range(1, runs + 1):
            started = utcnow()
            result = dg.materialize(
                vantage_assets,
                resources={"sync_tracker": tracker},
                run_config=QUIET_RUN_CONFIG,
                raise_on_error=False,
            )
            mine = [
                record
                for record in store.list_history(since=started, limit=None)
                if record.dagster_run_id == result.run_id
            ]
            unrecorded += _print_run(console, number, runs, mine, result.get_step_failure_events())
        console.print()
        _print_status(console, status_overview(store.list_states(), utcnow()), store.url)
    if unrecorded:
        # Simulated timeouts are recorded syncs; a step that failed before that is a real fault.
        raise click.ClickException(
            f"{unrecorded} step(s) failed without a recorded sync (see above)"
        )
    console.print("Every sync:  sync-obs history", soft_wrap=True)
    console.print(
        "Dagster UI:  dagster dev -w workspace.yaml  (from the repository)", soft_wrap=True
    )


def _print_run(
    console: Console, number: int, runs: int, records: list[SyncRecord], failures: list[Any]
) -> int:
    """Print one demo run's outcome; returns how many failed steps recorded no sync."""
    ok = sum(record.sync_status == "success" for record in records)
    failed = [record for record in records if record.sync_status == "failed"]
    line = f"run {number}/{runs}: {ok} synced, {len(failed)} failed"
    if failed:
        names = ", ".join(
            f"{record.resource} ({record.errors[-1]['code'] if record.errors else 'error'})"
            for record in failed
        )
        line += f": {names}"
    console.print(line, soft_wrap=True)
    unrecorded = len(failures) - len(failed)
    if unrecorded <= 0:
        return 0
    error = failures[0].event_specific_data.error
    while error.cause is not None:  # Dagster wraps the asset's own exception
        error = error.cause
    message = error.message.strip().splitlines()[0]
    console.print(
        f"  {unrecorded} step(s) failed without a recorded sync: {message}", soft_wrap=True
    )
    return unrecorded


main.add_command(alerts_command)
main.add_command(archive_command)
main.add_command(partition_command, name="partition")
main.add_command(report_command, name="report")
main.add_command(watermark_command, name="watermark")


if __name__ == "__main__":
    main()
