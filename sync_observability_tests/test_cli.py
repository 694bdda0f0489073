"""The ``sync-obs`` command: in-process on both engines, and the demo as a fresh clone runs it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from rich.console import Console

from sync_observability.cli import COMMANDS, main
from sync_observability.cli.output import Column, fitted_table
from sync_observability.storage.migrate import head_revision
from sync_observability.storage.records import SyncOutcome
from sync_observability_tests.conftest import Backend

PASSWORD = "s3cr3t-pw"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def sync_obs(backend: Backend, command: str, *args: str) -> Result:
    """Run ``sync-obs COMMAND --database-url ... --schema ... ARGS`` in-process."""
    return CliRunner().invoke(
        main,
        [command, "--database-url", backend.url, "--schema", backend.schema, *args],
        env={"COLUMNS": "200"},  # wide enough that rich never elides a cell
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def line_of(output: str, resource: str) -> str:
    """The one table row that has ``resource`` in a cell of its own."""
    [line] = [line for line in output.splitlines() if f"  {resource}  " in line]
    return line


def fail(backend: Backend, resource: str, code: str = "API_TIMEOUT") -> None:
    tracker = backend.tracker()
    with pytest.raises(TimeoutError), tracker.track(resource=resource, source_system="vantage"):
        raise TimeoutError(f"{code}: Vantage did not answer")
    tracker.store.dispose()


def succeed(backend: Backend, resource: str, processed: int, **kwargs: Any) -> None:
    tracker = backend.tracker()
    with tracker.track(resource=resource, source_system="vantage") as sync:
        sync.record(processed=processed, created=processed)
        if "watermark" in kwargs:
            sync.advance_watermark(kwargs["watermark"])
    tracker.store.dispose()


def test_migrate_prints_the_revision_before_and_after(backend: Backend) -> None:
    first = ok(sync_obs(backend, "migrate")).output
    assert "revision before: (none: new database)" in first
    assert f"revision after:  {head_revision()}" in first
    assert "migrated" in first
    assert {"sync_state", "sync_history"} <= set(sa.inspect(backend.engine()).get_table_names())
    again = ok(sync_obs(backend, "migrate")).output
    assert f"revision before: {head_revision()}" in again
    assert "already up to date" in again


def test_status_shows_health_as_a_table_and_as_json(backend: Backend) -> None:
    now = utcnow()
    succeed(backend, "green_accounts", 150)
    succeed(backend, "stale_funds", 7, watermark=now - dt.timedelta(hours=30))
    fail(backend, "red_cashflows")
    fail(backend, "red_cashflows")
    store = backend.store()
    # A sync started 45 minutes ago and never finished: stuck.
    store.start_sync(
        sync_id=str(uuid.uuid4()),
        resource="stuck_valuations",
        started_at=now - dt.timedelta(minutes=45),
    )
    store.start_sync(sync_id=str(uuid.uuid4()), resource="busy_investors", started_at=now)
    store.dispose()
    expected = {
        "stuck_valuations": "red",
        "red_cashflows": "red",
        "stale_funds": "yellow",
        "busy_investors": "green",
        "green_accounts": "green",
    }

    rows = json.loads(ok(sync_obs(backend, "status", "--json")).stdout)
    assert [row["resource"] for row in rows] == [
        "red_cashflows",
        "stuck_valuations",
        "stale_funds",
        "busy_investors",
        "green_accounts",
    ]
    by_resource = {row["resource"]: row for row in rows}
    assert {r: row["health"] for r, row in by_resource.items()} == expected
    assert by_resource["red_cashflows"]["error_count"] == 1
    assert by_resource["red_cashflows"]["consecutive_failures"] == 2
    assert by_resource["green_accounts"]["records_synced"] == 150
    assert by_resource["stale_funds"]["hours_since_sync"] == pytest.approx(30, abs=0.1)
    assert by_resource["busy_investors"]["running_seconds"] >= 0
    assert by_resource["busy_investors"]["last_sync_time"] is None
    last_sync = dt.datetime.fromisoformat(by_resource["stale_funds"]["last_sync_time"])
    assert last_sync == now - dt.timedelta(hours=30)

    table = ok(sync_obs(backend, "status")).stdout
    for resource, health in expected.items():
        assert line_of(table, resource).rstrip().endswith(health)
    assert "running" in line_of(table, "busy_investors")


# The status table's columns, and the order a narrow terminal leaves them out in.
STATUS_COLUMNS = [
    "Resource",
    "Status",
    "Last run (UTC)",
    "Watermark (UTC)",
    "Age h",
    "Running s",
    "Records",
    "ms",
    "Errors",
    "Fails",
    "Health",
]
LEFT_OUT_FIRST = [
    "Errors",
    "Watermark (UTC)",
    "Running s",
    "ms",
    "Records",
    "Age h",
    "Last run (UTC)",
]


@pytest.mark.parametrize("columns", [200, 100, 80, 60])
def test_status_leaves_out_columns_rather_than_cut_cells(backend: Backend, columns: int) -> None:
    succeed(backend, "crm/accounts_receivable", 123_456)
    fail(backend, "crm/accounts_payable")
    result = CliRunner().invoke(
        main,
        ["status", "--database-url", backend.url, "--schema", backend.schema],
        env={"COLUMNS": str(columns)},
    )
    table = ok(result).stdout
    assert "…" not in table
    assert all(len(line) <= columns for line in table.splitlines())
    shown = re.split(r"\s{2,}", line_of(table, "Resource").strip())
    assert shown == [h for h in STATUS_COLUMNS if h in shown]
    hidden = [h for h in STATUS_COLUMNS if h not in shown]
    assert set(hidden) == set(LEFT_OUT_FIRST[: len(hidden)])
    assert bool(hidden) == (columns < 200)
    note = " ".join(table.split())
    assert (f"hidden at {columns} columns (see --json)" in note) == bool(hidden)
    assert all(h in note.split(" Health ")[-1] for h in hidden)
    assert ("123,456" in line_of(table, "crm/accounts_receivable")) == ("Records" not in hidden)
    failed = line_of(table, "crm/accounts_payable")
    assert "failed" in failed and failed.rstrip().endswith("red")


def test_a_fitted_table_of_no_rows_has_every_column() -> None:
    columns = [Column("a", lambda r: r["a"]), Column("b", lambda r: r["b"], drop=1)]
    table = fitted_table(Console(width=20), columns, [])
    assert [c.header for c in table.columns] == ["a", "b"] and table.row_count == 0


def test_status_shows_when_the_sync_ran_apart_from_its_watermark(backend: Backend) -> None:
    before = utcnow().replace(microsecond=0)  # the table shows whole seconds
    watermark = before - dt.timedelta(hours=1)
    succeed(backend, "hour_behind", 5, watermark=watermark)
    store = backend.store()
    store.start_sync(sync_id=str(uuid.uuid4()), resource="busy_investors", started_at=before)
    store.dispose()
    after = utcnow()

    rows = {
        row["resource"]: row for row in json.loads(ok(sync_obs(backend, "status", "--json")).stdout)
    }
    last_run = dt.datetime.fromisoformat(rows["hour_behind"]["last_run_at"])
    assert dt.datetime.fromisoformat(rows["hour_behind"]["last_sync_time"]) == watermark
    assert before <= last_run <= after
    assert last_run - watermark >= dt.timedelta(hours=1)
    assert rows["hour_behind"]["hours_since_sync"] == pytest.approx(1, abs=0.01)
    # While a sync runs, its start is the last run; it has no watermark yet.
    assert dt.datetime.fromisoformat(rows["busy_investors"]["last_run_at"]) == before
    assert rows["busy_investors"]["last_sync_time"] is None

    table = ok(sync_obs(backend, "status")).stdout
    [header] = [line for line in table.splitlines() if "Resource" in line]
    assert header.index("Last run (UTC)") < header.index("Watermark (UTC)")
    assert "Last sync" not in table
    line = line_of(table, "hour_behind")
    shown_run = line.index(f"{last_run:%Y-%m-%d %H:%M:%S}")
    assert shown_run < line.index(f"{watermark:%Y-%m-%d %H:%M:%S}")
    assert f"{before:%Y-%m-%d %H:%M:%S}" in line_of(table, "busy_investors")


def test_status_of_an_empty_database(backend: Backend) -> None:
    ok(sync_obs(backend, "migrate"))
    assert json.loads(ok(sync_obs(backend, "status", "--json")).stdout) == []
    assert "No syncs recorded yet" in ok(sync_obs(backend, "status")).stdout


def test_history_filters_and_json(backend: Backend) -> None:
    succeed(backend, "accounts", 10)
    succeed(backend, "accounts", 20)
    fail(backend, "funds")
    store = backend.store()
    old_start = utcnow() - dt.timedelta(days=3)
    old_id = str(uuid.uuid4())
    store.start_sync(sync_id=old_id, resource="investors", started_at=old_start)
    store.finish_sync(
        sync_id=old_id,
        resource="investors",
        started_at=old_start,
        outcome=SyncOutcome(status="success", ended_at=old_start, records_processed=5),
    )
    store.dispose()

    def history(*args: str) -> list[dict[str, Any]]:
        return json.loads(ok(sync_obs(backend, "history", "--json", *args)).stdout)

    everything = history()
    assert [row["resource"] for row in everything] == ["funds", "accounts", "accounts", "investors"]
    starts = [dt.datetime.fromisoformat(row["sync_start_time"]) for row in everything]
    assert starts == sorted(starts, reverse=True)
    assert all(start.utcoffset() == dt.timedelta(0) for start in starts)
    assert [row["records_processed"] for row in history("--resource", "accounts")] == [20, 10]
    [failed] = history("--status", "failed")
    assert failed["resource"] == "funds"
    assert "Vantage did not answer" in failed["error_message"]
    assert failed["errors"][0]["code"] == "TimeoutError"
    assert {row["resource"] for row in history("--since", "2d")} == {"accounts", "funds"}
    assert len(history("--since", "7d")) == 4
    naive_iso = (utcnow() - dt.timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert len(history("--since", naive_iso)) == 3  # no offset: read as UTC
    assert history("--since", (utcnow() + dt.timedelta(hours=1)).isoformat()) == []
    assert len(history("--limit", "1")) == 1
    assert history("--resource", "accounts", "--status", "failed") == []

    table = ok(sync_obs(backend, "history", "--resource", "funds")).stdout
    assert "failed" in line_of(table, "funds")
    assert "Vantage did not answer" in table
    none = ok(sync_obs(backend, "history", "--since", "2099-01-01T00:00:00Z")).stdout
    assert "No matching syncs" in none

    bad = sync_obs(backend, "history", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since" in bad.stderr


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    # Connection refused, retried until the budget is spent; bad URLs: test_cli_bad_input.py.
    url = f"postgresql://sync:{PASSWORD}@127.0.0.1:1/nope"
    logger = logging.getLogger("sync_observability")
    level = logger.level
    result = CliRunner().invoke(main, ["status", "--database-url", url, "--storage-timeout", "2"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "127.0.0.1:1/nope" in line  # names the database...
    assert PASSWORD not in result.output  # ...with the password hidden
    assert logger.level == level  # the CLI's quieter logging did not leak


def test_an_unusable_sqlite_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    url = f"sqlite:///{tmp_path / 'a_file' / 'sync.db'}"
    result = CliRunner().invoke(main, ["migrate", "--database-url", url])
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot create the folder")


def test_every_command_has_help() -> None:
    for command in ("migrate", "status", "history", "demo"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "--database-url" in result.stdout
        assert "--schema" in result.stdout
        assert "--storage-timeout" in result.stdout
        assert "SYNC_OBS_STORAGE_TIMEOUT" in result.stdout
    assert "--json" in CliRunner().invoke(main, ["status", "--help"]).stdout
    assert "--since" in CliRunner().invoke(main, ["history", "--help"]).stdout


def test_the_command_list_fits_an_80_column_terminal_uncut() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == sorted(COMMANDS)
    for line in listed:
        assert len(line) <= 80 and not line.endswith("..."), line


def test_no_subcommand_summary_is_cut() -> None:
    groups = [path for path in command_paths(main) if path and _is_group(path)]
    assert len(groups) >= 6
    for path in groups:
        result = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, path
        listed = result.stdout.split("Commands:\n")[1].splitlines()
        assert listed, path
        for line in listed:
            assert len(line) <= 80 and not line.rstrip().endswith("..."), (path, line)


def _is_group(path: tuple[str, ...]) -> bool:
    command: click.Command | None = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.get_command(click.Context(command), name)
    return isinstance(command, click.Group)


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of ``command`` and of every command below it (``("watermark", "set")``)."""
    paths = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            paths += command_paths(sub, (*path, name))
    return paths


def test_every_command_and_subcommand_answers_help() -> None:
    paths = command_paths(main)
    assert {path[0] for path in paths if len(path) == 1} == {
        "migrate",
        "status",
        "history",
        "alerts",
        "archive",
        "report",
        "watermark",
        "partition",
        "roles",
        "ddl",
        "demo",
        "run",
        "metrics",
    }
    assert {
        ("watermark", "set"),
        ("partition", "enable"),
        ("roles", "restrict"),
        ("metrics", "serve"),
    } <= set(paths)
    assert {("watermark", "set"), ("partition", "enable"), ("roles", "restrict")} <= set(paths)
    assert {("ddl", "enable"), ("ddl", "disable"), ("ddl", "status")} <= set(paths)
    for path in paths:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert result.stdout.startswith("Usage: "), path


def test_demo_on_the_given_database_carries_on_through_failures(backend: Backend) -> None:
    result = CliRunner().invoke(
        main,
        ["demo", "--runs", "1", "--database-url", backend.url, "--schema", backend.schema],
        env={"COLUMNS": "200", "SYNC_OBS_DEMO_FAILURE_RATE": "1"},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "run 1/1: 0 synced, 7 failed" in result.stdout
    store = backend.store()
    history = store.list_history(limit=None)
    store.dispose()
    assert len(history) == 7
    assert {record.sync_status for record in history} == {"failed"}
    for record in history:
        assert line_of(result.stdout, record.resource).rstrip().endswith("red")


def test_demo_fails_when_steps_fail_before_any_sync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    result = CliRunner().invoke(
        main,
        ["demo", "--runs", "1", "--database-url", url],
        env={"COLUMNS": "200", "SYNC_OBS_DEMO_FAILURE_RATE": "abc"},
    )
    assert result.exit_code == 1
    assert "7 step(s) failed without a recorded sync" in result.stdout
    assert "SYNC_OBS_DEMO_FAILURE_RATE='abc'" in result.stdout
    assert result.stderr.startswith("Error: 7 step(s) failed")


@pytest.mark.slow
def test_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_OBS_"))}
    # A seed and a high failure rate: failures certainly happen and must not stop the demo.
    env |= {"SYNC_OBS_DEMO_SEED": "7", "SYNC_OBS_DEMO_FAILURE_RATE": "0.5"}
    env.pop("COLUMNS", None)  # as from a plain shell pipe: the CLI picks its own width
    done = subprocess.run(
        [sys.executable, "-m", "sync_observability.cli", "demo", "--runs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # Dagster's own logging stays quiet
    database = tmp_path / ".sync_observability" / "sync_observability.db"
    assert database.is_file()
    with sqlite3.connect(database) as conn:
        states = dict(conn.execute("SELECT resource, last_sync_status FROM sync_state"))
        per_resource = dict(
            conn.execute("SELECT resource, count(*) FROM sync_history GROUP BY resource")
        )
        failed = conn.execute("SELECT count(*) FROM sync_history WHERE sync_status = 'failed'")
        failures = failed.fetchone()[0]
    assert len(states) == 7
    assert per_resource == dict.fromkeys(states, 2)
    assert failures > 0
    assert "run 1/2:" in done.stdout
    assert "run 2/2:" in done.stdout
    assert "Sync status" in done.stdout
    for resource, status in states.items():
        line = line_of(done.stdout, resource)
        assert status in line
        assert ("red" in line) == (status == "failed")
