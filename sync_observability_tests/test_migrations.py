"""The Alembic-migrated schema equals the declared tables; migrating is idempotent and race-safe."""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sync_observability import SyncStore
from sync_observability.storage.migrate import (
    HEAD_REVISION,
    VERSION_TABLE,
    current_revision,
    head_revision,
    stored_revision,
    upgrade,
)
from sync_observability.storage.schema import metadata
from sync_observability_tests.conftest import Backend

PROCESS_TIMEOUT_S = 60


@pytest.fixture
def engine(store: SyncStore, backend: Backend) -> Iterator[sa.Engine]:
    """A plain engine on the migrated database under test."""
    e = backend.engine()
    yield e
    e.dispose()


def _created_by_create_all(dialect_url: str) -> list[sa.schema.ExecutableDDLElement]:
    """The DDL ``metadata.create_all`` emits on a dialect (honouring ``ddl_if``), not executed."""
    emitted: list[Any] = []
    mock = sa.create_mock_engine(dialect_url, lambda sql, *a, **kw: emitted.append(sql))
    metadata.create_all(mock, checkfirst=False)
    return emitted


def declared_metadata(dialect: sa.Dialect) -> sa.MetaData:
    """The declared tables as this dialect gets them.

    schema.py declares ``ix_sync_state_last_sync_time`` twice, as a PostgreSQL (``DESC NULLS
    LAST``) and a SQLite (``DESC``) variant selected with ``ddl_if``. ``compare_metadata`` ignores
    ``ddl_if`` and keys indexes by name, so one variant silently shadows the other depending on
    set order, and about half the runs report a spurious remove/add of that index on PostgreSQL.
    Here each table is copied and keeps exactly the indexes ``create_all`` emits on this dialect
    (matched by their compiled DDL), so every other index is still compared.
    """
    emitted = _created_by_create_all(f"{dialect.name}+{dialect.driver}://")
    wanted = {
        str(ddl.compile(dialect=dialect))
        for ddl in emitted
        if isinstance(ddl, sa.schema.CreateIndex)
    }
    filtered = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        copy = table.to_metadata(filtered)
        for index in list(copy.indexes):
            if str(sa.schema.CreateIndex(index).compile(dialect=dialect)) not in wanted:
                copy.indexes.discard(index)
    return filtered


def schema_diff(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_server_default": True}
        )
        return compare_metadata(context, declared_metadata(conn.dialect))


def test_migrated_schema_equals_the_declared_tables(engine: sa.Engine) -> None:
    assert schema_diff(engine) == []


def test_the_comparison_does_see_a_difference(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_sync_history_source_time"))
    diff = schema_diff(engine)
    assert [(op[0], op[1].name) for op in diff] == [("add_index", "ix_sync_history_source_time")]


def test_migrated_check_constraints_equal_the_declared_ones(engine: sa.Engine) -> None:
    # Alembic's autogenerate does not compare CHECK constraints; compare their names here
    # (what each one enforces is tested in test_constraints.py).
    declared: dict[str, set[str]] = {}
    dialect = engine.dialect
    for ddl in _created_by_create_all(f"{dialect.name}+{dialect.driver}://"):
        if isinstance(ddl, sa.schema.CreateTable):
            sql = str(ddl.compile(dialect=dialect))
            declared[ddl.element.name] = set(re.findall(r"CONSTRAINT (\w+) CHECK", sql))
    inspector = sa.inspect(engine)
    for table, names in declared.items():
        found = {c["name"] for c in inspector.get_check_constraints(table)}
        assert found == names, table
    assert "ck_sync_state_errors_is_array" in declared["sync_state"]


def test_the_resource_time_index_covers_the_history_rules_on_postgresql(
    engine: sa.Engine,
) -> None:
    # Alembic's comparison does not see INCLUDE columns: check the index's definition here.
    [index] = [
        i
        for i in sa.inspect(engine).get_indexes("sync_history")
        if i["name"] == "ix_sync_history_resource_time"
    ]
    assert index["column_names"] == ["resource", "sync_start_time"]
    if engine.dialect.name == "postgresql":
        assert index["include_columns"] == [
            "sync_status",
            "sync_id",
            "duration_ms",
            "records_processed",
        ]
        assert index["column_sorting"] == {"sync_start_time": ("desc",)}
    else:
        assert not index.get("include_columns")


def test_current_revision_is_head_after_first_use(store: SyncStore) -> None:
    with store.engine.connect() as conn:
        assert current_revision(conn) == head_revision()


def test_the_head_constant_is_alembics_head() -> None:
    # First use compares the stored revision with this constant instead of loading Alembic:
    # a new migration must update it.
    assert head_revision() == HEAD_REVISION


def test_the_one_query_check_reads_what_alembic_reads(store: SyncStore) -> None:
    assert store.db.read(stored_revision, "read") == HEAD_REVISION
    with store.engine.connect() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0007'"))
        conn.commit()
        assert current_revision(conn) == "0007"
    assert store.db.read(stored_revision, "read") == "0007"


def test_a_database_behind_head_is_migrated_on_first_use(backend: Backend) -> None:
    engine = backend.engine()
    assert upgrade(engine, backend.schema, revision="0008") is None
    assert "sync_history_daily" not in sa.inspect(engine).get_table_names()  # 0009's table
    store = backend.store()
    assert store.db.read(stored_revision, "read") == HEAD_REVISION
    assert "sync_history_daily" in sa.inspect(engine).get_table_names()
    store.dispose()
    engine.dispose()


def test_the_one_query_check_finds_no_revision_in_an_empty_database(backend: Backend) -> None:
    empty = backend.store(auto_migrate=False)
    assert empty.db.read(stored_revision, "read") is None
    empty.dispose()


def test_migrate_is_idempotent(store: SyncStore, engine: sa.Engine) -> None:
    tables_before = sorted(sa.inspect(engine).get_table_names())
    assert store.migrate() == head_revision()
    assert store.migrate() == head_revision()
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
        assert list(versions) == [head_revision()]
    assert sorted(sa.inspect(engine).get_table_names()) == tables_before
    assert schema_diff(engine) == []


def _create_store_at_the_same_moment(
    url: str, schema: str, barrier: Any, results: Any, resource: str
) -> None:
    """Child process: wait for the sibling, create a store, use it, report what it did."""
    ran_upgrade: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Running upgrade"):
                ran_upgrade.append(record.getMessage())

    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.addHandler(Recorder())
    migration_log.setLevel(logging.INFO)
    try:
        import datetime as dt
        import uuid

        from sync_observability import SyncOutcome

        barrier.wait(timeout=PROCESS_TIMEOUT_S)
        store = SyncStore.from_url(url, schema=schema)
        now = dt.datetime.now(dt.timezone.utc)
        record = store.start_sync(sync_id=str(uuid.uuid4()), resource=resource, started_at=now)
        store.finish_sync(
            sync_id=record.sync_id,
            resource=resource,
            started_at=now,
            outcome=SyncOutcome(status="success", ended_at=now, watermark_after=now),
        )
        with store.engine.connect() as conn:
            revision = current_revision(conn)
        store.dispose()
        results.put((resource, "ok", revision, len(ran_upgrade)))
    except BaseException as e:
        results.put((resource, "error", f"{type(e).__name__}: {e}", len(ran_upgrade)))


@pytest.mark.slow
def test_two_processes_creating_a_store_at_the_same_moment(backend: Backend) -> None:
    # backend alone: the database (SQLite file / PostgreSQL schema) does not exist yet.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_create_store_at_the_same_moment,
            args=(backend.url, backend.schema, barrier, results, resource),
        )
        for resource in ("accounts", "funds")
    ]
    for p in processes:
        p.start()
    try:
        reports = sorted(results.get(timeout=PROCESS_TIMEOUT_S) for _ in processes)
    finally:
        for p in processes:
            p.join(timeout=PROCESS_TIMEOUT_S)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in processes] == [0, 0]
    head = head_revision()
    assert [r[:3] for r in reports] == [("accounts", "ok", head), ("funds", "ok", head)]
    # Exactly one process ran the migration steps; the other found the schema at head.
    expected_steps = len(_revisions_up_to_head())
    assert sorted(r[3] for r in reports) == [0, expected_steps]

    store = backend.store()
    try:
        assert [s.resource for s in store.list_states()] == ["accounts", "funds"]
        with store.engine.connect() as conn:
            versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
            assert list(versions) == [head]
        assert schema_diff(store.engine) == []
    finally:
        store.dispose()


def _revisions_up_to_head() -> list[str]:
    from alembic.script import ScriptDirectory

    from sync_observability.storage.migrate import alembic_config

    return [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
