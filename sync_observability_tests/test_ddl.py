"""Automatic DDL tracking (issue 16): the event triggers of ``sync-obs ddl``, on a real PostgreSQL
database of the test's own (event triggers are per database), with the superuser ``postgres``
and a non-superuser role the test creates and drops."""

import json
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_observability.cli import main
from sync_observability.storage import ddl as tracking
from sync_observability_tests.conftest import _admin_engine, own_database

SCHEMA = "sync_observability"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def tracked_url(postgres_database_url: str) -> Iterator[str]:
    """A database of its own with DDL tracking enabled by ``sync-obs ddl enable``."""
    with own_database(postgres_database_url, "sync_obs_ddl") as url:
        result = cli("ddl", "enable", "--database-url", url)
        assert result.exit_code == 0, result.output
        assert f"recording into {SCHEMA}.ddl_events" in result.stdout
        yield url


@pytest.fixture
def user_engine(tracked_url: str) -> Iterator[sa.Engine]:
    """The user's own connection (superuser postgres), as their tools would open it."""
    engine = sa.create_engine(
        tracked_url,
        poolclass=sa.pool.NullPool,
        connect_args={"application_name": "migrations-ci"},
    )
    yield engine
    engine.dispose()


def events(url: str) -> list[dict]:
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.ddl_events ORDER BY event_id"))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def run(engine: sa.Engine, *statements: str) -> list[str]:
    """Run ``statements`` in one transaction; returns the server's notices (warnings).

    On the driver's connection: SQLAlchemy's psycopg2 dialect may consume the notices."""
    conn = engine.raw_connection()
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        conn.commit()
        return list(conn.dbapi_connection.notices)
    finally:
        conn.close()


@pytest.mark.postgres
def test_create_alter_drop_grant_and_revoke_are_recorded_with_who_and_how(
    tracked_url: str, user_engine: sa.Engine
) -> None:
    run(user_engine, "CREATE SCHEMA analytics")
    run(user_engine, "CREATE TABLE analytics.orders (id bigint PRIMARY KEY, total numeric)")
    run(user_engine, "ALTER TABLE analytics.orders ADD COLUMN region text")
    run(
        user_engine,
        "GRANT SELECT ON analytics.orders TO PUBLIC",
        "REVOKE SELECT ON analytics.orders FROM PUBLIC",
    )
    run(user_engine, "DROP TABLE analytics.orders")
    found = events(tracked_url)
    assert [(e["command_tag"], e["object_type"], e["object_identity"]) for e in found] == [
        ("CREATE SCHEMA", "schema", "analytics"),
        ("CREATE TABLE", "table", "analytics.orders"),
        ("CREATE INDEX", "index", "analytics.orders_pkey"),  # the primary key's, same statement
        ("ALTER TABLE", "table", "analytics.orders"),
        ("GRANT", "table", None),  # PostgreSQL names no object for GRANT / REVOKE
        ("REVOKE", "table", None),
        ("DROP TABLE", "table", "analytics.orders"),
    ]
    drop = found[-1]
    assert drop["schema_name"] == "analytics"
    assert drop["statement"] == "DROP TABLE analytics.orders"
    assert drop["db_session_user"] == "postgres"
    assert drop["client_address"] == "127.0.0.1"
    assert drop["application_name"] == "migrations-ci"
    assert drop["event_time"].tzinfo is not None
    # One transaction, one id: GRANT and REVOKE ran together, the others alone.
    ids = [e["transaction_id"] for e in found]
    assert ids[4] == ids[5] and ids[1] == ids[2] and len({ids[0], ids[1], ids[3], ids[4]}) == 4


@pytest.mark.postgres
def test_the_package_schema_temporary_objects_and_rolled_back_ddl_leave_no_row(
    tracked_url: str, user_engine: sa.Engine
) -> None:
    run(user_engine, f"CREATE TABLE {SCHEMA}.scratch (i int)", f"DROP TABLE {SCHEMA}.scratch")
    run(user_engine, "CREATE TEMPORARY TABLE tmp (i int)", "DROP TABLE tmp")
    with user_engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql("CREATE TABLE public.rolled_back (i int)")
        tx.rollback()
    run(user_engine, "CREATE TABLE public.kept (i int)")
    assert [(e["command_tag"], e["object_identity"]) for e in events(tracked_url)] == [
        ("CREATE TABLE", "public.kept")
    ]


@pytest.mark.postgres
def test_a_failing_record_never_blocks_the_users_ddl(
    tracked_url: str, user_engine: sa.Engine
) -> None:
    # ddl_events refuses every row: the DDL goes through, with a warning.
    run(
        user_engine,
        f"ALTER TABLE {SCHEMA}.ddl_events ADD CONSTRAINT no_rows CHECK (false) NOT VALID",
    )
    notices = run(user_engine, "CREATE TABLE public.accounts (id int)")
    notices += run(user_engine, "DROP TABLE public.accounts")
    assert len(notices) == 2
    assert all("WARNING:  sync_observability: DDL not recorded" in n for n in notices)
    assert "no_rows" in notices[0]
    # ddl_events gone altogether: still a warning only.
    run(user_engine, f"ALTER TABLE {SCHEMA}.ddl_events RENAME TO ddl_events_away")
    notices = run(user_engine, "CREATE TABLE public.invoices (id int)")
    assert len(notices) == 1 and "does not exist" in notices[0]
    with user_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('public.invoices')").scalar() is not None
    run(user_engine, f"ALTER TABLE {SCHEMA}.ddl_events_away RENAME TO ddl_events")
    assert events(tracked_url) == []


@pytest.mark.postgres
def test_status_shows_the_triggers_and_disable_removes_them(
    tracked_url: str, user_engine: sa.Engine
) -> None:
    result = cli("ddl", "status", "--database-url", tracked_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "name": f"{SCHEMA}_ddl_command_end",
            "event": "ddl_command_end",
            "enabled": "origin",
            "function": f"{SCHEMA}.record_ddl_command",
        },
        {
            "name": f"{SCHEMA}_sql_drop",
            "event": "sql_drop",
            "enabled": "origin",
            "function": f"{SCHEMA}.record_sql_drop",
        },
    ]
    # Enabling again replaces them: still two.
    assert cli("ddl", "enable", "--database-url", tracked_url).exit_code == 0
    text = cli("ddl", "status", "--database-url", tracked_url).stdout
    assert text.count("origin") == 2 and f"{SCHEMA}.record_sql_drop" in text

    result = cli("ddl", "disable", "--database-url", tracked_url)
    assert result.exit_code == 0, result.output
    assert f"removed {SCHEMA}_ddl_command_end, {SCHEMA}_sql_drop" in result.stdout
    assert json.loads(cli("ddl", "status", "--database-url", tracked_url, "--json").stdout) == []
    assert "DDL tracking is off" in cli("ddl", "status", "--database-url", tracked_url).stdout
    run(user_engine, "CREATE TABLE public.untracked (i int)")
    assert events(tracked_url) == []
    with user_engine.connect() as conn:
        functions = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE n.nspname = '{SCHEMA}' AND p.proname LIKE 'record_%%'"
        ).scalar()
    assert functions == 0


@pytest.mark.postgres
def test_a_non_superuser_gets_one_clear_line(postgres_database_url: str) -> None:
    role = f"ddl_user_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(postgres_database_url)
    with own_database(postgres_database_url, "sync_obs_ddl") as url:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        try:
            as_user = sa.make_url(url).set(username=role).render_as_string(hide_password=False)
            for command in ("enable", "disable"):
                result = cli("ddl", command, "--database-url", as_user)
                assert result.exit_code == 1, result.output
                lines = result.stderr.strip().splitlines()
                assert len(lines) == 1, result.stderr
                assert f"sync-obs ddl {command} needs a PostgreSQL superuser" in lines[0]
                assert repr(role) in lines[0]
            # Nothing was installed, not even the tables (the check comes before migrating).
            with _admin_engine(url).connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM pg_event_trigger").scalar() == 0
                assert conn.exec_driver_sql(f"SELECT to_regnamespace('{SCHEMA}')").scalar() is None
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
            admin.dispose()


def test_on_sqlite_the_commands_say_they_need_postgresql(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    for command in ("enable", "disable", "status"):
        result = cli("ddl", command, "--database-url", url)
        assert result.exit_code == 2, result.output
        error = result.stderr.strip().splitlines()[-1]  # after click's usage lines
        assert error.startswith("Error: Invalid value for '--database-url'")
        assert error.endswith(
            "is SQLite, which has no event triggers: DDL tracking needs PostgreSQL"
        )


def test_a_schema_too_long_for_trigger_names_is_refused() -> None:
    from sync_observability.errors import ConfigurationError

    tracking.check_schema_name("s" * 47)  # 47 + len("_ddl_command_end") = 63
    with pytest.raises(ConfigurationError, match="63-byte limit"):
        tracking.check_schema_name("s" * 48)
