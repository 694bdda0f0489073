"""Reading the cold tier back: ``sync-obs archive query``, ``reports.cold_history`` and
``sync-obs history --include-cold``, over files written as the cold-file contract says."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_observability.cli import main
from sync_observability.cli.sync import merge_tiers
from sync_observability.cold import layout
from sync_observability.reports import cold_history
from sync_observability.storage.schema import sync_history_archive
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
HISTORY = layout.HISTORY_TABLE
OPERATIONS = layout.OPERATION_LOG_TABLE


# -- rows and files as the contract describes them ---------------------------------------------


def history_row(number: int, start: dt.datetime, resource: str = "vantage/accounts") -> dict:
    """A ``sync_history_archive`` row as the database hands it back (JSON decoded), with the
    awkward values a round trip can lose: microseconds, NULLs, unicode, nested and scalar JSON."""
    failed = number % 3 == 0
    return {
        "sync_id": str(uuid.UUID(int=number + 1)),
        "resource": resource,
        "source_system": "vantage" if number % 2 else None,
        "target_system": "warehouse",
        "sync_type": "full" if number % 4 == 0 else "incremental",
        "sync_start_time": start,
        "sync_end_time": start + dt.timedelta(seconds=3, microseconds=number),
        "sync_status": "failed" if failed else "success",
        "records_processed": number * 1_000_003,
        "records_created": number,
        "records_updated": 2**40 + number,
        "records_failed": 1 if failed else 0,
        "error_message": 'Vantage a répondu "503"\nretry later' if failed else None,
        "errors": [{"code": "API_TIMEOUT", "message": "délai ✓", "attempt": number}]
        if failed
        else [],
        "watermark_before": None if number % 5 == 0 else start - dt.timedelta(hours=1),
        "watermark_after": start if not failed else None,
        "cursor_before": None if number % 2 else {"page": number, "token": 'a"b\\c'},
        "cursor_after": number if number % 2 else ["x", 1.5, None, True],
        "duration_ms": None if failed else 3_000 + number,
        "dagster_run_id": f"run-{number}",
        "asset_key": "vantage/accounts",
        "partition_key": "2024-01-01" if number % 2 else None,
        "retry_number": number % 3,
        "metadata": {"cost": {"usd": 0.125 * number}, "tags": ["a", "ü"], "none": None},
        "observed": number % 7 == 0,
        "archived_at": start + dt.timedelta(days=120, microseconds=7),
    }


def operation_row(number: int, when: dt.datetime, sync_id: str) -> dict:
    return {
        "event_id": number,
        "category": "data_quality_error",
        "resource": "vantage/accounts",
        "sync_id": sync_id,
        "entity_key": f"AAPL|{number}",
        "event_time": when,
        "message": "quote refused",
        "details": {"price": -1, "reason": "négatif"},
        "log_time": when + dt.timedelta(microseconds=5),
    }


def write_cold_file(root: Any, table: str, rows: Sequence[dict], name: str) -> layout.ManifestEntry:
    """One Parquet file as the export writes it (zstd, the table's Arrow schema, JSON as text),
    in the month folder of its rows; returns its manifest entry (not yet published)."""
    schema = layout.arrow_schema(table)
    time_column = layout.TIME_COLUMNS[table]
    months = {(row[time_column].year, row[time_column].month) for row in rows}
    assert len(months) == 1, "a file holds one month"
    [(year, month)] = months
    encoded = [
        {
            column: json.dumps(value, ensure_ascii=False)
            if column in layout.JSON_COLUMNS and value is not None
            else value
            for column, value in row.items()
        }
        for row in rows
    ]
    path = layout.file_path(root, table, year, month, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(encoded, schema=schema), path.path, compression="zstd")
    id_column = layout.ID_COLUMNS[table]
    return layout.ManifestEntry(
        path=layout.relative_path(table, year, month, name),
        table=table,
        year=year,
        month=month,
        rows=len(rows),
        first_id=rows[0][id_column],
        last_id=rows[-1][id_column],
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        written_at="2026-01-01T00:00:00+00:00",
    )


def at(year: int, month: int, day: int, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, 10, 30, second, 123_456, tzinfo=UTC)


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[dict]:
    """A local cold root with three months of history (4 rows each) and a month of events."""
    root = layout.open_root(str(tmp_path / "cold"))
    rows = {
        month: [history_row(month * 10 + i, at(2024, month, 3 + i, i)) for i in range(4)]
        for month in (1, 2, 3)
    }
    entries = [write_cold_file(root, HISTORY, rows[m], f"batch-{m}") for m in rows]
    events = [operation_row(n, at(2024, 2, 9, n), rows[2][0]["sync_id"]) for n in (1, 2)]
    entries.append(write_cold_file(root, OPERATIONS, events, "batch-1"))
    layout.write_manifest(root, entries)
    yield {"root": root, "url": str(tmp_path / "cold"), "rows": rows, "events": events}


def cold_query(*args: str, env: dict[str, str] | None = None) -> Result:
    """``sync-obs archive query ARGS`` in-process."""
    return CliRunner().invoke(
        main, ["archive", "query", *args], env={"SYNC_OBS_COLD_URL": None, **(env or {})}
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def named_files(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


def every_history_row(cold: dict) -> list[dict]:
    return [row for month in sorted(cold["rows"]) for row in cold["rows"][month]]


def as_database_value(column: str, value: Any) -> Any:
    """A value of ``archive query --json`` as the database holds it."""
    if value is None:
        return None
    if column in layout.JSON_COLUMNS:
        return json.loads(value)
    if column.endswith(("_time", "_at", "_before", "_after")) and isinstance(value, str):
        if column in ("cursor_before", "cursor_after"):
            return value
        return dt.datetime.fromisoformat(value)
    return value


# -- sync-obs archive query --------------------------------------------------------------------


def test_query_returns_every_column_of_every_manifest_row(cold: dict) -> None:
    result = ok(
        cold_query(
            "SELECT * FROM sync_history_cold ORDER BY sync_id", "--from", cold["url"], "--json"
        )
    )
    rows = json.loads(result.stdout)
    expected = sorted(every_history_row(cold), key=lambda row: row["sync_id"])
    assert list(rows[0]) == layout.column_names(HISTORY)
    assert [{c: as_database_value(c, v) for c, v in row.items()} for row in rows] == expected


def test_query_reads_only_the_files_the_manifest_lists(cold: dict) -> None:
    root = cold["root"]
    # A file a killed export left behind, and a temporary name: same folders, same schema.
    stray = [history_row(900, at(2024, 2, 20)), history_row(901, at(2024, 2, 21))]
    write_cold_file(root, HISTORY, stray, "batch-9-unverified")
    write_cold_file(root, HISTORY, [history_row(902, at(2024, 2, 22))], ".batch-10.tmp")
    result = ok(
        cold_query(
            "SELECT count(*) AS n, count(DISTINCT sync_id) AS ids FROM sync_history_cold",
            "--from",
            cold["url"],
            "--json",
        )
    )
    assert json.loads(result.stdout) == [{"n": 12, "ids": 12}]
    assert named_files(result.stderr) == [
        f"{cold['url']}/table=sync_history/year=2024/month={m:02d}/batch-{m}.parquet"
        for m in (1, 2, 3)
    ]
    assert f"read 3 cold file(s) under {cold['url']}" in result.stderr


def test_query_names_the_files_of_the_views_it_reads(cold: dict) -> None:
    url = cold["url"]
    events = ok(cold_query("SELECT count(*) AS n FROM operation_log_cold", "--from", url))
    assert named_files(events.stderr) == [
        f"{url}/table=operation_log/year=2024/month=02/batch-1.parquet"
    ]
    joined = ok(
        cold_query(
            "SELECT h.resource, o.message FROM sync_history_cold h "
            "JOIN operation_log_cold o ON o.sync_id = h.sync_id ORDER BY o.event_id",
            "--from",
            url,
            "--json",
        )
    )
    assert (
        json.loads(joined.stdout)
        == [{"resource": "vantage/accounts", "message": "quote refused"}] * 2
    )
    assert len(named_files(joined.stderr)) == 4
    # A view named only in a comment or a string is not read.
    none = ok(cold_query("SELECT 'sync_history_cold' AS t -- operation_log_cold", "--from", url))
    assert named_files(none.stderr) == []
    # Several statements: the last one's rows; a view named anywhere counts as read.
    two = ok(
        cold_query(
            "CREATE TEMP TABLE n AS SELECT count(*) AS c FROM operation_log_cold; "
            "SELECT c * 10 AS c FROM n",
            "--from",
            url,
            "--json",
        )
    )
    assert json.loads(two.stdout) == [{"c": 20}]
    assert named_files(two.stderr) == [
        f"{url}/table=operation_log/year=2024/month=02/batch-1.parquet"
    ]


def test_query_json_functions_and_timestamps_are_utc(cold: dict) -> None:
    sql = (
        "SELECT sync_id, json_extract(metadata, '$.cost.usd')::DOUBLE AS usd, "
        "date_trunc('month', sync_start_time) AS month FROM sync_history_cold "
        "WHERE sync_status = 'failed' ORDER BY sync_start_time"
    )
    rows = json.loads(ok(cold_query(sql, "--from", cold["url"], "--json")).stdout)
    failed = [r for r in every_history_row(cold) if r["sync_status"] == "failed"]
    assert [r["sync_id"] for r in rows] == [r["sync_id"] for r in failed]
    assert [r["usd"] for r in rows] == [r["metadata"]["cost"]["usd"] for r in failed]
    assert rows[0]["month"] == "2024-01-01T00:00:00+00:00"


def test_query_csv_parses_with_a_header(cold: dict) -> None:
    sql = (
        "SELECT sync_id, sync_start_time, observed, error_message, duration_ms, errors "
        "FROM sync_history_cold ORDER BY sync_id"
    )
    result = ok(cold_query(sql, "--from", cold["url"], "--csv"))
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = sorted(every_history_row(cold), key=lambda row: row["sync_id"])
    assert len(rows) == len(expected) == 12
    for got, want in zip(rows, expected, strict=True):
        assert got["sync_id"] == want["sync_id"]
        assert dt.datetime.fromisoformat(got["sync_start_time"]) == want["sync_start_time"]
        assert got["observed"] == ("true" if want["observed"] else "false")
        assert got["error_message"] == (want["error_message"] or "")
        assert got["duration_ms"] == (
            "" if want["duration_ms"] is None else str(want["duration_ms"])
        )
        assert json.loads(got["errors"]) == want["errors"]


def test_query_prints_a_table_by_default(cold: dict) -> None:
    sql = (
        "SELECT resource, count(*) AS syncs, max(sync_start_time) AS newest "
        "FROM sync_history_cold GROUP BY resource"
    )
    result = ok(cold_query(sql, "--from", cold["url"], env={"COLUMNS": "200"}))
    assert "Cold archive query, 1 row" in result.stdout
    [line] = [line for line in result.stdout.splitlines() if "vantage/accounts" in line]
    assert line.split() == ["vantage/accounts", "12", "2024-03-06", "10:30:03"]


def test_the_table_shows_the_first_rows_and_says_how_many_more(cold: dict) -> None:
    sql = "SELECT sync_id FROM sync_history_cold ORDER BY sync_id"
    ids = sorted(r["sync_id"] for r in every_history_row(cold))
    cut = ok(cold_query(sql, "--from", cold["url"], "--max-rows", "5"))
    assert [i for i in ids if i in cut.stdout] == ids[:5]
    assert "7 more rows not shown: --max-rows 0 shows them all" in cut.stdout
    every = ok(cold_query(sql, "--from", cold["url"], "--max-rows", "0"))
    assert [i for i in ids if i in every.stdout] == ids
    assert "not shown" not in every.stdout


def test_an_empty_root_has_empty_views_with_the_right_columns(tmp_path: Path) -> None:
    # An existing folder without a manifest (a missing one is an error: test_cli_usability).
    (tmp_path / "nothing-yet").mkdir()
    url = str(tmp_path / "nothing-yet")
    for table, view in (
        ("sync_history", "sync_history_cold"),
        ("operation_log", "operation_log_cold"),
    ):
        result = ok(cold_query(f"SELECT * FROM {view}", "--from", url, "--csv"))
        assert result.stdout.splitlines() == [",".join(layout.column_names(table))]
        assert "has no manifest yet" in result.stderr
    types = json.loads(
        ok(cold_query("DESCRIBE operation_log_cold", "--from", url, "--json")).stdout
    )
    assert {t["column_name"]: t["column_type"] for t in types} == {
        "event_id": "BIGINT",
        "category": "VARCHAR",
        "resource": "VARCHAR",
        "sync_id": "VARCHAR",
        "entity_key": "VARCHAR",
        "event_time": "TIMESTAMP WITH TIME ZONE",
        "message": "VARCHAR",
        "details": "VARCHAR",
        "log_time": "TIMESTAMP WITH TIME ZONE",
    }


def test_a_table_without_files_is_an_empty_view_beside_one_with_files(tmp_path: Path) -> None:
    root = layout.open_root(str(tmp_path))
    rows = [history_row(1, at(2024, 5, 1))]
    layout.write_manifest(root, [write_cold_file(root, HISTORY, rows, "only")])
    result = ok(
        cold_query(
            "SELECT (SELECT count(*) FROM sync_history_cold) AS h, "
            "(SELECT count(*) FROM operation_log_cold) AS o",
            "--from",
            str(tmp_path),
            "--json",
        )
    )
    assert json.loads(result.stdout) == [{"h": 1, "o": 0}]


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELEC * FROM sync_history_cold", 'Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM sync_history_hot", "Catalog Error: Table with name sync_history_hot"),
        ("SELECT nope FROM sync_history_cold", 'Binder Error: Referenced column "nope"'),
        ("SELECT CAST(resource AS INTEGER) FROM sync_history_cold", "Conversion Error"),
    ],
)
def test_bad_sql_is_one_line_naming_the_problem_exit_1(cold: dict, sql: str, problem: str) -> None:
    result = cold_query(sql, "--from", cold["url"], "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: invalid sql={sql!r}: ")
    assert problem in line
    assert "Traceback" not in result.output


def test_a_listed_file_that_is_gone_is_an_error_naming_it(cold: dict) -> None:
    gone = cold["root"] / layout.relative_path(HISTORY, 2024, 2, "batch-2")
    gone.unlink()
    result = cold_query("SELECT count(*) FROM sync_history_cold", "--from", cold["url"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()[-1:]
    assert line.startswith(f"Error: cannot read the cold files under {cold['url']}: ")
    assert "month=02/batch-2.parquet" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["SELECT 1", "--from", "x", "--json", "--csv"], "--json and --csv cannot be used"),
        (["SELECT 1"], "no cold archive: give --from URL or set SYNC_OBS_COLD_URL"),
        ([], "Missing argument 'SQL'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = cold_query(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_cold_url_comes_from_the_environment(cold: dict) -> None:
    result = ok(
        cold_query(
            "SELECT count(*) AS n FROM sync_history_cold",
            "--json",
            env={"SYNC_OBS_COLD_URL": cold["url"]},
        )
    )
    assert json.loads(result.stdout) == [{"n": 12}]


def test_an_unsupported_url_is_one_line_exit_1() -> None:
    result = cold_query("SELECT 1", "--from", "ftp://user:pw@host/cold")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "unsupported scheme 'ftp'" in line
    assert "pw" not in line


# -- reports.cold_history ----------------------------------------------------------------------


def test_cold_history_is_typed_decoded_and_names_the_files_it_read(cold: dict) -> None:
    df = cold_history(cold["url"])
    expected = sorted(
        every_history_row(cold), key=lambda r: (r["sync_start_time"], r["sync_id"]), reverse=True
    )
    assert list(df.columns) == layout.column_names(HISTORY)
    assert str(df["sync_start_time"].dtype) == "datetime64[us, UTC]"
    assert str(df["archived_at"].dtype) == "datetime64[us, UTC]"
    assert str(df["duration_ms"].dtype) == "Int64"
    assert str(df["observed"].dtype) == "bool"
    assert frame_rows(df) == expected
    assert df.attrs["cold_url"] == cold["url"]
    assert len(df.attrs["cold_files"]) == 3


def test_cold_history_filters_and_reads_only_the_months_it_needs(cold: dict) -> None:
    rows = every_history_row(cold)
    since, until = at(2024, 2, 4), at(2024, 3, 4)
    df = cold_history(cold["url"], since=since, until=until, status="success")
    expected = [
        r for r in rows if since <= r["sync_start_time"] < until and r["sync_status"] == "success"
    ]
    assert [r["sync_id"] for r in frame_rows(df)] == [
        r["sync_id"] for r in sorted(expected, key=lambda r: r["sync_start_time"], reverse=True)
    ]
    assert len(expected) == 2
    assert df.attrs["cold_files"] == [
        f"{cold['url']}/table=sync_history/year=2024/month={m:02d}/batch-{m}.parquet"
        for m in (2, 3)
    ]
    newest = cold_history(cold["url"], resource="vantage/accounts", limit=2)
    assert [r["sync_id"] for r in frame_rows(newest)] == [
        cold["rows"][3][3]["sync_id"],
        cold["rows"][3][2]["sync_id"],
    ]
    assert cold_history(cold["url"], resource="someone/else").empty


def test_cold_history_refuses_naive_times_and_an_empty_root_is_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="since"):
        cold_history(str(tmp_path), since=dt.datetime(2024, 1, 1))
    df = cold_history(str(tmp_path))
    assert df.empty
    assert list(df.columns) == layout.column_names(HISTORY)
    assert df.attrs["cold_files"] == []


def frame_rows(df: Any) -> list[dict]:
    """DataFrame rows as plain Python values (NA/NaT as None, Timestamps as datetimes)."""
    import pandas as pd

    out = []
    for record in df.to_dict("records"):
        row = {}
        for column, value in record.items():
            if isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            elif not isinstance(value, list | dict) and pd.isna(value):
                value = None
            elif hasattr(value, "item"):  # numpy scalars
                value = value.item()
            row[column] = value
        out.append(row)
    return out


# -- sync-obs history --include-cold -----------------------------------------------------------


def test_merge_tiers_orders_newest_first_and_keeps_the_databases_copy() -> None:
    def row(sync_id: str, day: int, **extra: Any) -> dict:
        return {"sync_id": sync_id, "sync_start_time": at(2024, 1, day), **extra}

    merged = merge_tiers(
        {
            "cold": [row("c", 5, archived_at=at(2024, 6, 1)), row("a", 2, archived_at=None)],
            "hot": [row("h", 9)],
            "archive": [row("a", 2, archived_at=at(2024, 5, 1)), row("b", 2, archived_at=None)],
        },
        limit=3,
    )
    assert [(r["sync_id"], r["tier"]) for r in merged] == [
        ("h", "hot"),
        ("c", "cold"),
        ("b", "archive"),
    ]
    assert merged[0]["archived_at"] is None
    full = merge_tiers({"archive": [row("a", 2)], "cold": [row("a", 2)]}, limit=None)
    assert [(r["sync_id"], r["tier"]) for r in full] == [("a", "archive")]


def insert_archive(backend: Backend, rows: Sequence[dict]) -> None:
    backend.store().dispose()  # migrated
    engine = backend.engine()
    with engine.begin() as conn:
        conn.execute(sa.insert(sync_history_archive), list(rows))
    engine.dispose()


def history(backend: Backend, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["history", "--database-url", backend.url, "--schema", backend.schema, *args],
        env={"COLUMNS": "200", "SYNC_OBS_COLD_URL": None},
    )


def test_history_include_cold_merges_hot_archive_and_cold(backend: Backend, cold: dict) -> None:
    tracker = backend.tracker()
    with tracker.track(resource="vantage/accounts", source_system="vantage") as sync:
        sync.record(processed=5)
    with tracker.track(resource="someone/else"):
        pass
    tracker.store.dispose()
    march = cold["rows"][3]
    # Retention archived two newer syncs; one of the cold syncs is still in the archive too
    # (an export killed between writing its file and deleting the rows).
    archived = [history_row(500 + i, at(2024, 9, 1 + i)) for i in range(2)] + [march[1]]
    insert_archive(backend, archived)

    result = history(
        backend,
        "--resource",
        "vantage/accounts",
        "--include-cold",
        "--cold-url",
        cold["url"],
        "--json",
    )
    ok(result)
    rows = json.loads(result.stdout)
    assert [(r["tier"], r["sync_id"]) for r in rows[:4]] == [
        ("hot", rows[0]["sync_id"]),
        ("archive", archived[1]["sync_id"]),
        ("archive", archived[0]["sync_id"]),
        ("cold", march[3]["sync_id"]),
    ]
    assert len(rows) == 1 + 2 + 12  # the doubled sync once, someone/else not at all
    assert len({r["sync_id"] for r in rows}) == len(rows)
    assert {r["tier"] for r in rows if r["sync_id"] == march[1]["sync_id"]} == {"archive"}
    starts = [dt.datetime.fromisoformat(r["sync_start_time"]) for r in rows]
    assert starts == sorted(starts, reverse=True)
    assert rows[0]["archived_at"] is None and rows[0]["records_processed"] == 5
    # A cold row keeps every value: JSON decoded and timestamps exact.
    oldest = rows[-1]
    want = cold["rows"][1][0]
    assert oldest["tier"] == "cold"
    assert {
        c: v if c in layout.JSON_COLUMNS else as_database_value(c, v)
        for c, v in oldest.items()
        if c != "tier"
    } == want
    assert named_files(result.stderr) == [
        f"{cold['url']}/table=sync_history/year=2024/month={m:02d}/batch-{m}.parquet"
        for m in (1, 2, 3)
    ]

    limited = json.loads(
        ok(
            history(
                backend,
                "--resource",
                "vantage/accounts",
                "--include-cold",
                "--cold-url",
                cold["url"],
                "--limit",
                "4",
                "--since",
                "2024-03-05T00:00:00Z",
                "--json",
            )
        ).stdout
    )
    assert [r["tier"] for r in limited] == ["hot", "archive", "archive", "cold"]
    table = ok(
        history(
            backend, "--resource", "vantage/accounts", "--include-cold", "--cold-url", cold["url"]
        )
    )
    assert "Tier" in table.stdout
    tiers = [line.split()[2] for line in table.stdout.splitlines() if "vantage/accounts" in line]
    # March's second sync sits in its place in time, from the archive.
    assert tiers == ["hot", "archive", "archive", "cold", "cold", "archive"] + ["cold"] * 9
    assert "+ cold archive" in table.stdout  # the caption (wrapped: the paths are long)
    assert f"read 3 cold file(s) under {cold['url']}" in table.stderr


def test_history_include_cold_needs_a_cold_url(backend: Backend) -> None:
    backend.store().dispose()
    result = history(backend, "--include-cold")
    assert result.exit_code == 2
    assert "--include-cold needs --cold-url URL or SYNC_OBS_COLD_URL" in result.stderr


def test_history_include_cold_of_an_empty_root_is_the_database(
    backend: Backend, tmp_path: Path
) -> None:
    insert_archive(backend, [history_row(700, at(2024, 9, 1))])
    result = ok(history(backend, "--include-cold", "--cold-url", str(tmp_path), "--json"))
    assert [r["tier"] for r in json.loads(result.stdout)] == ["archive"]
    assert f"cold archive {tmp_path} has no manifest yet: no cold data" in result.stderr


def test_history_without_include_cold_is_unchanged(backend: Backend, cold: dict) -> None:
    insert_archive(backend, [history_row(700, at(2024, 9, 1))])
    result = ok(history(backend, "--json"))
    assert json.loads(result.stdout) == []
    assert result.stderr == ""


# -- import cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        # pandas itself imports pyarrow when it is installed.
        ("sync_observability.reports", {"duckdb", "s3fs"}),
        ("sync_observability.cli", {"duckdb", "pyarrow", "s3fs", "pandas"}),
    ],
)
def test_importing_the_readers_loads_no_duckdb(module: str, heavy: set[str]) -> None:
    probe = (
        f"import sys, {module}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
