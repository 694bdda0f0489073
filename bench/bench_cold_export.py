"""Cold export on PostgreSQL: ``sync-obs archive export`` to a local folder against its floor.

Each repetition, in the same run and a throwaway database (dropped at the end):

1. ``sync_history_archive`` loaded with N rows by ``INSERT ... SELECT generate_series`` on the
   server (start times every 30 s, so 1,000,000 rows span about 11.5 months; JSON in
   ``errors``, ``metadata``, ``cursor_before``/``cursor_after``; 3% failed with a message), then
   ``VACUUM ANALYZE``;
2. **floor**: a child process running one plain ``SELECT`` of the same rows (JSON as text, the
   form the files hold) into an Arrow table and ``pyarrow.parquet.write_table`` (zstd) to one
   local file: no batches, no verification, no delete. Timed inside the child;
3. **export**: ``python -m sync_observability.cli archive export --to DIR --json`` as a child:
   keyset batches, one file per batch read back and verified, the manifest, the deletes. Timed
   by its own ``duration_ms`` (Python start-up excluded, as for the floor) and the wall clock.

Peak RSS of each child from ``os.wait4`` (its own ``ru_maxrss``; ``RUSAGE_CHILDREN`` would mix
the two children). Targets: export time at most 1.5x the floor's, export peak RSS under 300 MB.

Usage::

    flock /work/bench.lock python bench/bench_cold_export.py --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import sqlalchemy as sa

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 1.5
TARGET_RSS_MB = 300

LOAD = """
INSERT INTO sync_history_archive (sync_id, resource, source_system, target_system, sync_type,
    sync_start_time, sync_end_time, sync_status, records_processed, records_created,
    records_updated, records_failed, error_message, errors, watermark_before, watermark_after,
    cursor_before, cursor_after, duration_ms, dagster_run_id, asset_key, partition_key,
    retry_number, metadata, observed, archived_at)
SELECT md5(g::text)::uuid::text, 'resource_' || (g % 50), 'vantage', 'warehouse',
    CASE WHEN g % 2 = 0 THEN 'incremental' ELSE 'full' END,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds',
    timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds' + (g % 300) * interval '1 s',
    CASE WHEN g % 33 = 0 THEN 'failed' ELSE 'success' END,
    g % 100000, g % 1000, g % 500, CASE WHEN g % 33 = 0 THEN 3 ELSE 0 END,
    CASE WHEN g % 33 = 0 THEN 'upstream timed out after ' || g || ' ms' END,
    CASE WHEN g % 33 = 0 THEN jsonb_build_array(jsonb_build_object('code', 'E42', 'row', g))
         ELSE '[]'::jsonb END,
    timestamptz '2023-12-31 00:00:00+00' + g * interval '30 seconds',
    timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds',
    jsonb_build_object('page', g, 'token', md5(g::text)),
    jsonb_build_object('page', g + 1, 'token', md5((g + 1)::text)),
    (g % 300) * 1000, 'run-' || (g % 10000), 'warehouse/orders', NULL, g % 3,
    jsonb_build_object('rows', g % 1000, 'source', 'bench'), g % 17 = 0,
    timestamptz '2024-04-01 00:00:00+00' + g * interval '30 seconds'
FROM generate_series(1, :rows) AS g
"""

FLOOR = r"""
import json, sys, time
import pyarrow as pa, pyarrow.parquet as pq, sqlalchemy as sa
from sync_observability.cold import layout
url, schema, out = sys.argv[1:4]
engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
names = layout.column_names("sync_history")
columns = ", ".join(f"{n}::text AS {n}" if n in layout.JSON_COLUMNS else n for n in names)
started = time.monotonic()
with engine.connect() as conn:
    rows = conn.exec_driver_sql(f"SELECT {columns} FROM sync_history_archive").fetchall()
target = layout.arrow_schema("sync_history")
table = pa.Table.from_arrays(
    [pa.array(values, type=f.type) for values, f in zip(zip(*rows), target)], schema=target
)
pq.write_table(table, out, compression="zstd")
print(json.dumps({"seconds": time.monotonic() - started, "rows": table.num_rows}))
"""


def _child(args: list[str]) -> tuple[str, float, float]:
    """Run a child; its stdout, wall seconds and peak RSS in MB (``os.wait4``)."""
    started = time.monotonic()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = child.stdout.read().decode()  # type: ignore[union-attr]
    err = child.stderr.read().decode()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise SystemExit(f"child failed ({child.returncode}): {err}")
    return out, wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="a PostgreSQL server (admin URL)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    options = parser.parse_args()

    from sync_observability import SyncStore

    admin = sa.create_engine(options.url, isolation_level="AUTOCOMMIT")
    name = f"cold_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(options.url).set(database=name).render_as_string(hide_password=False)
    schema = "sync_observability"
    work = tempfile.mkdtemp(prefix="cold_bench_")
    results = []
    try:
        store = SyncStore.from_url(url, schema=schema)
        for rep in range(options.repeat):
            loaded = time.monotonic()
            with store.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE sync_history_archive"))
                conn.execute(sa.text(LOAD), {"rows": options.rows})
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql(f'VACUUM ANALYZE "{schema}".sync_history_archive')
            load_s = time.monotonic() - loaded
            floor_out, floor_wall, floor_rss = _child(
                [sys.executable, "-c", FLOOR, url, schema, os.path.join(work, "floor.parquet")]
            )
            floor = json.loads(floor_out)
            cold = os.path.join(work, f"cold-{rep}")
            args = [
                sys.executable,
                "-m",
                "sync_observability.cli",
                "archive",
                "export",
                "--database-url",
                url,
                "--schema",
                schema,
                "--to",
                cold,
                "--older-than-days",
                "1",
                "--json",
            ]
            if options.batch_size:
                args += ["--batch-size", str(options.batch_size)]
            export_out, export_wall, export_rss = _child(args)
            export = json.loads(export_out)
            assert export["rows"] == floor["rows"] == options.rows, (export, floor)
            row = {
                "rep": rep,
                "load_s": round(load_s, 1),
                "floor_s": round(floor["seconds"], 2),
                "floor_wall_s": round(floor_wall, 2),
                "floor_rss_mb": round(floor_rss),
                "export_s": round(export["duration_ms"] / 1000, 2),
                "export_wall_s": round(export_wall, 2),
                "export_rss_mb": round(export_rss),
                "files": sum(t["files"] for t in export["tables"]),
                "ratio": round(export["duration_ms"] / 1000 / floor["seconds"], 2),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(cold)
        store.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    median = {
        key: statistics.median(r[key] for r in results)
        for key in ("floor_s", "export_s", "ratio", "export_rss_mb", "floor_rss_mb")
    }
    print(
        json.dumps(
            {
                "rows": options.rows,
                "median": median,
                "ratio_target": TARGET_RATIO,
                "rss_target_mb": TARGET_RSS_MB,
                "met": median["ratio"] <= TARGET_RATIO
                and max(r["export_rss_mb"] for r in results) < TARGET_RSS_MB,
            }
        )
    )


if __name__ == "__main__":
    main()
