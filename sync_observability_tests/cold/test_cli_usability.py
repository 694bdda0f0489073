"""What a new user of the cold archive meets at the command line: a missing extra, a bad
destination, a root that does not exist, ``archive --cold-url`` and the messages."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability.cli import main
from sync_observability_tests.cold.conftest import archive_rows, insert

# Runs the CLI with the cold extra's libraries impossible to import, as without the extra.
WITHOUT_COLD_EXTRA = textwrap.dedent(
    """
    import sys

    BLOCKED = ("pyarrow", "duckdb", "upath", "s3fs")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from sync_observability.cli import main

    main(sys.argv[1:], prog_name="sync-obs")
    """
)


def _migrated(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", db]).exit_code == 0
    return db


@pytest.mark.parametrize(
    "args",
    [
        ["archive", "export", "--to", "{cold}"],
        ["archive", "query", "--from", "{cold}", "SELECT 1"],
        ["history", "--include-cold", "--cold-url", "{cold}"],
        ["archive", "--cold-url", "{cold}"],
    ],
    ids=["export", "query", "history", "archive"],
)
def test_without_the_cold_extra_one_line_naming_the_extra(tmp_path: Path, args: list[str]) -> None:
    db = _migrated(tmp_path)
    argv = [a.replace("{cold}", str(tmp_path / "cold")) for a in args]
    if argv[0] == "history" or argv[:2] == ["archive", "export"] or len(argv) == 3:
        argv += ["--database-url", db]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_COLD_EXTRA, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "needs the cold extra" in lines[0]
    assert "pip install 'sync_observability[cold]'" in lines[0]


NOW = dt.datetime.now(dt.timezone.utc)
OLD = NOW - dt.timedelta(days=800)  # past every default age


def _with_old_archive_rows(tmp_path: Path, count: int) -> str:
    db = _migrated(tmp_path)
    engine = sa.create_engine(db)
    insert(engine, archive_rows(count, start=OLD, step=dt.timedelta(days=1)), [])
    engine.dispose()
    return db


def _error_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("rows", [0, 3], ids=["nothing-to-export", "rows"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_export_to_a_regular_file_is_one_line_naming_it(
    tmp_path: Path, rows: int, dry_run: bool
) -> None:
    db = _with_old_archive_rows(tmp_path, rows)
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    for to in (target, target / "below"):
        args = ["archive", "export", "--database-url", db, "--to", str(to)]
        result = CliRunner().invoke(main, [*args, *(["--dry-run"] if dry_run else [])])
        assert result.exit_code == 1, result.output
        line = _error_line(result)
        assert str(to) in line, line
        assert "not a folder" in line or "Not a directory" in line, line
    assert target.read_text() == "not a folder"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("rows", [0, 3], ids=["nothing-to-export", "rows"])
def test_export_to_an_uncreatable_folder_is_one_line_before_anything(
    tmp_path: Path, rows: int
) -> None:
    db = _with_old_archive_rows(tmp_path, rows)
    result = CliRunner().invoke(
        main, ["archive", "export", "--database-url", db, "--to", "/proc/nope"]
    )
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    assert line.startswith("Error: cannot use cold archive /proc/nope:"), line
    assert "exported" not in result.stdout
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM sync_history_archive")).scalar()
    engine.dispose()
    assert left == rows


def test_export_creates_a_missing_folder_even_with_nothing_to_export(tmp_path: Path) -> None:
    db = _migrated(tmp_path)
    cold = tmp_path / "new" / "cold"
    result = CliRunner().invoke(main, ["archive", "export", "--database-url", db, "--to", cold])
    assert result.exit_code == 0, result.output
    assert cold.is_dir() and list(cold.iterdir()) == []  # the write probe is gone


def test_a_local_cold_root_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    from sync_observability.errors import StorageError
    from sync_observability.reports import cold_history

    missing = tmp_path / "does" / "not" / "exist"
    result = CliRunner().invoke(
        main, ["archive", "query", "--from", str(missing), "SELECT 1 AS one"]
    )
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    assert str(missing) in line and "does not exist" in line
    with pytest.raises(StorageError, match="does not exist"):
        cold_history(str(missing))
    db = _migrated(tmp_path)
    result = CliRunner().invoke(
        main, ["history", "--database-url", db, "--include-cold", "--cold-url", str(missing)]
    )
    assert result.exit_code == 1, result.output
    assert str(missing) in _error_line(result)

    # An existing folder without a manifest still means "no cold data yet".
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        main,
        [
            "archive",
            "query",
            "--from",
            str(empty),
            "--json",
            "SELECT count(*) AS n FROM sync_history_cold",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 0}]
    assert "no manifest yet" in result.stderr
    assert cold_history(str(empty)).empty


def test_archive_with_a_cold_url_exports_before_purging_and_loses_nothing(
    tmp_path: Path,
) -> None:
    from sync_observability.cold import layout

    db = _with_old_archive_rows(tmp_path, 40)
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        before = set(conn.execute(sa.text("SELECT sync_id FROM sync_history_archive")).scalars())
    cold = tmp_path / "cold"
    dry = CliRunner().invoke(
        main, ["archive", "--database-url", db, "--cold-url", str(cold), "--dry-run", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    assert not cold.exists()

    result = CliRunner().invoke(
        main, ["archive", "--database-url", db, "--json"], env={"SYNC_OBS_COLD_URL": str(cold)}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["sync_history_archive.exported"] == 40, report
    with engine.connect() as conn:
        left = set(conn.execute(sa.text("SELECT sync_id FROM sync_history_archive")).scalars())
    engine.dispose()
    listed = layout.read_manifest(layout.open_root(str(cold)))
    assert sum(entry.rows for entry in listed) == 40
    exported = CliRunner().invoke(
        main,
        [
            "archive",
            "query",
            "--from",
            str(cold),
            "--json",
            "SELECT sync_id FROM sync_history_cold",
        ],
    )
    cold_ids = {row["sync_id"] for row in json.loads(exported.stdout)}
    assert cold_ids | left == before and not cold_ids & left


def test_archive_cold_after_days_past_the_purge_names_the_option(tmp_path: Path) -> None:
    db = _migrated(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "archive",
            "--database-url",
            db,
            "--cold-url",
            str(tmp_path / "c"),
            "--purge-after-days",
            "200",
            "--dry-run",
        ],
    )
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "'--cold-after-days'" in line and "365" in line and "--purge-after-days" in line


def test_export_messages_count_files_only_when_written_and_say_from_for_the_purge(
    tmp_path: Path,
) -> None:
    db = _with_old_archive_rows(tmp_path, 1)
    cold = str(tmp_path / "cold")
    args = ["archive", "export", "--database-url", db, "--to", cold]
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would export 1 row of sync_history_archive;" in dry.stdout, dry.stdout
    assert "files" not in dry.stdout
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "exported 1 row of sync_history_archive in 1 file;" in run.stdout, run.stdout
    purge = CliRunner().invoke(main, [*args, "--purge-cold-after-days", "400", "--json"])
    assert purge.exit_code == 0, purge.output
    message = json.loads(purge.stdout)["message"]
    assert message.endswith(f"; purged 1 cold month (1 row) from {cold}"), message


def test_the_run_summary_names_each_step_in_the_past_tense() -> None:
    from sync_observability.retention.steps import StepResult, describe

    before = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    steps = (
        StepResult(
            action="archive",
            table="sync_history",
            into="sync_history_archive",
            before=before,
            rows=3,
            batches=1,
        ),
        StepResult(
            action="export",
            table="sync_history_archive",
            into="/tmp/cold",
            before=before,
            rows=2,
            batches=1,
        ),
        StepResult(
            action="purge",
            table="sync_history_archive",
            into=None,
            before=before,
            rows=1,
            batches=1,
        ),
    )
    assert describe(steps, dry_run=False) == (
        "archived 3 rows of sync_history into sync_history_archive; "
        "exported 2 rows of sync_history_archive into /tmp/cold; "
        "deleted 1 rows of sync_history_archive"
    )
    assert describe(steps, dry_run=True).startswith("would archive 3 rows")
