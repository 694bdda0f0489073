"""``sync-obs archive``: run retention from the command line, with a progress bar on a terminal.

Exit codes: 0 when the run finished (a dry run included), 2 when another retention run holds the
lock and this one did nothing or an option is out of range, 1 on an error.

Examples:
    .. code-block:: console

        $ sync-obs archive --dry-run
        $ sync-obs archive --archive-after-days 30 --purge-after-days 180 --json
        $ sync-obs archive export --to s3://audit/sync-obs --older-than-days 365
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sync_observability.cli import cold_query
from sync_observability.cli.options import (
    DAYS,
    ROW_COUNT,
    ROW_LIMIT,
    DatabaseOption,
    OneLineErrorsGroup,
    database_options,
)
from sync_observability.cli.output import make_console
from sync_observability.cold import EXPORT_MODULES, require_extra
from sync_observability.cold.export import (
    COLD_URL_ENV,
    DEFAULT_COLD_BATCH_SIZE,
    DEFAULT_OLDER_THAN_DAYS,
)
from sync_observability.errors import InvalidInputError, SyncObservabilityError
from sync_observability.retention.steps import (
    DEFAULT_ALERTS_AFTER_DAYS,
    DEFAULT_ARCHIVE_AFTER_DAYS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_KEEP_LAST_PER_RESOURCE,
    DEFAULT_PURGE_AFTER_DAYS,
    RetentionPolicy,
    RetentionProgress,
    RetentionResult,
    run_retention,
    table_ages,
)

if TYPE_CHECKING:
    from sync_observability.cold.export import ColdPolicy

EXIT_FINISHED = 0
EXIT_ERROR = 1
EXIT_SKIPPED = 2


def _exit_with_error(
    ctx: click.Context, error: SyncObservabilityError, *, as_json: bool
) -> NoReturn:
    """One line (stderr, or the JSON document on stdout) and exit code 1."""
    message = " ".join(str(error).split())
    if as_json:
        click.echo(json.dumps({"status": "error", "error": message}))
    else:
        click.echo(f"Error: {message}", err=True)
    ctx.exit(EXIT_ERROR)


@click.group(
    "archive",
    cls=OneLineErrorsGroup,
    invoke_without_command=True,
    short_help="Archive old history, purge old rows, export to a cold archive.",
)
@database_options
@click.option(
    "--archive-after-days",
    type=DAYS,
    default=DEFAULT_ARCHIVE_AFTER_DAYS,
    show_default=True,
    help="Move finished sync_history rows older than this into sync_history_archive.",
)
@click.option(
    "--purge-after-days",
    type=DAYS,
    default=DEFAULT_PURGE_AFTER_DAYS,
    show_default=True,
    help="Delete sync_history_archive rows older than this: for good, unless --cold-url "
    "exports them first.",
)
@click.option(
    "--cold-url",
    envvar=COLD_URL_ENV,
    show_envvar=True,
    metavar="URL",
    help="The cold archive (a local folder or s3://bucket/prefix, gs://, az://): archive rows "
    "older than --cold-after-days are exported there as verified Parquet before the purge, as "
    "the retention job does. Without it the purge deletes them for good.",
)
@click.option(
    "--cold-after-days",
    type=DAYS,
    default=DEFAULT_OLDER_THAN_DAYS,
    show_default=True,
    help="With --cold-url: export archive and operation-log rows older than this "
    "(at most --purge-after-days).",
)
@click.option(
    "--alerts-after-days",
    type=DAYS,
    default=DEFAULT_ALERTS_AFTER_DAYS,
    show_default=True,
    help="Delete resolved (and announced) sync_alerts resolved longer ago than this.",
)
@click.option(
    "--ddl-events-after-days",
    type=DAYS,
    default=None,
    help="Delete ddl_events recorded longer ago than this (default: keep them, an audit trail).",
)
@click.option(
    "--batch-size",
    type=ROW_LIMIT,
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows moved or deleted per transaction.",
)
@click.option(
    "--keep-last",
    type=ROW_COUNT,
    default=DEFAULT_KEEP_LAST_PER_RESOURCE,
    show_default=True,
    help="Keep the last N syncs of each resource whatever their age (the sync owning a "
    "resource's watermark is always kept).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what would move and be deleted; change nothing (a missing SQLite file is an "
    "error, not created).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
@click.pass_context
def archive(
    ctx: click.Context,
    database: DatabaseOption,
    archive_after_days: int,
    purge_after_days: int,
    cold_url: str | None,
    cold_after_days: int,
    alerts_after_days: int,
    ddl_events_after_days: int | None,
    batch_size: int,
    keep_last: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Archive old sync history and purge old archive rows and resolved alerts.

    Without a cold archive (--cold-url or SYNC_OBS_COLD_URL) the purge DELETES archive rows
    older than --purge-after-days FOR GOOD. With one, the run does the retention job's three
    tiers: history -> archive, archive rows older than --cold-after-days -> verified Parquet
    files under the cold URL, then the purge.

    Each batch moves its rows in one transaction, so an interrupted run loses and duplicates
    nothing; run it again to finish. Exit code 0 when finished, 2 when another retention run
    holds the lock or an option is out of range, 1 on an error. ``sync-obs archive export``
    moves the oldest archive rows on to Parquet files (the cold tier) on its own.
    """
    if ctx.invoked_subcommand is not None:
        return
    console = make_console()
    cold = None
    if cold_url is not None and cold_url.strip():
        require_extra("sync-obs archive --cold-url", EXPORT_MODULES)
        cold = _cold_policy(ctx, cold_url, cold_after_days, batch_size, dry_run)
    try:
        policy = RetentionPolicy(
            archive_after_days=archive_after_days,
            purge_after_days=purge_after_days,
            table_ages=table_ages(alerts_after_days, ddl_events_after_days),
            batch_size=batch_size,
            dry_run=dry_run,
            keep_last_per_resource=keep_last,
            cold=cold,
        )
    except InvalidInputError as error:
        if error.field != "cold.older_than_days":
            _exit_with_error(ctx, error, as_json=as_json)
        raise click.BadParameter(
            f"{error.value!r}: must be at most --purge-after-days ({purge_after_days}): the "
            "purge would delete archive rows before they went cold",
            ctx,
            param_hint="'--cold-after-days'",
        ) from error
    try:
        with database.open(create=not dry_run) as store:
            where = store.url
            show_bar = console.is_terminal and not as_json and not dry_run
            with _progress_bar(console, enabled=show_bar) as progress:
                result = run_retention(store, policy, progress=progress)
    except SyncObservabilityError as error:
        _exit_with_error(ctx, error, as_json=as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_summary(console, result, where)
    ctx.exit(EXIT_SKIPPED if result.skipped else EXIT_FINISHED)


@archive.command("export")
@database_options
@click.option(
    "--to",
    "url",
    required=True,
    help="The cold root: a local folder or an fsspec URL (s3://bucket/prefix, gs://..., "
    "az://...); credentials come from the environment (AWS_ACCESS_KEY_ID, ...).",
)
@click.option(
    "--older-than-days",
    type=DAYS,
    default=DEFAULT_OLDER_THAN_DAYS,
    show_default=True,
    help="Export (and delete) sync_history_archive and operation_log rows older than this.",
)
@click.option(
    "--purge-cold-after-days",
    type=DAYS,
    default=None,
    help="Also delete whole months of cold files older than this (never part of a month).",
)
@click.option(
    "--batch-size",
    type=ROW_LIMIT,
    default=DEFAULT_COLD_BATCH_SIZE,
    show_default=True,
    help="Rows per file (one verified file and one delete transaction each).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be exported; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
@click.pass_context
def export(
    ctx: click.Context,
    database: DatabaseOption,
    url: str,
    older_than_days: int,
    purge_cold_after_days: int | None,
    batch_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move archive rows older than --older-than-days to Parquet files under --to.

    Each file is read back and verified before its rows leave the database; an interrupted
    export loses nothing and the next one finishes it. Exit code 0 when finished, 2 when
    another retention run holds the lock or an option is out of range, 1 on an error.
    """
    require_extra("sync-obs archive export", EXPORT_MODULES)
    from sync_observability.cold.export import ColdPolicy, export_cold

    console = make_console()
    try:
        policy = ColdPolicy(
            url=url,
            older_than_days=older_than_days,
            purge_cold_after_days=purge_cold_after_days,
            batch_size=batch_size,
            dry_run=dry_run,
        )
    except InvalidInputError as error:
        option = _EXPORT_OPTIONS.get(error.field, error.field)
        reason = error.reason.replace("older_than_days", "--older-than-days")
        raise click.BadParameter(f"{error.value!r}: {reason}", ctx, param_hint=option) from error
    try:
        with database.open(create=not dry_run) as store:
            show_bar = console.is_terminal and not as_json and not dry_run
            with _progress_bar(console, enabled=show_bar) as progress:
                result = export_cold(store, policy, progress=progress)
    except SyncObservabilityError as error:
        _exit_with_error(ctx, error, as_json=as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif result.skipped:
        console.print(f"skipped: {result.message}; nothing was changed")
    else:
        console.print(f"{result.message} in {result.duration_ms / 1000:.1f}s")
    ctx.exit(EXIT_SKIPPED if result.skipped else EXIT_FINISHED)


archive.add_command(cold_query.query)


def _cold_policy(
    ctx: click.Context, url: str, older_than_days: int, batch_size: int, dry_run: bool
) -> ColdPolicy:
    """The cold tier of ``sync-obs archive --cold-url``; a bad URL is a usage error."""
    from sync_observability.cold.export import ColdPolicy

    try:
        return ColdPolicy(
            url=url, older_than_days=older_than_days, batch_size=batch_size, dry_run=dry_run
        )
    except InvalidInputError as error:
        option = {"url": "'--cold-url'", "older_than_days": "'--cold-after-days'"}
        raise click.BadParameter(
            f"{error.value!r}: {error.reason}", ctx, param_hint=option.get(error.field, error.field)
        ) from error


_EXPORT_OPTIONS = {
    "url": "'--to'",
    "older_than_days": "'--older-than-days'",
    "purge_cold_after_days": "'--purge-cold-after-days'",
    "batch_size": "'--batch-size'",
}


@contextmanager
def _progress_bar(console: Console, *, enabled: bool) -> Iterator[RetentionProgress | None]:
    """A ``progress(step, done, planned)`` callback drawing one bar per step, or None."""
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, int] = {}

    def progress(step: str, done: int, planned: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=max(planned, done))
        task = tasks[step]
        bars.update(task, completed=done, total=max(planned, done))

    with bars:
        yield progress


def _print_summary(console: Console, result: RetentionResult, where: str) -> None:
    if result.skipped:
        console.print(f"skipped: {result.message}; nothing was changed")
        return
    title = f"retention of {where}" + (" (dry run: nothing changed)" if result.dry_run else "")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("step")
    table.add_column("into")
    table.add_column("rows older than")
    table.add_column("would move" if result.dry_run else "rows", justify="right")
    table.add_column("batches", justify="right")
    for step in result.steps:
        batches = "-" if result.dry_run else f"{step.batches:,}"
        table.add_row(
            step.name,
            step.into or "-",
            step.before.strftime("%Y-%m-%d %H:%M"),
            f"{step.rows:,}",
            batches,
        )
    console.print(table)
    console.print(f"{result.message} in {result.duration_ms / 1000:.1f}s")
