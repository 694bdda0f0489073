"""``sync-obs demo``: materialize the example Vantage assets a few times and show what they left.

Dagster and the example assets are imported when the demo runs, not when the CLI loads.

Examples:
    .. code-block:: console

        $ sync-obs demo --runs 3
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from rich.console import Console

from sync_observability.cli.options import DatabaseOption, database_options
from sync_observability.cli.output import make_console
from sync_observability.cli.sync import print_status, status_rows
from sync_observability.clock import utcnow
from sync_observability.storage.engine import default_database_url
from sync_observability.storage.records import SyncRecord

# Dagster's console logger on step failures would bury the demo's output; our tables tell it.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
MAX_DEMO_RUNS = 1_000


@click.command(short_help="Materialize the example assets, then print the status.")
@click.option(
    "--runs",
    type=click.IntRange(min=1, max=MAX_DEMO_RUNS),
    default=3,
    show_default=True,
    help="How many times to materialize the example assets.",
)
@database_options
def demo(runs: int, database: DatabaseOption) -> None:
    """Materialize the example Vantage assets a few times, then print the status table.

    Runs on an ephemeral Dagster instance; the syncs are recorded in the database (by default a
    SQLite file, created on first use). About 15% of syncs fail with a simulated API timeout
    (SYNC_OBS_DEMO_FAILURE_RATE); they are recorded and the demo carries on.
    """
    import dagster as dg

    from sync_observability.examples.vantage import vantage_assets
    from sync_observability.tracking import SyncTracker

    console = make_console()
    # The tracker writes where the status table reads, the default database included.
    database = dataclasses.replace(database, url=database.url or default_database_url())
    unrecorded = 0
    with database.open(create=True) as store:
        console.print(
            f"Materializing the {len(vantage_assets)} example Vantage assets {runs} time(s).",
            soft_wrap=True,
        )
        console.print(f"Database: {store.url}", soft_wrap=True)
        tracker = SyncTracker(
            database_url=database.url,
            schema_name=database.schema,
            storage_timeout_seconds=database.storage_timeout,
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
        print_status(console, status_rows(store.list_states(), utcnow()), store.url)
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
