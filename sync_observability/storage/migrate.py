"""Alembic migrations, applied by ``sync-obs migrate`` and automatically on first use.

Two processes starting at the same moment must not both migrate: on PostgreSQL the migration
runs under a transaction-scoped advisory lock, on SQLite inside a ``BEGIN IMMEDIATE``
transaction (the engine's default), so the second waits, then finds the schema at head.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from sync_observability.errors import ConfigurationError

log = logging.getLogger("sync_observability")

VERSION_TABLE = "sync_observability_alembic_version"
# An arbitrary constant shared by every process that migrates these tables.
_ADVISORY_LOCK_KEY = 0x5359_4E43_4F42_53


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, None when never migrated."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _known(revision: str | None) -> bool:
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
        if engine.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        before = current_revision(connection)
        if not _known(before):
            raise ConfigurationError(
                f"the database is at migration {before!r}, newer than this version of "
                f"sync_observability knows (head {head_revision()!r}); upgrade the package"
            )
        if before != head_revision() or revision != "head":
            command.upgrade(alembic_config(connection), revision)
        return before


def ensure_schema(engine: sa.Engine, schema: str) -> None:
    """Migrate if needed; the common case (already at head) costs one read.

    A database already migrated by a *newer* version of the package (a rolling upgrade) is
    used as it is: migrations only add tables, columns and indexes.
    """
    with engine.connect() as connection:
        try:
            current = current_revision(connection.execution_options(readonly=True))
        except sa.exc.DBAPIError:
            current = None  # e.g. the PostgreSQL schema does not exist yet
        connection.rollback()
    if current == head_revision():
        return
    if not _known(current):
        log.warning(
            "sync_observability: the database is at migration %r, newer than this version's "
            "head %r; using it as it is",
            current,
            head_revision(),
        )
        return
    upgrade(engine, schema)
