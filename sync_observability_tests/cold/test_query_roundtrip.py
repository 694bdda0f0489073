"""The cold tier end to end: rows archived in the database, exported by ``archive export``, read
back by ``archive query``, ``reports.cold_history`` and ``history --include-cold`` with every
value equal (JSON and timestamps included), on a local folder and on S3 (moto on loopback)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_observability.cli import main
from sync_observability.cold import layout
from sync_observability.cold.export import ColdPolicy, export_cold
from sync_observability.reports import cold_history
from sync_observability.storage.schema import operation_log, sync_history_archive
from sync_observability_tests.cold.test_query import (
    as_database_value,
    at,
    frame_rows,
    history_row,
    operation_row,
)
from sync_observability_tests.conftest import Backend

NOW = dt.datetime(2026, 1, 15, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def cold_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "cold")
    return request.getfixturevalue("s3_root")  # a fresh bucket on moto (conftest)


def seed(backend: Backend) -> tuple[list[dict], list[dict]]:
    """Archive rows over three months and operation-log rows, all older than the export cut."""
    rows = [history_row(n, at(2024, 1 + n % 3, 1 + n, n)) for n in range(9)]
    events = [operation_row(n + 1, at(2024, 2, 1 + n, n), rows[n]["sync_id"]) for n in range(3)]
    backend.store().dispose()  # migrated
    engine = backend.engine()
    with engine.begin() as conn:
        conn.execute(sa.insert(sync_history_archive), rows)
        conn.execute(sa.insert(operation_log), events)
    engine.dispose()
    return rows, events


def export(backend: Backend, url: str) -> None:
    store = backend.store()
    try:
        result = export_cold(store, ColdPolicy(url=url, older_than_days=365, batch_size=2), now=NOW)
    finally:
        store.dispose()
    assert [t.rows for t in result.tables] == [9, 3]


def run(command: Any, args: list[str]) -> Result:
    result = CliRunner().invoke(command, args, env={"COLUMNS": "200", "SYNC_OBS_COLD_URL": None})
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_archived_rows_come_back_from_the_cold_tier_with_every_value(
    backend: Backend, cold_url: str
) -> None:
    rows, events = seed(backend)
    export(backend, cold_url)
    engine = backend.engine()
    with engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(sync_history_archive)).scalar()
    engine.dispose()
    assert left == 0
    by_id = sorted(rows, key=lambda r: r["sync_id"])
    manifest = layout.read_manifest(layout.open_root(cold_url))
    files = sorted(
        layout.display_url(f"{cold_url}/{e.path}") for e in manifest if e.table == "sync_history"
    )
    assert len(files) == 6  # batches of 2, cut at each month

    # sync-obs archive query
    result = run(
        main,
        [
            "archive",
            "query",
            "SELECT * FROM sync_history_cold ORDER BY sync_id",
            "--from",
            cold_url,
            "--json",
        ],
    )
    got = [{c: as_database_value(c, v) for c, v in r.items()} for r in json.loads(result.stdout)]
    assert got == by_id
    assert sorted(line.strip() for line in result.stderr.splitlines()[1:]) == files
    result = run(
        main,
        [
            "archive",
            "query",
            "SELECT * FROM operation_log_cold ORDER BY event_id",
            "--from",
            cold_url,
            "--json",
        ],
    )
    got = [{c: as_database_value(c, v) for c, v in r.items()} for r in json.loads(result.stdout)]
    assert got == events

    # reports.cold_history
    df = cold_history(cold_url)
    assert sorted(frame_rows(df), key=lambda r: r["sync_id"]) == by_id
    assert sorted(df.attrs["cold_files"]) == files

    # sync-obs history --include-cold
    result = run(
        main,
        [
            "history",
            "--database-url",
            backend.url,
            "--schema",
            backend.schema,
            "--include-cold",
            "--cold-url",
            cold_url,
            "--json",
        ],
    )
    merged = json.loads(result.stdout)
    assert {r["tier"] for r in merged} == {"cold"}
    got = [
        {c: v if c in layout.JSON_COLUMNS else as_database_value(c, v) for c, v in r.items()}
        for r in merged
    ]
    assert (
        sorted(
            ({k: v for k, v in r.items() if k != "tier"} for r in got), key=lambda r: r["sync_id"]
        )
        == by_id
    )


def test_credentials_never_appear_in_what_a_read_prints(s3_root: str) -> None:
    url = s3_root
    outputs = []
    for args in (["SELECT count(*) AS n FROM sync_history_cold", "--json"], ["SELEC 1"]):
        outputs.append(
            CliRunner().invoke(
                main, ["archive", "query", *args, "--from", url], env={"SYNC_OBS_COLD_URL": None}
            )
        )
    empty, bad = outputs
    assert (empty.exit_code, json.loads(empty.stdout)) == (0, [{"n": 0}])
    assert f"cold archive {url} has no manifest yet" in empty.stderr
    assert bad.exit_code == 1
    for out in outputs:
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out.output
        assert os.environ["AWS_ACCESS_KEY_ID"] not in out.output


def test_missing_s3_credentials_are_one_line(
    s3_root: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # No profile files, and never the instance-metadata address (off loopback).
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()  # filesystems made with the credentials
    try:
        out = CliRunner().invoke(
            main,
            ["archive", "query", "SELECT 1", "--from", s3_root],
            env={"SYNC_OBS_COLD_URL": None},
        )
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert out.exit_code == 1
    assert out.stderr == (
        f"Error: cannot read the cold manifest under {s3_root}: NoCredentialsError: "
        "Unable to locate credentials\n"
    )


def test_a_long_lived_process_sees_what_was_exported_since(backend: Backend, cold_url: str) -> None:
    seed(backend)
    export(backend, cold_url)
    assert len(cold_history(cold_url)) == 9
    # Into a month whose folder the first read listed already.
    later = [history_row(100 + n, at(2024, 3, 20 + n)) for n in range(3)]
    engine = backend.engine()
    with engine.begin() as conn:
        conn.execute(sa.insert(sync_history_archive), later)
    engine.dispose()
    store = backend.store()
    try:
        export_cold(store, ColdPolicy(url=cold_url, older_than_days=365, batch_size=2), now=NOW)
    finally:
        store.dispose()
    df = cold_history(cold_url, since=at(2024, 3, 20))
    assert sorted(df["sync_id"]) == sorted(r["sync_id"] for r in later)
    # March's files only: the two of the first export and the two of the second.
    assert len(df.attrs["cold_files"]) == 4
    assert all("/year=2024/month=03/" in name for name in df.attrs["cold_files"])
