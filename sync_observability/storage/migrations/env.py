"""Alembic environment: always run programmatically with a connection (see ``migrate.py``)."""

from alembic import context

from sync_observability.storage.migrate import VERSION_TABLE
from sync_observability.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
