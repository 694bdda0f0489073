"""``sync-obs roles``: group roles, their grants and per-team row-level security (PostgreSQL).

``create`` (run by a superuser: it creates cluster-wide roles and hands the schema to the owner
group) makes ``sync_observability_reader``, ``sync_observability_writer`` and
``sync_observability_owner`` and their grants on every table, sequence and view of the schema;
rerun it after anything but a migration created tables (migrations grant what they add).
``grant`` / ``revoke`` give login roles those groups; ``restrict`` limits a reading role to some
resources; ``status`` shows all of it. On SQLite each says it does not apply (exit code 2).
See :mod:`sync_observability.storage.roles` for what each role may do.

Examples:
    .. code-block:: console

        $ sync-obs roles create --database-url postgresql://postgres@db/dagster
        $ sync-obs roles grant --writer dagster_code --reader grafana
        $ sync-obs roles restrict analyst_a --resources 'team_a/*' --resources 'shared/*'
        $ sync-obs roles restrict analyst_a --clear
        $ sync-obs roles status --json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from sync_observability.cli.options import DatabaseOption, OneLineErrorsGroup, database_options
from sync_observability.errors import InvalidInputError
from sync_observability.storage import roles as access
from sync_observability.storage.engine import default_database_url, redact

T = TypeVar("T")

# InvalidInputError's field -> the option or argument a user typed it in.
_PARAMS = {
    "reader": "'--reader'",
    "writer": "'--writer'",
    "owner": "'--owner'",
    "resources": "'--resources'",
    "ROLE": "'ROLE'",
    "schema": "'--schema'",
    "database_url": "'--database-url'",
}


def _run(
    database: DatabaseOption,
    fn: Callable[[sa.Connection, str], T],
    what: str,
    *,
    write: bool = True,
    auto_migrate: bool = False,
) -> tuple[T, str]:
    """``fn(connection, schema)`` in one transaction on ``database``; returns its result and
    the database URL (password hidden). Bad input becomes click's exit code 2."""
    url = database.url or default_database_url()
    if sa.make_url(url).get_backend_name() != "postgresql":
        raise click.BadParameter(
            f"{redact(url)!r} is SQLite, which has no roles or row-level security: "
            "sync-obs roles needs PostgreSQL",
            param_hint="'--database-url'",
        )
    try:
        with database.open(auto_migrate=auto_migrate) as store:
            run = store.db.write if write else store.db.read
            return run(lambda conn: fn(conn, database.schema), what), store.url
    except InvalidInputError as error:
        raise click.BadParameter(
            f"{error.value!r} {error.reason}", param_hint=_PARAMS.get(error.field, error.field)
        ) from error


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


@click.group(
    cls=OneLineErrorsGroup,
    short_help="Database roles and row-level security per team (PostgreSQL).",
)
def roles() -> None:
    """Reader, writer and owner roles, and row-level security per team (PostgreSQL)."""


@roles.command()
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the changes as a JSON object.")
def create(database: DatabaseOption, as_json: bool) -> None:
    """Create the three group roles and their grants on every table of the schema.

    Idempotent. Migrates the schema first if needed; then, in one transaction, creates the
    roles that are missing (NOLOGIN), hands the schema and its tables to
    sync_observability_owner, and grants and revokes until the reader has SELECT on every
    table, view and sequence, the writer SELECT, INSERT, UPDATE and DELETE on the tables, and
    nobody else anything. Run it as a superuser.
    """
    if database.schema == "public":  # before migrating anything into it
        raise click.BadParameter(
            "'public': roles grant on every table of the schema: give sync_observability a "
            "schema of its own",
            param_hint="'--schema'",
        )
    changes, where = _run(
        database, access.create_roles, "create sync_observability roles", auto_migrate=True
    )
    if as_json:
        _echo_json({"schema": database.schema, "changes": changes})
        return
    if not changes:
        click.echo(f"roles already set up in schema {database.schema} of {where}: no change")
        return
    click.echo(f"roles set up in schema {database.schema} of {where}:")
    for kind, done in _by_kind(changes).items():
        click.echo(f"  {kind:<22}{len(done):>4}  {_examples(done)}")
    click.echo(
        "next: sync-obs roles grant --writer <Dagster's login> --reader <Grafana's login> ..."
    )


def _by_kind(changes: list[str]) -> dict[str, list[str]]:
    """``roles create``'s changes grouped for a summary (``--json`` lists every one)."""
    kinds = {
        "role ": "roles created",
        "GRANT": "privileges granted",
        "REVOKE": "privileges revoked",
        "policy": "policies",
        "dropped policy": "policies dropped",
        "row-level security": "row-level security",
    }
    grouped: dict[str, list[str]] = {}
    for change in changes:
        if " owned by " in change:
            kind = "ownership"
        else:
            kind = next((k for p, k in kinds.items() if change.startswith(p)), "other")
        grouped.setdefault(kind, []).append(change)
    return grouped


def _examples(changes: list[str], shown: int = 2) -> str:
    more = f" (+{len(changes) - shown} more)" if len(changes) > shown else ""
    return "; ".join(changes[:shown]) + more


def _members(function: Callable[..., list[str]], verb: str) -> Callable[..., None]:
    def command(
        database: DatabaseOption,
        reader: tuple[str, ...],
        writer: tuple[str, ...],
        owner: tuple[str, ...],
        as_json: bool,
    ) -> None:
        wanted = {"reader": reader, "writer": writer, "owner": owner}
        if not any(wanted.values()):
            raise click.UsageError(
                "give at least one of --reader NAME, --writer NAME, --owner NAME"
            )

        def tx(conn: sa.Connection, schema: str) -> dict[str, list[str]]:
            return {g: function(conn, schema, g, list(m)) for g, m in wanted.items() if m}

        changed, _ = _run(database, tx, f"{verb} sync_observability roles")
        if as_json:
            _echo_json(
                {
                    access.GROUP_ROLES[group]: {"changed": changed[group], "given": list(names)}
                    for group, names in wanted.items()
                    if names
                }
            )
            return
        for group, names in wanted.items():
            role = access.GROUP_ROLES[group]
            for name in names:
                if name in changed.get(group, ()):
                    click.echo(f"{verb}ed {role} {'to' if verb == 'grant' else 'from'} {name}")
                elif verb == "grant":
                    click.echo(f"{name} is already a member of {role}")
                else:
                    click.echo(f"{name} was not a member of {role}")

    return command


def _member_options(fn: Callable[..., None]) -> Callable[..., None]:
    for group, what in (
        ("owner", "may run sync-obs migrate"),
        ("writer", "tracks, alerts, reaps, archives: Dagster's code location"),
        ("reader", "reads every table: Grafana, analysts, sync-obs report"),
    ):
        fn = click.option(
            f"--{group}",
            multiple=True,
            metavar="NAME",
            help=f"Login (or group) role made a member of {access.GROUP_ROLES[group]}: {what}. "
            "Repeatable.",
        )(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")(fn)


roles.command(
    "grant",
    help="Make existing roles members of the group roles (GRANT sync_observability_reader TO "
    "NAME). Idempotent.",
)(database_options(_member_options(_members(access.grant, "grant"))))
roles.command(
    "revoke",
    help="Take the group roles back from roles (REVOKE sync_observability_reader FROM NAME). "
    "Idempotent.",
)(database_options(_member_options(_members(access.revoke, "revoke"))))


@roles.command()
@click.argument("role", metavar="ROLE")
@click.option(
    "--resources",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="A resource pattern ROLE may see: * any characters, ? one, e.g. 'team_a/*'. "
    "Repeatable; replaces ROLE's earlier patterns.",
)
@click.option("--clear", is_flag=True, help="Lift ROLE's restriction: it sees every resource.")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def restrict(
    role: str, patterns: tuple[str, ...], clear: bool, database: DatabaseOption, as_json: bool
) -> None:
    """Let ROLE (and its members) see only the rows of the resources matching PATTERNs.

    Turns row-level security on for every table of the schema: ROLE then sees only those
    resources in sync_state, sync_history, the archive, alerts, operation events, watermark
    changes and the roll-ups, and every report and command run as ROLE answers for them only.
    Unrestricted readers see everything; writers and owners are never restricted. With
    --clear, and when no role is restricted any more, row-level security is turned off.
    """
    if clear == bool(patterns):
        raise click.UsageError("give either --resources PATTERN (repeatable) or --clear")

    def tx(conn: sa.Connection, schema: str) -> dict[str, Any]:
        before = access.status(conn, schema)
        changes = access.restrict(conn, schema, role, None if clear else list(patterns))
        after = access.status(conn, schema)
        return {
            "role": role,
            "resources": after.restrictions.get(role, []),
            "was_restricted_to": before.restrictions.get(role, []),
            "row_level_security": after.row_level_security,
            "reader": role in (after.members.get(access.READER) or []),
            "changes": changes,
        }

    result, _ = _run(database, tx, f"restrict role {role}")
    if as_json:
        _echo_json(result)
        return
    if clear:
        click.echo(
            f"{role} is no longer restricted"
            if result["was_restricted_to"]
            else f"{role} was not restricted"
        )
    else:
        click.echo(f"{role} now sees only the resources matching {', '.join(result['resources'])}")
        if not result["reader"]:
            click.echo(
                f"note: {role} is not a member of {access.READER} "
                f"(sync-obs roles grant --reader {role})"
            )
    state = "on" if result["row_level_security"] else "off (no role is restricted)"
    click.echo(f"row-level security in schema {database.schema}: {state}")


@roles.command()
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as a JSON object.")
def status(database: DatabaseOption, as_json: bool) -> None:
    """The group roles and their members, the restricted roles and their patterns, and any
    table still missing its grants (rerun sync-obs roles create)."""
    found, where = _run(database, access.status, "read roles status", write=False)
    if as_json:
        _echo_json(found.as_dict())
        return
    click.echo(f"schema {found.schema} of {where}, owned by {found.schema_owner or '-'}")
    for role, members in found.members.items():
        shown = "(role missing: sync-obs roles create)" if members is None else ", ".join(members)
        click.echo(f"  {role:<28}{shown or '(no members)'}")
    rls = "on" if found.row_level_security else "off"
    click.echo(f"row-level security: {rls}")
    for role, patterns in found.restrictions.items():
        click.echo(f"  {role} sees only {', '.join(patterns)}")
    if found.ungranted:
        click.echo(f"missing grants on {', '.join(found.ungranted)}: rerun sync-obs roles create")
