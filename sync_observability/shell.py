"""Any command as a tracked sync: what ``sync-obs run`` does (seed 004's manual operations).

:func:`run_command` runs a command the way a shell does, with no database: stdin and stdout are
the caller's, stderr reaches the caller's stderr as it is written while its last lines are kept
(:data:`STDERR_TAIL_BYTES`), SIGINT and SIGTERM received meanwhile are forwarded, and the exit
code follows the shell's conventions (``128 + N`` after signal N, 127 when the command is not
found, 126 when it cannot be executed).

:func:`run_tracked` wraps it in a sync of ``resource`` in ``sync_state`` and ``sync_history``
(``sync_type`` ``full``; exit code 0 is ``success``, anything else ``failed`` with the code and
the stderr's last lines) and, with an operation type, one ``operation_log`` event. Tracking
never stops the work: when the database cannot be reached the command still runs, untracked,
and a warning says so; only a sync of the resource that is already running refuses the start,
as ``SyncTracker.track`` does (:class:`~sync_observability.errors.SyncAlreadyRunningError`).

Signals: the first SIGINT or SIGTERM is forwarded to the command, which then has
``kill_after`` seconds to exit before it is killed (SIGKILL); a second one kills it at once.
SIGINT typed at a terminal reaches the command directly (it shares the terminal's foreground
process group), so it is not sent a second time. Either way the sync is recorded failed
(``COMMAND_INTERRUPTED``) and the command's own exit code is passed through.

Examples:
    .. code-block:: python

        from sync_observability.shell import run_tracked
        from sync_observability.storage.store import SyncStore

        code = run_tracked(
            ["pg_dump", "-f", "/backups/crm.sql", "crm"],
            open_store=lambda: SyncStore.from_url("sqlite:///sync.db"),
            resource="maintenance/crm-backup",
            operation_type="maintenance",
        )
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError, SyncAlreadyRunningError
from sync_observability.operations import MAX_MESSAGE_LENGTH
from sync_observability.storage.records import PendingEvent, SyncOutcome, SyncRecord
from sync_observability.validation import check_name, clean_json, clean_text

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore

OPERATION_TYPES = {"maintenance": "maintenance", "migration": "migration", "import": "data_import"}
"""``--type`` -> the ``operation_log`` category of seed 004's operation types."""
SYNC_TYPE = "full"
"""A command has no watermark of its own: its syncs are ``full`` (success moves the time
watermark to the start, as for any sync, which is what the freshness rules read)."""
DEFAULT_KILL_AFTER = 10.0
"""Seconds a command has to exit after a forwarded signal before it is killed (docker stop's
grace, inside Kubernetes' 30 s termination grace period)."""
STDERR_TAIL_BYTES = 16 * 1024
STDERR_TAIL_LINES = 20
"""The error of a failed command is its exit code and at most this many last stderr lines."""
DRAIN_SECONDS = 2.0
"""After the command exits, how long to wait for its stderr to close: a process it left in the
background may hold the pipe open for ever."""
MAX_ARGV_CHARS = 2000
"""The command line kept in the sync's metadata is cut to this many characters."""
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_ALREADY_RUNNING = 75
"""``sync-obs run``'s exit code when the resource is already running and the command did not
run: sysexits' EX_TEMPFAIL (try again later), so a script tells it from the command's own 1."""

# Error codes in sync_history.errors (and error_message's prefix).
COMMAND_FAILED = "COMMAND_FAILED"
COMMAND_KILLED = "COMMAND_KILLED"
COMMAND_INTERRUPTED = "COMMAND_INTERRUPTED"
COMMAND_NOT_FOUND = "COMMAND_NOT_FOUND"
COMMAND_NOT_EXECUTABLE = "COMMAND_NOT_EXECUTABLE"
ORPHANED = "ORPHANED"
"""As alerts/reaping.py's (which loads Dagster): a sync whose process ended without it."""

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Syncs run_tracked is running in this process (threads): never reaped as "process gone".
_RUNNING: set[str] = set()
_RUNNING_LOCK = threading.Lock()
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]*@")


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommandResult:
    """How a command ended.

    Attributes:
        exit_code: what a shell would report: the command's code, ``128 + N`` after signal N,
            127 not found, 126 not executable.
        returncode: ``subprocess``'s (negative for a signal); None when it never started.
        received: the signals ``sync-obs run`` received (forwarded or not), in order.
        killed_after_grace: it was killed (SIGKILL) after a forwarded signal.
        stderr_tail: the last lines of its stderr (decoded, invalid UTF-8 replaced).
        start_error: why it could not be started.
    """

    exit_code: int
    returncode: int | None
    received: tuple[int, ...] = ()
    killed_after_grace: bool = False
    stderr_tail: str = ""
    start_error: str | None = None

    @property
    def signal(self) -> int | None:
        """The signal that ended the command, if one did."""
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def success(self) -> bool:
        """Exit code 0, and not interrupted."""
        return self.exit_code == 0 and not self.received

    def error(self) -> tuple[str, str] | None:
        """``(code, message)`` for ``sync_history.errors``; None on success."""
        if self.success:
            return None
        if self.start_error is not None:
            code = COMMAND_NOT_FOUND if self.exit_code == EXIT_NOT_FOUND else COMMAND_NOT_EXECUTABLE
            return code, self.start_error
        if self.received:
            what = ", then ".join(signal_name(s) for s in self.received)
            if self.returncode is None:
                ended = "the command was not started"
            elif self.killed_after_grace:
                ended = "the command was killed (SIGKILL)"
            elif self.signal is not None:
                ended = f"the command was killed by {signal_name(self.signal)}"
            else:
                ended = f"the command exited with code {self.returncode}"
            message, code = f"sync-obs run received {what}; {ended}", COMMAND_INTERRUPTED
        elif self.signal is not None:
            message = f"the command was killed by {signal_name(self.signal)}"
            code = COMMAND_KILLED
        else:
            message, code = f"the command exited with code {self.exit_code}", COMMAND_FAILED
        if self.stderr_tail:
            message += f"; its stderr ended with:\n{self.stderr_tail}"
        return code, message


class SignalForwarder:
    """Catches SIGINT and SIGTERM while it is entered, and forwards them to the running command.

    Entered before the database is touched, so a signal during the sync's start or end is not
    lost (nor does it abort a write half-way): it is acted on when the command runs, or
    prevents it from starting. Forwarding needs the main thread; elsewhere it does nothing.
    A signal the caller ignores (``nohup``, a background job) stays ignored.
    """

    def __init__(self, kill_after: float = DEFAULT_KILL_AFTER) -> None:
        self.kill_after = kill_after
        self.received: list[int] = []
        self.killed_after_grace = False
        self._child: subprocess.Popen[bytes] | None = None
        self._forwarded = False
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}
        self.terminal_delivers_sigint = False
        """Whether ``sync-obs run`` is in its terminal's foreground process group, which a
        Ctrl-C signals whole (the command included); set on entry."""

    def __enter__(self) -> SignalForwarder:
        if threading.current_thread() is not threading.main_thread():
            return self
        self.terminal_delivers_sigint = _in_terminal_foreground()
        for signum in FORWARDED_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def running(self, child: subprocess.Popen[bytes]) -> Iterator[None]:
        """Forward to ``child`` while the block runs (a signal received before it, too)."""
        # Blocked while the child is set, so that a signal arriving now is forwarded once.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            self._child = child
            if self.received:
                self._forward(self.received[-1])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            yield
        finally:
            self._child = None
            if self._timer is not None:
                self._timer.cancel()

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self._child is None:
            return
        if self._forwarded:
            self._kill()
        else:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        child = self._child
        assert child is not None
        self._forwarded = True
        # Ctrl-C at a terminal signals its whole foreground process group: the command has it.
        if not (signum == signal.SIGINT and self.terminal_delivers_sigint):
            child.send_signal(signum)
        self._timer = threading.Timer(self.kill_after, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            self.killed_after_grace = True
            child.kill()


def _in_terminal_foreground() -> bool:
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


class _Tail:
    """The last :data:`STDERR_TAIL_BYTES` bytes written to a stream."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._cut = False

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - STDERR_TAIL_BYTES
        if excess > 0:
            del self._data[:excess]
            self._cut = True

    def lines(self, limit: int = STDERR_TAIL_LINES) -> str:
        text = self._data.decode("utf-8", errors="replace")
        lines = text.splitlines()
        if self._cut and len(lines) > 1:
            lines = lines[1:]  # the first one is cut
        kept = [line.rstrip() for line in lines if line.strip()][-limit:]
        return "\n".join(kept)


def _tee(source: int, target: int | None, tail: _Tail) -> None:
    """Copy ``source`` to ``target`` as it comes, keeping its tail; drain it even when
    ``target`` is gone (a closed stderr must not block the command)."""
    while True:
        try:
            chunk = os.read(source, 65536)
        except OSError:
            return
        if not chunk:
            return
        tail.add(chunk)
        while target is not None and chunk:
            try:
                chunk = chunk[os.write(target, chunk) :]
            except OSError:
                target = None


def run_command(
    argv: Sequence[str],
    *,
    signals: SignalForwarder | None = None,
    kill_after: float = DEFAULT_KILL_AFTER,
    stderr_fd: int | None = 2,
) -> CommandResult:
    """Run ``argv`` (no shell), tee its stderr to ``stderr_fd``, forward SIGINT and SIGTERM.

    Args:
        argv: the program and its arguments; the program is looked up in ``PATH``.
        signals: an entered :class:`SignalForwarder` (one is made for the call otherwise).
        kill_after: the grace period of a forwarded signal, when ``signals`` is not given.
        stderr_fd: where the command's stderr goes, besides its tail (None: only the tail).

    Returns:
        How it ended; never raises for the command's own failures.
    """
    if not argv:
        raise InvalidInputError("command", list(argv), "must name a program")
    if signals is None:
        with SignalForwarder(kill_after) as own:
            return run_command(argv, signals=own, stderr_fd=stderr_fd)
    if signals.received:  # before the command started (during the sync's start, say)
        return CommandResult(
            exit_code=128 + signals.received[0], returncode=None, received=tuple(signals.received)
        )
    try:
        # close_fds=False, as a shell: descriptors our caller passed on (a make jobserver, a
        # flock'd fd 9) reach the command; our own are close-on-exec (PEP 446).
        child = subprocess.Popen(list(argv), stderr=subprocess.PIPE, bufsize=0, close_fds=False)
    except FileNotFoundError:
        return _not_started(signals, EXIT_NOT_FOUND, f"command not found: {argv[0]}")
    except OSError as e:  # PermissionError, exec format error, a directory, ...
        reason = e.strerror or type(e).__name__
        return _not_started(signals, EXIT_NOT_EXECUTABLE, f"cannot execute {argv[0]}: {reason}")
    assert child.stderr is not None
    tail = _Tail()
    tee = threading.Thread(
        target=_tee, args=(child.stderr.fileno(), stderr_fd, tail), name="stderr-tee", daemon=True
    )
    tee.start()
    try:
        with signals.running(child):
            returncode = child.wait()
    finally:
        if child.returncode is None:  # interrupted by an error of ours: never leave it behind
            child.kill()
            child.wait()
    tee.join(DRAIN_SECONDS)
    if not tee.is_alive():
        child.stderr.close()
    exit_code = returncode if returncode >= 0 else 128 - returncode
    return CommandResult(
        exit_code=exit_code,
        returncode=returncode,
        received=tuple(signals.received),
        killed_after_grace=signals.killed_after_grace,
        stderr_tail=tail.lines(),
    )


def _not_started(signals: SignalForwarder, exit_code: int, message: str) -> CommandResult:
    return CommandResult(
        exit_code=exit_code, returncode=None, received=tuple(signals.received), start_error=message
    )


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one line for the sync's metadata: passwords in URLs masked, length capped."""
    line = " ".join(json.dumps(a) if not a or any(c.isspace() for c in a) else a for a in argv)
    return clean_text(_URL_PASSWORD.sub(r"\1***@", line), MAX_ARGV_CHARS)[0]


def run_tracked(
    argv: Sequence[str],
    *,
    open_store: Callable[[], SyncStore],
    resource: str,
    operation_type: str | None = None,
    source_system: str | None = None,
    target_system: str | None = None,
    kill_after: float = DEFAULT_KILL_AFTER,
    warn: Callable[[str], None] | None = None,
    stderr_fd: int | None = 2,
) -> int:
    """Run ``argv`` as a sync of ``resource``; returns the exit code to exit with.

    Args:
        argv: the program and its arguments.
        open_store: makes the store (called once; the store is disposed of afterwards).
        resource: the ``sync_state`` resource the command's syncs are recorded under.
        operation_type: ``maintenance``, ``migration`` or ``import`` (seed 004's types): kept
            in the sync's metadata and as one ``operation_log`` event of that category.
        source_system: ``sync_history.source_system``.
        target_system: ``sync_history.target_system``.
        kill_after: seconds the command has after a forwarded signal before SIGKILL.
        warn: prints a warning (default: to stderr, prefixed ``sync-obs run:``).
        stderr_fd: where the command's stderr goes.

    Raises:
        SyncAlreadyRunningError: another sync of ``resource`` is running (a ``sync-obs run``
            whose process is gone from this host is reaped first); the command did not run.
        InvalidInputError: a bad name or operation type; nothing ran.
    """
    check_name("resource", resource)
    check_name("source_system", source_system, optional=True)
    check_name("target_system", target_system, optional=True)
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        raise InvalidInputError(
            "type", operation_type, f"must be one of {', '.join(OPERATION_TYPES)}"
        )
    if not argv:
        raise InvalidInputError("command", list(argv), "must name a program")
    say = warn or _warn
    run_info: dict[str, Any] = {
        "command": command_line(argv),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    metadata: dict[str, Any] = {"run": run_info}
    if operation_type is not None:
        metadata["operation_type"] = operation_type
    with SignalForwarder(kill_after) as signals:
        tracked = _start(open_store, resource, source_system, target_system, metadata, say)
        try:
            result = run_command(argv, signals=signals, stderr_fd=stderr_fd)
            if result.start_error is not None and stderr_fd is not None:
                _write_line(stderr_fd, f"sync-obs run: {result.start_error}")
            if tracked is not None:
                _finish(tracked[0], tracked[1], result, metadata, operation_type, say)
        finally:
            if tracked is not None:
                tracked[0].dispose()
                with _RUNNING_LOCK:
                    _RUNNING.discard(tracked[1].sync_id)
    return result.exit_code


def _start(
    open_store: Callable[[], SyncStore],
    resource: str,
    source_system: str | None,
    target_system: str | None,
    metadata: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[SyncStore, SyncRecord] | None:
    """The store and the started sync; None (warned) when the database cannot be used."""
    try:
        store = open_store()
    except Exception as e:
        say(f"{_describe(e)}; the command runs untracked")
        return None

    def start() -> SyncRecord:
        sync_id = str(uuid.uuid4())
        with _RUNNING_LOCK:
            _RUNNING.add(sync_id)  # before another thread can see it running
        try:
            return store.start_sync(
                sync_id=sync_id,
                resource=resource,
                started_at=utcnow(),
                sync_type=SYNC_TYPE,
                source_system=source_system,
                target_system=target_system,
                metadata=metadata,
            )
        except BaseException:
            with _RUNNING_LOCK:
                _RUNNING.discard(sync_id)
            raise

    try:
        try:
            record = start()
        except SyncAlreadyRunningError as refused:
            if not _reap_if_gone(store, refused, say):
                raise
            record = start()
    except SyncAlreadyRunningError:
        store.dispose()
        raise
    except Exception as e:
        store.dispose()
        say(f"{_describe(e)}; the command runs untracked")
        return None
    # No connection is held while the command runs (it may run for hours); the end reconnects.
    store.dispose()
    return store, record


def _reap_if_gone(
    store: SyncStore, refused: SyncAlreadyRunningError, say: Callable[[str], None]
) -> bool:
    """Mark failed the sync blocking the start when it is a ``sync-obs run`` on this host whose
    process is gone (killed with SIGKILL, or its end could not be recorded)."""
    if refused.running_sync_id is None:
        return False
    running = store.get_sync(refused.running_sync_id)
    info = (running.metadata or {}).get("run") if running is not None else None
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return False
    pid = info.get("pid")
    with _RUNNING_LOCK:
        ours = refused.running_sync_id in _RUNNING
    # Our own pid, but not one of our syncs: a predecessor that is gone (in a container,
    # where every run is pid 1).
    if ours or not isinstance(pid, int) or (pid != os.getpid() and _process_exists(pid)):
        return False
    reaped = store.reap_sync(
        refused.running_sync_id,
        code=ORPHANED,
        message=f"its sync-obs run process {pid} on {info['host']} ended without recording it",
        now=utcnow(),
    )
    if reaped:
        say(
            f"marked sync {refused.running_sync_id} of {refused.resource!r} failed ({ORPHANED}): "
            f"its process {pid} is gone"
        )
    return True


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(
    store: SyncStore,
    record: SyncRecord,
    result: CommandResult,
    metadata: dict[str, Any],
    operation_type: str | None,
    say: Callable[[str], None],
) -> None:
    ended_at = utcnow()
    error = result.error()
    run_info = {
        **metadata["run"],
        "exit_code": result.exit_code,
        "signal": None if result.signal is None else signal_name(result.signal),
        "received": [signal_name(s) for s in result.received],
    }
    final_metadata = clean_json({**metadata, "run": run_info}, MAX_MESSAGE_LENGTH)[0]
    errors: list[dict[str, Any]] = []
    error_message = None
    if error is not None:
        code, message = error
        message = clean_text(message, MAX_MESSAGE_LENGTH, keep_end=True)[0]
        errors.append(
            {
                "code": code,
                "message": message,
                "timestamp": ended_at.isoformat(),
                "exit_code": result.exit_code,
            }
        )
        error_message = clean_text(f"{code}: {message}", MAX_MESSAGE_LENGTH, keep_end=True)[0]
    what = f"sync {record.sync_id} of {record.resource!r}"
    if operation_type is not None:
        _log_operation(store, record, result, operation_type, ended_at, say)
    try:
        store.finish_sync(
            sync_id=record.sync_id,
            resource=record.resource,
            started_at=record.sync_start_time,
            outcome=SyncOutcome(
                status="success" if error is None else "failed",
                ended_at=ended_at,
                errors=errors,
                error_message=error_message,
                metadata=final_metadata,
            ),
        )
    except Exception as e:
        say(
            f"the end of {what} could not be recorded ({_describe(e)}); it stays running until "
            "the next sync-obs run of it on this host marks it failed"
        )


def _log_operation(
    store: SyncStore,
    record: SyncRecord,
    result: CommandResult,
    operation_type: str,
    ended_at: dt.datetime,
    say: Callable[[str], None],
) -> None:
    """Seed 004's ``complete_operation``: one event of the operation's category."""
    from sync_observability.storage.operation_store import insert_operations

    status = "success" if result.success else "failed"
    details = {
        "operation_type": operation_type,
        "command": record.metadata.get("run", {}).get("command"),
        "status": status,
        "exit_code": result.exit_code,
        "duration_ms": max(0, round((ended_at - record.sync_start_time).total_seconds() * 1000)),
    }
    event = PendingEvent(
        category=OPERATION_TYPES[operation_type],
        entity_key=None,
        event_time=ended_at,
        message=f"{operation_type} {status} (exit code {result.exit_code})",
        details_json=json.dumps(details),
    )
    try:
        insert_operations(
            store,
            [event],
            resource=record.resource,
            sync_id=record.sync_id,
            written_before=0,
            log_time=ended_at,
        )
    except Exception as e:
        say(f"the {operation_type} event of sync {record.sync_id} was not logged ({_describe(e)})")


def _describe(error: BaseException) -> str:
    # Package errors carry URLs only with the password masked; a driver's are translated.
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _warn(message: str) -> None:
    _write_line(2, f"sync-obs run: warning: {message}")


def _write_line(fd: int, line: str) -> None:
    data = f"{line}\n".encode(errors="replace")
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # no stderr to warn on: the exit code and the sync's row still tell
