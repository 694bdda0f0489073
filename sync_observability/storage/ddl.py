"""Automatic DDL tracking on PostgreSQL: the event triggers that fill ``ddl_events``.

:func:`enable` installs, in the database the connection is on, two PL/pgSQL functions in the
package's schema and two event triggers calling them:

- ``<schema>_ddl_command_end`` on ``ddl_command_end``: one row per object a CREATE, ALTER,
  GRANT or REVOKE created or changed (``pg_event_trigger_ddl_commands()``; a ``CREATE TABLE``
  with a serial key records its sequence and index too);
- ``<schema>_sql_drop`` on ``sql_drop``: one row per object a DROP removed
  (``pg_event_trigger_dropped_objects()``): the object named, and the tables, views and
  sequences a ``CASCADE`` took with it (not their row types, constraints or TOAST tables).

Event triggers are per database and only a superuser may create them. The functions are
``SECURITY DEFINER`` (owned by that superuser, with a fixed ``search_path``), so any role's DDL
is recorded without granting it anything on ``ddl_events``. The row is written in the DDL's
own transaction: a rolled-back DDL leaves no row.

Decisions where the issue was silent:

- **Never in the way**: each function's body runs in a ``BEGIN ... EXCEPTION WHEN OTHERS``
  block; if recording fails (``ddl_events`` dropped, a constraint, a full disk) the DDL goes on
  and PostgreSQL logs ``WARNING: sync_observability: DDL not recorded: ...``.
- **Not recorded**: DDL on objects in the package's own schema (its migrations, the monthly
  partitions ``sync-obs partition`` adds, the roll-ups): users expect their own DDL, not the
  tool's upkeep, and the sensor would otherwise alert on every migration; temporary objects;
  objects created by an extension's script (the ``CREATE EXTENSION`` itself is recorded);
  commands other than CREATE/ALTER/DROP/GRANT/REVOKE (COMMENT, REFRESH MATERIALIZED VIEW,
  SECURITY LABEL).
- ``ALTER TABLE ... DROP COLUMN`` is one ``ALTER TABLE`` row on the table (its ``sql_drop``
  of the column is not recorded a second time).
- ``statement`` is the client's query text (``current_query()``), cut at 10,000 characters:
  a script sent as one string is recorded whole for each object it touched.
- ``db_session_user`` is ``session_user`` (the login, as seed 004), not a role set later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sqlalchemy as sa

from sync_observability.errors import ConfigurationError
from sync_observability.storage.schema import MAX_STATEMENT_LENGTH

# PostgreSQL identifiers are at most 63 bytes; the trigger names add these to the schema's.
_EVENTS = {"ddl_command_end": "record_ddl_command", "sql_drop": "record_sql_drop"}
_MAX_IDENTIFIER = 63
_ENABLED = {"O": "origin", "D": "disabled", "R": "replica", "A": "always"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EventTrigger:
    """One event trigger of the package, as ``pg_event_trigger`` shows it.

    ``enabled``: PostgreSQL's setting, ``origin`` (fires; the default), ``replica``, ``always``
    or ``disabled``.
    """

    name: str
    event: str
    enabled: str
    function: str


def trigger_name(schema: str, event: str) -> str:
    """The event trigger of ``event`` for the package schema ``schema`` (one per database)."""
    return f"{schema}_{event}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns() -> str:
    return (
        "event_time, command_tag, object_type, object_identity, schema_name, statement, "
        "db_session_user, client_address, application_name, transaction_id"
    )


def _context() -> str:
    """The values every row shares, as a SELECT list after the object's own four."""
    return (
        f"left(current_query(), {MAX_STATEMENT_LENGTH}), session_user, "
        "host(inet_client_addr()), nullif(current_setting('application_name', true), ''), "
        "pg_current_xact_id()::text::bigint"
    )


def _skip(schema: str, schema_column: str, identity_column: str, type_column: str) -> str:
    """The condition that leaves an object out: the package's schema and temporary schemas."""
    # GRANT, REVOKE and schemas have no schema_name: coalesce keeps NULL from hiding them.
    return (
        f"coalesce({schema_column} = {_literal(schema)} "
        f"OR {schema_column} LIKE 'pg\\_temp%' OR {schema_column} = 'pg_toast', false) "
        f"OR coalesce({type_column} = 'schema' "
        f"AND {identity_column} = quote_ident({_literal(schema)}), false)"
    )


def function_sql(schema: str) -> list[str]:
    """The ``CREATE OR REPLACE FUNCTION`` statements of the two trigger functions."""
    table = f"{_quote(schema)}.ddl_events"
    tags = "('CREATE', 'ALTER', 'DROP', 'GRANT', 'REVOKE')"
    warning = "RAISE WARNING 'sync_observability: DDL not recorded: % (%)', SQLERRM, SQLSTATE;"
    header = (
        "RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp AS $body$\n"
    )
    command_end = f"""
CREATE OR REPLACE FUNCTION {_quote(schema)}.{_EVENTS["ddl_command_end"]}() {header}
BEGIN
    IF split_part(tg_tag, ' ', 1) NOT IN {tags} THEN
        RETURN;
    END IF;
    BEGIN
        INSERT INTO {table} ({_columns()})
        SELECT clock_timestamp(), c.command_tag, lower(c.object_type), c.object_identity,
               c.schema_name, {_context()}
        FROM pg_event_trigger_ddl_commands() AS c
        WHERE NOT c.in_extension
          AND NOT ({_skip(schema, "c.schema_name", "c.object_identity", "c.object_type")});
    EXCEPTION WHEN OTHERS THEN
        {warning}
    END;
END
$body$"""
    sql_drop = f"""
CREATE OR REPLACE FUNCTION {_quote(schema)}.{_EVENTS["sql_drop"]}() {header}
BEGIN
    IF split_part(tg_tag, ' ', 1) <> 'DROP' THEN
        RETURN;  -- ALTER TABLE ... DROP COLUMN: recorded as its ALTER TABLE
    END IF;
    BEGIN
        INSERT INTO {table} ({_columns()})
        SELECT clock_timestamp(), tg_tag, d.object_type, d.object_identity, d.schema_name,
               {_context()}
        FROM pg_event_trigger_dropped_objects() AS d
        WHERE NOT d.is_temporary
          AND (d.original OR (d.normal AND d.object_type IN
               ('table', 'view', 'materialized view', 'foreign table', 'sequence')))
          AND NOT ({_skip(schema, "d.schema_name", "d.object_identity", "d.object_type")});
    EXCEPTION WHEN OTHERS THEN
        {warning}
    END;
END
$body$"""
    return [command_end, sql_drop]


def check_schema_name(schema: str) -> None:
    """Refuse a schema whose trigger names would pass PostgreSQL's 63-byte identifier limit."""
    longest = max(len(trigger_name(schema, event).encode()) for event in _EVENTS)
    if longest > _MAX_IDENTIFIER:
        raise ConfigurationError(
            f"schema {schema!r} is too long for DDL tracking: its event trigger names would "
            f"pass PostgreSQL's {_MAX_IDENTIFIER}-byte limit"
        )


def check_superuser(conn: sa.Connection, doing: str) -> None:
    """Refuse ``doing`` (a command's name, for the message) unless the role is a superuser."""
    user, superuser = conn.execute(
        sa.text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    ).one()
    if not superuser:
        raise ConfigurationError(
            f"{doing} needs a PostgreSQL superuser (only superusers can manage event "
            f"triggers) and role {user!r} is not one; run it as a superuser, e.g. "
            "--database-url postgresql://postgres@HOST/DB"
        )


def enable(conn: sa.Connection, schema: str) -> list[EventTrigger]:
    """Install (or replace) the trigger functions and event triggers; returns the triggers.

    Raises:
        ConfigurationError: the connection's role is not a superuser, or ``schema`` is too long.
    """
    check_schema_name(schema)
    check_superuser(conn, "sync-obs ddl enable")
    for statement in function_sql(schema):
        conn.execute(sa.text(statement))  # text() escapes the bodies' % for the driver
    for event, function in _EVENTS.items():
        name = _quote(trigger_name(schema, event))
        conn.exec_driver_sql(f"DROP EVENT TRIGGER IF EXISTS {name}")
        conn.exec_driver_sql(
            f"CREATE EVENT TRIGGER {name} ON {event} EXECUTE FUNCTION {_quote(schema)}.{function}()"
        )
    return status(conn, schema)


def disable(conn: sa.Connection, schema: str) -> list[str]:
    """Remove the event triggers and their functions; returns the names of the triggers removed.

    Raises:
        ConfigurationError: the connection's role is not a superuser.
    """
    check_schema_name(schema)
    check_superuser(conn, "sync-obs ddl disable")
    removed = [t.name for t in status(conn, schema)]
    for event, function in _EVENTS.items():
        conn.exec_driver_sql(f"DROP EVENT TRIGGER IF EXISTS {_quote(trigger_name(schema, event))}")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_quote(schema)}.{function}()")
    return removed


def status(conn: sa.Connection, schema: str) -> list[EventTrigger]:
    """The event triggers of this database whose function lives in ``schema``, by name."""
    rows = conn.execute(
        sa.text(
            "SELECT e.evtname, e.evtevent, e.evtenabled, n.nspname || '.' || p.proname "
            "FROM pg_catalog.pg_event_trigger e "
            "JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :schema ORDER BY e.evtname"
        ),
        {"schema": schema},
    ).all()
    return [
        EventTrigger(name=name, event=event, enabled=_ENABLED.get(enabled, enabled), function=f)
        for name, event, enabled, f in rows
    ]


__all__: Sequence[str] = (
    "EventTrigger",
    "check_schema_name",
    "check_superuser",
    "disable",
    "enable",
    "function_sql",
    "status",
    "trigger_name",
)
