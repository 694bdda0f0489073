"""What every ``sync-obs`` command takes: database options, ``--since``, ``--json``, the ranges
of numeric options, and package errors printed as one line (printing is in :mod:`.output`).

A value out of range is refused by its parameter type (one line, exit code 2) before any
database is opened; an error from the package is one line and exit code 1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from sync_observability.clock import utcnow
from sync_observability.errors import ConfigurationError, SyncObservabilityError
from sync_observability.storage.engine import (
    DEFAULT_SCHEMA,
    DEFAULT_TIMEOUT,
    SUPPORTED_BACKENDS,
    default_database_url,
    redact,
)
from sync_observability.storage.store import SyncStore

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
STORAGE_TIMEOUT_ENV = "SYNC_OBS_STORAGE_TIMEOUT"
DEFAULT_STORAGE_TIMEOUT_SECONDS = DEFAULT_TIMEOUT
MAX_STORAGE_TIMEOUT_SECONDS = 86_400.0

# Numeric options share these ranges: a row count fits the BIGINT both engines compare LIMIT
# with, and a window of a century keeps every date computed from it inside datetime's range.
MAX_ROWS = 2**63 - 1
MAX_DAYS = 36_500
ROW_LIMIT = click.IntRange(min=1, max=MAX_ROWS)
ROW_COUNT = click.IntRange(min=0, max=MAX_ROWS)
DAYS = click.IntRange(min=1, max=MAX_DAYS)
SINCE_HELP = (
    "an ISO 8601 datetime (UTC if no offset) or a duration back from now such as 30m, 24h, 7d"
)
"""What a :class:`Since` option takes, for its help text."""


def _one_line(error: SyncObservabilityError) -> click.ClickException:
    # Our messages carry URLs only through redact(), which hides the password by parsing.
    return click.ClickException(" ".join(str(error).split()))


class _OneLineErrors(click.Command):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncObservabilityError as error:
            raise _one_line(error) from error


class UncutSummaryCommand(click.Command):
    """A command whose summary in its group's command list is its whole first sentence, wrapped
    by click, rather than cut with "..." at the terminal's width."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=max(limit, 1000))


class OneLineErrorsGroup(_OneLineErrors, UncutSummaryCommand, click.Group):
    """A group whose package errors become one line on stderr and exit code 1, and whose
    commands' summaries are never cut."""

    command_class = UncutSummaryCommand


class OneLineErrorsCommand(_OneLineErrors, UncutSummaryCommand):
    """The same for a command used on its own."""


class DatabaseUrl(click.ParamType):
    """A ``sqlite:///`` or ``postgresql://`` URL; refused (password hidden) when it is not one."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            url = sa.make_url(str(value))
            port = url.port  # a port that is not a number fails in make_url already
        except sa.exc.ArgumentError:
            # Unparseable, so the password cannot be told apart: print none of it.
            self.fail(
                "cannot parse it as a database URL (sqlite:///path, postgresql://...)", param, ctx
            )
        except ValueError:  # make_url's int(port)
            self.fail("cannot parse it as a database URL: its port is not a number", param, ctx)
        backend = url.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            self.fail(
                f"unsupported database {backend!r} in {redact(url)!r}: use sqlite:/// or "
                "postgresql://",
                param,
                ctx,
            )
        if port is not None and not 0 < port < 65_536:
            self.fail(f"port {port} out of range 1-65535 in {redact(url)!r}", param, ctx)
        return str(value)


class Seconds(click.FloatRange):
    """A finite number of seconds above 0 (NaN and inf are refused, which FloatRange lets by)."""

    name = "SECONDS"

    def __init__(self, max: float) -> None:
        super().__init__(min=0, min_open=True, max=max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


@dataclasses.dataclass(frozen=True)
class DatabaseOption:
    """Where a command's store lives: ``--database-url``, ``--schema``, ``--storage-timeout``."""

    url: str | None
    schema: str
    storage_timeout: float

    @contextmanager
    def open(
        self, *, create: bool = False, auto_migrate: bool = True, rollups: str = "refresh"
    ) -> Iterator[SyncStore]:
        """A SyncStore on this URL or the default one, disposed of afterwards.

        Args:
            create: whether a missing SQLite file may be created (write commands). Without it a
                missing file is a one-line error and nothing is created, not even its folder.
        """
        url = self.url or default_database_url()
        if not create:
            _refuse_missing_sqlite_file(url)
        store = SyncStore.from_url(
            url,
            schema=self.schema,
            auto_migrate=auto_migrate,
            rollups=rollups,
            storage_timeout_seconds=self.storage_timeout,
        )
        try:
            yield store
        finally:
            store.dispose()


def database_options(fn: F) -> F:
    """``--database-url``, ``--schema`` and ``--storage-timeout``, shared by every command and
    handed to it as one ``database`` argument (a :class:`DatabaseOption`)."""

    @functools.wraps(fn)
    def command(
        *args: Any, database_url: str | None, schema: str, storage_timeout: float, **kwargs: Any
    ) -> Any:
        return fn(*args, database=DatabaseOption(database_url, schema, storage_timeout), **kwargs)

    wrapped: Any = command
    wrapped = click.option(
        "--storage-timeout",
        "storage_timeout",
        type=Seconds(max=MAX_STORAGE_TIMEOUT_SECONDS),
        envvar=STORAGE_TIMEOUT_ENV,
        default=DEFAULT_STORAGE_TIMEOUT_SECONDS,
        show_default=True,
        show_envvar=True,
        help="Give up on the database after this many seconds (retries included) with a "
        "one-line error.",
    )(wrapped)
    wrapped = click.option(
        "--schema",
        default=DEFAULT_SCHEMA,
        show_default=True,
        help="PostgreSQL schema holding the tables (ignored on SQLite).",
    )(wrapped)
    wrapped = click.option(
        "--database-url",
        type=DatabaseUrl(),
        default=None,
        help=(
            "sqlite:///path or postgresql://user@host/db. Default: $SYNC_OBS_DATABASE_URL, else "
            "a SQLite file under $DAGSTER_HOME, else ./.sync_observability/sync_observability.db. "
            "Commands that only read never create a SQLite file: a missing one is an error "
            "(exit code 1)."
        ),
    )(wrapped)
    return wrapped


def json_option(fn: F) -> F:
    """``--json``: print a JSON list of objects (timestamps in ISO 8601) instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (a list of objects) instead of a table."
    )(fn)


def _refuse_missing_sqlite_file(url: str) -> None:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return  # the store reports it, as for any bad URL
    in_memory = parsed.database in (None, "", ":memory:")
    as_uri = str(parsed.query.get("uri", "")).lower() in ("true", "1")
    if parsed.get_backend_name() != "sqlite" or in_memory or as_uri:
        return
    if not Path(parsed.database).is_file():
        # A package error, so that every command prints it its own way (archive --json too).
        raise ConfigurationError(
            f"no SQLite database at {parsed.database!r}: this command only reads and creates "
            "nothing (sync-obs migrate creates one)"
        )


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
            try:
                return utcnow() - dt.timedelta(**{_UNITS[unit]: float(amount)})
            except OverflowError:
                self.fail(f"{value!r} reaches back before the year 1", param, ctx)
        try:
            parsed = parse_iso_datetime(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither an ISO 8601 datetime (2025-11-05T10:30:00Z) nor a "
                "duration (30m, 24h, 7d, 2w)",
                param,
                ctx,
            )
        try:
            return parsed.astimezone(dt.timezone.utc)
        except OverflowError:
            self.fail(f"{value!r} is outside the years 1-9999 in UTC", param, ctx)


def parse_iso_datetime(text: str) -> dt.datetime:
    """An ISO 8601 datetime, aware (UTC when it has no offset); ValueError when it is not one."""
    # Python 3.10's fromisoformat does not read a trailing Z.
    parsed = dt.datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text.strip()))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)
