"""``sync-obs run``: real commands as tracked syncs, on SQLite and PostgreSQL.

Commands are real processes (this interpreter with ``-c``). Signal tests run the real CLI in
its own session and order every step through pipes: the command prints ``ready`` once it waits
on its stdin, which only the test closes, and prints what it received.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability.cli import main
from sync_observability.clock import utcnow
from sync_observability.errors import SyncAlreadyRunningError
from sync_observability.shell import (
    COMMAND_FAILED,
    COMMAND_INTERRUPTED,
    COMMAND_KILLED,
    COMMAND_NOT_EXECUTABLE,
    COMMAND_NOT_FOUND,
    EXIT_ALREADY_RUNNING,
    ORPHANED,
    STDERR_TAIL_BYTES,
    STDERR_TAIL_LINES,
    SignalForwarder,
    command_line,
    run_command,
    run_tracked,
)
from sync_observability.storage.operation_store import list_operations
from sync_observability.storage.records import SyncRecord
from sync_observability.storage.store import SyncStore
from sync_observability_tests.conftest import Backend, own_database

PY = sys.executable

# Waits on stdin (closed by the test); on SIGTERM: "exit" cleans up and exits 7, "ignore" only
# says so; "default" keeps Python's defaults (SIGINT: KeyboardInterrupt, then death by SIGINT).
WAITING_CHILD = """
import signal, sys
mode = sys.argv[1]
def on_term(signum, frame):
    print("got " + signal.Signals(signum).name, flush=True)
    if mode == "exit":
        sys.stderr.write("cleaning up\\n")
        sys.stderr.flush()
        sys.exit(7)
if mode != "default":
    signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
sys.stdin.read()
"""


def tracked(backend: Backend, argv: list[str], resource: str = "ops/job", **kwargs: Any) -> int:
    return run_tracked(
        argv,
        open_store=lambda: backend.store(),
        resource=resource,
        **kwargs,
    )


def last_sync(store: SyncStore, resource: str = "ops/job") -> SyncRecord:
    [row] = store.list_history(resource=resource, limit=1)
    return row


def test_a_command_that_succeeds_is_a_successful_sync(
    backend: Backend, store: SyncStore, capfd: pytest.CaptureFixture[str]
) -> None:
    code = "import sys; print('rows: 12'); sys.stderr.write('a note\\n')"
    before = utcnow()
    exit_code = tracked(
        backend,
        [PY, "-c", code],
        operation_type="maintenance",
        source_system="cron",
        target_system="warehouse",
    )
    assert exit_code == 0
    out, err = capfd.readouterr()
    assert out == "rows: 12\n"  # stdout is the command's own
    assert err == "a note\n"  # stderr reaches ours too
    row = last_sync(store)
    assert (row.sync_status, row.error_message, row.errors) == ("success", None, [])
    assert (row.sync_type, row.source_system, row.target_system) == ("full", "cron", "warehouse")
    assert row.sync_start_time >= before and row.sync_end_time is not None
    assert row.duration_ms == round(
        (row.sync_end_time - row.sync_start_time).total_seconds() * 1000
    )
    assert row.metadata["operation_type"] == "maintenance"
    run = row.metadata["run"]
    assert run["command"] == f"{PY} -c {json.dumps(code)}"
    assert (run["exit_code"], run["signal"], run["received"]) == (0, None, [])
    assert (run["host"], run["pid"]) == (socket.gethostname(), os.getpid())
    state = store.get_state("ops/job")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("success", 0)
    assert state.last_sync_time == row.sync_start_time  # success moves the watermark to the start
    [event] = list_operations(store, sync_id=row.sync_id)
    assert (event.category, event.message) == ("maintenance", "maintenance success (exit code 0)")
    assert event.details["status"] == "success" and event.details["exit_code"] == 0


def test_a_failing_command_records_its_exit_code_and_last_stderr_lines(
    backend: Backend, store: SyncStore, capfd: pytest.CaptureFixture[str]
) -> None:
    code = "import sys\nfor i in range(30): sys.stderr.write(f'line {i}\\n')\nsys.exit(3)"
    assert tracked(backend, [PY, "-c", code], operation_type="import") == 3
    assert capfd.readouterr().err == "".join(f"line {i}\n" for i in range(30))
    row = last_sync(store)
    assert row.sync_status == "failed"
    tail = "\n".join(f"line {i}" for i in range(30 - STDERR_TAIL_LINES, 30))
    message = f"the command exited with code 3; its stderr ended with:\n{tail}"
    assert row.error_message == f"{COMMAND_FAILED}: {message}"
    [error] = row.errors
    assert (error["code"], error["message"], error["exit_code"]) == (COMMAND_FAILED, message, 3)
    assert row.metadata["run"]["exit_code"] == 3
    assert row.metadata["operation_type"] == "import"
    state = store.get_state("ops/job")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("failed", 1)
    assert state.last_sync_time is None  # a failure never moves the watermark
    [event] = list_operations(store, sync_id=row.sync_id)
    assert (event.category, event.details["exit_code"]) == ("data_import", 3)


def test_a_command_killed_by_a_signal_exits_128_plus_n(backend: Backend, store: SyncStore) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert tracked(backend, [PY, "-c", code]) == 128 + signal.SIGKILL
    row = last_sync(store)
    assert row.sync_status == "failed"
    assert row.error_message == f"{COMMAND_KILLED}: the command was killed by SIGKILL"
    assert (row.metadata["run"]["exit_code"], row.metadata["run"]["signal"]) == (137, "SIGKILL")
    assert "operation_type" not in row.metadata
    assert list_operations(store, sync_id=row.sync_id) == []  # no --type, no event


def test_a_command_that_cannot_be_started_exits_127_or_126(
    backend: Backend, store: SyncStore, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = "no-such-command-for-sync-obs"
    assert tracked(backend, [missing, "--flag"], resource="ops/missing") == 127
    assert capfd.readouterr().err == f"sync-obs run: command not found: {missing}\n"
    row = last_sync(store, "ops/missing")
    assert row.sync_status == "failed"
    assert row.error_message == f"{COMMAND_NOT_FOUND}: command not found: {missing}"
    assert row.errors[0]["exit_code"] == 127

    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert tracked(backend, [str(script)], resource="ops/noexec") == 126
    row = last_sync(store, "ops/noexec")
    assert row.error_message == (
        f"{COMMAND_NOT_EXECUTABLE}: cannot execute {script}: Permission denied"
    )
    assert row.metadata["run"]["exit_code"] == 126


def test_a_resource_already_running_refuses_the_command_until_its_process_is_gone(
    backend: Backend, store: SyncStore, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    touch = [PY, "-c", f"open({str(marker)!r}, 'a').close()"]
    # Another `sync-obs run` of the resource, on this host, whose process is alive.
    holder = subprocess.Popen(
        [PY, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, start_new_session=True
    )
    try:
        info = {"command": "holder", "host": socket.gethostname(), "pid": holder.pid}
        store.start_sync(
            sync_id="held", resource="ops/job", started_at=utcnow(), metadata={"run": info}
        )
        with pytest.raises(SyncAlreadyRunningError) as refused:
            tracked(backend, touch)
        assert refused.value.running_sync_id == "held"
        assert not marker.exists()  # the command did not run
        held = store.get_sync("held")
        assert held is not None and held.sync_status == "running"

        # Through the CLI: one line, and an exit code no command's plain failure (1) shares.
        where = ["--database-url", backend.url, "--schema", backend.schema]
        result = CliRunner().invoke(main, ["run", *where, "--resource", "ops/job", "--", *touch])
        assert result.exit_code == EXIT_ALREADY_RUNNING == 75
        assert result.output.startswith("Error: resource 'ops/job' is already being synced")
        assert len(result.output.splitlines()) == 1
        assert not marker.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    capfd.readouterr()

    # Its process is gone (killed, say): the next run reaps it and runs.
    assert tracked(backend, touch) == 0
    assert marker.exists()
    assert f"marked sync held of 'ops/job' failed ({ORPHANED})" in capfd.readouterr().err
    reaped = store.get_sync("held")
    assert reaped is not None
    assert reaped.sync_status == "failed"
    assert reaped.error_message == (
        f"{ORPHANED}: its sync-obs run process {holder.pid} on {socket.gethostname()} ended "
        "without recording it"
    )
    assert last_sync(store).sync_status == "success"


def test_a_running_sync_of_another_kind_is_never_reaped(
    backend: Backend, store: SyncStore, tmp_path: Path
) -> None:
    # A Dagster sync (no `run` metadata), and a `sync-obs run` on another host.
    store.start_sync(sync_id="dagster", resource="a", started_at=utcnow())
    other_host = {"run": {"host": f"not-{socket.gethostname()}", "pid": 1, "command": "x"}}
    store.start_sync(sync_id="elsewhere", resource="b", started_at=utcnow(), metadata=other_host)
    for resource in ("a", "b"):
        with pytest.raises(SyncAlreadyRunningError):
            tracked(backend, [PY, "-c", "pass"], resource=resource)
    assert [store.get_sync(s).sync_status for s in ("dagster", "elsewhere")] == ["running"] * 2  # type: ignore[union-attr]


def test_the_orphan_code_is_the_reapers() -> None:
    from sync_observability.alerts.reaping import ORPHANED as REAPER_ORPHANED

    assert ORPHANED == REAPER_ORPHANED


def test_the_command_line_kept_masks_url_passwords() -> None:
    line = command_line(["psql", "postgresql://app:s3cr3t@db:5432/crm", "-c", "VACUUM ANALYZE"])
    assert line == 'psql postgresql://app:***@db:5432/crm -c "VACUUM ANALYZE"'


@pytest.mark.slow
def test_the_command_runs_when_the_database_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    marker = tmp_path / "ran"
    url = f"postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db"
    command = [PY, "-c", f"open({str(marker)!r}, 'a').close(); raise SystemExit(5)"]
    options = ["--database-url", url, "--storage-timeout", "0.5", "--resource", "ops/job"]
    with cli_run(options, command) as proc:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5
    assert marker.exists()
    text = err.decode()
    assert text.startswith("sync-obs run: warning: DatabaseUnavailableError")
    assert text.rstrip().endswith("the command runs untracked")
    assert "s3cr3t-pw" not in text


@contextlib.contextmanager
def cli_run(options: list[str], command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``sync-obs run OPTIONS -- COMMAND`` in a session of its own, killed whole afterwards."""
    proc = subprocess.Popen(
        [PY, "-m", "sync_observability.cli", "run", *options, "--", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def signalled_run(
    backend: Backend,
    mode: str,
    signals: list[signal.Signals],
    kill_after: str = "600",
    reported: int = 1,
) -> tuple[int, str, SyncRecord]:
    """Run the waiting child under the CLI and send ``signals`` to ``sync-obs run`` in turn,
    each after the child reported the one before (the first ``reported`` are reported);
    return the exit code, the stderr and the sync's row."""
    options = ["--database-url", backend.url, "--schema", backend.schema]
    options += ["--resource", "ops/signalled", "--kill-after", kill_after]
    with cli_run(options, [PY, "-c", WAITING_CHILD, mode]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        store = backend.store()
        try:
            state = store.get_state("ops/signalled")
            assert state is not None and state.last_sync_status == "running"
            for i, signum in enumerate(signals):
                proc.send_signal(signum)
                if i < reported:
                    assert proc.stdout.readline() == f"got {signum.name}\n".encode()
            # Not communicate(): closing its stdin would end the command on its own.
            proc.wait(timeout=120)
            assert proc.stderr is not None
            err = proc.stderr.read()
            row = last_sync(store, "ops/signalled")
        finally:
            store.dispose()
    return proc.returncode, err.decode(), row


def test_sigterm_is_forwarded_and_the_sync_recorded_failed(backend: Backend) -> None:
    exit_code, err, row = signalled_run(backend, "exit", [signal.SIGTERM])
    assert exit_code == 7  # the command's own exit code, passed through
    assert err == "cleaning up\n"
    assert row.sync_status == "failed"
    assert row.error_message == (
        f"{COMMAND_INTERRUPTED}: sync-obs run received SIGTERM; the command exited with code 7; "
        "its stderr ended with:\ncleaning up"
    )
    assert row.metadata["run"]["received"] == ["SIGTERM"]
    assert row.metadata["run"]["exit_code"] == 7


def test_sigint_is_forwarded_and_a_death_by_it_exits_130(backend: Backend) -> None:
    exit_code, err, row = signalled_run(backend, "default", [signal.SIGINT], reported=0)
    assert exit_code == 128 + signal.SIGINT
    assert "KeyboardInterrupt" in err  # the command's traceback reached our stderr
    assert row.sync_status == "failed"
    assert row.error_message is not None
    assert row.error_message.startswith(
        f"{COMMAND_INTERRUPTED}: sync-obs run received SIGINT; the command was killed by SIGINT"
    )
    assert row.metadata["run"]["signal"] == "SIGINT"


def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(backend: Backend) -> None:
    exit_code, _, row = signalled_run(
        backend, "ignore", [signal.SIGTERM], kill_after="0.2", reported=0
    )
    assert exit_code == 128 + signal.SIGKILL
    assert row.sync_status == "failed"
    assert row.error_message == (
        f"{COMMAND_INTERRUPTED}: sync-obs run received SIGTERM; the command was killed (SIGKILL)"
    )
    assert row.metadata["run"]["signal"] == "SIGKILL"


def test_a_second_signal_kills_a_command_ignoring_the_first(backend: Backend) -> None:
    # A grace period the test never waits for: the second SIGTERM kills at once.
    exit_code, _, row = signalled_run(backend, "ignore", [signal.SIGTERM, signal.SIGTERM])
    assert exit_code == 128 + signal.SIGKILL
    assert row.error_message == (
        f"{COMMAND_INTERRUPTED}: sync-obs run received SIGTERM, then SIGTERM; the command was "
        "killed (SIGKILL)"
    )
    assert row.metadata["run"]["received"] == ["SIGTERM", "SIGTERM"]


TERMINAL_PROBE = """
import os
from sync_observability.shell import SignalForwarder
if os.isatty(0):
    os.close(os.open(os.ttyname(0), os.O_RDWR))  # a session leader opening it: our terminal
with SignalForwarder() as forwarder:
    print("terminal delivers SIGINT:", forwarder.terminal_delivers_sigint, flush=True)
"""


@pytest.mark.parametrize("with_terminal", [True, False])
def test_sigint_is_not_forwarded_when_the_terminal_sends_it_to_the_command(
    with_terminal: bool,
) -> None:
    # Ctrl-C signals the terminal's whole foreground process group, the command included: it
    # is only forwarded when sync-obs run is not in that group (cron, CI, a kill -INT).
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [PY, "-c", TERMINAL_PROBE],
            stdin=slave if with_terminal else subprocess.DEVNULL,
            stdout=slave if with_terminal else subprocess.PIPE,
            stderr=slave if with_terminal else subprocess.PIPE,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    try:
        if with_terminal:
            output = b""
            while b"\n" not in output:
                output += os.read(master, 1024)
        else:
            output, _ = proc.communicate(timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(master)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert output.decode().strip() == f"terminal delivers SIGINT: {with_terminal}"


RUN_IN_PROCESS = """
import json, sys
from sync_observability.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = ("dagster", "pandas", "matplotlib", "alembic", "numpy", "pyarrow", "duckdb")
print(json.dumps([code, sorted(m for m in heavy if m in sys.modules)]))
"""


def test_sync_obs_run_loads_neither_dagster_nor_the_reports(
    backend: Backend, store: SyncStore
) -> None:
    # The whole command, the sync's start, end and operation event included, in one process.
    where = ["--database-url", backend.url, "--schema", backend.schema]
    argv = ["run", *where, "--resource", "ops/job", "--type", "migration", "--", "true"]
    out = subprocess.run(
        [PY, "-c", RUN_IN_PROCESS, *argv], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [0, []]
    row = last_sync(store)
    assert (row.sync_status, row.metadata["operation_type"]) == ("success", "migration")


def test_a_descriptor_the_caller_passed_on_reaches_the_command(backend: Backend) -> None:
    # As a shell does: a make jobserver's pipe, a flock'd fd 9.
    read, write = os.pipe()
    try:
        os.set_inheritable(write, True)
        code = f"import os; os.write({write}, b'through')"
        assert tracked(backend, [PY, "-c", code]) == 0
        assert os.read(read, 100) == b"through"
    finally:
        os.close(read)
        os.close(write)


def test_a_signal_before_the_command_starts_keeps_it_from_running(tmp_path: Path) -> None:
    # SIGTERM while the sync was being started: it is not lost, and nothing is started after it.
    marker = tmp_path / "ran"
    with SignalForwarder() as signals:
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the forwarder: recorded
        result = run_command([PY, "-c", f"open({str(marker)!r}, 'a').close()"], signals=signals)
    assert (result.exit_code, result.returncode, result.received) == (143, None, (signal.SIGTERM,))
    assert result.error() == (
        COMMAND_INTERRUPTED,
        "sync-obs run received SIGTERM; the command was not started",
    )
    assert not marker.exists()


def test_the_error_keeps_the_end_of_a_stderr_without_newlines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # 100 KiB on one line: the tail keeps its last 16 KiB rather than nothing.
    code = "import sys; sys.stderr.write('x' * 100_000 + 'END'); sys.exit(1)"
    result = run_command([PY, "-c", code])
    assert capfd.readouterr().err == "x" * 100_000 + "END"
    assert result.stderr_tail == "x" * (STDERR_TAIL_BYTES - 3) + "END"


@pytest.mark.slow
@pytest.mark.postgres
def test_an_end_that_cannot_be_recorded_is_reaped_by_the_next_run(
    postgres_database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # The database refuses connections while the command runs: the command's exit code still
    # passes through; the sync stays running until the next run of it on this host.
    with own_database(postgres_database_url, "sync_obs_run_end") as url:
        name = sa.make_url(url).database
        admin = sa.create_engine(postgres_database_url, isolation_level="AUTOCOMMIT")
        backend = Backend("postgresql", url)
        store = backend.store()
        store.dispose()  # no connection of ours stays open
        options = ["--database-url", url, "--storage-timeout", "1", "--resource", "ops/job"]
        code = "import sys; print('ready', flush=True); sys.stdin.read(); sys.exit(3)"
        try:
            with cli_run(options, [PY, "-c", code]) as proc:
                assert proc.stdout is not None and proc.stdin is not None
                assert proc.stdout.readline() == b"ready\n"
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                proc.stdin.close()  # the command ends (exit 3), and its end is refused
                proc.wait(timeout=120)
                assert proc.stderr is not None
                err = proc.stderr.read().decode()
            assert proc.returncode == 3
            assert err.startswith("sync-obs run: warning: the end of sync ")
            assert "the next sync-obs run of it on this host marks it failed" in err
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()
        [left] = store.list_history(resource="ops/job")
        assert left.sync_status == "running"
        assert left.metadata["run"]["pid"] == proc.pid
        capfd.readouterr()
        assert tracked(backend, [PY, "-c", "pass"]) == 0
        assert (
            f"marked sync {left.sync_id} of 'ops/job' failed ({ORPHANED})" in capfd.readouterr().err
        )
        reaped = store.get_sync(left.sync_id)
        assert reaped is not None and reaped.sync_status == "failed"
        assert last_sync(store).sync_status == "success"
        store.dispose()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--resource", "", "--", "true"], "'--resource': must not be empty"),
        (["--resource", "x" * 300, "--", "true"], "'--resource'"),
        (["--resource", "r", "--type", "backup", "--", "true"], "'--type': 'backup' is not one of"),
        (["--resource", "r", "--kill-after", "0", "--", "true"], "'--kill-after'"),
        (["--resource", "r"], "Missing argument 'COMMAND...'"),
    ],
)
def test_bad_options_exit_2_naming_the_option_and_run_nothing(
    tmp_path: Path, args: list[str], named: str
) -> None:
    db = tmp_path / "sync.db"
    result = CliRunner().invoke(main, ["run", "--database-url", f"sqlite:///{db}", *args])
    assert result.exit_code == 2
    [error] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert named in error
    assert not db.exists()  # refused before the database was touched
