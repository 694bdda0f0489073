"""A Prometheus scrape of ``sync-obs metrics serve`` at 10,000 resources on PostgreSQL.

In one run:

1. **Data.** A fresh schema created by the package's migrations; ``--resources`` ``sync_state``
   rows generated in SQL (85% success, 5% failed with 1 to 5 consecutive failures, 5% running,
   5% never run), one open alert per failed resource (rule ``consecutive_failures``, critical)
   and one per running resource (``stuck_run``, warning), as many resolved ones, and ``--history``
   ``sync_history`` rows; then ``VACUUM ANALYZE``.
2. **Scrapes.** ``sync-obs metrics serve --port 0`` started as a child process (the real
   server: its own store and pool, ``gc.freeze`` at start), then ``--repeat`` rounds of, in
   this order: the baseline, a ``SELECT 1`` round trip through a ``SyncStore`` of this process
   (a transaction of the storage layer, as a scrape's read is); a scrape in the Prometheus text
   format (no ``Accept`` header); a scrape as Prometheus 2.42 asks for it (its ``Accept``
   header, so OpenMetrics, and gzip). Each scrape is an HTTP GET on a new connection, timed
   until the body is read. Medians, and the ratio of each scrape's median to the baseline's.
3. **Where the time goes.** In this process, on a store of the schema (medians of the same
   number of calls): the snapshot read alone (``read_monitoring_snapshot``), the collector's
   families (read and build), the whole text exposition as the server writes it
   (``render_exposition``), and the same written by prometheus_client's ``generate_latest``
   (the byte-for-byte reference), with GC frozen as the server has it.

The schema is dropped at the end. Target: a scrape under 200 ms (median).

Usage::

    flock /work/bench.lock .venv/bin/python bench/bench_metrics.py
    python bench/bench_metrics.py --resources 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import select
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from sync_observability import SyncStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 200.0
# What Prometheus 2.42 sends (scrape.go, acceptHeader).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

STATES = """
INSERT INTO sync_state (resource, source_system, target_system, last_sync_status, started_at,
    completed_at, duration_ms, consecutive_failures, last_success_at, records_synced,
    last_sync_time)
SELECT format('crm/resource_%s', lpad(i::text, 5, '0')), 'crm', 'warehouse',
    CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 20 = 1 THEN 'running'
         WHEN i % 20 = 2 THEN 'never_run' ELSE 'success' END,
    CASE WHEN i % 20 = 2 THEN NULL ELSE now() - make_interval(secs => 60 + i % 3600) END,
    CASE WHEN i % 20 IN (1, 2) THEN NULL ELSE now() - make_interval(secs => i % 3600) END,
    CASE WHEN i % 20 IN (1, 2) THEN NULL ELSE 60000 + i END,
    CASE WHEN i % 20 = 0 THEN 1 + i % 5 ELSE 0 END,
    CASE WHEN i % 20 = 2 THEN NULL ELSE now() - make_interval(secs => i % 7200) END,
    CASE WHEN i % 20 = 2 THEN 0 ELSE i * 7 END,
    CASE WHEN i % 20 = 2 THEN NULL ELSE now() - make_interval(secs => i % 7200) END
FROM generate_series(0, :resources - 1) AS i
"""
ALERTS = """
INSERT INTO sync_alerts (alert_id, rule, resource, severity, status, fingerprint, message,
    opened_at, last_seen_at, resolved_at)
SELECT gen_random_uuid()::text, rule, resource, severity, status,
    rule || ':' || resource, rule || ' on ' || resource, now() - interval '1 hour', now(),
    CASE WHEN status = 'resolved' THEN now() END
FROM (
    SELECT CASE last_sync_status WHEN 'failed' THEN 'consecutive_failures' ELSE 'stuck_run' END
               AS rule,
           CASE last_sync_status WHEN 'failed' THEN 'critical' ELSE 'warning' END AS severity,
           resource, s.status
    FROM sync_state CROSS JOIN (VALUES ('open'), ('resolved')) AS s(status)
    WHERE last_sync_status IN ('failed', 'running')
) AS a
"""
HISTORY = """
INSERT INTO sync_history (sync_id, resource, sync_type, sync_start_time, sync_end_time,
    sync_status, records_processed, duration_ms)
SELECT gen_random_uuid()::text, format('crm/resource_%s', lpad((i % :resources)::text, 5, '0')),
    'incremental', now() - make_interval(secs => i), now() - make_interval(secs => i) + interval
    '1 minute', 'success', i % 1000, 60000
FROM generate_series(1, :history) AS i
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def generate(url: str, schema: str, resources: int, history: int) -> None:
    SyncStore.from_url(url, schema=schema).dispose()
    engine = sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(sa.text(f'SET search_path = "{schema}"'))
        conn.execute(sa.text(STATES), {"resources": resources})
        conn.execute(sa.text(ALERTS))
        conn.execute(sa.text(HISTORY), {"resources": resources, "history": history})
        conn.execute(sa.text("VACUUM ANALYZE sync_state, sync_alerts, sync_history"))
    engine.dispose()


def drop(url: str, schema: str) -> None:
    engine = sa.create_engine(
        sa.make_url(url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def start_server(url: str, schema: str) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "sync_observability.cli", "metrics", "serve", "--port", "0"]
    child = subprocess.Popen(
        [*command, "--database-url", url, "--schema", schema],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([child.stderr], [], [], 0.5)[0]:
            line = child.stderr.readline()
            if "Serving Prometheus metrics on http://127.0.0.1:" in line:
                return child, int(line.split("127.0.0.1:")[1].split("/")[0])
            if not line:
                break
    stop_server(child)
    raise SystemExit("sync-obs metrics serve did not start")


def stop_server(child: subprocess.Popen[str]) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    except ProcessLookupError:
        pass
    if child.stderr is not None:
        child.stderr.close()


def scrape(port: int, headers: dict[str, str]) -> tuple[float, int, bytes]:
    """Seconds until the body is read, its size on the wire, the decoded body."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        encoding = response.headers.get("Content-Encoding")
    elapsed = time.perf_counter() - started
    return elapsed, len(body), gzip.decompress(body) if encoding == "gzip" else body


def breakdown(url: str, schema: str, repeat: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from sync_observability.prometheus import SyncMetricsCollector, render_exposition
    from sync_observability.storage.monitoring import read_monitoring_snapshot

    store = SyncStore.from_url(url, schema=schema, auto_migrate=False)
    collector = SyncMetricsCollector(store)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    gc.collect()
    gc.freeze()
    try:
        read_monitoring_snapshot(store)  # warm-up: connect, compile
        steps = {
            "snapshot read": lambda: read_monitoring_snapshot(store),
            "read + families (collector.gauges)": collector.gauges,
            "text exposition (all of it)": lambda: render_exposition(
                collector.gauges(), openmetrics=False
            ),
            "  the same by prometheus_client": lambda: generate_latest(registry),
        }
        return {name: median_ms([timed(fn) for _ in range(repeat)]) for name, fn in steps.items()}
    finally:
        gc.unfreeze()
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    url, schema = args.database_url, f"bench_metrics_{uuid.uuid4().hex[:8]}"

    log(f"generating {args.resources} resources, {args.history} history rows in {schema}")
    generate(url, schema, args.resources, args.history)
    child = None
    try:
        child, port = start_server(url, schema)
        baseline_store = SyncStore.from_url(url, schema=schema, auto_migrate=False)

        def select_1() -> None:
            baseline_store.db.read(lambda c: c.execute(sa.text("SELECT 1")).scalar_one(), "ping")

        select_1()
        sizes: dict[str, tuple[int, int]] = {}
        kinds = {
            "text format (no Accept header)": {},
            "as Prometheus asks (OpenMetrics, gzip)": {
                "Accept": PROMETHEUS_ACCEPT,
                "Accept-Encoding": "gzip",
            },
        }
        for headers in kinds.values():  # warm-up: the server's first connection and plan
            scrape(port, headers)
        times: dict[str, list[float]] = {"baseline: SELECT 1 round trip": []}
        times |= {kind: [] for kind in kinds}
        for _ in range(args.repeat):
            times["baseline: SELECT 1 round trip"].append(timed(select_1))
            for kind, headers in kinds.items():
                elapsed, wire, body = scrape(port, headers)
                times[kind].append(elapsed)
                sizes[kind] = (wire, len(body))
        baseline_store.dispose()
        baseline = median_ms(times["baseline: SELECT 1 round trip"])
        print(f"\n{args.resources} resources, {args.repeat} rounds, medians:")
        for kind, samples in times.items():
            ms = median_ms(samples)
            extra = ""
            if kind in sizes:
                wire, size = sizes[kind]
                verdict = "meets" if ms < TARGET_MS else "MISSES"
                extra = (
                    f"  {ms / baseline:6.1f}x baseline  {wire / 1e6:.2f} MB on the wire "
                    f"({size / 1e6:.2f} MB text)  {verdict} {TARGET_MS:.0f} ms"
                )
            print(f"  {kind:42s} {ms:8.1f} ms{extra}")
        print("where the time goes (in-process, medians):")
        for name, ms in breakdown(url, schema, args.repeat).items():
            print(f"  {name:42s} {ms:8.1f} ms")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        if child is not None:
            stop_server(child)
        drop(url, schema)


if __name__ == "__main__":
    main()
