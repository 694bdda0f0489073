"""``sync-obs report NAME``: the rich table, --json and --csv, through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability.cli.report import report
from sync_observability.reports import REPORTS
from sync_observability.storage.schema import sync_rollup_state
from sync_observability_tests.reports.history import KNOWN_HISTORY, KNOWN_PERFORMANCE, add_runs

AS_OF = ["--as-of", "2025-06-15T12:30:00Z"]


@pytest.fixture
def cli(backend, store):
    add_runs(store, KNOWN_HISTORY)

    def invoke(*args: str):
        database = ["--database-url", backend.url, "--schema", backend.schema]
        # Wide enough that the table shows every cell whole.
        runner = CliRunner(env={"COLUMNS": "250"})
        return runner.invoke(report, [*args, *database], catch_exceptions=False)

    return invoke


def test_table(cli):
    result = cli("dashboard", *AS_OF)
    assert result.exit_code == 0, result.output
    assert "Report: dashboard, as of 2025-06-15 12:30:00 UTC" in result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["total_operations_24h"][1:] == ["6", "count", "NORMAL"]
    assert lines["success_rate_24h"][1:] == ["60.00", "percentage", "CRITICAL"]
    assert lines["system_health_score"][1:] == ["57.00", "percentage", "CRITICAL"]


def test_table_of_failures_with_days(cli):
    result = cli("failures", "--days", "1", *AS_OF)
    assert result.exit_code == 0, result.output
    assert "last 1 day(s)" in result.output
    assert result.output.count("vantage/funds") == 1  # the 06-13 failure is outside one day
    assert result.output.count("vantage/accounts") == 1
    assert "2025-06-15 12:00:00" in result.output


def test_json(cli):
    result = cli("performance", "--json", *AS_OF)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == KNOWN_PERFORMANCE


def test_json_dates_and_timestamps_are_iso(cli):
    result = cli("top-errors", "--json", *AS_OF)
    rows = json.loads(result.output)
    assert rows[0]["resource"] == "vantage/funds"
    assert rows[0]["error_count"] == 2
    assert rows[0]["last_occurrence"] == "2025-06-15T12:00:00+00:00"
    volume = json.loads(cli("daily-volume", "--json", *AS_OF).output)
    assert volume[0] == {
        "sync_date": "2025-06-15",
        "source_system": "vantage",
        "sync_count": 2,
        "total_records": 400,
    }


def test_csv(cli):
    result = cli("daily-operations", "--days", "2", "--csv", *AS_OF)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["operation_date"], r["operations"], r["failed_operations"]) for r in rows] == [
        ("2025-06-15", "6", "2"),
        ("2025-06-14", "1", "0"),
        ("2025-06-13", "1", "1"),
    ]
    assert rows[0]["success_rate_pct"] == "66.67"


def test_every_report_prints(cli):
    for name in REPORTS:
        result = cli(name, *AS_OF)
        assert result.exit_code == 0, (name, result.output)
        assert f"Report: {name}" in result.output


def test_json_and_csv_together_are_refused(cli):
    result = cli("status", "--json", "--csv")
    assert result.exit_code == 2
    assert "--json and --csv cannot be used together" in result.output


def test_unknown_report_lists_the_names(cli):
    result = cli("nope")
    assert result.exit_code == 2
    assert "cost-trends" in result.output


def test_naive_as_of_is_utc_and_days_below_one_is_refused(cli):
    assert cli("failures", "--days", "0").exit_code == 2
    naive = cli("failures", "--json", "--as-of", "2025-06-15T12:30:00")
    assert len(json.loads(naive.output)) == 3


def test_all_and_resource_options(cli):
    unhealthy = json.loads(cli("status", "--json", *AS_OF).output)
    every = json.loads(cli("status", "--all", "--json", *AS_OF).output)
    assert [r["resource"] for r in unhealthy] == ["vantage/accounts", "vantage/funds"]
    assert len(every) == 4
    overall = json.loads(cli("cost-trends", "--json", *AS_OF).output)
    assert [(r["date"], r["resource"], r["total_executions"]) for r in overall][:2] == [
        ("2025-06-15", None, 6),
        ("2025-06-14", None, 1),
    ]
    one = json.loads(cli("cost-trends", "--resource", "vantage/accounts", "--json", *AS_OF).output)
    assert [(r["date"], r["total_cost_usd"]) for r in one] == [
        ("2025-06-15", 4.25),
        ("2025-06-14", 1.0),
    ]
    per = json.loads(cli("quality-trends", "--all", "--json", *AS_OF).output)
    assert {r["resource"] for r in per} == {"vantage/accounts"}
    refused = cli("failures", "--all", *AS_OF)
    assert refused.exit_code == 2
    assert "--all applies to status" in refused.output
    assert cli("dashboard", "--resource", "x", *AS_OF).exit_code == 2


def test_rollups_read_and_off_give_the_same_json_and_write_nothing(cli, store):
    outputs = {
        mode: cli("top-errors", "--json", "--rollups", mode, *AS_OF) for mode in ("off", "read")
    }
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sync_rollup_state)).one_or_none() is None
    refreshed = cli("top-errors", "--json", *AS_OF)
    assert outputs["off"].output == outputs["read"].output == refreshed.output
    assert json.loads(refreshed.output)  # something to compare
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sync_rollup_state)).one_or_none() is not None
    bad = cli("top-errors", "--rollups", "sometimes")
    assert bad.exit_code == 2 and "sometimes" in bad.output
