"""``sync-obs run``: any command (cron, a shell script, a CI step) as a tracked sync.

The logic is :func:`sync_observability.shell.run_tracked`; this module only reads the options.

Examples:
    .. code-block:: console

        $ sync-obs run --resource maintenance/vacuum --type maintenance -- psql -c 'VACUUM ANALYZE'
        $ sync-obs run --resource crm/import --type import --source sftp --target warehouse \\
            -- ./import.sh /data/accounts.csv
"""

from __future__ import annotations

import click

from sync_observability.cli.options import (
    MAX_STORAGE_TIMEOUT_SECONDS,
    DatabaseOption,
    Seconds,
    database_options,
)
from sync_observability.errors import InvalidInputError, SyncAlreadyRunningError
from sync_observability.shell import (
    DEFAULT_KILL_AFTER,
    EXIT_ALREADY_RUNNING,
    OPERATION_TYPES,
    run_tracked,
)
from sync_observability.storage.store import SyncStore
from sync_observability.validation import check_name


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return check_name(param.name or "name", value, optional=True)
    except InvalidInputError as e:
        raise click.BadParameter(e.reason, ctx, param) from e


@click.command(
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command as a tracked sync; exit with its exit code.",
)
@click.option(
    "--resource",
    required=True,
    callback=_name,
    help="The resource the command's syncs are recorded under (sync_state.resource).",
)
@click.option(
    "--type",
    "operation_type",
    type=click.Choice(list(OPERATION_TYPES)),
    default=None,
    help="Seed 004's operation type: kept in the sync's metadata (operation_type) and logged "
    "as one operation_log event (category maintenance, migration or data_import).",
)
@click.option("--source", "source_system", callback=_name, help="sync_history.source_system.")
@click.option("--target", "target_system", callback=_name, help="sync_history.target_system.")
@click.option(
    "--kill-after",
    type=Seconds(max=MAX_STORAGE_TIMEOUT_SECONDS),
    default=DEFAULT_KILL_AFTER,
    show_default=True,
    help="After forwarding SIGINT or SIGTERM, kill the command (SIGKILL) if it has not exited "
    "within this many seconds. A second signal kills it at once.",
)
@database_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    database: DatabaseOption,
    resource: str,
    operation_type: str | None,
    source_system: str | None,
    target_system: str | None,
    kill_after: float,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND as a tracked sync of RESOURCE and exit with its exit code.

    Exit code 0 records success; anything else records failed, with the exit code and the last
    lines of the command's stderr as the error. stdin, stdout and stderr stay the command's.
    SIGINT and SIGTERM are forwarded to it (the sync is then recorded failed). A command that is
    not found exits 127, one that cannot be executed 126, one killed by signal N 128+N.

    When the database cannot be reached the command still runs, untracked, after a warning.
    When the resource is already running (another sync-obs run of it), the command does not
    run: one line on stderr and exit code 75 (EX_TEMPFAIL: try again later); a sync-obs run on
    this host whose process is gone is first marked failed (ORPHANED).

    Put -- before the command: sync-obs run --resource nightly/backup -- ./backup.sh --full
    """

    def open_store() -> SyncStore:
        from sync_observability.storage.engine import default_database_url

        return SyncStore.from_url(
            database.url or default_database_url(),
            schema=database.schema,
            storage_timeout_seconds=database.storage_timeout,
        )

    try:
        exit_code = run_tracked(
            command,
            open_store=open_store,
            resource=resource,
            operation_type=operation_type,
            source_system=source_system,
            target_system=target_system,
            kill_after=kill_after,
        )
    except SyncAlreadyRunningError as refused:
        error = click.ClickException(" ".join(str(refused).split()))
        error.exit_code = EXIT_ALREADY_RUNNING
        raise error from refused
    ctx.exit(exit_code)
