"""``sync-obs archive query``: one month's failures from 1,000,000 cold rows (target: under 1 s).

The cold root is a local folder written as ``archive export`` writes it: ``sync_history`` rows
whose start times spread evenly over a year (2025), cut into files of the export's batch size
(``DEFAULT_COLD_BATCH_SIZE``) that never cross a month, Parquet with zstd and the contract's
Arrow schema, each listed in ``_manifest.json`` (so about two files a month). About 2% of the
syncs failed, with an error message and an ``errors`` document.

The query is June's failures, newest first, with their error codes::

    SELECT sync_id, resource, sync_start_time, error_message,
           json_extract_string(errors, '$[0].code') AS code
    FROM sync_history_cold
    WHERE sync_status = 'failed'
      AND sync_start_time >= TIMESTAMPTZ '2025-06-01 00:00:00+00'
      AND sync_start_time <  TIMESTAMPTZ '2025-07-01 00:00:00+00'
    ORDER BY sync_start_time DESC

Measured in the same run, alternating, the median of ``--repeat`` runs each:

- **fresh process** (as a user runs it): ``python -m sync_observability.cli archive query SQL
  --from DIR`` with the default table, and with ``--json``, stdout to a pipe that is read; the
  wall clock from spawn to exit. Baseline: ``python -m sync_observability.cli --version`` (the
  interpreter and the CLI's imports, nothing read);
- **in process**: :func:`sync_observability.cold.query.run_query` (manifest read, a fresh DuckDB
  connection, the views, the query, the rows fetched). Baseline, the floor: DuckDB alone on a
  fresh connection running the same SQL over ``read_parquet`` of the same files (no manifest, no
  views).

Usage::

    python bench/bench_cold_query.py
    python bench/bench_cold_query.py --rows 1000000 --repeat 7 --keep /tmp/cold-bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sync_observability.cold import layout
from sync_observability.cold.export import DEFAULT_COLD_BATCH_SIZE
from sync_observability.cold.query import run_query

TARGET_SECONDS = 1.0
YEAR = 2025
MONTH = 6
SQL = f"""
SELECT sync_id, resource, sync_start_time, error_message,
       json_extract_string(errors, '$[0].code') AS code
FROM sync_history_cold
WHERE sync_status = 'failed'
  AND sync_start_time >= TIMESTAMPTZ '{YEAR}-{MONTH:02d}-01 00:00:00+00'
  AND sync_start_time <  TIMESTAMPTZ '{YEAR}-{MONTH + 1:02d}-01 00:00:00+00'
ORDER BY sync_start_time DESC
"""


def generate(root: str, rows: int, batch_size: int) -> tuple[int, int]:
    """Write ``rows`` cold history rows under ``root``; (files, rows of the measured month's
    failures)."""
    base = layout.open_root(root)
    schema = layout.arrow_schema(layout.HISTORY_TABLE)
    start = dt.datetime(YEAR, 1, 1, tzinfo=dt.timezone.utc)
    year_us = int((dt.datetime(YEAR + 1, 1, 1, tzinfo=dt.timezone.utc) - start).total_seconds())
    year_us *= 1_000_000
    i = np.arange(rows, dtype=np.int64)
    start_us = int(start.timestamp() * 1_000_000) + i * (year_us // rows) + i % 997
    failed = i % 50 == 3
    duration_us = (i % 600) * 1_000_000
    as_time = pa.timestamp("us", tz="UTC")
    columns = {
        "sync_id": pa.array([f"{n:08x}-0000-4000-8000-{n * 7919 % 10**12:012d}" for n in i]),
        "resource": pa.array([f"vantage/resource_{n % 50}" for n in i]),
        "source_system": pa.array(["vantage"] * rows),
        "target_system": pa.array(["warehouse"] * rows),
        "sync_type": pa.array(np.where(i % 10 == 0, "full", "incremental")),
        "sync_start_time": pa.array(start_us, as_time),
        "sync_end_time": pa.array(start_us + duration_us, as_time),
        "sync_status": pa.array(np.where(failed, "failed", "success")),
        "records_processed": pa.array((i * 7919) % 100_000),
        "records_created": pa.array((i * 31) % 1_000),
        "records_updated": pa.array((i * 17) % 5_000),
        "records_failed": pa.array(failed.astype(np.int64)),
        "error_message": pa.array(
            [("HTTP 503 from the vantage API" if f else None) for f in failed], pa.string()
        ),
        "errors": pa.array(
            np.where(failed, '[{"code": "HTTP_503", "message": "Service Unavailable"}]', "[]")
        ),
        "watermark_before": pa.array(start_us - 3_600_000_000, as_time),
        "watermark_after": pa.array(start_us, as_time),
        "cursor_before": pa.nulls(rows, pa.string()),
        "cursor_after": pa.nulls(rows, pa.string()),
        "duration_ms": pa.array(duration_us // 1_000),
        "dagster_run_id": pa.array([f"run-{n}" for n in i]),
        "asset_key": pa.array([f"vantage/resource_{n % 50}" for n in i]),
        "partition_key": pa.nulls(rows, pa.string()),
        "retry_number": pa.array(np.zeros(rows, dtype=np.int64)),
        "metadata": pa.array([f'{{"cost": {{"usd": {n % 100 / 100}}}}}' for n in i]),
        "observed": pa.array(np.zeros(rows, dtype=bool)),
        "archived_at": pa.array(start_us + 91 * 86_400_000_000, as_time),
    }
    table = pa.Table.from_pydict(columns, schema=schema)
    # The UTC month of each start (epoch months since 1970-01, mod 12, from 1).
    month_of = start_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    entries = []
    offset = 0
    while offset < rows:
        month = month_of[offset]
        end = min(offset + batch_size, rows)
        same = np.nonzero(month_of[offset:end] != month)[0]
        if len(same):
            end = offset + int(same[0])
        batch = table.slice(offset, end - offset)
        first = batch.column("sync_start_time")[0].as_py()
        first_id = batch.column("sync_id")[0].as_py()
        name = f"{first:%Y%m%dT%H%M%S%fZ}-{first_id}"
        relative = layout.relative_path(layout.HISTORY_TABLE, YEAR, int(month), name)
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(batch, sink, compression="zstd")  # as the export writes its files
        body = sink.getvalue().to_pybytes()
        path.write_bytes(body)
        entries.append(
            layout.ManifestEntry(
                path=relative,
                table=layout.HISTORY_TABLE,
                year=YEAR,
                month=int(month),
                rows=batch.num_rows,
                first_id=first_id,
                last_id=batch.column("sync_id")[-1].as_py(),
                sha256=hashlib.sha256(body).hexdigest(),
                written_at=layout.utc_iso(dt.datetime.now(dt.timezone.utc)),
            )
        )
        offset = end
    layout.write_manifest(base, entries)
    expected = int(np.count_nonzero(failed & (month_of == MONTH)))
    return len(entries), expected


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def fresh_process(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "SYNC_OBS_COLD_URL": ""}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sync_observability.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"sync-obs {' '.join(args[:2])} failed: {done.stderr}")
    return took, done.stdout


def duckdb_floor(root: str) -> int:
    import duckdb

    files = [
        str(layout.open_root(root) / e.path) for e in layout.read_manifest(layout.open_root(root))
    ]
    sql = SQL.replace("sync_history_cold", f"read_parquet({files!r}, hive_partitioning = false)")
    with duckdb.connect(":memory:") as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return len(conn.execute(sql).fetchall())


def summary(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"median {statistics.median(ms):,.0f} ms (min {min(ms):,.0f}, max {max(ms):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_COLD_BATCH_SIZE)
    parser.add_argument("--keep", help="write (or reuse) the cold root here instead of a temp dir")
    options = parser.parse_args()

    root = options.keep or tempfile.mkdtemp(prefix="cold-bench-")
    try:
        if options.keep and layout.read_manifest(layout.open_root(root)):
            print(f"reusing {root}")
            expected = None
        else:
            took, (files, expected) = timed(
                lambda: generate(root, options.rows, options.batch_size)
            )
            print(f"wrote {options.rows:,} rows in {files} files under {root} in {took:.1f} s")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        print(f"cold root: {size / 2**20:.1f} MiB; query: {MONTH:02d}/{YEAR} failures")

        results: dict[str, list[float]] = {
            "cli table": [],
            "cli --json": [],
            "cli --version (baseline)": [],
            "run_query": [],
            "duckdb alone (floor)": [],
        }
        counts = set()
        for rep in range(options.repeat):
            steps: list[tuple[str, Callable[[], tuple[float, object]]]] = [
                ("cli table", lambda: fresh_process(["archive", "query", SQL, "--from", root])),
                (
                    "cli --json",
                    lambda: fresh_process(["archive", "query", SQL, "--from", root, "--json"]),
                ),
                ("cli --version (baseline)", lambda: fresh_process(["--version"])),
                ("run_query", lambda: timed(lambda: len(run_query(root, SQL).rows))),
                ("duckdb alone (floor)", lambda: timed(lambda: duckdb_floor(root))),
            ]
            if rep % 2:
                steps.reverse()
            for name, step in steps:
                took, out = step()
                results[name].append(took)
                if name == "cli --json":
                    counts.add(len(json.loads(out)))
                elif name in ("run_query", "duckdb alone (floor)"):
                    counts.add(out)
        if len(counts) != 1 or (expected is not None and counts != {expected}):
            raise SystemExit(f"row counts differ: {counts}, expected {expected}")
        print(f"rows returned: {counts.pop():,}")
        for name, times in results.items():
            print(f"{name:<26} {summary(times)}")
        cli = statistics.median(results["cli table"])
        base = statistics.median(results["cli --version (baseline)"])
        inproc = statistics.median(results["run_query"])
        floor = statistics.median(results["duckdb alone (floor)"])
        print(
            f"fresh process: {cli * 1000:,.0f} ms = baseline {base * 1000:,.0f} ms + "
            f"{(cli - base) * 1000:,.0f} ms; in process: {inproc * 1000:,.0f} ms, "
            f"{inproc / floor:.2f}x DuckDB alone"
        )
        met = cli < TARGET_SECONDS and inproc < TARGET_SECONDS
        print(f"target < {TARGET_SECONDS:.0f} s: {'met' if met else 'MISSED'}")
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
