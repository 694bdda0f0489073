"""Alembic migrations, applied by ``sync-obs migrate`` and automatically on first use.

Two processes starting at the same moment must not both migrate: on PostgreSQL the migration
runs under a transaction-scoped advisory lock, on SQLite inside a ``BEGIN IMMEDIATE``
transaction (the engine's default), so the second waits, then finds the schema at head.

Every process that opens a store checks the schema first, so that check is one small query
against :data:`HEAD_REVISION`, a constant: Alembic (about 65 ms to import, 10 ms more to read
its script folder) is loaded only when the revisions differ.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sync_observability.errors import ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("sync_observability")

VERSION_TABLE = "sync_observability_alembic_version"
HEAD_REVISION = "0012"
"""The newest migration shipped (test_migrations checks it against Alembic's head)."""
# An arbitrary constant shared by every process that migrates these tables.
_ADVISORY_LOCK_KEY = 0x5359_4E43_4F42_53


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of the package, as Alembic reads it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, None when never migrated (Alembic's reading)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def stored_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, None when never migrated: one query, no Alembic."""
    if connection.dialect.name == "postgresql":
        exists = sa.text("SELECT to_regclass(:table) IS NOT NULL")
    else:
        exists = sa.text("SELECT count(*) > 0 FROM sqlite_master WHERE name = :table")
    if not connection.execute(exists, {"table": VERSION_TABLE}).scalar_one():
        return None
    rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    return next(iter(rows), None)


def _known(revision: str | None) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is None:
        return True
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: sa.Engine, schema: str, revision: str = "head") -> str | None:
    """Bring the database to ``revision``; returns the revision it was at before."""
    # Statements may outlast the call's budget (an index on a big table); lock waits may not.
    with engine.execution_options(unbounded_statements=True).begin() as connection:
        postgres = engine.dialect.name == "postgresql"
        if postgres:
            # Access control (sync-obs roles): who may migrate, and grants for what it adds.
            from sync_observability.storage import roles

            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
            # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it exists.
            found = sa.text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :schema)")
            if not connection.execute(found, {"schema": schema}).scalar_one():
                roles.check_can_create_schema(connection, schema)
                connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        before = current_revision(connection)
        if not _known(before):
            raise ConfigurationError(
                f"the database is at migration {before!r}, newer than this version of "
                f"sync_observability knows (head {HEAD_REVISION!r}); upgrade the package"
            )
        if before != HEAD_REVISION or revision != "head":
            from alembic import command

            set_up = postgres and roles.prepare_migration(connection, schema)
            command.upgrade(alembic_config(connection), revision)
            if set_up:
                roles.after_migration(connection, schema)
        return before


def ensure_schema(engine: sa.Engine, schema: str, current: str | None) -> None:
    """Migrate a database found at revision ``current`` (from :func:`stored_revision`) if needed.

    A database already migrated by a *newer* version of the package (a rolling upgrade) is
    used as it is: migrations only add tables, columns and indexes.
    """
    if current == HEAD_REVISION:
        return
    if not _known(current):
        log.warning(
            "sync_observability: the database is at migration %r, newer than this version's "
            "head %r; using it as it is",
            current,
            HEAD_REVISION,
        )
        return
    upgrade(engine, schema)
