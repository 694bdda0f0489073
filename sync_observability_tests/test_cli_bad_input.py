"""Bad input at the ``sync-obs`` edges: one line and an exit code, never a traceback.

A value out of range is refused by click (exit code 2) before a database is opened; a read
command on a SQLite file that does not exist says so (exit code 1) and creates nothing; a
watermark is set on an unknown resource only with ``--create``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_observability.cli import main, options
from sync_observability.storage.store import SyncStore

PASSWORD = "pw-5ecret"


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A migrated SQLite database in tmp_path."""
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    result = CliRunner().invoke(main, ["migrate", "--database-url", url])
    assert result.exit_code == 0, result.output
    return url


def sync_obs(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200", **(env or {})})


def error_line(result: Result, exit_code: int) -> str:
    """The one ``Error:`` line of a handled failure (click's usage lines may precede it)."""
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    assert "Traceback" not in result.output
    assert result.stdout == ""
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    return line


OUT_OF_RANGE = [
    (["history", "--since", "99999999d"], ["'--since'", "'99999999d'", "before the year 1"]),
    (["alerts", "--since", "99999999d"], ["'--since'", "'99999999d'"]),
    (["history", "--since", "99999999999999999999999w"], ["'--since'", "99999999999999999999999w"]),
    (
        ["history", "--since", "0001-01-01T00:00:00+14:00"],
        ["'--since'", "'0001-01-01T00:00:00+14:00'", "years 1-9999"],
    ),
    (
        ["alerts", "--since", "9999-12-31T23:59:59-14:00"],
        ["'--since'", "'9999-12-31T23:59:59-14:00'"],
    ),
    (["history", "--limit", "99999999999999999999"], ["'--limit'", "99999999999999999999"]),
    (["alerts", "--limit", "9223372036854775808"], ["'--limit'", "9223372036854775808"]),
    (["watermark", "show", "R", "--limit", "99999999999999999999"], ["'--limit'"]),
    (["report", "daily-volume", "--days", "99999999999"], ["'--days'", "99999999999", "36500"]),
    (["report", "daily-volume", "--days", "36501"], ["'--days'", "36501"]),
    (
        ["archive", "--archive-after-days", "99999999999", "--dry-run"],
        ["'--archive-after-days'", "99999999999"],
    ),
    (["archive", "--purge-after-days", "36501", "--dry-run"], ["'--purge-after-days'", "36501"]),
    (["archive", "--batch-size", "99999999999999999999", "--dry-run"], ["'--batch-size'"]),
    (["archive", "--keep-last", "99999999999999999999", "--dry-run"], ["'--keep-last'"]),
    (
        ["watermark", "set", "R", "9999-12-31T23:59:59-14:00", "--reason", "r", "--create"],
        ["VALUE", "'9999-12-31T23:59:59-14:00'", "years 1-9999"],
    ),
    (
        ["watermark", "set", "R", "0001-01-01T00:00:00+14:00", "--reason", "r", "--create"],
        ["VALUE", "'0001-01-01T00:00:00+14:00'"],
    ),
    (
        ["watermark", "set", "R", "1e400", "--cursor", "--reason", "r", "--create"],
        ["VALUE", "'1e400' is not JSON"],
    ),
    (
        ["watermark", "set", "R", "NaN", "--cursor", "--reason", "r", "--create"],
        ["VALUE", "'NaN' is not JSON"],
    ),
    (
        ["report", "dashboard", "--as-of", "0001-01-01T00:00:00Z"],
        ["'--as-of'", "0001-01-01T00:00:00+00:00", "years 1-9999"],
    ),
    (
        ["report", "hourly-volume", "--as-of", "9999-12-31T23:59:59Z"],
        ["'--as-of'", "9999-12-31T23:59:59+00:00"],
    ),
    (["history", "--storage-timeout", "0"], ["'--storage-timeout'", "0"]),
    (["history", "--storage-timeout", "nan"], ["'--storage-timeout'", "'nan'", "finite"]),
    (["history", "--storage-timeout", "inf"], ["'--storage-timeout'", "inf"]),
    (["history", "--storage-timeout", "86401"], ["'--storage-timeout'", "86401"]),
]


@pytest.mark.parametrize(
    ("args", "named"), OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE]
)
def test_a_value_out_of_range_is_one_line_and_exit_code_2(
    url: str, args: list[str], named: list[str]
) -> None:
    line = error_line(sync_obs(*args, "--database-url", url), 2)
    assert line.startswith("Error: Invalid value for ")
    for text in named:
        assert text in line


def test_the_largest_values_in_range_are_accepted(url: str) -> None:
    for args in (
        ["history", "--limit", str(2**63 - 1), "--since", "0001-01-01T00:00:00Z"],
        ["alerts", "--limit", str(2**63 - 1), "--since", "36500d"],
        ["report", "daily-volume", "--days", "36500"],
        ["archive", "--archive-after-days", "36500", "--purge-after-days", "36500", "--dry-run"],
        ["history", "--storage-timeout", "86400"],
    ):
        result = sync_obs(*args, "--database-url", url)
        assert result.exit_code == 0, (args, result.output)


def test_a_bad_storage_timeout_in_the_environment_is_exit_code_2(url: str) -> None:
    result = sync_obs("status", "--database-url", url, env={"SYNC_OBS_STORAGE_TIMEOUT": "-1"})
    line = error_line(result, 2)
    assert "'--storage-timeout'" in line and "SYNC_OBS_STORAGE_TIMEOUT" in line and "-1" in line


@pytest.mark.parametrize(
    ("database_url", "named"),
    [
        ("postgresql://u@127.0.0.1:abc/x", "its port is not a number"),
        ("postgresql://u@127.0.0.1:99999/x", "port 99999 out of range"),
        ("not a url", "cannot parse it as a database URL"),
        (
            "mysql://u:s@h/x",
            "unsupported database 'mysql' in 'mysql://u:***@h/x': use sqlite:/// or postgresql://",
        ),
    ],
)
def test_a_bad_database_url_is_exit_code_2_on_its_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    line = error_line(sync_obs("status", "--database-url", database_url), 2)
    assert line.startswith("Error: Invalid value for '--database-url': ")
    assert named in line
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened


@pytest.mark.parametrize(
    "database_url",
    [f"mysql://u:{PASSWORD}@h/x", f"postgresql://u:{PASSWORD}@h:abc/x", f"u:{PASSWORD}@nowhere"],
)
def test_a_refused_database_url_never_shows_its_password(database_url: str) -> None:
    result = sync_obs("history", "--database-url", database_url)
    assert result.exit_code == 2
    assert PASSWORD not in result.output


def test_package_errors_are_not_masked_by_substring(tmp_path: Path) -> None:
    # A one-letter password used to be replaced wherever the letter appeared in the message.
    url = "postgresql://u:s@127.0.0.1:1/x"  # nothing listens on port 1
    line = error_line(sync_obs("status", "--database-url", url, "--storage-timeout", "1"), 1)
    assert "postgresql+psycopg2://u:***@127.0.0.1:1/x" in line
    assert "Connection refused" in line
    assert line.count("***") == 1


READS = [
    ["status"],
    ["history"],
    ["alerts"],
    ["report", "dashboard"],
    ["watermark", "show", "R"],
    ["watermark", "set", "R", "2025-01-01T00:00:00Z", "--reason", "r"],  # no --create
    ["watermark", "rewind", "R", "--to-sync", "s", "--reason", "r"],
    ["archive", "--dry-run"],
    ["archive", "--dry-run", "--json"],
    ["partition", "status"],
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a) for a in READS])
def test_a_read_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "no" / "such" / "sync.db"
    result = sync_obs(*args, "--database-url", f"sqlite:///{missing}")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = f"no SQLite database at '{missing}': this command only reads and creates nothing"
    if "--json" in args:
        assert json.loads(result.stdout) == {"status": "error", "error": message + _HINT}
    else:
        assert result.stderr.splitlines() == [f"Error: {message}{_HINT}"]
    assert list(tmp_path.iterdir()) == []


_HINT = " (sync-obs migrate creates one)"


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["archive"],
        ["watermark", "set", "R", "2025-01-01T00:00:00Z", "--reason", "r", "--create"],
    ],
    ids=["migrate", "archive", "watermark set --create"],
)
def test_a_write_creates_a_missing_sqlite_file(tmp_path: Path, args: list[str]) -> None:
    database = tmp_path / "new" / "sync.db"
    result = sync_obs(*args, "--database-url", f"sqlite:///{database}")
    assert result.exit_code == 0, result.output
    assert database.is_file()
    assert "sync_state" in sa.inspect(sa.create_engine(f"sqlite:///{database}")).get_table_names()


def _watermark_rows(url: str) -> tuple[list[Any], list[Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        states = conn.execute(sa.text("SELECT resource, last_sync_time FROM sync_state")).all()
        changes = conn.execute(sa.text("SELECT resource, kind FROM watermark_changes")).all()
    engine.dispose()
    return list(states), list(changes)


def test_watermark_set_refuses_an_unknown_resource_without_create(url: str) -> None:
    args = ["watermark", "set", "vantage/acounts", "2025-01-01T00:00:00Z", "--reason", "typo"]
    line = error_line(sync_obs(*args, "--database-url", url), 1)
    assert line == (
        "Error: no resource 'vantage/acounts' in sync_state; pass --create to give a new "
        "resource its first watermark"
    )
    assert _watermark_rows(url) == ([], [])


def test_watermark_set_with_create_makes_the_resource(url: str) -> None:
    args = ["watermark", "set", "vantage/new", "2025-01-01T00:00:00Z", "--reason", "first"]
    result = sync_obs(*args, "--create", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("set: vantage/new watermark - -> 2025-01-01 00:00:00")
    states, changes = _watermark_rows(url)
    assert [state[0] for state in states] == ["vantage/new"]
    assert changes == [("vantage/new", "set")]
    # Known now: no --create needed for the next change.
    again = ["watermark", "set", "vantage/new", "2025-01-02T00:00:00Z", "--reason", "next"]
    assert sync_obs(*again, "--database-url", url).exit_code == 0


def test_the_storage_timeout_reaches_the_store(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    from_url = SyncStore.from_url

    def spy(*args: Any, **kwargs: Any) -> SyncStore:
        seen.append(kwargs["storage_timeout_seconds"])
        return from_url(*args, **kwargs)

    monkeypatch.setattr(options.SyncStore, "from_url", spy)
    assert sync_obs("status", "--database-url", url).exit_code == 0
    assert sync_obs("status", "--database-url", url, "--storage-timeout", "2.5").exit_code == 0
    env = {"SYNC_OBS_STORAGE_TIMEOUT": "7"}
    assert sync_obs("history", "--database-url", url, env=env).exit_code == 0
    assert seen == [30.0, 2.5, 7.0]
