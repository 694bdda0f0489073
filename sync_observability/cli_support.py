"""What every ``sync-obs`` command shares: database options, ``--since``, ``--json``, tables,
and package errors printed as one line."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console

from sync_observability.errors import SyncObservabilityError
from sync_observability.storage.engine import DEFAULT_SCHEMA, default_database_url
from sync_observability.storage.store import SyncStore
from sync_observability.tracking import utcnow

F = TypeVar("F", bound=Callable[..., Any])

PIPED_WIDTH = 120
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_URL_KEY = "sync_observability.database_url"


def _one_line(ctx: click.Context, error: SyncObservabilityError) -> click.ClickException:
    message = " ".join(str(error).split())
    password = _password(ctx.meta.get(_URL_KEY))
    if password:  # belt and braces: our messages should never carry it anyway
        message = message.replace(password, "***")
    return click.ClickException(message)


class OneLineErrorsGroup(click.Group):
    """A group whose package errors become one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncObservabilityError as error:
            raise _one_line(ctx, error) from error


class OneLineErrorsCommand(click.Command):
    """The same for a command used on its own."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncObservabilityError as error:
            raise _one_line(ctx, error) from error


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return sa.make_url(url).password
    except sa.exc.ArgumentError:
        return None


def database_options(fn: F) -> F:
    """``--database-url`` and ``--schema``, shared by every command."""
    fn = click.option(
        "--schema",
        default=DEFAULT_SCHEMA,
        show_default=True,
        help="PostgreSQL schema holding the tables (ignored on SQLite).",
    )(fn)
    fn = click.option(
        "--database-url",
        metavar="URL",
        default=None,
        help=(
            "sqlite:///path or postgresql://user@host/db. Default: $SYNC_OBS_DATABASE_URL, else "
            "a SQLite file under $DAGSTER_HOME, else ./.sync_observability/sync_observability.db."
        ),
    )(fn)
    return fn


def json_option(fn: F) -> F:
    """``--json``: print a JSON list of objects (timestamps in ISO 8601) instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (a list of objects) instead of a table."
    )(fn)


@contextmanager
def open_store(
    database_url: str | None, schema: str, *, auto_migrate: bool = True, rollups: str = "refresh"
) -> Iterator[SyncStore]:
    """A SyncStore on the given URL or the default one, disposed of afterwards."""
    url = database_url or default_database_url()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_URL_KEY] = url
    store = SyncStore.from_url(url, schema=schema, auto_migrate=auto_migrate, rollups=rollups)
    try:
        yield store
    finally:
        store.dispose()


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


class Since(click.ParamType):
    """An ISO 8601 datetime (UTC when it has no offset) or a duration back from now: 24h, 7d."""

    name = "ISO-DATETIME|DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        match = _DURATION.match(text.lower())
        if match:
            amount, unit = match.groups()
            return utcnow() - dt.timedelta(**{_UNITS[unit]: float(amount)})
        try:
            parsed = parse_iso_datetime(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither an ISO 8601 datetime (2025-11-05T10:30:00Z) nor a "
                "duration (30m, 24h, 7d, 2w)",
                param,
                ctx,
            )
        return parsed.astimezone(dt.timezone.utc)


def parse_iso_datetime(text: str) -> dt.datetime:
    """An ISO 8601 datetime, aware (UTC when it has no offset); ValueError when it is not one."""
    # Python 3.10's fromisoformat does not read a trailing Z.
    parsed = dt.datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text.strip()))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)
