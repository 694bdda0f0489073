"""A throwaway PostgreSQL cluster the outage tests may stop, restart, freeze and fill.

``initdb`` makes a cluster in a temporary folder; ``pg_ctl`` runs it on 127.0.0.1 on a free
port (never the shared server on 5432), with trust authentication and no Unix socket. As root,
every binary runs as the ``postgres`` user, which owns the folder (PostgreSQL refuses to run as
root). ``freeze`` sends SIGSTOP to the postmaster and every process under it, so the server
accepts TCP connections and then answers nothing, as a hung host does; ``thaw`` sends SIGCONT.

``close`` always ends the cluster, frozen or not, and removes its folder; clusters still open at
interpreter exit are closed then too.

Examples:
    .. code-block:: python

        with PostgresCluster(find_bindir(), settings={"max_connections": 10}) as cluster:
            cluster.start()
            engine = sa.create_engine(cluster.url())
            cluster.freeze()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

RUN_AS = "postgres"  # the user the binaries run as when the tests run as root
BINDIR_ENV = "SYNC_OBS_TEST_PG_BINDIR"
FALLBACK_BINDIR = Path("/usr/lib/postgresql/15/bin")
SHARED_PORT = 5432
PG_CTL_TIMEOUT_S = 30

# Fast to start and stop; nothing here has to survive a crash of the machine.
DEFAULT_SETTINGS: dict[str, str | int] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'16MB'",
    "autovacuum": "off",
    "max_wal_size": "'256MB'",
    "log_min_messages": "warning",
}

_open_clusters: set[PostgresCluster] = set()


class ClusterError(RuntimeError):
    """A cluster could not be made, started or stopped; the message ends with its log."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; None when there is none.

    In order: ``$SYNC_OBS_TEST_PG_BINDIR``, ``pg_config --bindir``, /usr/lib/postgresql/15/bin,
    the folder of ``initdb`` on the PATH (Debian puts only wrappers there, hence the others).
    """
    candidates = [os.environ.get(BINDIR_ENV)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        candidates.append(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        )
    candidates.append(str(FALLBACK_BINDIR))
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).resolve().parent) if initdb else None)
    for candidate in candidates:
        if candidate and all(
            os.access(Path(candidate) / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")
        ):
            return Path(candidate)
    return None


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (no binaries, no user to run them as), or None."""
    if find_bindir() is None:
        return f"no PostgreSQL binaries (initdb, pg_ctl): set {BINDIR_ENV} or install PostgreSQL 15"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and there is no runuser to run PostgreSQL as another user"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port != SHARED_PORT
    return port


class PostgresCluster:
    """One PostgreSQL cluster in a temporary folder, owned by this object until :meth:`close`.

    Args:
        bindir: where ``initdb`` and ``pg_ctl`` are (:func:`find_bindir`).
        settings: ``postgresql.conf`` settings on top of :data:`DEFAULT_SETTINGS`, e.g.
            ``{"max_connections": 10, "superuser_reserved_connections": 0}``.
    """

    def __init__(self, bindir: Path, *, settings: Mapping[str, str | int] | None = None) -> None:
        self.bindir = bindir
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.port: int | None = None
        self.root = Path(tempfile.mkdtemp(prefix="sync_obs_pg_"))
        self.data = self.root / "data"
        self.log_file = self.root / "server.log"
        self._frozen: list[int] = []
        self._initialized = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", RUN_AS, "--"]
        _open_clusters.add(self)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def url(
        self, *, database: str = "postgres", password: str | None = None, driver: str = "postgresql"
    ) -> str:
        """The cluster's URL (trust authentication: a password is accepted and ignored)."""
        if self.port is None:
            raise ClusterError("the cluster has not been started")
        secret = f":{password}" if password is not None else ""
        return f"{driver}://postgres{secret}@127.0.0.1:{self.port}/{database}"

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it accepts connections (initdb on the first start).

        The port is chosen on the first start and kept, so clients reconnect to the same URL.
        """
        if not self._initialized:
            self._initdb()
        if self.port is not None:
            self._pg_ctl("start", "-l", str(self.log_file))
            return
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = free_port()
            self._write_settings({"port": self.port})
            try:
                self._pg_ctl("start", "-l", str(self.log_file))
                return
            except ClusterError:
                if "could not bind" not in self.log():
                    raise
        raise ClusterError(f"no free port found for the cluster\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect every client, then shut down cleanly)."""
        self.thaw()
        self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self.start()

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then every process under it; returns the frozen pids."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            raise ClusterError("the server is not running: nothing to freeze")
        # The postmaster first, so that it forks no new backend while its children are stopped;
        # then until no unfrozen process is left under it (one it forked just before).
        pending = [postmaster]
        while pending:
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    self._frozen.append(pid)
            pending = [pid for pid in _descendants(postmaster) if pid not in self._frozen]
        return list(self._frozen)

    def thaw(self) -> None:
        """SIGCONT every frozen process (children first, the postmaster last)."""
        for pid in reversed(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen.clear()

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def close(self) -> None:
        """Thaw, stop (immediately; killed if it will not stop), remove the folder. Idempotent."""
        if self not in _open_clusters:
            return
        _open_clusters.discard(self)
        try:
            self.thaw()
            if self.postmaster_pid() is not None:
                try:
                    self._pg_ctl("stop", "-m", "immediate")
                except ClusterError:
                    self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- inspection ------------------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (from ``postmaster.pid``), None when it is not running."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def log(self) -> str:
        """The server's log so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------------------

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._write_settings(self.settings)
        self._initialized = True

    def _write_settings(self, settings: Mapping[str, str | int]) -> None:
        # Appended: the last occurrence of a setting wins, and the file keeps its owner.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            action,
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT_S),
            *args,
        )

    def _run(self, *command: str) -> None:
        try:
            subprocess.run(
                [*self._as_user, *command],
                cwd=self.root,  # the postgres user may not enter the caller's folder
                capture_output=True,
                text=True,
                check=True,
                timeout=PG_CTL_TIMEOUT_S + 10,
            )
        except subprocess.CalledProcessError as e:
            raise ClusterError(
                f"{' '.join(command)} failed ({e.returncode}): {e.stdout}{e.stderr}\n{self.log()}"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise ClusterError(f"{' '.join(command)} timed out\n{self.log()}") from e

    def _kill(self) -> None:
        postmaster = self.postmaster_pid()
        if postmaster is None:
            return
        for pid in [postmaster, *_descendants(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{postmaster}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _descendants(root: int) -> list[int]:
    """Every process under ``root`` (children, their children, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        kids = children.get(pending.pop(), [])
        found += kids
        pending += kids
    return found


@atexit.register
def _close_all() -> None:
    for cluster in list(_open_clusters):
        with contextlib.suppress(Exception):
            cluster.close()
