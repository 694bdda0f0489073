"""Access control on PostgreSQL: three group roles, their grants, and row-level security per team.

Seed 001 splits access in two: everyone may read sync state, only the ETL's service role may
write it (policies ``vantage_sync_state_select_all`` and ``..._{insert|update|delete}_service``).
Here, per schema:

- ``sync_observability_reader``: ``USAGE`` on the schema, ``SELECT`` on its tables, views and
  sequences (partitions of ``sync_history`` excepted: they are read through their parent).
- ``sync_observability_writer``: the reader's ``SELECT`` plus ``INSERT``/``UPDATE``/``DELETE`` on
  the tables and ``USAGE`` on the sequences: what tracking, the sensors, reaping, retention and
  the roll-up refresh need. No ``TRUNCATE``, no DDL, nothing on the migration version table or
  the restrictions table beyond ``SELECT``.
- ``sync_observability_owner``: owns the schema and everything in it; runs the migrations (a
  member migrates as the group, so the objects it creates belong to the group).

The grants are computed from the catalog, never from a list of tables: :func:`apply_access`
reads every relation of the schema and grants, revokes (privileges granted by hand to these
roles or to ``PUBLIC``) and transfers ownership until the schema matches. ``sync-obs roles
create`` runs it, and so does every migration of a schema set up this way, so tables added by
later migrations get their grants and policies in the migration's own transaction. Default
privileges (``ALTER DEFAULT PRIVILEGES FOR ROLE sync_observability_owner``) give the writer the
tables the owner creates outside migrations (the monthly partitions); the reader gets none that
way, so that a partition created later is never readable directly, unfiltered.

Row-level security is on only while a role is restricted (``sync-obs roles restrict``); then
every table of the schema (but the migration version table) has RLS enabled with seed 001's
policies, named after its table (``sync_state_select_all`` to ``PUBLIC``,
``sync_state_{insert|update|delete}_service`` to the writer), and one restrictive policy
``<table>_select_restricted`` applying to the restricted roles only:

- a table with a ``resource`` column (found in the catalog): only the rows whose resource
  matches one of the patterns of the restricted roles the current user belongs to;
- ``sync_role_restrictions``: the current user's own rows;
- any other table (the hourly roll-ups, which sum every resource, their state and their list
  of pending runs): no row. Reports then read ``sync_history`` itself, through its policy.

The patterns live in ``sync_role_restrictions`` (role, pattern, the pattern as SQL ``LIKE``); the
policy reads them once per query (an ``InitPlan``). The table owner (and members of the owner
group) and superusers bypass RLS; roles that may write or own are never restricted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from sync_observability.errors import ConfigurationError, InvalidInputError
from sync_observability.storage.schema import metadata
from sync_observability.validation import check_name

READER = "sync_observability_reader"
WRITER = "sync_observability_writer"
OWNER = "sync_observability_owner"
GROUP_ROLES = {"reader": READER, "writer": WRITER, "owner": OWNER}
"""The group roles, by the name ``sync-obs roles grant`` uses (``--reader`` ...)."""
RESTRICTIONS_TABLE = "sync_role_restrictions"
VERSION_TABLE = "sync_observability_alembic_version"  # as in migrate.py (which imports us)
MAX_ROLE_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are truncated, not refused
SETUP_FIRST = "run `sync-obs roles create` first"

_COMMENTS = {
    READER: "sync_observability: read the sync tables (SELECT)",
    WRITER: "sync_observability: track, alert, reap, retain (SELECT, INSERT, UPDATE, DELETE)",
    OWNER: "sync_observability: owns the schema, runs sync-obs migrate",
}
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
_SEQUENCE_PRIVILEGES = ("SELECT", "USAGE")
_KEYWORD = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}
_PUBLIC = "PUBLIC"


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# -- input ------------------------------------------------------------------------------------


def check_role_name(field: str, name: Any) -> str:
    """A role name as PostgreSQL stores it: 1 to 63 bytes, no NUL; kept verbatim (case too)."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError(field, name, "must be a role name")
    if "\x00" in name:
        raise InvalidInputError(field, name, "must not contain a NUL character")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ROLE_NAME_BYTES:
        raise InvalidInputError(field, name, f"is longer than {MAX_ROLE_NAME_BYTES} bytes")
    return name


def resource_like(pattern: str) -> str:
    """A resource pattern (``*`` any characters, ``?`` one, anything else itself) as SQL
    ``LIKE`` with its default escape character, backslash.

    Examples:
        >>> resource_like("team_a/*")
        'team\\\\_a/%'
    """
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def resource_matches(resource: str, patterns: Iterable[str]) -> bool:
    """Whether ``resource`` matches one of ``patterns`` as the restriction policies decide."""
    return any(
        re.fullmatch(
            "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
            resource,
            re.DOTALL,
        )
        for pattern in patterns
    )


def check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """Resource patterns: at least one, each a valid resource name (``*`` and ``?`` allowed)."""
    if not patterns:
        raise InvalidInputError("resources", list(patterns), "give at least one pattern")
    checked = [check_name("resources", pattern) for pattern in patterns]
    return tuple(dict.fromkeys(p for p in checked if p is not None))


# -- the catalog --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Relation:
    """A table, view or sequence of the schema, as the catalog describes it."""

    name: str
    kind: str  # pg_class.relkind: r, p, v, m, f, S
    partition: bool
    owner: str
    row_security: bool
    has_resource: bool
    owned_by_table: bool  # a sequence owned by a column: it follows its table's owner


_RELATIONS = sa.text(
    """
    SELECT c.relname, c.relkind, c.relispartition, o.rolname, c.relrowsecurity,
           EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid
                   AND a.attname = 'resource' AND a.attnum > 0 AND NOT a.attisdropped),
           EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE c.relkind = 'S'
                   AND d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
    WHERE c.relnamespace = to_regnamespace(:schema) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    ORDER BY c.relname
    """
)
# Privileges held by our group roles and PUBLIC (grantee 0), per relation.
_ACL = sa.text(
    """
    SELECT c.relname, coalesce(g.rolname, 'PUBLIC'), a.privilege_type
    FROM pg_catalog.pg_class c
    CROSS JOIN LATERAL aclexplode(c.relacl) AS a
    LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
    WHERE c.relnamespace = to_regnamespace(:schema) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND (a.grantee = 0 OR g.rolname IN (:reader, :writer))
    """
)
_SCHEMA_ACL = sa.text(
    """
    SELECT coalesce(g.rolname, 'PUBLIC'), a.privilege_type
    FROM pg_catalog.pg_namespace n
    CROSS JOIN LATERAL aclexplode(n.nspacl) AS a
    LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
    WHERE n.nspname = :schema AND (a.grantee = 0 OR g.rolname IN (:reader, :writer))
    """
)
_POLICIES = sa.text(
    """
    SELECT c.relname, p.polname,
           ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE (SELECT rolname FROM pg_catalog.pg_roles
                                                           WHERE oid = r) END
                 FROM unnest(p.polroles) AS r ORDER BY 1)
    FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
    WHERE c.relnamespace = to_regnamespace(:schema)
    """
)
_ME = sa.text(
    "SELECT current_user, rolsuper, rolcreaterole FROM pg_catalog.pg_roles "
    "WHERE rolname = current_user"
)


def _relations(conn: sa.Connection, schema: str) -> list[Relation]:
    return [Relation(*row) for row in conn.execute(_RELATIONS, {"schema": schema})]


def _acl(conn: sa.Connection, schema: str) -> dict[tuple[str, str], set[str]]:
    """``{(relation, grantee): privileges}`` for the reader, the writer and PUBLIC."""
    acl: dict[tuple[str, str], set[str]] = {}
    for name, role, privilege in conn.execute(
        _ACL, {"schema": schema, "reader": READER, "writer": WRITER}
    ):
        acl.setdefault((name, role), set()).add(privilege)
    return acl


def _existing_roles(conn: sa.Connection, names: Iterable[str]) -> set[str]:
    rows = conn.execute(
        sa.text("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(:names)"),
        {"names": list(names)},
    )
    return set(rows.scalars())


def _schema_owner(conn: sa.Connection, schema: str) -> str | None:
    return conn.execute(
        sa.text(
            "SELECT o.rolname FROM pg_catalog.pg_namespace n "
            "JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner WHERE n.nspname = :schema"
        ),
        {"schema": schema},
    ).scalar()


def is_set_up(conn: sa.Connection, schema: str) -> bool:
    """Whether ``sync-obs roles create`` has run on ``schema`` (the owner group owns it)."""
    return _schema_owner(conn, schema) == OWNER


def _restrictions_exist(conn: sa.Connection, schema: str) -> bool:
    return (
        conn.execute(
            sa.text("SELECT to_regclass(:name)"),
            {"name": f"{quote(schema)}.{RESTRICTIONS_TABLE}"},
        ).scalar()
        is not None
    )


def _restricted_roles(conn: sa.Connection, schema: str) -> list[str]:
    if not _restrictions_exist(conn, schema):
        return []
    return list(
        conn.execute(
            sa.text(
                f"SELECT DISTINCT r.role_name FROM {quote(schema)}.{RESTRICTIONS_TABLE} r "
                "JOIN pg_catalog.pg_roles g ON g.rolname = r.role_name ORDER BY 1"
            )
        ).scalars()
    )


# -- applying the desired state ---------------------------------------------------------------


def _desired_privileges(relation: Relation) -> dict[str, set[str]]:
    """What the reader, the writer and PUBLIC should hold on ``relation``."""
    if relation.kind == "S":
        return {READER: {"SELECT"}, WRITER: set(_SEQUENCE_PRIVILEGES), _PUBLIC: set()}
    special = relation.name in (VERSION_TABLE, RESTRICTIONS_TABLE)
    writable = relation.kind in ("r", "p", "f") and not special
    return {
        # Partitions are read through their parent (and its policies), never directly.
        READER: set() if relation.partition else {"SELECT"},
        WRITER: set(_TABLE_PRIVILEGES) if writable else {"SELECT"},
        _PUBLIC: set(),
    }


def _grantee(role: str) -> str:
    return _PUBLIC if role == _PUBLIC else quote(role)


def _policy_name(table: str, suffix: str) -> str:
    # Identifiers are cut at 63 bytes by the server: cut them here so they compare equal.
    return f"{table[: MAX_ROLE_NAME_BYTES - len(suffix) - 1]}_{suffix}"


def _restricted_using(schema: str, relation: Relation) -> str:
    member = "pg_catalog.pg_has_role(current_user, g.oid, 'USAGE')"
    if relation.name == RESTRICTIONS_TABLE:
        return (
            f"EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = role_name AND {member})"
        )
    if relation.has_resource:
        return (
            "resource LIKE ANY (ARRAY(SELECT r.like_pattern "
            f"FROM {quote(schema)}.{RESTRICTIONS_TABLE} r "
            f"JOIN pg_catalog.pg_roles g ON g.rolname = r.role_name WHERE {member}))"
        )
    return "false"


def _policies(
    schema: str, relation: Relation, restricted: list[str]
) -> dict[str, tuple[tuple[str, ...], str]]:
    """``{policy name: (its roles, sorted; the CREATE POLICY statement)}`` for ``relation``."""
    table = f"{quote(schema)}.{quote(relation.name)}"
    policies: dict[str, tuple[tuple[str, ...], str]] = {}

    def add(suffix: str, roles: list[str], clause: str, *, restrictive: bool = False) -> None:
        name = _policy_name(relation.name, suffix)
        kind = "AS RESTRICTIVE " if restrictive else ""
        to = ", ".join(_grantee(r) for r in roles)
        policies[name] = (
            tuple(sorted(roles)),
            f"CREATE POLICY {quote(name)} ON {table} {kind}{clause.format(to=to)}",
        )

    add("select_all", [_PUBLIC], "FOR SELECT TO {to} USING (true)")
    if relation.name != RESTRICTIONS_TABLE:
        add("insert_service", [WRITER], "FOR INSERT TO {to} WITH CHECK (true)")
        add("update_service", [WRITER], "FOR UPDATE TO {to} USING (true) WITH CHECK (true)")
        add("delete_service", [WRITER], "FOR DELETE TO {to} USING (true)")
    if restricted:
        using = _restricted_using(schema, relation)
        add(
            "select_restricted",
            restricted,
            f"FOR SELECT TO {{to}} USING ({using})",
            restrictive=True,
        )
    return policies


def apply_access(conn: sa.Connection, schema: str, *, setup: bool = False) -> list[str]:
    """Make ``schema``'s ownership, grants, policies and RLS what this module describes.

    Idempotent: statements run only where the catalog differs, and the changes are returned as
    lines (``GRANT SELECT ON sync_state TO sync_observability_reader``); none on a rerun.
    ``setup`` (``roles create``): also the default privileges. Needs the privileges of the
    current owner of every relation and of the owner group (a superuser, or a member of both).
    """
    changes: list[str] = []

    def run(sql: str, change: str) -> None:
        conn.exec_driver_sql(sql)
        changes.append(change)

    s = quote(schema)
    if _schema_owner(conn, schema) != OWNER:
        run(f"ALTER SCHEMA {s} OWNER TO {quote(OWNER)}", f"schema {schema} owned by {OWNER}")
    relations = _relations(conn, schema)
    for relation in relations:
        if relation.owner != OWNER and not relation.owned_by_table:
            keyword = _KEYWORD.get(relation.kind, "SEQUENCE")
            run(
                f"ALTER {keyword} {s}.{quote(relation.name)} OWNER TO {quote(OWNER)}",
                f"{relation.name} owned by {OWNER}",
            )
    # Schema: USAGE for both, nothing else for them or PUBLIC (no CREATE).
    held: dict[str, set[str]] = {}
    for role, privilege in conn.execute(
        _SCHEMA_ACL, {"schema": schema, "reader": READER, "writer": WRITER}
    ):
        held.setdefault(role, set()).add(privilege)
    for role in (READER, WRITER, _PUBLIC):
        want = {"USAGE"} if role != _PUBLIC else set()
        for privilege in sorted(want - held.get(role, set())):
            run(
                f"GRANT {privilege} ON SCHEMA {s} TO {_grantee(role)}",
                f"GRANT {privilege} ON SCHEMA {schema} TO {role}",
            )
        for privilege in sorted(held.get(role, set()) - want):
            run(
                f"REVOKE {privilege} ON SCHEMA {s} FROM {_grantee(role)}",
                f"REVOKE {privilege} ON SCHEMA {schema} FROM {role}",
            )
    # Relations: exactly the desired privileges for the reader, the writer and PUBLIC.
    acl = _acl(conn, schema)
    for relation in relations:
        keyword = "SEQUENCE" if relation.kind == "S" else "TABLE"
        target = f"{keyword} {s}.{quote(relation.name)}"
        for role, want in _desired_privileges(relation).items():
            have = acl.get((relation.name, role), set())
            if want - have:
                privileges = ", ".join(sorted(want - have))
                run(
                    f"GRANT {privileges} ON {target} TO {_grantee(role)}",
                    f"GRANT {privileges} ON {relation.name} TO {role}",
                )
            if have - want:
                privileges = ", ".join(sorted(have - want))
                run(
                    f"REVOKE {privileges} ON {target} FROM {_grantee(role)}",
                    f"REVOKE {privileges} ON {relation.name} FROM {role}",
                )
    if setup:
        # Idempotent in PostgreSQL itself; the writer gets what the owner creates later.
        prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote(OWNER)} IN SCHEMA {s}"
        conn.exec_driver_sql(
            f"{prefix} GRANT {', '.join(_TABLE_PRIVILEGES)} ON TABLES TO {quote(WRITER)}"
        )
        conn.exec_driver_sql(f"{prefix} GRANT USAGE, SELECT ON SEQUENCES TO {quote(WRITER)}")
    changes += _apply_policies(conn, schema, relations)
    return changes


def _apply_policies(conn: sa.Connection, schema: str, relations: list[Relation]) -> list[str]:
    """Seed 001's policies on every table; RLS and the restrictive policies while any role is
    restricted."""
    changes: list[str] = []
    restricted = _restricted_roles(conn, schema)
    existing: dict[tuple[str, str], tuple[str, ...]] = {
        (table, name): tuple(sorted(roles))
        for table, name, roles in conn.execute(_POLICIES, {"schema": schema})
    }
    for relation in relations:
        if relation.kind not in ("r", "p") or relation.name == VERSION_TABLE:
            continue
        table = f"{quote(schema)}.{quote(relation.name)}"
        wanted = _policies(schema, relation, restricted)
        for name, (roles, create) in wanted.items():
            have = existing.get((relation.name, name))
            if have is None:
                conn.exec_driver_sql(create)
                changes.append(f"policy {name} on {relation.name}")
            elif have != roles:
                to = ", ".join(_grantee(r) for r in roles)
                conn.exec_driver_sql(f"ALTER POLICY {quote(name)} ON {table} TO {to}")
                changes.append(f"policy {name} on {relation.name} now for {', '.join(roles)}")
        gone = _policy_name(relation.name, "select_restricted")
        if not restricted and (relation.name, gone) in existing:
            conn.exec_driver_sql(f"DROP POLICY {quote(gone)} ON {table}")
            changes.append(f"dropped policy {gone} on {relation.name}")
        if bool(restricted) != relation.row_security:
            action = "ENABLE" if restricted else "DISABLE"
            conn.exec_driver_sql(f"ALTER TABLE {table} {action} ROW LEVEL SECURITY")
            changes.append(f"row-level security {action.lower()}d on {relation.name}")
    return changes


# -- the commands -----------------------------------------------------------------------------


def _me(conn: sa.Connection) -> tuple[str, bool, bool]:
    name, superuser, createrole = conn.execute(_ME).one()
    return name, bool(superuser), bool(createrole)


def _require_postgres(dialect: str) -> None:
    if dialect != "postgresql":
        raise InvalidInputError(
            "database_url", dialect, "roles and row-level security need PostgreSQL"
        )


def create_roles(conn: sa.Connection, schema: str) -> list[str]:
    """``sync-obs roles create``: the three group roles, the restrictions table, and
    :func:`apply_access` (ownership, grants, default privileges, policies). One transaction.

    Run by a superuser, or by a role with ``CREATEROLE`` that owns the schema's tables (it is
    made a member of the owner group, which it needs to hand the tables over).
    """
    _require_postgres(conn.dialect.name)
    if schema == "public":
        raise InvalidInputError(
            "schema",
            schema,
            "roles grant on every table of the schema: give sync_observability a schema of "
            "its own (--schema) instead of public",
        )
    user, superuser, createrole = _me(conn)
    existing = _existing_roles(conn, (READER, WRITER, OWNER))
    missing = [role for role in (READER, WRITER, OWNER) if role not in existing]
    if missing and not (superuser or createrole):
        raise ConfigurationError(
            f"roles create: role {user!r} may not create roles (it needs CREATEROLE or "
            f"superuser) and {', '.join(missing)} do not exist yet; run it once as a superuser"
        )
    changes: list[str] = []
    for role in missing:
        # Roles are cluster-wide: another database may create the same one at this moment.
        conn.exec_driver_sql(
            f"DO $$ BEGIN CREATE ROLE {quote(role)} NOLOGIN; "
            f"COMMENT ON ROLE {quote(role)} IS '{_COMMENTS[role]}'; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
        changes.append(f"role {role}")
    if not superuser:
        member = conn.execute(
            sa.text("SELECT pg_has_role(:owner, 'MEMBER')"), {"owner": OWNER}
        ).scalar_one()
        if not member:
            conn.exec_driver_sql(f"GRANT {quote(OWNER)} TO CURRENT_USER")
            changes.append(f"role {user} member of {OWNER}")
        foreign = conn.execute(
            sa.text(
                "SELECT c.relname, o.rolname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_roles o ON o.oid = c.relowner "
                "WHERE c.relnamespace = to_regnamespace(:schema) "
                "AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
                "AND NOT pg_has_role(c.relowner, 'USAGE') LIMIT 1"
            ),
            {"schema": schema},
        ).first()
        if foreign is not None:
            raise ConfigurationError(
                f"roles create: {foreign[0]} belongs to {foreign[1]!r}, which role {user!r} "
                f"cannot act as; run it as {foreign[1]!r} or a superuser"
            )
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {quote(schema)}.{RESTRICTIONS_TABLE} ("
        "role_name text NOT NULL, pattern text NOT NULL, like_pattern text NOT NULL, "
        "restricted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (role_name, pattern))"
    )
    # Restrictions of roles dropped since (DROP OWNED BY lets a restricted role go).
    conn.exec_driver_sql(
        f"DELETE FROM {quote(schema)}.{RESTRICTIONS_TABLE} WHERE role_name NOT IN "
        "(SELECT rolname FROM pg_catalog.pg_roles)"
    )
    return changes + apply_access(conn, schema, setup=True)


def _check_set_up(conn: sa.Connection, schema: str) -> None:
    missing = sorted({READER, WRITER, OWNER} - _existing_roles(conn, (READER, WRITER, OWNER)))
    if missing:
        raise ConfigurationError(f"role {missing[0]} does not exist: {SETUP_FIRST}")
    if not _restrictions_exist(conn, schema) or not is_set_up(conn, schema):
        raise ConfigurationError(f"schema {schema!r} is not set up for roles: {SETUP_FIRST}")


def _check_login(conn: sa.Connection, field: str, name: str) -> dict[str, Any]:
    check_role_name(field, name)
    row = (
        conn.execute(
            sa.text(
                "SELECT rolsuper, rolbypassrls, "
                "pg_has_role(oid, :writer, 'USAGE') AS writes, "
                "pg_has_role(oid, :owner, 'USAGE') AS owns "
                "FROM pg_catalog.pg_roles WHERE rolname = :name"
            ),
            {"name": name, "writer": WRITER, "owner": OWNER},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise InvalidInputError(field, name, "is not a role in this PostgreSQL cluster")
    if name in GROUP_ROLES.values():
        raise InvalidInputError(field, name, "is one of the group roles themselves")
    return dict(row)


def _restriction_of(conn: sa.Connection, schema: str, role: str) -> list[str]:
    return list(
        conn.execute(
            sa.text(
                f"SELECT pattern FROM {quote(schema)}.{RESTRICTIONS_TABLE} "
                "WHERE role_name = :role ORDER BY pattern"
            ),
            {"role": role},
        ).scalars()
    )


def grant(conn: sa.Connection, schema: str, group: str, members: Sequence[str]) -> list[str]:
    """``GRANT`` the group role ``group`` (``reader``, ``writer`` or ``owner``) to ``members``;
    returns those that were not members yet. A restricted role is never made a writer or owner.
    """
    _require_postgres(conn.dialect.name)
    _check_set_up(conn, schema)
    role = GROUP_ROLES[group]
    granted = []
    for member in members:
        _check_login(conn, group, member)
        if group != "reader" and _restriction_of(conn, schema, member):
            raise InvalidInputError(
                group,
                member,
                f"is restricted to some resources; lift that first (sync-obs roles restrict "
                f"{member} --clear): writers and owners are never restricted",
            )
        already = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m "
                "JOIN pg_catalog.pg_roles g ON g.oid = m.roleid "
                "JOIN pg_catalog.pg_roles u ON u.oid = m.member "
                "WHERE g.rolname = :role AND u.rolname = :member)"
            ),
            {"role": role, "member": member},
        ).scalar_one()
        if not already:
            conn.exec_driver_sql(f"GRANT {quote(role)} TO {quote(member)}")
            granted.append(member)
    return granted


def revoke(conn: sa.Connection, schema: str, group: str, members: Sequence[str]) -> list[str]:
    """``REVOKE`` the group role ``group`` from ``members``; returns those that were members."""
    _require_postgres(conn.dialect.name)
    _check_set_up(conn, schema)
    role = GROUP_ROLES[group]
    revoked = []
    for member in members:
        _check_login(conn, group, member)
        was = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m "
                "WHERE m.roleid = to_regrole(:role) AND m.member = to_regrole(:member))"
            ),
            {"role": quote(role), "member": quote(member)},
        ).scalar_one()
        if was:
            conn.exec_driver_sql(f"REVOKE {quote(role)} FROM {quote(member)}")
            revoked.append(member)
    return revoked


def restrict(
    conn: sa.Connection, schema: str, role: str, patterns: Sequence[str] | None
) -> list[str]:
    """Restrict ``role`` (and its members) to the resources matching ``patterns``, replacing
    any earlier restriction of it; ``patterns=None`` lifts it. Turns RLS on for the schema
    while any role is restricted, off when none is. Returns the policy and RLS changes.
    """
    _require_postgres(conn.dialect.name)
    _check_set_up(conn, schema)
    found = _check_login(conn, "ROLE", role)
    if patterns is not None:
        patterns = check_patterns(patterns)
        if found["rolsuper"] or found["rolbypassrls"]:
            raise InvalidInputError(
                "ROLE", role, "is a superuser or has BYPASSRLS: row-level security never applies"
            )
        if found["writes"] or found["owns"]:
            raise InvalidInputError(
                "ROLE",
                role,
                f"is a member of {WRITER if found['writes'] else OWNER}: writers and owners "
                "are never restricted (restrict a role that only reads)",
            )
    table = f"{quote(schema)}.{RESTRICTIONS_TABLE}"
    conn.execute(sa.text(f"DELETE FROM {table} WHERE role_name = :role"), {"role": role})
    if patterns:
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (role_name, pattern, like_pattern) "
                "VALUES (:role, :pattern, :like)"
            ),
            [{"role": role, "pattern": p, "like": resource_like(p)} for p in patterns],
        )
    return _apply_policies(conn, schema, _relations(conn, schema))


@dataclasses.dataclass(frozen=True)
class AccessStatus:
    """What ``sync-obs roles status`` shows."""

    schema: str
    schema_owner: str | None
    members: dict[str, list[str] | None]  # group role -> its members (None: no such role)
    restrictions: dict[str, list[str]]  # restricted role -> its patterns
    row_level_security: bool
    ungranted: list[str]  # relations missing a grant: rerun `roles create`

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)


def status(conn: sa.Connection, schema: str) -> AccessStatus:
    """The group roles, their members, the restrictions and the grants ``roles create`` would
    still make (readable by anyone who may connect)."""
    _require_postgres(conn.dialect.name)
    members: dict[str, list[str] | None] = {}
    for role in (READER, WRITER, OWNER):
        rows = conn.execute(
            sa.text(
                "SELECT u.rolname FROM pg_catalog.pg_auth_members m "
                "JOIN pg_catalog.pg_roles u ON u.oid = m.member "
                "WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :role) "
                "ORDER BY 1"
            ),
            {"role": role},
        ).scalars()
        members[role] = list(rows) if _existing_roles(conn, [role]) else None
    restrictions: dict[str, list[str]] = {}
    if _restrictions_exist(conn, schema):
        for role, pattern in conn.execute(
            sa.text(
                f"SELECT role_name, pattern FROM {quote(schema)}.{RESTRICTIONS_TABLE} "
                "ORDER BY role_name, pattern"
            )
        ):
            restrictions.setdefault(role, []).append(pattern)
    relations = _relations(conn, schema)
    acl = _acl(conn, schema)
    ungranted = sorted(
        relation.name
        for relation in relations
        if any(
            want - acl.get((relation.name, role), set())
            for role, want in _desired_privileges(relation).items()
        )
    )
    return AccessStatus(
        schema=schema,
        schema_owner=_schema_owner(conn, schema),
        members=members,
        restrictions=restrictions,
        row_level_security=any(r.row_security for r in relations),
        ungranted=ungranted,
    )


# -- migrations -------------------------------------------------------------------------------


def prepare_migration(conn: sa.Connection, schema: str) -> bool:
    """Before a migration of ``schema``: act as the owner group when it owns the schema, and
    refuse, with what to do, when the current role could not finish the migration.

    Returns whether the schema is set up for roles (then :func:`after_migration` applies).
    """
    user, superuser, _ = _me(conn)
    set_up = is_set_up(conn, schema)
    if set_up and not superuser:
        member = conn.execute(
            sa.text("SELECT pg_has_role(:owner, 'MEMBER')"), {"owner": OWNER}
        ).scalar_one()
        if not member:
            raise ConfigurationError(
                f"cannot migrate schema {schema!r} as role {user!r}: the schema belongs to "
                f"{OWNER} and {user!r} is not a member of it; run sync-obs migrate as a member "
                f"(sync-obs roles grant --owner {user})"
            )
        # What the migration creates then belongs to the group, not to this login.
        conn.exec_driver_sql(f"SET LOCAL ROLE {quote(OWNER)}")
    row = conn.execute(
        sa.text(
            "SELECT has_schema_privilege(n.oid, 'CREATE'), o.rolname, "
            "(SELECT c.relname || ' belongs to ' || r.rolname FROM pg_catalog.pg_class c "
            " JOIN pg_catalog.pg_roles r ON r.oid = c.relowner WHERE c.relnamespace = n.oid "
            " AND c.relkind IN ('r', 'p') AND NOT pg_has_role(c.relowner, 'USAGE') "
            " AND (c.relname = ANY(:ours) OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i "
            "      JOIN pg_catalog.pg_class p ON p.oid = i.inhparent "
            "      WHERE i.inhrelid = c.oid AND p.relname = ANY(:ours))) "
            " ORDER BY c.relname LIMIT 1) "
            "FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner "
            "WHERE n.nspname = :schema"
        ),
        # The package's tables (and their partitions): a migration alters only those.
        {"schema": schema, "ours": [*metadata.tables, VERSION_TABLE]},
    ).first()
    if row is None:
        return set_up
    can_create, owner, foreign = row
    reason = None
    if not can_create:
        reason = f"it lacks CREATE on the schema (owned by {owner!r})"
    elif foreign is not None:
        reason = f"it does not own every table of the package ({foreign})"
    if reason is not None:
        fix = (
            f"run sync-obs migrate as a member of {OWNER} (sync-obs roles create hands "
            "tables created by others to it)"
            if set_up
            else "run sync-obs migrate as the role that owns the schema and its tables"
        )
        raise ConfigurationError(
            f"cannot migrate schema {schema!r} as role {user!r}: {reason}; {fix}"
        )
    return set_up


def check_can_create_schema(conn: sa.Connection, schema: str) -> None:
    """Refuse, with what to do, to create ``schema`` as a role without CREATE on the database."""
    if not conn.execute(
        sa.text("SELECT has_database_privilege(current_database(), 'CREATE')")
    ).scalar_one():
        user = _me(conn)[0]
        raise ConfigurationError(
            f"cannot create schema {schema!r} as role {user!r}: it lacks CREATE on the "
            "database; run sync-obs migrate once as a role that may (or create the schema "
            "for it)"
        )


def after_migration(conn: sa.Connection, schema: str) -> None:
    """After a migration of a schema set up for roles: grants and policies for what it added."""
    apply_access(conn, schema)


__all__ = (
    "GROUP_ROLES",
    "OWNER",
    "READER",
    "RESTRICTIONS_TABLE",
    "WRITER",
    "AccessStatus",
    "apply_access",
    "create_roles",
    "grant",
    "resource_like",
    "resource_matches",
    "restrict",
    "revoke",
    "status",
)
