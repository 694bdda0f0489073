"""Engines, the default database URL, transient-error retries and driver-error translation.

Everything dialect-specific about *connecting* lives here; the queries live in ``store.py``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc

from sync_observability.errors import (
    ConfigurationError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    StorageError,
    SyncObservabilityError,
)

log = logging.getLogger("sync_observability")

T = TypeVar("T")

DEFAULT_SCHEMA = "sync_observability"
DATABASE_URL_ENV = "SYNC_OBS_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# SQLSTATEs worth retrying: serialization failure, deadlock, lock timeout, admin shutdown /
# terminated backend, cannot connect now, and the whole connection-exception class (08xxx).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")


def default_database_url(instance: Any = None) -> str:
    """The URL used when none is configured, per DESIGN.md's order of precedence.

    ``SYNC_OBS_DATABASE_URL``, else the Dagster instance's own PostgreSQL when its storage is
    dagster-postgres (the tables then go in their own schema), else a SQLite file under
    ``$DAGSTER_HOME``, else under ``./.sync_observability/``.
    """
    from_env = os.environ.get(DATABASE_URL_ENV)
    if from_env:
        return from_env
    pg_url = _dagster_postgres_url(instance)
    if pg_url:
        return pg_url
    home = os.environ.get("DAGSTER_HOME")
    folder = Path(home) if home else Path.cwd() / ".sync_observability"
    _make_folder(folder)
    return f"sqlite:///{folder / 'sync_observability.db'}"


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            f"cannot create the folder {str(folder)!r} for the SQLite database: {e.strerror}"
        ) from e


def _dagster_postgres_url(instance: Any) -> str | None:
    """The URL dagster-postgres parsed from dagster.yaml, when the instance stores runs there."""
    if instance is None:
        return None
    try:
        from dagster_postgres import PostgresRunStorage
    except ImportError:  # pragma: no cover - dagster-postgres is a dependency
        return None
    storage = getattr(instance, "run_storage", None)
    if isinstance(storage, PostgresRunStorage):
        return storage.postgres_url
    return None


def redact(url: str | sa.URL) -> str:
    """The URL with its password masked (also a ``?password=`` parameter), for logs and errors."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        return "<unparseable database URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def create_engine(url: str, schema: str = DEFAULT_SCHEMA) -> sa.Engine:
    """An Engine set up for concurrent tracking writes on SQLite or PostgreSQL.

    SQLite: WAL journal and a busy timeout so parallel Dagster worker processes can write, and
    every transaction opened with ``BEGIN IMMEDIATE`` (a deferred transaction that later writes
    can fail with "database is locked" without waiting for the busy timeout).
    PostgreSQL: ``search_path`` set to ``schema`` so every statement lands in it.
    """
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError as e:
        raise ConfigurationError(f"cannot parse database URL {redact(url)!r}") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 defaults to psycopg 3; dagster-postgres and we ship psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(f"invalid PostgreSQL schema name {schema!r}")
        return sa.create_engine(
            parsed,
            connect_args={"options": f"-csearch_path={schema}", "application_name": "sync_obs"},
            pool_size=2,
            max_overflow=8,
        )
    raise ConfigurationError(
        f"unsupported database {backend!r} in {redact(url)!r}: use sqlite:/// or postgresql://"
    )


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:":
        _make_folder(Path(url.database).parent)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (SQLAlchemy's recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_transient(error: BaseException) -> bool:
    """Whether a database error is worth retrying: a dropped connection, a lock, a conflict."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        code = getattr(orig, "pgcode", None)
        if code and (code in _PG_TRANSIENT or code.startswith("08")):
            return True
        message = str(orig).lower()
        if any(text in message for text in _SQLITE_TRANSIENT):
            return True
        # psycopg2 reports a refused or closed connection without a SQLSTATE; a wrong database,
        # role or password looks the same but no retry will fix it.
        if (
            isinstance(error, exc.OperationalError)
            and code is None
            and type(orig).__module__.startswith("psycopg2")
            and not _is_misconfigured(message)
        ):
            return True
    return False


_MISCONFIGURED = (
    "does not exist",  # database or role
    "password authentication failed",
    "no pg_hba.conf entry",
    "sslmode",
    "invalid dsn",
)


def _is_misconfigured(message: str) -> bool:
    return any(text in message for text in _MISCONFIGURED)


def translate(error: exc.SQLAlchemyError, what: str) -> SyncObservabilityError:
    """Map a driver/SQLAlchemy error to the package's own hierarchy (message without secrets)."""
    orig = getattr(error, "orig", None)
    detail = str(orig if orig is not None else error).strip().splitlines()[0]
    if isinstance(error, exc.IntegrityError):
        return ConstraintViolationError(f"{what}: the database refused the row: {detail}")
    if isinstance(error, exc.OperationalError) and _is_misconfigured(detail.lower()):
        return ConfigurationError(f"{what}: cannot connect: {detail}")
    if is_transient(error):
        return DatabaseUnavailableError(f"{what}: database unavailable: {detail}")
    return StorageError(f"{what}: {type(orig or error).__name__}: {detail}")


def run_with_retries(
    fn: Callable[[], T], *, what: str, max_retries: int, base_delay: float = 0.05
) -> T:
    """Run a whole transaction, retrying it with jittered exponential backoff on transient errors.

    ``fn`` must open and commit its own transaction, so a retry never sees half of a previous
    attempt. When retries run out the last error is raised as ``DatabaseUnavailableError``.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except exc.SQLAlchemyError as e:
            if not is_transient(e):
                raise translate(e, what) from e
            if attempt >= max_retries:
                raise DatabaseUnavailableError(
                    f"{what}: gave up after {attempt + 1} attempts: "
                    f"{str(getattr(e, 'orig', e)).strip().splitlines()[0]}"
                ) from e
            delay = min(base_delay * 2**attempt, 2.0) * (0.5 + random.random())
            log.warning(
                "sync_observability: transient database error during %s (attempt %d of %d), "
                "retrying in %.2fs: %s",
                what,
                attempt + 1,
                max_retries + 1,
                delay,
                type(getattr(e, "orig", e)).__name__,
            )
            attempt += 1
            time.sleep(delay)
