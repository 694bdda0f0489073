"""The ``sync-obs`` command: one module per command group, registered on :func:`main` here.

Every command takes ``--database-url`` (default: ``SYNC_OBS_DATABASE_URL``, else a SQLite file
under ``$DAGSTER_HOME`` or ``./.sync_observability/``, as the resource resolves it), ``--schema``
(PostgreSQL only) and ``--storage-timeout`` (``SYNC_OBS_STORAGE_TIMEOUT``, default 30 s). A value
out of range is one line on stderr and exit code 2; errors from sync_observability are one line
and exit code 1; database passwords are never printed. Commands that only read refuse a SQLite
file that does not exist instead of creating it.

Layout: :mod:`.options` (what commands take) and :mod:`.output` (how they print) are shared;
:mod:`.migrate`, :mod:`.sync` (status, history), :mod:`.alerts`, :mod:`.archive`,
:mod:`.report`, :mod:`.watermark`, :mod:`.partition`, :mod:`.roles`, :mod:`.ddl`, :mod:`.demo`,
:mod:`.run` and :mod:`.metrics` hold one command group each, imported when its command runs
(:data:`COMMANDS`); Dagster, pandas, Alembic and prometheus_client are imported inside the
commands that use them.

Examples:
    .. code-block:: console

        $ sync-obs demo --runs 3
        $ sync-obs alerts --status open
        $ sync-obs report dashboard --json
"""

from __future__ import annotations

import importlib
import logging

import click

from sync_observability.cli.options import OneLineErrorsGroup

# Each command's module loads when the command runs (or --help lists them all): `sync-obs run`
# does not pay for Dagster, pandas or the retention job (bench/bench_shell_run.py).
COMMANDS = {
    "migrate": "sync_observability.cli.migrate:migrate",
    "status": "sync_observability.cli.sync:status",
    "history": "sync_observability.cli.sync:history",
    "alerts": "sync_observability.cli.alerts:alerts",
    "archive": "sync_observability.cli.archive:archive",
    "report": "sync_observability.cli.report:report",
    "watermark": "sync_observability.cli.watermark:watermark",
    "partition": "sync_observability.cli.partition:partition",
    "roles": "sync_observability.cli.roles:roles",
    "ddl": "sync_observability.cli.ddl:ddl",
    "demo": "sync_observability.cli.demo:demo",
    "run": "sync_observability.cli.run:run",
    "metrics": "sync_observability.cli.metrics:metrics",
}
"""``sync-obs`` command name -> ``module:attribute`` of its click command."""


class LazyCommandsGroup(OneLineErrorsGroup):
    """A group whose commands (:data:`COMMANDS`) are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, attribute = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyCommandsGroup)
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


__all__ = ["COMMANDS", "main"]
