"""Every report of ``sync_observability.reports.REPORTS`` on PostgreSQL at scale, with EXPLAIN.

In one run:

1. **Data.** A fresh schema created by the package's migrations, loaded by
   ``bench_sensors.generate`` (``--resources`` resources, ``--rows`` ``sync_history`` rows over
   90 days in time order, generated in SQL with ``setseed``; see that script's docstring for the
   mix of green, failing, stale, running, slow and spiking resources), with one change: every
   finished run carries realistic run metrics in ``metadata["metrics"]`` (``total_cost_usd``
   and its ``cost_breakdown``, ``bytes_read``, ``bytes_written``, ``peak_memory_mb``) and one
   successful run in five also ``data_quality`` scores (completeness, accuracy, overall), as
   ``SyncRun.record_metrics`` stores them. Then ``--events`` ``operation_log`` rows over the
   same 90 days (seed 003's categories, linked to a resource and one of its syncs), inserted in
   time order as a running system appends them, and
   ``VACUUM ANALYZE``.
2. **Reports.** Each report with its default ``days`` and ``now`` (the current time), through a
   ``SyncStore`` on the schema: one warm-up call, then ``--repeat`` timed calls; the median is
   compared with the seeds' targets (typical troubleshooting queries under 10 ms, aggregations
   under 100 ms).
3. **EXPLAIN.** During one more call of each report, the SQL it sends is captured with
   SQLAlchemy's ``before_cursor_execute`` event on the store's engine; each captured SELECT is
   then run under ``EXPLAIN (ANALYZE, BUFFERS)`` with the same parameters, and the scans on
   ``sync_history``/``operation_log``/``sync_state`` are listed (Index Scan, Index Only Scan,
   Bitmap Index Scan and which index, or Seq Scan). ``--plans`` prints the plans in full.

The schema is dropped at the end.

Usage::

    python bench/bench_reports.py
    python bench/bench_reports.py --resources 1000 --rows 100000 --events 10000 --plans
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_sensors

from sync_observability import SyncStore
from sync_observability.reports import REPORTS
from sync_observability.storage.reporting.hourly_rollups import refresh_rollups

DEFAULT_URL = bench_sensors.DEFAULT_URL
TROUBLESHOOTING_MS = 10.0
AGGREGATION_MS = 100.0
# Seed 000/001's "typical troubleshooting queries": the state of every resource and the failed
# runs (seed 000's pattern 2, an index read with LIMIT 50, "<10ms"), and since issue 16
# top-errors (seed 004's GROUP BY over 7 days, held to the same budget). Every other report
# aggregates a window (seed 000: "<100ms (aggregation over 30 days)").
TROUBLESHOOTING = ("status", "failures", "top-errors")
# The reports' --all forms, timed for the record (no target: they list every resource).
VARIANTS = {
    "status --all": ("status", {"include_healthy": True}),
    "volume-anomalies --all": ("volume-anomalies", {"include_normal": True}),
}

# bench_sensors' history rows carry a placeholder metadata; ours carry run metrics as
# sync_observability.metrics stores them (cost from the duration and volume, quality 1 in 5).
SENSORS_METADATA = (
    """CASE WHEN status = 'success' THEN '{"tags": ["daily"], "cost_usd": 0.12}'::jsonb"""
    """
            ELSE '{}'::jsonb END"""
)
REPORTS_METADATA = """CASE WHEN status = 'running' THEN '{}'::jsonb
            ELSE jsonb_build_object('metrics',
                jsonb_build_object(
                    'total_cost_usd', round((ms * 0.00002 + processed * 0.000004)::numeric, 6),
                    'cost_breakdown', jsonb_build_object(
                        'compute_cost_usd', round((ms * 0.00002)::numeric, 6),
                        'storage_cost_usd', round((processed * 0.000004)::numeric, 6)),
                    'bytes_read', processed * 512,
                    'bytes_written', processed * 384,
                    'peak_memory_mb', round((256 + d_volume * 3840)::numeric, 1),
                    'tags', jsonb_build_object('team', 'data-platform'))
                || CASE WHEN status = 'success' AND k % 5 = 0
                        THEN jsonb_build_object('data_quality', jsonb_build_object(
                            'completeness_score', round((0.90 + 0.10 * d_volume)::numeric, 4),
                            'accuracy_score', round((0.85 + 0.15 * d_ms)::numeric, 4),
                            'overall_score',
                                round((0.875 + 0.05 * d_volume + 0.075 * d_ms)::numeric, 4)))
                        ELSE '{}'::jsonb END)
       END"""

EVENTS = """
INSERT INTO operation_log (category, resource, sync_id, entity_key, event_time, message, details)
SELECT draws.category, b.resource, b.sync_prefix || lpad(to_hex(k), 12, '0'),
       'SYM' || (i % 500) || '|' || to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       t, draws.category || ' on ' || b.resource, jsonb_build_object('row', i, 'column', 'price')
FROM (
    SELECT i, (ARRAY['data_quality_error', 'dedup_conflict', 'authority_conflict', 'cast_error',
                     'upsert_failure', 'concurrency_issue', 'backup', 'maintenance'])
                  [1 + floor(random() * random() * 8)::int] AS category,
           floor(random() * :resources)::int AS r, floor(random() * :per)::int AS k,
           CAST(:now0 AS timestamptz) - random() * interval '90 days' AS t
    FROM generate_series(1, :events) AS i
    OFFSET 0
) AS draws
JOIN bench_resource b USING (r)
ORDER BY draws.t
"""

SCAN = re.compile(
    r"((?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan)"
    r"(?: Backward)?)(?: using (\S+))? on (\S+)"
)
TABLES = (
    "sync_history",
    "sync_history_archive",
    "operation_log",
    "sync_state",
    "sync_history_hourly",
    "sync_history_hourly_errors",
    "sync_history_daily",
    "sync_volume_baseline",
    "sync_rollup_pending",
)


@dataclasses.dataclass
class Explained:
    statement: str
    plan: list[str]
    execution_ms: float
    scans: list[str]
    jit: bool


@dataclasses.dataclass
class Timed:
    name: str
    rows: int
    times_ms: list[float]
    target_ms: float
    explained: list[Explained]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def met(self) -> bool:
        return self.median < self.target_ms


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scans(plan: list[str]) -> list[str]:
    """The plan's scans of the package's tables, as ``kind index`` or ``Seq Scan on table``."""
    found: list[str] = []
    for line in plan:
        match = SCAN.search(line)
        if match is None:
            continue
        kind, index, target = match.groups()
        if kind.endswith("Bitmap Heap Scan"):
            continue  # its Bitmap Index Scan child names the index
        if index is None and "Index" in kind:
            index, target = target, ""
        if index is None and target not in TABLES:
            continue
        label = f"{kind} {index}" if index else f"{kind} on {target}"
        if label not in found:
            found.append(label)
    return found


def explain(conn: sa.Connection, statement: str, parameters: Any) -> Explained:
    plan = [
        row[0]
        for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
    ]
    execution = next(
        (float(line.split(":")[1].split()[0]) for line in plan if "Execution Time" in line), 0.0
    )
    return Explained(
        " ".join(statement.split()),
        plan,
        execution,
        scans(plan),
        any(line.startswith("JIT:") for line in plan),
    )


def time_report(store: SyncStore, name: str, repeat: int, slow_seconds: float) -> Timed:
    report_name, kwargs = VARIANTS.get(name, (name, {}))
    report = functools.partial(REPORTS[report_name], **kwargs)
    started = time.perf_counter()
    report(store)  # warm-up
    if time.perf_counter() - started > slow_seconds:
        repeat = min(repeat, 3)  # keeps the whole run bounded; the table shows the count
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = report(store)
        times.append((time.perf_counter() - started) * 1000)
        rows = len(result)
    if name in VARIANTS:
        target = math.inf
    else:
        target = TROUBLESHOOTING_MS if name in TROUBLESHOOTING else AGGREGATION_MS
    return Timed(name, rows, times, target, explain_report(store, report))


def explain_report(store: SyncStore, report: Callable[..., Any]) -> list[Explained]:
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        report(store)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    with store.engine.connect() as conn:
        return [explain(conn, statement, parameters) for statement, parameters in captured]


def insert_events(url: str, schema: str, events: int, resources: int, per: int) -> float:
    started = time.perf_counter()
    with bench_sensors.connection(url, schema) as conn:
        conn.execute(sa.text("SET jit = off"))
        now0 = conn.execute(sa.text("SELECT max(sync_start_time) FROM sync_history")).scalar_one()
        conn.execute(
            sa.text(EVENTS),
            {"events": events, "resources": resources, "per": per, "now0": now0},
        )
        conn.execute(sa.text("VACUUM ANALYZE operation_log"))
    return time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL")
    parser.add_argument("--resources", type=int, default=10_000, help="sync_state rows")
    parser.add_argument("--rows", type=int, default=5_000_000, help="sync_history rows")
    parser.add_argument("--events", type=int, default=200_000, help="operation_log rows")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per report")
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=10.0,
        help="a report whose warm-up takes longer is timed 3 times, not --repeat",
    )
    parser.add_argument("--seed", type=float, default=0.42, help="setseed() value, -1 to 1")
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN in full")
    args = parser.parse_args(argv)
    per = args.rows // max(args.resources, 1)
    if args.resources < 10 or not 40 <= per <= 700:
        parser.error("need --resources >= 10 and 40 to 700 history rows per resource")
    if args.repeat < 1 or args.events < 0 or not -1 <= args.seed <= 1:
        parser.error("need --repeat >= 1, --events >= 0, -1 <= --seed <= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if SENSORS_METADATA not in bench_sensors.HISTORY:
        raise SystemExit("bench_sensors.HISTORY changed: update SENSORS_METADATA here")
    bench_sensors.HISTORY = bench_sensors.HISTORY.replace(SENSORS_METADATA, REPORTS_METADATA)
    url = args.database_url
    schema = f"bench_reports_{uuid.uuid4().hex[:8]}"
    per = args.rows // args.resources
    started = time.perf_counter()
    print(
        f"load average (1/5/15 min) at the start: {bench_sensors.load()} on {os.cpu_count()} cores"
    )
    try:
        log(f"generating {args.resources:,} resources x {per} runs in {schema}")
        data = bench_sensors.generate(url, schema, args.resources, per, args.seed)
        log(f"generated in {data.seconds:.1f} s; inserting {args.events:,} operational events")
        events_s = insert_events(url, schema, args.events, args.resources, per)
        store = SyncStore.from_url(url, schema=schema, auto_migrate=False)
        try:
            with store.engine.connect() as conn:
                quality = conn.exec_driver_sql(
                    "SELECT count(*) FILTER (WHERE metadata -> 'metrics' ? 'data_quality'), "
                    "pg_size_pretty(pg_total_relation_size('sync_history')) FROM sync_history"
                ).one()
            log("first roll-up refresh (aggregates every closed hour once)")
            refresh_started = time.perf_counter()
            refresh_rollups(store)
            first_refresh_s = time.perf_counter() - refresh_started
            refresh_started = time.perf_counter()
            refresh_rollups(store)
            next_refresh_ms = (time.perf_counter() - refresh_started) * 1000
            with store.engine.connect() as conn:
                rollup_rows = conn.exec_driver_sql(
                    "SELECT (SELECT count(*) FROM sync_history_hourly), "
                    "(SELECT count(*) FROM sync_history_hourly_errors), "
                    "(SELECT rolled_until FROM sync_rollup_state)"
                ).one()
            results = []
            for name in [*REPORTS, *VARIANTS]:
                log(f"timing {name}")
                results.append(time_report(store, name, args.repeat, args.slow_seconds))
            report_load = bench_sensors.load()
        finally:
            store.dispose()
    finally:
        bench_sensors.drop_schema(url, schema)
        log(f"dropped {schema}")

    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in data.steps.items())
    print(
        f"Reports on PostgreSQL: {args.resources:,} resources, {data.rows:,} history rows "
        f"({per} per resource over {bench_sensors.SPREAD_DAYS} days, {quality[0]:,} with "
        f"quality scores, sync_history {quality[1]} with indexes), {args.events:,} operational "
        f"events; generated in {data.seconds:.1f} s ({steps}), events in {events_s:.1f} s"
    )
    print(
        f"Roll-ups: first refresh {first_refresh_s:.1f} s ({rollup_rows[0]:,} hourly rows, "
        f"{rollup_rows[1]:,} error rows, closed up to {rollup_rows[2]}); a refresh with "
        f"nothing new {next_refresh_ms:.1f} ms"
    )
    print(
        f"Each report with its default days and now = the current time: 1 warm-up, median of "
        f"{args.repeat} calls (3 when the warm-up took over {args.slow_seconds:g} s; wall ms "
        f"in this process, DataFrame included); SQL ms = server "
        f"Execution Time of EXPLAIN ANALYZE, summed over the report's statements; load average "
        f"after: {report_load}"
    )
    print()
    header = (
        f"{'report':<24}{'days':>5}{'rows':>8}{'runs':>5}{'median ms':>11}{'min ms':>9}"
        f"{'SQL ms':>9}"
        f"{'target':>9}  {'met?':<7}index used (scans of the package's tables)"
    )
    print(header)
    print("-" * len(header))
    for timed in results:
        days = REPORTS[VARIANTS.get(timed.name, (timed.name,))[0]].__kwdefaults__["days"]
        sql_ms = sum(e.execution_ms for e in timed.explained)
        listed = timed.target_ms == math.inf
        target = "-" if listed else f"< {timed.target_ms:g}"
        verdict = "-" if listed else ("met" if timed.met else "MISSED")
        used = "; ".join(", ".join(e.scans) + (" [JIT]" if e.jit else "") for e in timed.explained)
        print(
            f"{timed.name:<24}{days:>5}{timed.rows:>8}{len(timed.times_ms):>5}{timed.median:>11.1f}"
            f"{min(timed.times_ms):>9.1f}{sql_ms:>9.1f}{target:>9}  {verdict:<7}{used}"
        )
    targeted = [t for t in results if t.target_ms != math.inf]
    print(f"\n{sum(t.met for t in targeted)} of {len(targeted)} targets met.")
    for timed in results:
        for explained in timed.explained:
            if args.plans or not timed.met:
                print(f"\n{timed.name}: {explained.statement[:600]}")
                for line in explained.plan:
                    print("    " + line)
    print(
        f"\nwhole benchmark: {time.perf_counter() - started:.0f} s; load average now "
        f"{bench_sensors.load()}"
    )


if __name__ == "__main__":
    main()
