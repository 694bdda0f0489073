"""``sync-obs ddl``: automatic DDL tracking through PostgreSQL event triggers.

``enable`` (run by a superuser) installs, in the database of ``--database-url``, event
triggers on ``ddl_command_end`` and ``sql_drop`` that record every CREATE, ALTER, DROP, GRANT and
REVOKE in the schema's ``ddl_events``; ``disable`` removes them; ``status`` shows them (seed
004's "verify event triggers are active"). Event triggers are per database: enable tracking in
each database whose DDL you want recorded. On SQLite each says it does not apply (exit code 2).
See :mod:`sync_observability.storage.ddl` for what is and is not recorded.

Examples:
    .. code-block:: console

        $ sync-obs ddl enable --database-url postgresql://postgres@db/warehouse
        $ sync-obs ddl status --json
        $ sync-obs report ddl-history --days 7
        $ sync-obs ddl disable
"""

from __future__ import annotations

import dataclasses
import json

import click
import sqlalchemy as sa

from sync_observability.cli.options import DatabaseOption, OneLineErrorsGroup, database_options
from sync_observability.storage import ddl as tracking
from sync_observability.storage.engine import default_database_url, redact


def _postgres_url(database: DatabaseOption) -> None:
    url = database.url or default_database_url()
    if sa.make_url(url).get_backend_name() != "postgresql":
        raise click.BadParameter(
            f"{redact(url)!r} is SQLite, which has no event triggers: DDL tracking needs "
            "PostgreSQL",
            param_hint="'--database-url'",
        )


@click.group(cls=OneLineErrorsGroup, short_help="Record DDL statements in ddl_events (PostgreSQL).")
def ddl() -> None:
    """Record DDL (CREATE, ALTER, DROP, GRANT, REVOKE) in ddl_events (PostgreSQL)."""


@ddl.command()
@database_options
def enable(database: DatabaseOption) -> None:
    """Install the event triggers that record DDL in this database. Needs a superuser.

    Idempotent: rerunning replaces the trigger functions. Migrates the schema first if needed.
    DDL on the package's own schema, temporary objects and objects an extension creates is
    not recorded; recording never makes a DDL statement fail (a failure is a WARNING).
    """
    _postgres_url(database)
    with database.open(auto_migrate=False) as store:
        # Before migrating: a role that may not create triggers gets that error, not another.
        store.db.read(
            lambda conn: tracking.check_superuser(conn, "sync-obs ddl enable"), "check role"
        )
        store.migrate()
        triggers = store.db.write(
            lambda conn: tracking.enable(conn, database.schema), "enable DDL tracking"
        )
        where = store.url
    click.echo(f"DDL tracking enabled in {where}, recording into {database.schema}.ddl_events:")
    for trigger in triggers:
        click.echo(f"  {trigger.name:<40}{trigger.event:<18}{trigger.enabled}")


@ddl.command()
@database_options
def disable(database: DatabaseOption) -> None:
    """Remove the event triggers and their functions (ddl_events keeps its rows). Needs a
    superuser."""
    _postgres_url(database)
    with database.open(auto_migrate=False) as store:
        removed = store.db.write(
            lambda conn: tracking.disable(conn, database.schema), "disable DDL tracking"
        )
        where = store.url
    if removed:
        click.echo(f"DDL tracking disabled in {where}: removed {', '.join(removed)}")
    else:
        click.echo(f"DDL tracking was not enabled in {where} for schema {database.schema}")


@ddl.command()
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the triggers as a JSON list.")
def status(database: DatabaseOption, as_json: bool) -> None:
    """The event triggers recording DDL in this database: name, event, enabled, function."""
    _postgres_url(database)
    with database.open(auto_migrate=False) as store:
        triggers = store.db.read(
            lambda conn: tracking.status(conn, database.schema), "read DDL tracking status"
        )
        where = store.url
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(t) for t in triggers], indent=2))
        return
    if not triggers:
        click.echo(f"DDL tracking is off in {where} (sync-obs ddl enable, as a superuser)")
        return
    click.echo(f"DDL tracking in {where}:")
    for t in triggers:
        click.echo(f"  {t.name:<40}{t.event:<18}{t.enabled:<10}{t.function}")
