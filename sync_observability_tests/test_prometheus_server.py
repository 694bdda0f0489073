"""End to end: a real Prometheus (Debian's ``/usr/bin/prometheus``) scrapes ``sync-obs metrics
serve`` every second, and its HTTP API returns the known history's values.

Both processes run in their own process groups on loopback ports and are killed in ``finally``.
Without a prometheus binary the test is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync_observability.clock import utcnow
from sync_observability.storage.store import SyncStore
from sync_observability_tests import known_history as known
from sync_observability_tests.conftest import IN_CI

pytestmark = pytest.mark.slow
DEADLINE_SECONDS = 90


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if found is None:
        message = "no prometheus binary (apt-get install prometheus; .ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process_group(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """A child in its own session; its whole group is terminated (then killed) afterwards."""
    child = subprocess.Popen(args, start_new_session=True, text=True, **kwargs)
    try:
        yield child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def _serving_port(child: subprocess.Popen[str], deadline: float) -> int:
    """The port in the "Serving Prometheus metrics on http://127.0.0.1:PORT/metrics" line."""
    assert child.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stderr], [], [], 0.5)
        if ready:
            line = child.stderr.readline()
            if line.startswith("Serving Prometheus metrics on http://127.0.0.1:"):
                return int(line.split("127.0.0.1:")[1].split("/")[0])
            assert line, f"sync-obs metrics serve exited: {child.wait()}"
    pytest.fail("sync-obs metrics serve did not start in time")


def _query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _values(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_known_history(tmp_path: Path) -> None:
    binary = _prometheus_binary()
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    written_at = utcnow()
    store = SyncStore.from_url(url)
    known.write_known_history(store, written_at)
    store.dispose()

    deadline = time.monotonic() + DEADLINE_SECONDS
    serve = [sys.executable, "-m", "sync_observability.cli", "metrics", "serve"]
    with process_group(
        [*serve, "--port", "0", "--database-url", url], stderr=subprocess.PIPE
    ) as exporter:
        port = _serving_port(exporter, deadline)
        not_found = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(not_found, timeout=10)
        assert raised.value.code == 404
        raised.value.close()

        web = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sync_obs\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n"
        )
        with process_group(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as server:
            prometheus = f"http://127.0.0.1:{web}"
            while True:
                assert server.poll() is None, "prometheus exited"
                with contextlib.suppress(OSError):
                    # Every family of the scrape lands together: waiting for one is enough.
                    if _query(prometheus, "sync_observability_table_rows"):
                        break
                assert time.monotonic() < deadline, "no series in Prometheus before the deadline"
                time.sleep(0.5)
            queried_at = utcnow()

            assert _values(_query(prometheus, 'up{job="sync_obs"}'), "job") == {"sync_obs": 1}
            assert _query(prometheus, "sync_observability_up")[0]["value"][1] == "1"
            status = _query(prometheus, "sync_observability_last_sync_status == 1")
            assert {r["metric"]["resource"]: r["metric"]["status"] for r in status} == known.STATUS
            failures = _query(prometheus, "sync_observability_consecutive_failures")
            assert _values(failures, "resource") == known.CONSECUTIVE_FAILURES
            durations = _query(prometheus, "sync_observability_last_duration_seconds")
            assert _values(durations, "resource") == known.LAST_DURATION_SECONDS
            records = _query(prometheus, "sync_observability_last_records_processed")
            assert _values(records, "resource") == known.LAST_RECORDS
            alerts = _query(prometheus, "sync_observability_open_alerts")
            assert {
                (r["metric"]["rule"], r["metric"]["severity"]): float(r["value"][1]) for r in alerts
            } == known.OPEN_ALERTS
            rows = _query(prometheus, "sync_observability_table_rows")
            assert _values(rows, "table") == {
                "sync_history": known.HISTORY_ROWS,
                "sync_history_archive": known.ARCHIVE_ROWS,
            }
            # Ages run on the exporter's clock: between the history's `now` and the query's.
            late = (queried_at - written_at).total_seconds() + 1
            ages = _values(
                _query(prometheus, "sync_observability_seconds_since_last_success"), "resource"
            )
            assert ages.keys() == known.SECONDS_SINCE_SUCCESS.keys()
            for resource, age in known.SECONDS_SINCE_SUCCESS.items():
                assert age <= ages[resource] <= age + late
            [oldest] = _query(prometheus, "sync_observability_oldest_running_sync_age_seconds")
            oldest_age = float(oldest["value"][1])
            assert known.OLDEST_RUNNING_SECONDS <= oldest_age <= known.OLDEST_RUNNING_SECONDS + late

        # SIGTERM stops the exporter cleanly.
        os.killpg(exporter.pid, signal.SIGTERM)
        assert exporter.wait(timeout=30) == 0
