"""The ``sync-obs`` command: one module per command group, registered on :func:`main` here.

Every command takes ``--database-url`` (default: ``SYNC_OBS_DATABASE_URL``, else a SQLite file
under ``$DAGSTER_HOME`` or ``./.sync_observability/``, as the resource resolves it), ``--schema``
(PostgreSQL only) and ``--storage-timeout`` (``SYNC_OBS_STORAGE_TIMEOUT``, default 30 s). A value
out of range is one line on stderr and exit code 2; errors from sync_observability are one line
and exit code 1; database passwords are never printed. Commands that only read refuse a SQLite
file that does not exist instead of creating it.

Layout: :mod:`.options` (what commands take) and :mod:`.output` (how they print) are shared;
:mod:`.migrate`, :mod:`.sync` (status, history), :mod:`.alerts`, :mod:`.archive`,
:mod:`.report`, :mod:`.watermark`, :mod:`.partition`, :mod:`.roles`, :mod:`.ddl` and
:mod:`.demo` hold one command group each. Dagster, pandas and Alembic are imported inside the
commands that use them.

Examples:
    .. code-block:: console

        $ sync-obs demo --runs 3
        $ sync-obs alerts --status open
        $ sync-obs report dashboard --json
"""

from __future__ import annotations

import logging

import click

# Modules, not their commands: `from .report import report` would hide the module `cli.report`
# behind the function of the same name.
from sync_observability.cli import (
    alerts,
    archive,
    ddl,
    demo,
    migrate,
    partition,
    report,
    roles,
    sync,
    watermark,
)
from sync_observability.cli.options import OneLineErrorsGroup


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


main.add_command(migrate.migrate)
main.add_command(sync.status)
main.add_command(sync.history)
main.add_command(alerts.alerts)
main.add_command(archive.archive)
main.add_command(report.report)
main.add_command(watermark.watermark)
main.add_command(partition.partition)
main.add_command(roles.roles)
main.add_command(ddl.ddl)
main.add_command(demo.demo)

__all__ = ["main"]
