"""``sync-obs migrate``: create or upgrade the tables to the head Alembic revision.

Examples:
    .. code-block:: console

        $ sync-obs migrate --database-url postgresql://sync@db/dagster
"""

from __future__ import annotations

import click

from sync_observability.cli.options import DatabaseOption, database_options


@click.command(short_help="Create or upgrade the tables (Alembic).")
@database_options
def migrate(database: DatabaseOption) -> None:
    """Create or upgrade the tables (Alembic); prints the revision before and after."""
    # Alembic loads here, when a migration is asked for, not with the CLI.
    from sync_observability.storage import migrate as migrations

    with database.open(create=True, auto_migrate=False) as store:
        before = store.migrate()
        after = store.db.read(migrations.current_revision, "read revision")
        where = (
            store.url if store.dialect == "sqlite" else f"{store.url} (schema {database.schema})"
        )
        click.echo(f"database:        {where}")
        click.echo(f"revision before: {before or '(none: new database)'}")
        click.echo(f"revision after:  {after}")
        click.echo("already up to date" if before == after else "migrated")
