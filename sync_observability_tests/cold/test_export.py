"""``sync-obs archive export``: old rows leave the database for verified Parquet files.

Against a local folder and a real S3 API (moto's server on 127.0.0.1, through s3fs), on SQLite
and PostgreSQL: every value read back from the files equals what the database held; only
manifest-listed files are data; the cold purge takes whole months. The crash tests
(``test_export_killed_*``) SIGKILL a real ``sync-obs`` process at named instants of a 50,000-row
export on PostgreSQL and check nothing is lost or doubled, and that a rerun finishes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability.cli import main
from sync_observability.cold import layout
from sync_observability.cold.export import KILL_AT_ENV, ColdPolicy, export_cold
from sync_observability.errors import InvalidInputError
from sync_observability.storage.schema import operation_log, sync_history_archive, sync_state
from sync_observability_tests.cold.conftest import (
    UTC,
    archive_rows,
    insert,
    operation_rows,
    table_rows,
)
from sync_observability_tests.conftest import Backend

NOW = dt.datetime(2025, 6, 15, 12, tzinfo=UTC)
START = dt.datetime(2024, 1, 20, 23, 59, 59, tzinfo=UTC)  # rows straddle month ends
POSTGRES_ONLY = [pytest.param("postgresql", marks=pytest.mark.postgres)]


def _files(root: Any) -> list[tuple[layout.ManifestEntry, Any]]:
    """Each manifest entry with its file read back as an Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return [
        (entry, pq.read_table(pa.BufferReader((root / entry.path).read_bytes())))
        for entry in layout.read_manifest(root)
    ]


def _cold_ids(root: Any, table: str) -> list[Any]:
    column = layout.ID_COLUMNS[table]
    return [
        value
        for entry, data in _files(root)
        if entry.table == table
        for value in data.column(column).to_pylist()
    ]


def _month(moment: dt.datetime) -> tuple[int, int]:
    moment = moment.astimezone(UTC)
    return moment.year, moment.month


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_export_moves_old_rows_to_files_holding_every_value(
    backend: Backend, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "cold") if where == "local" else request.getfixturevalue("s3_root")
    store = backend.store()
    engine = backend.engine()
    # 70 archive rows every 16h (Jan 20 .. Mar 7, 2024) and 50 events; cutoff on Feb 20, 2024.
    insert(
        engine,
        archive_rows(70, start=START, step=dt.timedelta(hours=16)),
        operation_rows(50, start=START, step=dt.timedelta(hours=23)),
    )
    before_export = {
        "sync_history": table_rows(engine, sync_history_archive),
        "operation_log": table_rows(engine, operation_log),
    }
    cutoff = NOW - dt.timedelta(days=481)
    policy = ColdPolicy(url=url, older_than_days=481, batch_size=9)

    result = export_cold(store, policy, now=NOW)

    root = layout.open_root(url)
    for table in layout.TABLES:
        time_column = layout.TIME_COLUMNS[table]
        old = {k: r for k, r in before_export[table].items() if r[time_column] < cutoff}
        assert 0 < len(old) < len(before_export[table])
        [done] = [t for t in result.tables if t.table == table]
        assert done.rows == len(old)
        source = sync_history_archive if table == "sync_history" else operation_log
        left = table_rows(engine, source)
        assert set(left) == set(before_export[table]) - set(old)  # the rest untouched
        read_back: dict[Any, dict[str, Any]] = {}
        for entry, data in _files(root):
            if entry.table != table:
                continue
            assert data.schema.equals(layout.arrow_schema(table))
            assert data.schema.names == [c.name for c in source.columns]
            body = (root / entry.path).read_bytes()
            assert hashlib.sha256(body).hexdigest() == entry.sha256
            rows = data.to_pylist()
            assert entry.rows == len(rows)
            ids = [row[layout.ID_COLUMNS[table]] for row in rows]
            assert (entry.first_id, entry.last_id) == (ids[0], ids[-1])
            assert {_month(row[time_column]) for row in rows} == {(entry.year, entry.month)}
            for row in rows:
                assert row[layout.ID_COLUMNS[table]] not in read_back
                read_back[row[layout.ID_COLUMNS[table]]] = row
        assert set(read_back) == set(old)
        for key, original in old.items():
            row = read_back[key]
            for column, value in original.items():
                if column in layout.JSON_COLUMNS:
                    stored = row[column]
                    assert (json.loads(stored) if stored is not None else None) == value, column
                else:
                    assert row[column] == value, (column, row[column], value)
                    if isinstance(value, dt.datetime):
                        assert row[column].utcoffset() == dt.timedelta(0)
    # Nothing but listed files and the manifest is left under the root.
    listed = {entry.path for entry in layout.read_manifest(root)}
    on_disk = {
        str(path.relative_to(root)) if where == "local" else path.path.split("/cold/", 1)[1]
        for path in root.rglob("*")
        if path.is_file()
    }
    assert on_disk == listed | {layout.MANIFEST_NAME}
    # A second run has nothing to do and leaves the manifest as it was.
    again = export_cold(store, policy, now=NOW)
    assert again.rows == 0
    assert {e.path for e in layout.read_manifest(root)} == listed
    store.dispose()


def test_dry_run_counts_and_changes_nothing(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    insert(
        backend.engine(),
        archive_rows(30, start=START, step=dt.timedelta(days=1)),
        operation_rows(10, start=START, step=dt.timedelta(days=5)),
    )
    cutoff_days = (NOW - (START + dt.timedelta(days=10))).days
    result = export_cold(
        store,
        ColdPolicy(url=str(tmp_path / "cold"), older_than_days=cutoff_days, dry_run=True),
        now=NOW,
    )
    counts = {t.table: t.rows for t in result.tables}
    assert counts == {"sync_history": 11, "operation_log": 3}
    assert result.dry_run and "would export" in result.message
    assert not (tmp_path / "cold").exists()
    assert len(table_rows(backend.engine(), sync_history_archive)) == 30


def test_the_sync_owning_a_watermark_stays_in_the_archive(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    engine = backend.engine()
    rows = archive_rows(6, start=START, step=dt.timedelta(days=1))
    owner = rows[5]  # a success with a watermark (odd, not a multiple of 3)
    assert owner["sync_status"] == "success" and owner["watermark_after"] is not None
    insert(engine, rows, [])
    with engine.begin() as conn:
        conn.execute(
            sa.insert(sync_state),
            {"resource": owner["resource"], "last_sync_time": owner["watermark_after"]},
        )
    export_cold(store, ColdPolicy(url=str(tmp_path / "cold"), older_than_days=30), now=NOW)
    assert set(table_rows(engine, sync_history_archive)) == {owner["sync_id"]}
    assert sorted(_cold_ids(layout.open_root(str(tmp_path / "cold")), "sync_history")) == sorted(
        r["sync_id"] for r in rows if r is not owner
    )


def test_cold_purge_deletes_whole_months_only_manifest_first(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    url = str(tmp_path / "cold")
    # Jan 20 .. Mar 9, 2024 exported; then a purge window ending mid-February.
    insert(backend.engine(), archive_rows(50, start=START, step=dt.timedelta(days=1)), [])
    export_cold(store, ColdPolicy(url=url, older_than_days=30, batch_size=8), now=NOW)
    root = layout.open_root(url)
    stray = layout.month_dir(root, "sync_history", 2024, 1) / "left-by-a-killed-run.parquet"
    stray.write_bytes(b"not listed")
    kept_before = [e for e in layout.read_manifest(root) if e.month != 1]
    purge_now = dt.datetime(2024, 2, 15, tzinfo=UTC) + dt.timedelta(days=100)

    dry = export_cold(
        store,
        ColdPolicy(url=url, older_than_days=30, purge_cold_after_days=100, dry_run=True),
        now=purge_now,
    )
    assert dry.purged_months == ("sync_history/2024-01",)
    assert len(layout.read_manifest(root)) > len(kept_before)

    result = export_cold(
        store, ColdPolicy(url=url, older_than_days=30, purge_cold_after_days=100), now=purge_now
    )
    assert result.purged_months == ("sync_history/2024-01",)
    assert result.purged_rows == 12  # Jan 20 .. Jan 31
    assert layout.read_manifest(root) == kept_before  # February stays whole though half is past
    assert not layout.month_dir(root, "sync_history", 2024, 1).exists()
    assert all((root / e.path).exists() for e in kept_before)


def test_bad_input_is_one_line_naming_the_option(tmp_path: Path) -> None:
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'sync.db'}"
    cases = [
        (["--to", "ftp://user:pa55word@host/x"], "'--to'", "unsupported scheme 'ftp'"),
        (["--to", str(tmp_path), "--older-than-days", "-1"], "'--older-than-days'", "-1"),
        (
            ["--to", str(tmp_path), "--older-than-days", "30", "--purge-cold-after-days", "7"],
            "'--purge-cold-after-days'",
            "at least --older-than-days (30)",
        ),
        (["--older-than-days", "30"], "'--to'", "Missing option"),
    ]
    for args, option, problem in cases:
        result = runner.invoke(main, ["archive", "export", "--database-url", db, *args])
        assert result.exit_code == 2, result.output
        [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert option in line and problem in line, line
        assert "pa55word" not in result.output
    with pytest.raises(InvalidInputError, match="older_than_days"):
        ColdPolicy(url=str(tmp_path), older_than_days=0)
    assert not (tmp_path / "sync.db").exists()


def test_archive_without_a_subcommand_still_runs_retention(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", db]).exit_code == 0
    result = CliRunner().invoke(main, ["archive", "--database-url", db, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dry_run"] is True


def test_export_cli_json_and_a_password_in_the_url_is_never_printed(
    s3_root: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", db]).exit_code == 0
    engine = sa.create_engine(db)
    insert(engine, archive_rows(5, start=START, step=dt.timedelta(days=1)), [])
    engine.dispose()
    result = CliRunner().invoke(
        main, ["archive", "export", "--database-url", db, "--to", s3_root, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == 5 and report["url"] == s3_root
    assert {t["table"]: t["files"] for t in report["tables"]} == {
        "sync_history": 1,
        "operation_log": 0,
    }


# -- kill -9 -----------------------------------------------------------------------------------

ROWS = 50_000
EVENTS = 5_000


def _fill(engine: sa.Engine) -> None:
    """50,000 archive rows every 3 minutes from Jan 1, 2024 (four months), and 5,000 events."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO sync_history_archive (sync_id, resource, sync_type, sync_start_time,
                    sync_end_time, sync_status, errors, metadata, observed, archived_at,
                    cursor_after)
                SELECT 'k-' || g, 'res-' || (g % 7), 'full',
                    timestamptz '2024-01-01 00:00:00+00' + g * interval '3 minutes',
                    timestamptz '2024-01-01 00:00:01+00' + g * interval '3 minutes',
                    'success', '[]', jsonb_build_object('g', g), false, now(),
                    jsonb_build_object('page', g)
                FROM generate_series(1, :rows) AS g
                """
            ),
            {"rows": ROWS},
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO operation_log (category, resource, sync_id, event_time, message,
                    details)
                SELECT 'dedup_conflict', 'res-1', 'k-' || g,
                    timestamptz '2024-01-01 00:00:00+00' + g * interval '30 minutes', 'm',
                    jsonb_build_object('g', g)
                FROM generate_series(1, :events) AS g
                """
            ),
            {"events": EVENTS},
        )


def _export_process(backend: Backend, url: str, kill_at: str | None) -> int:
    """Run ``sync-obs archive export`` in a child; its exit code (-9 when it killed itself)."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    args = [
        sys.executable,
        "-m",
        "sync_observability.cli",
        "archive",
        "export",
        "--database-url",
        backend.url,
        "--schema",
        backend.schema,
        "--to",
        url,
        "--batch-size",
        "10000",
        "--older-than-days",
        "30",
        "--json",
    ]
    child = subprocess.Popen(
        args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode in (0, -signal.SIGKILL), err.decode()
    return child.returncode


def _wait_for_lock_release(engine: sa.Engine) -> None:
    """The killed child's session (and its advisory lock) is gone once the server noticed."""
    deadline = time.monotonic() + 30
    query = sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    )
    while True:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() == 0:
                return
        assert time.monotonic() < deadline, "the killed export's lock was never released"
        time.sleep(0.05)


def _where_rows_are(engine: sa.Engine, root: Any, table: str, source: sa.Table) -> tuple[Any, Any]:
    key = layout.ID_COLUMNS[table]
    with engine.connect() as conn:
        in_db = list(conn.execute(sa.select(source.c[key])).scalars())
    return in_db, _cold_ids(root, table)


@pytest.mark.slow
@pytest.mark.parametrize("backend", POSTGRES_ONLY, indirect=True)
@pytest.mark.parametrize(
    ("where", "kill_at"),
    [
        ("local", "upload:3"),  # half the file written to its temporary name
        ("local", "uploaded:2"),  # the file in place, not yet read back nor listed
        ("local", "manifest:4"),  # listed, the rows not yet deleted
        ("s3", "upload:2"),  # the PUT under way
        ("s3", "manifest:3"),
    ],
)
def test_export_killed_loses_and_doubles_nothing_and_a_rerun_finishes(
    backend: Backend, tmp_path: Path, where: str, kill_at: str, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "cold") if where == "local" else request.getfixturevalue("s3_root")
    store = backend.store()  # migrates the schema
    engine = backend.engine()
    _fill(engine)
    all_ids = {
        table: set(_where_rows_are(engine, layout.open_root(url), table, source)[0])
        for table, source in (
            ("sync_history", sync_history_archive),
            ("operation_log", operation_log),
        )
    }
    assert len(all_ids["sync_history"]) == ROWS

    assert _export_process(backend, url, kill_at) == -signal.SIGKILL
    _wait_for_lock_release(engine)
    if where == "s3":
        import fsspec

        fsspec.filesystem("s3").invalidate_cache()
    root = layout.open_root(url)
    in_db, in_cold = _where_rows_are(engine, root, "sync_history", sync_history_archive)
    assert len(in_cold) == len(set(in_cold))  # no row in two listed files
    assert set(in_db) | set(in_cold) == all_ids["sync_history"]  # nothing lost
    both = set(in_db) & set(in_cold)
    last = layout.read_manifest(root)[-1]
    if kill_at.startswith("manifest"):
        # Killed between listing the file and deleting its rows: exactly that file's rows.
        assert both == set(_cold_ids_of(root, last))
    else:
        assert not both
    assert len(in_cold) > 0  # earlier batches finished before the kill

    assert _export_process(backend, url, None) == 0
    if where == "s3":
        import fsspec

        fsspec.filesystem("s3").invalidate_cache()
    # The rerun finished the listed file's batch without writing it again.
    assert last in layout.read_manifest(root)
    for table, source in (("sync_history", sync_history_archive), ("operation_log", operation_log)):
        in_db, in_cold = _where_rows_are(engine, root, table, source)
        assert in_db == []
        assert len(in_cold) == len(set(in_cold)) == len(all_ids[table])
        assert set(in_cold) == all_ids[table]
    store.dispose()


def _cold_ids_of(root: Any, entry: layout.ManifestEntry) -> list[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = pq.read_table(pa.BufferReader((root / entry.path).read_bytes()))
    return data.column(layout.ID_COLUMNS[entry.table]).to_pylist()
