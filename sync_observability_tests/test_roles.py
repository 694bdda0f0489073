"""Access control (issue 14): group roles, grants and per-team row-level security, with real
LOGIN roles on PostgreSQL.

Every test works in a schema of its own and creates LOGIN roles with unique names, dropped
afterwards. The group roles ``sync_observability_reader|writer|owner`` are cluster-wide and
shared by parallel test processes: they are created by the first ``roles create`` and never
dropped (their grants live in each test's schema, dropped with it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_observability import SyncOutcome, SyncStore, SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import CONSECUTIVE_FAILURES, STUCK_RUN
from sync_observability.alerts.sensors import (
    sync_consecutive_failures_sensor,
    sync_stale_watermarks_sensor,
    sync_stuck_runs_sensor,
)
from sync_observability.cli import main
from sync_observability.reports import REPORTS
from sync_observability.retention.steps import RetentionPolicy, run_retention
from sync_observability.storage import roles
from sync_observability.storage.engine import create_engine
from sync_observability.storage.migrate import upgrade
from sync_observability.storage.partitioning import enable_partitioning
from sync_observability_tests.reports.history import (
    ACCOUNTS_1000,
    CONTACTS_0615,
    KNOWN_HISTORY,
    NOW,
    TIMEOUT,
    Run,
    at,
    log_events,
    run_metrics,
)

pytestmark = pytest.mark.postgres

INSUFFICIENT_PRIVILEGE = "42501"
TEAM = "vantage/*"  # the restricted reader's pattern over KNOWN_HISTORY's resources


def _mine(resource: str) -> bool:
    """The restricted reader's resources, decided by hand (not by the package's matcher)."""
    return resource.startswith("vantage/")


# -- pure: patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "like"),
    [
        ("team_a/*", "team\\_a/%"),
        ("team_a/?", "team\\_a/_"),
        ("100%/x", "100\\%/x"),
        ("back\\slash", "back\\\\slash"),
        ("[abc]", "[abc]"),
    ],
)
def test_a_pattern_becomes_like_with_its_special_characters_escaped(
    pattern: str, like: str
) -> None:
    assert roles.resource_like(pattern) == like


def test_a_pattern_matches_as_fnmatch_with_star_and_question_mark_only() -> None:
    assert roles.resource_matches("team_a/orders", ["team_a/*"])
    assert not roles.resource_matches("team_ab/orders", ["team_a/*"])
    assert not roles.resource_matches("teamXa/orders", ["team_a/*"])  # _ is not a wildcard
    assert roles.resource_matches("a/b", ["?/?"])
    assert not roles.resource_matches("ab/c", ["?/?"])
    assert roles.resource_matches("[abc]", ["[abc]"]) and not roles.resource_matches("a", ["[abc]"])


# -- fixtures ---------------------------------------------------------------------------------


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )


@dataclasses.dataclass
class Cluster:
    """The session database, this test's schema, and the LOGIN roles it creates."""

    url: str
    schema: str
    prefix: str
    logins: list[str] = dataclasses.field(default_factory=list)
    schemas: list[str] = dataclasses.field(default_factory=list)
    stores: list[SyncStore] = dataclasses.field(default_factory=list)

    def login(self, name: str) -> str:
        role = f"{self.prefix}_{name}"
        self.admin(f'CREATE ROLE "{role}" LOGIN')
        self.logins.append(role)
        return role

    def role_url(self, role: str | None) -> str:
        url = sa.make_url(self.url)
        if role is not None:
            url = url.set(username=role, password=None)
        return url.render_as_string(hide_password=False)

    def admin(self, sql: str, **params: Any) -> list[Any]:
        engine = _admin_engine(self.url)
        try:
            with engine.connect() as conn:
                result = conn.execute(sa.text(sql), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def store(self, role: str | None = None, schema: str | None = None, **kw: Any) -> SyncStore:
        store = SyncStore.from_url(self.role_url(role), schema=schema or self.schema, **kw)
        self.stores.append(store)
        return store

    def tracker(self, role: str) -> SyncTracker:
        return SyncTracker(database_url=self.role_url(role), schema_name=self.schema)

    def sync_obs(self, role: str | None, *args: str, schema: str | None = None) -> Result:
        return CliRunner().invoke(
            main,
            [
                *args,
                "--database-url",
                self.role_url(role),
                "--schema",
                schema or self.schema,
            ],
            env={"COLUMNS": "200"},
        )

    def ok(self, role: str | None, *args: str, schema: str | None = None) -> str:
        result = self.sync_obs(role, *args, schema=schema)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    def json(self, role: str | None, *args: str, schema: str | None = None) -> Any:
        return json.loads(self.ok(role, *args, "--json", schema=schema))

    def attempt(self, role: str, statements: list[str], schema: str | None = None) -> list[str]:
        """Run each statement as ``role`` in a savepoint; the SQLSTATE each failed with."""
        engine = _admin_engine(self.role_url(role))
        codes = []
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'SET search_path = "{schema or self.schema}"')
                conn.commit()
                for statement in statements:
                    try:
                        conn.exec_driver_sql(statement)
                        conn.commit()
                        codes.append("ok")
                    except sa.exc.DBAPIError as error:
                        conn.rollback()
                        codes.append(getattr(error.orig, "pgcode", None) or "?")
        finally:
            engine.dispose()
        return codes

    def rows(self, role: str | None, sql: str, schema: str | None = None) -> list[tuple[Any, ...]]:
        engine = _admin_engine(self.role_url(role))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'SET search_path = "{schema or self.schema}"')
                return [tuple(row) for row in conn.exec_driver_sql(sql)]
        finally:
            engine.dispose()

    def relations(self, kinds: str = "rp", schema: str | None = None) -> list[tuple[str, bool]]:
        """(name, has a resource column) of the schema's relations of ``kinds``."""
        return [
            (name, has)
            for name, has in self.admin(
                "SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
                "AND a.attname = 'resource' AND NOT a.attisdropped) FROM pg_class c "
                "WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = ANY(:k) "
                "ORDER BY 1",
                s=schema or self.schema,
                k=list(kinds),
            )
        ]

    def new_schema(self) -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self.schemas.append(schema)
        return schema


@pytest.fixture
def cluster(postgres_database_url: str) -> Iterator[Cluster]:
    prefix = f"t14_{uuid.uuid4().hex[:8]}"
    found = Cluster(postgres_database_url, f"t_{uuid.uuid4().hex[:12]}", prefix)
    found.schemas.append(found.schema)
    yield found
    for store in found.stores:
        store.dispose()
    for schema in found.schemas:
        found.admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if found.logins:
        found.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(:r)",
            r=found.logins,
        )
    for role in found.logins:
        found.admin(f'DROP ROLE IF EXISTS "{role}"')


@dataclasses.dataclass(frozen=True)
class Logins:
    reader: str
    writer: str
    restricted: str
    nobody: str


@pytest.fixture
def logins(cluster: Cluster) -> Logins:
    """``roles create`` on a migrated schema, and a reader, a writer, a reader restricted to
    ``vantage/*`` and a role with no grant at all."""
    cluster.ok(None, "roles", "create")
    found = Logins(
        cluster.login("reader"),
        cluster.login("writer"),
        cluster.login("team"),
        cluster.login("nobody"),
    )
    cluster.ok(
        None,
        "roles",
        "grant",
        "--reader",
        found.reader,
        "--reader",
        found.restricted,
        "--writer",
        found.writer,
    )
    return found


def _sync_id(run: Run) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run.resource}@{run.start.isoformat()}"))


def _add_runs(store: SyncStore, runs: list[Run]) -> None:
    """KNOWN_HISTORY-style runs, with sync ids that are the same in every schema."""
    for run in sorted(runs, key=lambda r: r.start):
        store.start_sync(
            sync_id=_sync_id(run),
            resource=run.resource,
            started_at=run.start,
            source_system=run.source,
            target_system=run.target,
        )
        if run.seconds is None:
            continue
        errors = [{"code": run.error.split(":")[0], "message": run.error}] if run.error else []
        store.finish_sync(
            sync_id=_sync_id(run),
            resource=run.resource,
            started_at=run.start,
            outcome=SyncOutcome(
                status=run.status,
                ended_at=run.start + dt.timedelta(seconds=run.seconds),
                records_processed=run.records,
                error_message=run.error,
                errors=errors,
                metadata={"metrics": run_metrics(**run.metrics)} if run.metrics else {},
            ),
        )


CRM_OLD = Run("crm/contacts", at("05-02 10:00"), 10, source="crm", target="lake", records=7)
CRM_FAILED = Run(
    "crm/contacts",
    at("06-14 15:00"),
    5,
    status="failed",
    error=TIMEOUT,
    source="crm",
    target="lake",
)
RUNS = [*KNOWN_HISTORY, CRM_OLD, CRM_FAILED]


def _fill(store: SyncStore, runs: list[Run]) -> None:
    """Runs, operational events, and the archive (retention as of NOW, 30 days, keep none)."""
    _add_runs(store, runs)
    for run, event in ((ACCOUNTS_1000, "cast_error"), (CONTACTS_0615, "dedup_conflict")):
        if run in runs:
            log_events(store, run, _sync_id(run), [(event, run.start + dt.timedelta(minutes=1))])
    run_retention(store, RetentionPolicy(archive_after_days=30, keep_last_per_resource=0), now=NOW)


# -- roles create -----------------------------------------------------------------------------


def test_roles_create_hands_the_schema_to_the_owner_and_is_idempotent(cluster: Cluster) -> None:
    first = cluster.json(None, "roles", "create")
    assert f"schema {cluster.schema} owned by {roles.OWNER}" in first["changes"]
    assert "GRANT SELECT ON sync_state TO sync_observability_reader" in first["changes"]
    assert (
        "GRANT DELETE, INSERT, SELECT, UPDATE ON sync_history TO sync_observability_writer"
        in first["changes"]
    )
    assert cluster.json(None, "roles", "create") == {"schema": cluster.schema, "changes": []}

    owners = cluster.admin(
        "SELECT DISTINCT relowner::regrole::text FROM pg_class WHERE relnamespace = "
        "to_regnamespace(:s) AND relkind IN ('r', 'p', 'v', 'm', 'S')",
        s=cluster.schema,
    )
    assert owners == [(roles.OWNER,)]
    groups = cluster.admin(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
        "WHERE rolname = ANY(:r) ORDER BY 1",
        r=[roles.READER, roles.WRITER, roles.OWNER],
    )
    assert [tuple(g)[1:] for g in groups] == [(False, False, False, False)] * 3
    # Nothing is restricted yet: RLS stays off, tracking pays nothing for it.
    assert not any(
        r
        for (r,) in cluster.admin(
            "SELECT relrowsecurity FROM pg_class WHERE relnamespace = to_regnamespace(:s)",
            s=cluster.schema,
        )
    )


def test_roles_commands_refuse_bad_input_in_one_line(cluster: Cluster, tmp_path: Any) -> None:
    sqlite = f"sqlite:///{tmp_path / 'sync.db'}"
    for args in (["roles", "create"], ["roles", "status"], ["roles", "grant", "--reader", "x"]):
        result = CliRunner().invoke(main, [*args, "--database-url", sqlite])
        assert result.exit_code == 2, result.output
        [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert "'--database-url'" in line and "SQLite" in line and "PostgreSQL" in line
    assert not (tmp_path / "sync.db").exists()

    result = cluster.sync_obs(None, "roles", "restrict", "someone", "--resources", "a/*")
    assert result.exit_code == 1
    assert "roles create" in result.stderr and "Traceback" not in result.output

    public = cluster.sync_obs(None, "roles", "create", schema="public")
    assert public.exit_code == 2 and "'--schema'" in public.stderr and "'public'" in public.stderr

    cluster.ok(None, "roles", "create")
    writer = cluster.login("w")
    cluster.ok(None, "roles", "grant", "--writer", writer)
    unknown = cluster.sync_obs(None, "roles", "grant", "--reader", f"{cluster.prefix}_nobody")
    assert unknown.exit_code == 2
    assert "'--reader'" in unknown.stderr and f"{cluster.prefix}_nobody" in unknown.stderr
    refused = cluster.sync_obs(None, "roles", "restrict", writer, "--resources", "a/*")
    assert refused.exit_code == 2
    assert "'ROLE'" in refused.stderr and roles.WRITER in refused.stderr
    postgres = cluster.sync_obs(None, "roles", "restrict", "postgres", "--resources", "a/*")
    assert postgres.exit_code == 2 and "superuser" in postgres.stderr
    neither = cluster.sync_obs(None, "roles", "restrict", writer)
    assert neither.exit_code == 2 and "--clear" in neither.stderr
    empty = cluster.sync_obs(None, "roles", "restrict", writer, "--resources", " ")
    assert empty.exit_code == 2 and "'--resources'" in empty.stderr
    group = cluster.sync_obs(None, "roles", "grant", "--reader", roles.WRITER)
    assert group.exit_code == 2 and "group roles" in group.stderr


# -- the reader -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_reader_runs_every_read_command_and_can_change_nothing(
    cluster: Cluster, logins: Logins
) -> None:
    _fill(cluster.store(logins.writer), RUNS)
    reader = logins.reader
    # Every report, as a plain `sync-obs report` (roll-ups never refreshed by anyone: the
    # reader's report degrades to reading, without a flag), equals the owner's answer.
    as_of = ["--as-of", NOW.isoformat()]
    for name in sorted(REPORTS):
        assert cluster.json(reader, "report", name, *as_of) == cluster.json(
            None, "report", name, *as_of
        ), name
    state = cluster.admin(f'SELECT rolled_until FROM "{cluster.schema}".sync_rollup_state')
    assert len(state) == 1  # the owner's reports refreshed the roll-ups; the reader's read them
    assert len(cluster.json(reader, "status")) == 4
    assert len(cluster.json(reader, "history", "--since", "2025-01-01T00:00:00Z")) == 10
    cluster.ok(reader, "alerts")
    cluster.ok(reader, "watermark", "show", "vantage/accounts")
    dry = cluster.json(reader, "archive", "--dry-run", "--archive-after-days", "1")
    assert dry["dry_run"] is True
    cluster.ok(reader, "roles", "status")
    cluster.ok(reader, "migrate")  # at head: nothing to do, and says so

    tables = cluster.relations("rp")
    assert len(tables) >= 13
    statements = []
    for table, _ in tables:
        statements += [
            f'INSERT INTO "{table}" DEFAULT VALUES',
            f'UPDATE "{table}" SET {_first_column(cluster, table)} = '
            f"{_first_column(cluster, table)} WHERE false",
            f'DELETE FROM "{table}" WHERE false',
            f'TRUNCATE "{table}"',
        ]
    statements += _ddl(cluster)
    codes = cluster.attempt(reader, statements)
    assert codes == [INSUFFICIENT_PRIVILEGE] * len(statements), [
        s for s, c in zip(statements, codes, strict=True) if c != INSUFFICIENT_PRIVILEGE
    ]
    # A role with no grant reads nothing.
    nothing = [f'SELECT 1 FROM "{cluster.schema}".sync_state']
    assert cluster.attempt(logins.nobody, nothing) == [INSUFFICIENT_PRIVILEGE]


def _first_column(cluster: Cluster, table: str) -> str:
    [(column,)] = cluster.admin(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum = 1",
        t=f'"{cluster.schema}"."{table}"',
    )
    return f'"{column}"'


def _ddl(cluster: Cluster) -> list[str]:
    """Creating, altering and dropping anything in the schema."""
    return [
        "CREATE TABLE sneaky (x int)",
        "CREATE VIEW sneaky_view AS SELECT 1 AS x",
        "CREATE SEQUENCE sneaky_seq",
        "CREATE INDEX sneaky_ix ON sync_state (records_synced)",
        "ALTER TABLE sync_state ADD COLUMN sneaky int",
        "ALTER TABLE sync_history DISABLE ROW LEVEL SECURITY",
        "DROP TABLE sync_alerts",
        "DROP POLICY IF EXISTS sync_state_select_all ON sync_state",
        f'ALTER SCHEMA "{cluster.schema}" RENAME TO sneaky_schema',
        "CREATE ROLE sneaky_role",
        f"GRANT {roles.OWNER} TO CURRENT_USER",
        "DELETE FROM sync_role_restrictions WHERE false",
    ]


# -- the writer -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_writer_tracks_alerts_reaps_and_archives_but_changes_no_table(
    cluster: Cluster, logins: Logins, instance: dg.DagsterInstance
) -> None:
    writer = logins.writer
    # A restriction elsewhere turns RLS on: the writer is not affected by it.
    cluster.ok(None, "roles", "restrict", logins.restricted, "--resources", TEAM)
    tracker = cluster.tracker(writer)
    store = cluster.store(writer)
    for _ in range(3):
        with pytest.raises(ConnectionError), tracker.track(resource="crm/orders"):
            raise ConnectionError("CRM answered 503")
    with tracker.track(resource="vantage/accounts", source_system="vantage") as run:
        run.record(processed=10)
        run.log_cast_error("amount", "x", "numeric", "not a number", entity_key="a|1")
    now = dt.datetime.now(dt.timezone.utc)
    store.start_sync(
        sync_id=str(uuid.uuid4()), resource="crm/stuck", started_at=now - dt.timedelta(hours=2)
    )
    old = now - dt.timedelta(days=100)
    _add_runs(store, [Run("crm/old", old, 5, source="crm", target="lake")])
    _add_runs(store, [Run("crm/old", old + dt.timedelta(hours=1), 5, source="crm", target="lake")])
    store.set_watermark(
        "vantage/accounts", now - dt.timedelta(hours=1), reason="test", allow_rewind=True
    )

    alerting = SyncAlerting()
    for sensor in (sync_consecutive_failures_sensor, sync_stuck_runs_sensor):
        with dg.build_sensor_context(
            instance=instance, resources={"sync_tracker": tracker, "sync_alerting": alerting}
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason), result
    alerts = cluster.json(writer, "alerts", "--status", "open")
    assert {(a["rule"], a["resource"]) for a in alerts} >= {
        (CONSECUTIVE_FAILURES, "crm/orders"),
        (STUCK_RUN, "crm/stuck"),
    }
    [stuck] = [s for s in store.list_states() if s.resource == "crm/stuck"]
    assert stuck.last_sync_status == "failed"  # reaped
    archived = cluster.json(writer, "archive", "--archive-after-days", "30", "--keep-last", "0")
    assert archived["status"] == "finished"
    assert cluster.admin(f'SELECT count(*) FROM "{cluster.schema}".sync_history_archive')[0][0] == 1
    cluster.ok(writer, "report", "dashboard")  # the writer refreshes the roll-ups
    assert cluster.admin(f'SELECT count(*) FROM "{cluster.schema}".sync_rollup_state') == [(1,)]
    assert cluster.admin(f'SELECT count(*) FROM "{cluster.schema}".operation_log') == [(1,)]

    statements = [*_ddl(cluster), "TRUNCATE sync_history", "TRUNCATE sync_state"]
    codes = cluster.attempt(writer, statements)
    assert codes == [INSUFFICIENT_PRIVILEGE] * len(statements), [
        s for s, c in zip(statements, codes, strict=True) if c != INSUFFICIENT_PRIVILEGE
    ]
    # The migration version is not the writer's to change.
    assert cluster.attempt(writer, ["DELETE FROM sync_observability_alembic_version"]) == [
        INSUFFICIENT_PRIVILEGE
    ]


# -- migrate ----------------------------------------------------------------------------------


def test_migrate_refuses_a_role_without_the_rights_and_runs_as_the_owner_group(
    cluster: Cluster,
) -> None:
    # Before the roll-up tables (migrations 0006, 0009): the migration below adds them.
    upgrade(create_engine(cluster.url, cluster.schema), cluster.schema, revision="0005")
    writer, reader = cluster.login("writer"), cluster.login("reader")
    migrator, team = cluster.login("migrator"), cluster.login("team")

    # Before any roles: a role that owns nothing is refused, naming itself and the schema.
    refused = cluster.sync_obs(writer, "migrate")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("Error")]
    assert f"cannot migrate schema '{cluster.schema}' as role '{writer}'" in line
    assert "CREATE" in line

    admin_store = cluster.store(None, auto_migrate=False)
    admin_store.db.write(lambda conn: roles.create_roles(conn, cluster.schema), "create roles")
    cluster.ok(None, "roles", "grant", "--writer", writer, "--reader", reader, "--reader", team)
    cluster.ok(None, "roles", "grant", "--owner", migrator)
    cluster.ok(None, "roles", "restrict", team, "--resources", TEAM)

    for role in (writer, reader):
        refused = cluster.sync_obs(role, "migrate")
        assert refused.exit_code == 1, refused.output
        assert "not a member of it; run sync-obs migrate as a member" in refused.stderr
        assert f"--owner {role}" in refused.stderr
    # A tracker as the writer does not migrate either: it says why.
    with pytest.raises(Exception, match="not a member"):
        cluster.tracker(writer).store  # noqa: B018

    out = cluster.ok(migrator, "migrate")
    assert "revision before: 0005" in out and "migrated" in out
    # The tables 0006 and 0009 added belong to the group, with their grants and policies.
    added = ["sync_history_hourly", "sync_history_daily", "sync_volume_baseline"]
    owners = cluster.admin(
        "SELECT relname, relowner::regrole::text, relrowsecurity FROM pg_class "
        "WHERE relnamespace = to_regnamespace(:s) AND relname = ANY(:t) ORDER BY 1",
        s=cluster.schema,
        t=added,
    )
    assert sorted(owners) == sorted((t, roles.OWNER, True) for t in added)
    assert cluster.json(None, "roles", "create") == {"schema": cluster.schema, "changes": []}
    assert cluster.attempt(reader, [f"SELECT * FROM {t}" for t in added]) == ["ok"] * 3
    assert cluster.attempt(
        writer, ["INSERT INTO sync_history_daily VALUES (now(), 'crm/x', 1)"]
    ) == ["ok"]
    assert cluster.rows(reader, "SELECT resource FROM sync_history_daily") == [("crm/x",)]
    assert cluster.rows(team, "SELECT resource FROM sync_history_daily") == []
    # Once migrated, the writer tracks without any DDL.
    with cluster.tracker(writer).track(resource="vantage/x") as run:
        run.record(processed=1)
    assert cluster.rows(team, "SELECT resource FROM sync_state") == [("vantage/x",)]


@pytest.mark.slow
def test_rerunning_roles_create_grants_a_table_created_since(
    cluster: Cluster, logins: Logins
) -> None:
    cluster.ok(None, "roles", "restrict", logins.restricted, "--resources", TEAM)
    table = f'"{cluster.schema}".sync_extra'
    cluster.admin(f"CREATE TABLE {table} (resource text NOT NULL, n int)")
    cluster.admin(f"INSERT INTO {table} VALUES ('vantage/a', 1), ('crm/b', 2)")
    cluster.admin(f"CREATE TABLE {table}_totals (n int)")
    cluster.admin(f"INSERT INTO {table}_totals VALUES (3)")
    assert cluster.attempt(logins.reader, ["SELECT * FROM sync_extra"]) == [INSUFFICIENT_PRIVILEGE]

    changes = cluster.json(None, "roles", "create")["changes"]
    assert "GRANT SELECT ON sync_extra TO sync_observability_reader" in changes
    assert "policy sync_extra_select_restricted on sync_extra" in changes
    assert "row-level security enabled on sync_extra" in changes
    assert sorted(cluster.rows(logins.reader, "SELECT resource FROM sync_extra")) == [
        ("crm/b",),
        ("vantage/a",),
    ]
    assert cluster.rows(logins.restricted, "SELECT resource FROM sync_extra") == [("vantage/a",)]
    # A table without a resource column sums every team: the restricted reader sees none of it.
    assert cluster.rows(logins.reader, "SELECT n FROM sync_extra_totals") == [(3,)]
    assert cluster.rows(logins.restricted, "SELECT n FROM sync_extra_totals") == []
    assert cluster.attempt(logins.writer, ["INSERT INTO sync_extra VALUES ('crm/c', 3)"]) == ["ok"]
    assert cluster.json(None, "roles", "status")["ungranted"] == []


# -- per-team restriction ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_restricted_reader_sees_exactly_its_resources_in_every_table_and_report(
    cluster: Cluster, logins: Logins, instance: dg.DagsterInstance
) -> None:
    team = logins.restricted
    result = cluster.json(None, "roles", "restrict", team, "--resources", TEAM)
    assert result["resources"] == [TEAM] and result["row_level_security"] is True
    writer_store = cluster.store(logins.writer)
    _fill(writer_store, RUNS)
    tracker = cluster.tracker(logins.writer)
    with dg.build_sensor_context(
        instance=instance,
        resources={"sync_tracker": tracker, "sync_alerting": SyncAlerting()},
    ) as context:
        sync_stale_watermarks_sensor(context)  # 2025's history: every resource is stale
    as_of = ["--as-of", NOW.isoformat()]
    for name in ("dashboard", "volume-anomalies"):  # the writer refreshes every roll-up
        cluster.ok(logins.writer, "report", name, *as_of)

    # The same history, only the team's resources, in a second schema: what the team's
    # reports must answer.
    alone = cluster.new_schema()
    _fill(cluster.store(None, schema=alone), [r for r in RUNS if _mine(r.resource)])

    # Every table with a resource column: exactly the team's rows of what the reader sees.
    both_teams = []
    for table, has_resource in cluster.relations("rp"):
        everything = cluster.rows(logins.reader, f'SELECT * FROM "{table}"')
        seen = cluster.rows(team, f'SELECT * FROM "{table}"')
        if has_resource:
            column = [c for c, _ in _columns(cluster, table)].index("resource")
            expected = [row for row in everything if _mine(row[column])]
            assert sorted(map(repr, seen)) == sorted(map(repr, expected)), table
            if len(expected) < len(everything) and expected:
                both_teams.append(table)
        elif table == roles.VERSION_TABLE:
            assert seen == everything and len(seen) == 1
        elif table == roles.RESTRICTIONS_TABLE:
            assert [row[:2] for row in seen] == [(team, TEAM)]
        else:  # roll-ups summed over every resource; DDL events (none here: tracking is off)
            assert seen == [] and (everything or table.startswith("ddl_")), table
    assert set(both_teams) >= {
        "sync_state",
        "sync_history",
        "sync_history_archive",
        "sync_alerts",
        "operation_log",
        "watermark_changes",
        "sync_history_hourly_errors",
        "sync_history_daily",
    }

    # Every report answers as if the team's resources were all there is.
    variants = [[name] for name in sorted(REPORTS)] + [
        [name, "--all"] for name in ("status", "volume-anomalies", "cost-trends", "quality-trends")
    ]
    differ = 0
    for args in variants:
        mine = cluster.json(team, "report", *args, *as_of)
        assert mine == cluster.json(None, "report", *args, *as_of, schema=alone), args
        assert cluster.json(team, "report", *args, *as_of, "--rollups", "read") == mine, args
        differ += mine != cluster.json(logins.reader, "report", *args, *as_of)
    assert differ >= 10  # the unrestricted answers are not the team's

    # And the read commands.
    since = ["--since", "2025-01-01T00:00:00Z"]
    assert cluster.json(team, "history", *since) == cluster.json(
        None, "history", *since, schema=alone
    )
    status = [(r["resource"], r["status"]) for r in cluster.json(team, "status")]
    assert status == [
        (r["resource"], r["status"]) for r in cluster.json(None, "status", schema=alone)
    ]
    assert {a["resource"] for a in cluster.json(team, "alerts")} == {
        "vantage/accounts",
        "vantage/funds",
    }
    dry = ["archive", "--dry-run", "--archive-after-days", "1", "--keep-last", "0"]
    assert cluster.json(team, *dry)["counts"] == cluster.json(None, *dry, schema=alone)["counts"]
    shown = cluster.sync_obs(team, "watermark", "show", "crm/contacts")
    assert "crm" not in shown.stdout.replace("crm/contacts", "") and shown.exit_code != 0

    # Lifted: the team sees everything again, and RLS goes off with the last restriction.
    cleared = cluster.json(None, "roles", "restrict", team, "--clear")
    assert cleared["was_restricted_to"] == [TEAM] and cleared["row_level_security"] is False
    assert len(cluster.json(team, "status")) == 4


def _columns(cluster: Cluster, table: str) -> list[tuple[str, int]]:
    return cluster.admin(
        "SELECT attname, attnum FROM pg_attribute WHERE attrelid = to_regclass(:t) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        t=f'"{cluster.schema}"."{table}"',
    )


def test_restrict_replaces_patterns_and_escapes_like_wildcards(
    cluster: Cluster, logins: Logins
) -> None:
    store = cluster.store(logins.writer)
    for resource in ("team_a/x", "team_a/y", "teamXa/z", "team_b/x", "100%/a", "100/b"):
        _add_runs(store, [Run(resource, NOW, 1)])
    team = logins.restricted

    def seen() -> list[str]:
        return sorted(r for (r,) in cluster.rows(team, "SELECT resource FROM sync_state"))

    cluster.ok(None, "roles", "restrict", team, "--resources", "team_a/*")
    assert seen() == ["team_a/x", "team_a/y"]
    cluster.ok(None, "roles", "restrict", team, "--resources", "team_b/?", "--resources", "100%/*")
    assert seen() == ["100%/a", "team_b/x"]
    status = cluster.json(None, "roles", "status")
    assert status["restrictions"] == {team: ["100%/*", "team_b/?"]}
    # Members are cluster-wide (parallel tests add theirs): ours are among them.
    assert {logins.reader, team} <= set(status["members"][roles.READER])
    assert status["row_level_security"] is True
    # The restricted reader sees its own restriction, and no one else's.
    other = cluster.login("other")
    cluster.ok(None, "roles", "grant", "--reader", other)
    cluster.ok(None, "roles", "restrict", other, "--resources", "team_a/x")
    assert cluster.rows(other, "SELECT role_name FROM sync_role_restrictions") == [(other,)]
    # A login belonging to two restricted roles sees both teams' resources.
    both = cluster.login("both")
    cluster.admin(f'GRANT "{team}" TO "{both}"')
    cluster.admin(f'GRANT "{other}" TO "{both}"')
    assert sorted(r for (r,) in cluster.rows(both, "SELECT resource FROM sync_state")) == [
        "100%/a",
        "team_a/x",
        "team_b/x",
    ]
    # Restricted roles are never made writers.
    refused = cluster.sync_obs(None, "roles", "grant", "--writer", team)
    assert refused.exit_code == 2 and "--clear" in refused.stderr


def test_a_partitioned_history_is_filtered_through_its_parent(
    cluster: Cluster, logins: Logins
) -> None:
    admin = cluster.store(None)
    assert enable_partitioning(admin, now=NOW).converted
    cluster.ok(None, "roles", "create")  # the partitions, created since, get their grants
    cluster.ok(None, "roles", "restrict", logins.restricted, "--resources", TEAM)
    _add_runs(cluster.store(logins.writer), [r for r in RUNS if r.seconds is not None])
    leaves = [t for t, _ in cluster.relations("r") if t.startswith("sync_history_p")]
    assert leaves
    seen = cluster.rows(logins.restricted, "SELECT DISTINCT resource FROM sync_history ORDER BY 1")
    assert seen == [("vantage/accounts",), ("vantage/funds",)]
    assert len(cluster.rows(logins.reader, "SELECT DISTINCT resource FROM sync_history")) == 3
    # Partitions are read through the parent only: never directly, unfiltered.
    codes = cluster.attempt(logins.restricted, [f'SELECT * FROM "{leaf}"' for leaf in leaves])
    assert codes == [INSUFFICIENT_PRIVILEGE] * len(leaves)
    assert cluster.attempt(logins.writer, [f'SELECT * FROM "{leaves[0]}"']) == ["ok"]
