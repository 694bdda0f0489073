"""Database: the one place that runs transactions, for every store.

A store (:class:`~sync_observability.storage.store.SyncStore`, the alert, retention, roll-up and
operation stores) holds queries; it hands each transaction, as a function of a connection, to
its ``Database``, which runs it: one transaction per call, retried whole with jittered backoff
on transient errors until the call's time budget is spent, driver errors translated into the
package's own, and nothing waiting longer than the budget whatever the server does:

- lock waits and statements: ``lock_timeout`` / ``statement_timeout`` set for each transaction
  (PostgreSQL), the busy timeout (SQLite), both to what is left of the budget;
- connecting: libpq's ``connect_timeout``; waiting for a pooled connection: the pool timeout;
- a server that stops answering altogether (frozen, or a network that drops packets): a
  watchdog thread shuts the socket of a transaction that outlives its budget by a grace period,
  so the driver returns with an error instead of waiting for ever.

A connection found dead (the server restarted) drops the whole pool before the retry, and
connections left idle are closed after :data:`~.engine.IDLE_RELEASE_SECONDS`, so a Dagster step that
tracks a long sync does not keep a server connection while it works.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from sync_observability.storage.driver import DriverExecutor
from sync_observability.storage.engine import (
    CALL_DEADLINE,
    DEFAULT_SCHEMA,
    DEFAULT_TIMEOUT,
    call_deadline,
    check_timeout,
    create_engine,
    postgres_session_sql,
    redact,
    run_with_retries,
)

T = TypeVar("T")

WATCHDOG_GRACE_SECONDS = 2.0
"""How long past its budget a PostgreSQL transaction may run before its socket is shut."""
WATCHDOG_POLL_SECONDS = 0.25


class Database:
    """Runs every transaction of the sync_observability tables, within a time budget.

    Args:
        engine: from :func:`sync_observability.storage.engine.create_engine`.
        schema: the PostgreSQL schema of the tables (ignored on SQLite).
        timeout_seconds: the budget of one call (:meth:`read`, :meth:`write`, ...): connect,
            lock waits, statements and retries; then ``DatabaseUnavailableError``.
        max_retries: at most this many retries of a call, besides the budget (None: no cap).

    Examples:
        .. code-block:: python

            db = Database.from_url("sqlite:///sync.db", timeout_seconds=10)
            count = db.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar_one(), "ping")
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout_seconds: float = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.timeout_seconds = check_timeout(timeout_seconds)
        self.max_retries = max_retries
        self.dialect: str = engine.dialect.name
        self.insert: Callable[..., Any] = (
            postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        )
        self._url = redact(engine.url)  # every call's error names it: rendered once
        self._driver: DriverExecutor | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout_seconds: float = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
    ) -> Database:
        """A Database on a new engine for ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
        engine = create_engine(url, schema, timeout_seconds=timeout_seconds)
        return cls(engine, schema=schema, timeout_seconds=timeout_seconds, max_retries=max_retries)

    @property
    def url(self) -> str:
        """The database URL with its password hidden."""
        return self._url

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def prepare(self, statements: Iterable[sa.Executable]) -> None:
        """Have the hot path's statements compiled once per engine, for :meth:`write_hot`.

        PostgreSQL only; each is compiled when first run, and kept with the engine, which
        later stores on the same database reuse.
        """
        if self.dialect != "postgresql":
            return
        statements = tuple(statements)
        driver = _DRIVERS.get(self.engine)
        if driver is None or not driver.prebuilt.issuperset(statements):
            driver = _DRIVERS[self.engine] = DriverExecutor(self.engine, statements)
        self._driver = driver

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every call in the block ends within ``seconds`` from now, all of them together.

        A sensor tick wraps its work in one so that several calls cannot add up past
        Dagster's sensor timeout.
        """
        with call_deadline(check_timeout(seconds)):
            yield

    # -- running transactions --------------------------------------------------------------

    def retry(self, fn: Callable[[], T], what: str, *, max_retries: int | None = None) -> T:
        """Run ``fn`` (which opens and commits its own transaction) within the budget."""
        retries = self.max_retries if max_retries is None else max_retries
        return run_with_retries(
            fn,
            what=what,
            max_retries=retries,
            timeout_seconds=self.timeout_seconds,
            database=self.url,
            on_disconnect=self.dispose,
        )

    def read(self, fn: Callable[[sa.Connection], T], what: str) -> T:
        """Run ``fn(connection)`` in a read-only transaction (``DEFERRED`` on SQLite)."""
        return self.retry(lambda: self._attempt(fn, readonly=True), what)

    def write(
        self,
        fn: Callable[[sa.Connection], T],
        what: str,
        *,
        max_retries: int | None = None,
        unbounded_statements: bool = False,
    ) -> T:
        """Run ``fn(connection)`` in one write transaction, committed when it returns.

        ``max_retries=0`` tries it once (a lock wait worth not repeating).
        ``unbounded_statements`` lets statements run past the budget (migrations, converting a
        table), while lock waits stay bounded by it.
        """
        options = {"unbounded_statements": True} if unbounded_statements else {}
        return self.retry(
            lambda: self._attempt(fn, readonly=False, **options), what, max_retries=max_retries
        )

    def write_hot(self, fn: Callable[[Any], T], what: str) -> T:
        """:meth:`write` for the tracking hot path: on the DB-API cursor where there is one."""
        driver = self._driver
        if driver is None:
            return self.write(fn, what)
        schema = self.schema

        def attempt() -> T:
            deadline = _deadline()
            session = postgres_session_sql(schema, deadline - time.monotonic())
            return driver.transaction(
                fn, session_sql=session, guard=lambda dbapi: _Watch(dbapi, deadline)
            )

        return self.retry(attempt, what)

    def _attempt(self, fn: Callable[[sa.Connection], T], *, readonly: bool, **options: Any) -> T:
        conn = self.engine.connect()
        # An unbounded transaction (converting a table) may outlive the budget: no watchdog;
        # the server's lock_timeout still bounds its waits.
        guard = (
            _Watch(conn.connection.dbapi_connection, _deadline())
            if self.dialect == "postgresql" and not options.get("unbounded_statements")
            else contextlib.nullcontext()
        )
        with guard:
            try:
                if readonly or options:
                    conn = conn.execution_options(readonly=readonly, **options)
                with conn.begin():
                    return fn(conn)
            finally:
                conn.close()


def _deadline() -> float:
    deadline = CALL_DEADLINE.get()
    return time.monotonic() + DEFAULT_TIMEOUT if deadline is None else deadline


class _Watch:
    """Watches one PostgreSQL connection for the length of a ``with`` block (see _Watchdog)."""

    __slots__ = ("_connection", "_key", "_when")

    def __init__(self, dbapi_connection: Any, deadline: float) -> None:
        self._connection = dbapi_connection
        self._when = deadline + WATCHDOG_GRACE_SECONDS
        self._key: int | None = None

    def __enter__(self) -> _Watch:
        try:
            fd = self._connection.fileno()
        except Exception:  # already closed: nothing to watch
            return self
        self._key = _WATCHDOG.watch(self._connection, fd, self._when)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._key is not None:
            _WATCHDOG.unwatch(self._key)


class _Watchdog:
    """Shuts the socket of a PostgreSQL connection whose transaction outlived its deadline.

    One daemon thread for the process, started on first use, looking every
    :data:`WATCHDOG_POLL_SECONDS` (registering costs a dict insert, nothing more). A frozen
    server still accepts and acknowledges TCP traffic in its kernel, so neither the server's
    timeouts nor TCP keepalives fire; shutting the socket makes libpq return ("server closed
    the connection") at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[Any, int, float]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, connection: Any, fd: int, when: float) -> int:
        """Watch ``connection`` (its socket ``fd``) until :meth:`unwatch`; shut it at ``when``."""
        key = next(self._ids)
        with self._lock:
            self._watched[key] = (connection, fd, when)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sync_observability-watchdog", daemon=True
                )
                self._thread.start()
        return key

    def unwatch(self, key: int) -> None:
        """Stop watching (the transaction ended)."""
        with self._lock:
            self._watched.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_POLL_SECONDS)
            now = time.monotonic()
            with self._lock:
                late = [k for k, (_, _, when) in self._watched.items() if when <= now]
                for key in late:
                    connection, fd, _ = self._watched.pop(key)
                    _shut(connection, fd)


def _shut(connection: Any, fd: int) -> None:
    try:
        if getattr(connection, "closed", 1) or connection.fileno() != fd:
            return
        # A duplicate of the descriptor: shutting it down ends the connection for libpq too.
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


_WATCHDOG = _Watchdog()
_DRIVERS: weakref.WeakKeyDictionary[sa.Engine, DriverExecutor] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    # The parent's threads do not exist in a forked child: start afresh there.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


_DRIVERS: weakref.WeakKeyDictionary[sa.Engine, DriverExecutor] = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_after_fork_in_child)
