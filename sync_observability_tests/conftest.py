"""Shared fixtures: every storage test runs once on SQLite and once on PostgreSQL.

PostgreSQL comes from ``SYNC_OBS_TEST_POSTGRES_URL`` (default: the local server). Each test
session gets a fresh database and each test a fresh schema in it. When the server cannot be
reached the PostgreSQL tests are skipped locally and *fail* in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import SyncStore, SyncTracker

POSTGRES_URL = os.environ.get(
    "SYNC_OBS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _admin_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return sa.create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@dataclasses.dataclass(frozen=True)
class Backend:
    """One database to test against: its dialect name, URL and (PostgreSQL) schema."""

    name: str
    url: str
    schema: str = "sync_observability"

    def store(self, **kwargs: Any) -> SyncStore:
        return SyncStore.from_url(self.url, schema=self.schema, **kwargs)

    def tracker(self, **kwargs: Any) -> SyncTracker:
        return SyncTracker(database_url=self.url, schema_name=self.schema, **kwargs)

    def engine(self) -> sa.Engine:
        """A plain engine on the same database, for assertions in raw SQL."""
        from sync_observability.storage.engine import create_engine

        return create_engine(self.url, self.schema)


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (one per xdist worker)."""
    name = f"sync_obs_test_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(POSTGRES_URL)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        message = f"PostgreSQL at {sa.make_url(POSTGRES_URL).render_as_string()} unreachable: {e}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def own_database(url: str, prefix: str, *settings: str) -> Iterator[str]:
    """A PostgreSQL database of its own on ``url``'s server (``ALTER DATABASE ... SET`` each of
    ``settings``), dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for setting in settings:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {setting}'))
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
# The tracking modules also run on a sync_history partitioned by month (sync-obs partition
# enable): they override `backend` with these params (see make_backend).
WITH_PARTITIONED = [
    *BACKENDS,
    pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """The database under test: a SQLite file, or a fresh schema on PostgreSQL."""
    yield from make_backend(request, tmp_path)


def make_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """The body of ``backend``, for modules that override it with :data:`WITH_PARTITIONED`:
    ``postgresql-partitioned`` is a PostgreSQL schema whose sync_history was partitioned."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'sync.db'}")
        return
    url = request.getfixturevalue("postgres_database_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    backend = Backend("postgresql", url, schema)
    if request.param == "postgresql-partitioned":
        from sync_observability.clock import utcnow
        from sync_observability.storage.partitioning import enable_partitioning

        store = backend.store()
        assert enable_partitioning(store, now=utcnow()).converted
        store.dispose()
    yield backend
    engine = _admin_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def store(backend: Backend) -> Iterator[SyncStore]:
    """A migrated SyncStore on the backend under test."""
    s = backend.store()
    yield s
    s.dispose()


@pytest.fixture
def tracker(backend: Backend) -> Iterator[SyncTracker]:
    """A SyncTracker on the backend under test, used outside Dagster or passed to materialize."""
    t = backend.tracker()
    yield t
    if t._store is not None:
        t._store.dispose()


@pytest.fixture(scope="module")
def instance() -> Iterator[Any]:
    """A real, temporary Dagster instance for the module: creating one takes seconds, and tests
    tell their runs apart by run id."""
    import dagster as dg  # not for the tests without Dagster

    with dg.instance_for_test() as instance:
        yield instance
