"""Engines, the default database URL, transient-error retries and driver-error translation.

Everything dialect-specific about *connecting* lives here; the queries live in ``store.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
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
from sync_observability.storage.constants import DEFAULT_SCHEMA, DEFAULT_TIMEOUT

log = logging.getLogger("sync_observability")

T = TypeVar("T")

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
DATABASE_URL_ENV = "SYNC_OBS_DATABASE_URL"
MAX_CONNECT_TIMEOUT = 10.0
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "sync_observability_call_deadline", default=None
)
"""The ``time.monotonic()`` deadline of the storage call running in this context, if any."""
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# SQLSTATEs worth retrying: serialization failure, deadlock, lock timeout, statement timeout or
# cancel, admin shutdown / terminated backend, cannot connect now, too many connections, and
# the whole connection-exception class (08xxx).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300"}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_DRIVERS = ("psycopg2", "sqlite3")


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
    # The folder is made when a store opens the file to write (a read creates nothing).
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


def create_engine(
    url: str | sa.URL, schema: str = DEFAULT_SCHEMA, *, timeout_seconds: float = DEFAULT_TIMEOUT
) -> sa.Engine:
    """An Engine set up for concurrent tracking writes on SQLite or PostgreSQL.

    SQLite: WAL journal, and every transaction opened with ``BEGIN IMMEDIATE`` (a deferred
    transaction that later writes can fail with "database is locked" without waiting) after a
    busy timeout set to what is left of the call's time budget.
    PostgreSQL: every transaction starts by setting, for itself only (``SET LOCAL``, which
    PgBouncer in transaction mode accepts, unlike a startup ``options`` parameter),
    ``search_path`` to ``schema`` and ``statement_timeout``/``lock_timeout`` to what is left of
    the call's budget; connecting gives up after ``connect_timeout``. The pool is sized for
    Dagster's one process per step: one kept connection, a few overflow ones.

    On PostgreSQL the same URL, schema and budget give the same Engine for the life of the
    process: a Dagster resource is set up again for every run, step process and sensor tick,
    and an Engine learns its server on its first connection. ``Engine.dispose()`` closes the
    pooled connections and leaves it usable; connections idle for
    :data:`IDLE_RELEASE_SECONDS` are closed (a step that tracks a long sync holds none while
    it works); a forked child starts with empty pools.
    """
    try:
        parsed = sa.make_url(url)
    except (exc.ArgumentError, ValueError) as e:
        raise ConfigurationError(f"cannot parse database URL {redact(url)!r}") from e
    timeout_seconds = check_timeout(timeout_seconds)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigurationError(
            f"unsupported database {backend!r} in {redact(url)!r}: use sqlite:/// or postgresql://"
        )
    if backend == "sqlite":
        return _sqlite_engine(parsed, timeout_seconds)
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg 3; dagster-postgres and we ship psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    check_schema_name(schema)
    key = (parsed.render_as_string(hide_password=False), schema, timeout_seconds)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _postgres_engine(parsed, schema, timeout_seconds)
            _start_idle_release()
    return engine


IDLE_RELEASE_SECONDS = 5.0
"""PostgreSQL connections unused this long are closed."""
_ENGINES: dict[tuple[str, str, float], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()
_LAST_CHECKIN: dict[int, float] = {}
_idle_release_thread: threading.Thread | None = None


def release_idle(engine: sa.Engine, idle_seconds: float = IDLE_RELEASE_SECONDS) -> bool:
    """Close ``engine``'s pooled connections if none is in use and none was for ``idle_seconds``."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool) or pool.checkedout() or not pool.checkedin():
        return False
    if time.monotonic() - _LAST_CHECKIN.get(id(engine), 0.0) < idle_seconds:
        return False
    engine.dispose()
    return True


def _start_idle_release() -> None:
    global _idle_release_thread
    if _idle_release_thread is None:
        _idle_release_thread = threading.Thread(
            target=_release_idle_forever, name="sync_observability-idle-connections", daemon=True
        )
        _idle_release_thread.start()


def _release_idle_forever() -> None:
    while True:
        time.sleep(1.0)
        with _ENGINES_LOCK:
            engines = list(_ENGINES.values())
        for engine in engines:
            with contextlib.suppress(Exception):
                release_idle(engine)


def _after_fork_in_child() -> None:
    # The parent's pooled connections must not be used by the child (SQLAlchemy's recipe), and
    # the parent's thread does not exist here.
    global _idle_release_thread
    _idle_release_thread = None
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    if _ENGINES:
        _start_idle_release()


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_schema_name(schema: str) -> str:
    """A PostgreSQL schema name we can quote safely (any case: it is quoted everywhere)."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    return schema


def check_timeout(seconds: float) -> float:
    """A storage time budget: a finite number of seconds above zero."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds < float("inf")
    ):
        raise ConfigurationError(
            f"invalid storage_timeout_seconds={seconds!r}: must be a number of seconds above 0"
        )
    return float(seconds)


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[float]:
    """Storage calls in the block end within ``seconds`` from now; yields that deadline.

    An enclosing deadline that ends sooner (a sensor tick's) is kept: a call never widens it.
    """
    deadline = time.monotonic() + seconds
    outer = CALL_DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = CALL_DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        CALL_DEADLINE.reset(token)


def budget_left(default: float) -> float:
    """Seconds left of the time budget of the storage call running in this context."""
    deadline = CALL_DEADLINE.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())


def postgres_session_sql(schema: str, seconds_left: float, *, bounded: bool = True) -> str:
    """The statements that open every PostgreSQL transaction: schema and timeouts, local to it.

    ``SET LOCAL`` ends with the transaction, so nothing leaks into a session that PgBouncer hands
    to another client. ``bounded=False`` (long migrations) keeps lock waits bounded but lets
    statements run.
    """
    ms = max(1, int(seconds_left * 1000))
    return (
        f'SET LOCAL search_path = "{schema}"; '
        f"SET LOCAL statement_timeout = {ms if bounded else 0}; "
        f"SET LOCAL lock_timeout = {ms}"
    )


def _postgres_engine(url: sa.URL, schema: str, timeout_seconds: float) -> sa.Engine:
    engine = sa.create_engine(
        url,
        connect_args={
            # libpq's timeout for the whole connection set-up, in whole seconds (2 at least).
            "connect_timeout": max(2, math.ceil(min(timeout_seconds, MAX_CONNECT_TIMEOUT))),
            "application_name": "sync_obs",
        },
        pool_size=1,
        max_overflow=4,
        pool_timeout=timeout_seconds,
    )

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, _record: Any) -> None:
        _LAST_CHECKIN[id(engine)] = time.monotonic()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # no transaction for SET LOCAL to belong to (retention's advisory lock)
        bounded = not options.get("unbounded_statements", False)
        sql = postgres_session_sql(schema, budget_left(timeout_seconds), bounded=bounded)
        conn.exec_driver_sql(sql)

    return engine


def _sqlite_engine(url: sa.URL, timeout_seconds: float) -> sa.Engine:
    if url.database and url.database != ":memory:":
        _make_folder(Path(url.database).parent)
    engine = sa.create_engine(url, connect_args={"timeout": timeout_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (SQLAlchemy's recipe).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A lock held elsewhere is waited for as long as the call's budget allows, no longer.
        busy_ms = max(1, int(budget_left(timeout_seconds) * 1000))
        conn.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_transient(error: BaseException) -> bool:
    """Whether a database error is worth retrying: a dropped connection, a lock, a conflict."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, exc.InterfaceError):
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
    detail = _first_line(error)
    if isinstance(error, exc.IntegrityError):
        return ConstraintViolationError(f"{what}: the database refused the row: {detail}")
    if isinstance(error, exc.OperationalError) and _is_misconfigured(detail.lower()):
        return ConfigurationError(f"{what}: cannot connect: {detail}")
    if is_transient(error):
        return DatabaseUnavailableError(f"{what}: database unavailable: {detail}")
    orig = getattr(error, "orig", None)
    return StorageError(f"{what}: {type(orig or error).__name__}: {detail}")


def as_sqlalchemy_error(error: BaseException) -> exc.SQLAlchemyError | None:
    """``error`` as a SQLAlchemy error: a raw psycopg2/sqlite3 error is wrapped, others None."""
    if isinstance(error, exc.SQLAlchemyError):
        return error
    if isinstance(error, Exception) and type(error).__module__.split(".")[0] in _DRIVERS:
        wrapped = exc.DBAPIError.instance(None, None, error, Exception)
        return wrapped if isinstance(wrapped, exc.SQLAlchemyError) else None
    return None


def is_disconnect(error: exc.SQLAlchemyError) -> bool:
    """Whether the error means the connection is gone (a restarted or unreachable server)."""
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, exc.InterfaceError):
        return True
    code = getattr(error.orig, "pgcode", None)
    return isinstance(error, exc.OperationalError) and (
        (code is None and type(error.orig).__module__.startswith("psycopg2"))
        or (code is not None and (code.startswith("08") or code in ("57P01", "57P02", "57P03")))
    )


def run_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    max_retries: int | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT,
    base_delay: float = 0.05,
    database: str = "the database",
    on_disconnect: Callable[[], None] | None = None,
) -> T:
    """Run a whole transaction, retrying it with jittered backoff on transient errors.

    ``fn`` must open and commit its own transaction, so a retry never sees half of a previous
    attempt. Retries go on until ``timeout_seconds`` is spent (or an enclosing call's deadline,
    whichever is sooner; ``max_retries`` caps their number too), and every attempt's lock waits
    and statements are bounded by what is left (see :func:`create_engine`). Then the last error
    is raised as ``DatabaseUnavailableError`` naming ``database``; any other error is
    translated into the package's own (:func:`translate`). ``on_disconnect`` runs when a
    connection turned out dead, to drop the pool's other connections before the retry.
    """
    started = time.monotonic()
    with call_deadline(timeout_seconds) as deadline:
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as raised:
                error = as_sqlalchemy_error(raised)
                if error is None:
                    raise
            if not is_transient(error):
                raise translate(error, what) from error
            if on_disconnect is not None and is_disconnect(error):
                on_disconnect()
            left = deadline - time.monotonic()
            delay = min(base_delay * 2**attempt, 2.0) * (0.5 + random.random())
            if left <= delay or (max_retries is not None and attempt >= max_retries):
                raise DatabaseUnavailableError(
                    f"{what}: {database} unavailable; gave up after {attempt + 1} attempt"
                    f"{'' if attempt == 0 else 's'} in {time.monotonic() - started:.1f}s "
                    f"(storage_timeout_seconds={timeout_seconds:g}): {_first_line(error)}"
                ) from error
            log.warning(
                "sync_observability: transient database error during %s (attempt %d), "
                "retrying in %.2fs: %s",
                what,
                attempt + 1,
                delay,
                type(getattr(error, "orig", error)).__name__,
            )
            attempt += 1
            time.sleep(delay)


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(orig or error).__name__
