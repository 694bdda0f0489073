"""Sensor ticks on PostgreSQL at scale, against a Dagster-only consecutive-failures check.

In one run:

1. **Data.** A fresh schema created by the package's migrations, loaded with ``--resources``
   ``sync_state`` rows and ``--rows`` ``sync_history`` rows (the same number per resource, spread
   over 90 days, inserted in time order so each resource's runs are scattered over the table as
   in production), generated in SQL (``setseed`` then ``random()``: reproducible) and derived
   ``sync_state`` rows, then ``VACUUM ANALYZE``. The mix: most resources green (2% of runs fail
   at random), 3% failing 3 to 7 times in a row, 2% stale (stopped 2 to 10 days ago), 0.5%
   running (their Dagster run failed, was canceled, is in progress, or is in progress for over
   30 minutes), 1% whose last run was 5 to 10x slower than usual, 1% whose last run processed a
   spike or a drop of records. The Dagster instance (``dg.instance_for_test`` on a fresh
   PostgreSQL database) holds the runs of the running syncs.
2. **Sensor ticks.** Every sensor of ``sync_observability.alerts.sensors.SYNC_SENSORS``, as the
   daemon runs it: a new ``dg.build_sensor_context(instance=..., resources={"sync_tracker":
   SyncTracker(...), "sync_alerting": SyncAlerting()})`` per tick (LogSink only), ``--ticks``
   ticks in a row. The first tick opens the alerts and delivers them (and the stuck-run sensor
   reaps the orphaned and timed-out syncs, one transaction each: part of the measured tick);
   later ticks refresh them. Reported: the first tick, the median and the maximum of the later
   ones.
3. **Dagster alone.** ``--dagster-assets`` assets (N) in the same Dagster instance, each with
   ``--dagster-runs`` finished runs of its own job (``instance.create_run`` with the final
   status; each success also reports its ``AssetMaterialization`` with
   ``report_runless_asset_event``), failing as the resources of a second package schema of N
   resources fail. The check a user writes without this package: per asset,
   ``instance.get_run_records(RunsFilter(job_name=..., statuses=finished), limit=threshold)``,
   and for an asset whose last ``threshold`` runs all failed, ``instance.fetch_materializations(
   key, limit=1)`` for its last success (the least work that decides and says since when; no
   deduplication, no delivery). Timed with the instance as the daemon opens it (dagster-postgres
   uses a NullPool: one new connection per query) and with pooled connections
   (``optimize_for_webserver``, the best case for Dagster). The package's consecutive-failures
   sensor is timed on the N-resource schema too, and both must flag the same resources. The
   per-asset cost is extrapolated linearly to ``--resources``.

``--explain`` adds an unmeasured, instrumented tick per sensor (time per SQL statement,
``EXPLAIN (ANALYZE, BUFFERS)`` of the SELECTs over 100 ms) and the cost of reading every
``sync_state`` row against reading a filtered few. ``--cleared-visibility`` ticks the slow-sync
and volume sensors again with ``sync_history``'s visibility map cleared (``pg_visibility``,
created for the purpose and dropped): their index-only scans then visit the heap for every row,
as for rows written since the last vacuum in production. Every schema and database is dropped
at the end.

Usage::

    python bench/bench_sensors.py
    python bench/bench_sensors.py --resources 1000 --rows 100000 --dagster-assets 200
    python bench/bench_sensors.py --explain --cleared-visibility
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_observability import SyncStore, SyncTracker
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import RULES
from sync_observability.alerts.sensors import (
    SYNC_SENSORS,
    sync_consecutive_failures_sensor,
    sync_slow_syncs_sensor,
    sync_volume_anomalies_sensor,
)
from sync_observability.storage.alert_store import AlertStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_TICK_S = 2.0
TARGET_RATIO = 20.0
SPREAD_DAYS = 90
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
HISTORY_SENSORS = (sync_slow_syncs_sensor, sync_volume_anomalies_sensor)


# One row per resource: its category and the random draws that shape its history.
RESOURCES = r"""
CREATE TABLE bench_resource AS
SELECT r, resource, source_system, category, u2, u3,
       -- uuid-shaped id prefixes; a run's ids end with its number: no md5 per history row.
       regexp_replace(md5(:tag || '/sync/' || resource), '^(.{8})(.{4}).(.{3}).(.{3}).*$',
                      '\1-\2-4\3-8\4-') AS sync_prefix,
       regexp_replace(md5(:tag || '/run/' || resource), '^(.{8})(.{4}).(.{3}).(.{3}).*$',
                      '\1-\2-4\3-8\4-') AS run_prefix,
       CASE WHEN category = 'failing' THEN 3 + floor(u2 * 5)::int ELSE 0 END AS fails,
       CASE WHEN category = 'stale' THEN interval '2 days' + u2 * interval '8 days'
            ELSE interval '0' END AS shift,
       CASE WHEN category <> 'running' THEN NULL
            WHEN u2 < 0.25 THEN 'ended_failed' WHEN u2 < 0.40 THEN 'ended_canceled'
            WHEN u2 < 0.60 THEN 'timed_out' ELSE 'in_progress' END AS running_kind,
       CASE WHEN category <> 'running' THEN NULL
            WHEN u2 < 0.40 THEN interval '5 minutes' + u3 * interval '20 minutes'
            WHEN u2 < 0.60 THEN interval '40 minutes' + u3 * interval '140 minutes'
            ELSE interval '1 minute' + u3 * interval '19 minutes' END AS running_age,
       2000 + u4 * 118000 AS base_ms,
       100 + floor(u5 * 99900) AS base_volume,
       CASE WHEN category = 'slow' THEN 5 + u3 * 5
            WHEN category = 'volume' AND u3 < 0.5 THEN 3 + u3 * 8
            WHEN category = 'volume' THEN 0.05 ELSE 1 END AS last_factor
FROM (
    SELECT r, resource, source_system,
           CASE WHEN u < 0.030 THEN 'failing' WHEN u < 0.050 THEN 'stale'
                WHEN u < 0.055 THEN 'running' WHEN u < 0.065 THEN 'slow'
                WHEN u < 0.075 THEN 'volume' ELSE 'green' END AS category,
           u2, u3, u4, u5
    FROM (
        SELECT r, (ARRAY['vantage', 'crm', 'erp', 'billing'])[r % 4 + 1] AS source_system,
               (ARRAY['vantage', 'crm', 'erp', 'billing'])[r % 4 + 1] || '/table_'
                   || lpad(r::text, :width, '0') AS resource,
               random() AS u, random() AS u2, random() AS u3, random() AS u4, random() AS u5
        FROM generate_series(0, :resources - 1) AS r
    ) AS draws
) AS categorised;
ALTER TABLE bench_resource ADD PRIMARY KEY (r);
"""

# Oldest runs first, every resource's run k before any resource's run k - 1: the heap is in
# time order, as a table that grew sync after sync. OFFSET 0 keeps each row's draws single.
HISTORY = """
INSERT INTO sync_history (sync_id, resource, source_system, target_system, sync_type,
    sync_start_time, sync_end_time, sync_status, records_processed, records_created,
    records_updated, records_failed, error_message, errors, watermark_before, watermark_after,
    duration_ms, dagster_run_id, asset_key, retry_number, metadata)
SELECT sync_prefix || lpad(to_hex(k), 12, '0'), resource, source_system,
       'warehouse', CASE WHEN k % 20 = 0 THEN 'full' ELSE 'incremental' END,
       start, CASE WHEN status = 'running' THEN NULL ELSE start + ms * interval '1 ms' END,
       status, processed, processed / 5, processed - processed / 5,
       CASE WHEN status = 'failed' THEN 1 ELSE 0 END,
       CASE WHEN status = 'failed' THEN 'HTTP_503: Service Unavailable from ' || source_system END,
       CASE WHEN status = 'failed'
            THEN jsonb_build_array(jsonb_build_object('code', 'HTTP_503',
                 'message', 'Service Unavailable', 'timestamp', start + ms * interval '1 ms'))
            ELSE '[]'::jsonb END,
       start - :step * interval '1 second', CASE WHEN status = 'success' THEN start END,
       ms, run_prefix || lpad(to_hex(k), 12, '0'), resource, 0,
       CASE WHEN status = 'success' THEN '{"tags": ["daily"], "cost_usd": 0.12}'::jsonb
            ELSE '{}'::jsonb END
FROM (
    SELECT *,
           CASE WHEN status = 'success'
                THEN floor(base_volume * (0.9 + 0.2 * d_volume)
                           * CASE WHEN k = 0 THEN last_factor ELSE 1 END)::bigint
                ELSE 0 END AS processed,
           CASE WHEN status = 'running' THEN NULL
                WHEN status = 'failed' THEN floor(500 + d_ms * 5000)::bigint
                WHEN k = 0 AND category = 'slow' THEN floor(base_ms * last_factor)::bigint
                ELSE floor(base_ms * (0.8 + 0.4 * d_ms))::bigint END AS ms
    FROM (
        SELECT *,
               CASE WHEN category = 'running' AND k = 0 THEN :now0 - running_age
                    ELSE :now0 - shift - (k * :step + d_jitter * :jitter) * interval '1 second'
               END AS start,
               CASE WHEN category = 'running' AND k = 0 THEN 'running'
                    WHEN category = 'failing' AND k < fails THEN 'failed'
                    WHEN category = 'failing' AND k = fails THEN 'success'
                    WHEN category IN ('slow', 'volume', 'stale') AND k = 0 THEN 'success'
                    WHEN d_status < 0.02 THEN 'failed'
                    ELSE 'success' END AS status
        FROM (
            SELECT k, b.*, random() AS d_jitter, random() AS d_status, random() AS d_ms,
                   random() AS d_volume
            FROM generate_series(:per - 1, 0, -1) AS k
            CROSS JOIN LATERAL (SELECT * FROM bench_resource WHERE k >= 0) AS b
            OFFSET 0
        ) AS draws
        OFFSET 0
    ) AS runs
    OFFSET 0
) AS shaped
"""

# Each resource's state, as the tracker would have left it after the history above.
STATE = """
INSERT INTO sync_state (resource, source_system, target_system, last_sync_time,
    last_sync_status, records_synced, records_created, records_updated, errors, started_at,
    completed_at, duration_ms, consecutive_failures, last_success_at, current_sync_id,
    dagster_run_id, created_at, updated_at)
SELECT b.resource, b.source_system, 'warehouse', ok.sync_start_time,
       latest.sync_status, coalesce(fin.records_processed, 0), coalesce(fin.records_created, 0),
       coalesce(fin.records_updated, 0), coalesce(fin.errors, '[]'::jsonb),
       latest.sync_start_time, latest.sync_end_time, latest.duration_ms, cf.n,
       ok.sync_end_time, latest.sync_id, latest.dagster_run_id, first.t,
       coalesce(latest.sync_end_time, latest.sync_start_time)
FROM bench_resource b
CROSS JOIN LATERAL (SELECT * FROM sync_history h WHERE h.resource = b.resource
                    ORDER BY h.sync_start_time DESC LIMIT 1) AS latest
LEFT JOIN LATERAL (SELECT * FROM sync_history h
                   WHERE h.resource = b.resource AND h.sync_status <> 'running'
                   ORDER BY h.sync_start_time DESC LIMIT 1) AS fin ON true
LEFT JOIN LATERAL (SELECT h.sync_start_time, h.sync_end_time FROM sync_history h
                   WHERE h.resource = b.resource AND h.sync_status = 'success'
                   ORDER BY h.sync_start_time DESC LIMIT 1) AS ok ON true
CROSS JOIN LATERAL (SELECT count(*) AS n FROM sync_history h
                    WHERE h.resource = b.resource AND h.sync_status = 'failed'
                      AND h.sync_start_time > coalesce(ok.sync_start_time, '-infinity')) AS cf
CROSS JOIN LATERAL (SELECT min(h.sync_start_time) AS t FROM sync_history h
                    WHERE h.resource = b.resource) AS first
"""

MIX = """
SELECT b.category, count(*) AS resources,
       count(*) FILTER (WHERE s.consecutive_failures >= 3) AS failing_3,
       count(*) FILTER (WHERE coalesce(s.last_success_at, s.last_sync_time, s.created_at)
                              < now() - interval '24 hours') AS stale_24h,
       count(*) FILTER (WHERE s.last_sync_status = 'running') AS running
FROM bench_resource b JOIN sync_state s USING (resource)
GROUP BY b.category ORDER BY resources DESC
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def admin_engine(url: str, database: str | None = None) -> sa.Engine:
    parsed = sa.make_url(url).set(drivername="postgresql+psycopg2")
    if database is not None:
        parsed = parsed.set(database=database)
    return sa.create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextmanager
def connection(url: str, schema: str) -> Iterator[sa.Connection]:
    """An autocommit connection whose ``search_path`` is ``schema``."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'SET search_path TO "{schema}"'))
            yield conn
    finally:
        engine.dispose()


# -- data --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    schema: str
    resources: int
    rows: int
    seconds: float
    steps: dict[str, float]
    mix: list[tuple[Any, ...]]


def generate(url: str, schema: str, resources: int, per: int, seed: float) -> Dataset:
    """A migrated schema holding ``resources`` x ``per`` history rows and the derived states."""
    started = time.perf_counter()
    steps: dict[str, float] = {}
    SyncStore.from_url(url, schema=schema).dispose()
    step = SPREAD_DAYS * 86400 / per
    with connection(url, schema) as conn:

        def timed_step(name: str, *statements: tuple[str, dict[str, Any]]) -> None:
            begin = time.perf_counter()
            for sql, params in statements:
                conn.execute(sa.text(sql), params)
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - begin

        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        conn.execute(sa.text("SET jit = off"))
        now0 = conn.execute(sa.text("SELECT now()")).scalar_one()
        # Loaded without its indexes and primary key, which are built afterwards (faster).
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :schema "
                "AND tablename = 'sync_history' AND indexname <> 'pk_sync_history'"
            ),
            {"schema": schema},
        ).all()
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        conn.execute(sa.text("ALTER TABLE sync_history DROP CONSTRAINT pk_sync_history"))
        timed_step(
            "history",
            ("SELECT setseed(:seed)", {"seed": seed}),
            (RESOURCES, {"resources": resources, "width": len(str(resources - 1)), "tag": schema}),
            (
                HISTORY,
                {"per": per, "step": step, "jitter": min(step / 2, 6 * 3600), "now0": now0},
            ),
        )
        timed_step(
            "indexes",
            ("ALTER TABLE sync_history ADD CONSTRAINT pk_sync_history PRIMARY KEY (sync_id)", {}),
            *((definition, {}) for _, definition in indexes),
            ("ANALYZE bench_resource", {}),
            ("ANALYZE sync_history", {}),
        )
        timed_step("state", (STATE, {}))
        timed_step(
            "vacuum analyze", ("VACUUM ANALYZE sync_history", {}), ("VACUUM ANALYZE sync_state", {})
        )
        rows = conn.execute(sa.text("SELECT count(*) FROM sync_history")).scalar_one()
        mix = [tuple(row) for row in conn.execute(sa.text(MIX))]
    return Dataset(schema, resources, rows, time.perf_counter() - started, steps, mix)


def print_mix(dataset: Dataset) -> None:
    print(f"{'category':<10}{'resources':>10}{'>=3 fails':>11}{'stale 24h':>11}{'running':>9}")
    for category, count, failing, stale, running in dataset.mix:
        print(f"{category:<10}{count:>10}{failing:>11}{stale:>11}{running:>9}")


def create_dagster_database(url: str, name: str) -> str:
    engine = admin_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.make_url(url).set(drivername="postgresql", database=name).render_as_string(False)


def drop_dagster_database(url: str, name: str) -> None:
    engine = admin_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def drop_schema(url: str, schema: str) -> None:
    engine = admin_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def new_run(
    instance: dg.DagsterInstance,
    job_name: str,
    status: dg.DagsterRunStatus,
    run_id: str | None = None,
) -> dg.DagsterRun:
    return instance.create_run(
        job_name=job_name,
        run_id=run_id,
        run_config=None,
        status=status,
        tags={"team": "data-platform"},
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=None,
        execution_plan_snapshot=None,
        job_snapshot=None,
        parent_job_snapshot=None,
        asset_selection=None,
        asset_check_selection=None,
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=None,
        job_code_origin=None,
        asset_graph=None,  # type: ignore[arg-type]  # unused without an asset selection
    )


def create_running_runs(url: str, schema: str, instance: dg.DagsterInstance) -> dict[str, int]:
    """The Dagster runs of the syncs still marked running: ended ones and in-progress ones."""
    with connection(url, schema) as conn:
        running = conn.execute(
            sa.text(
                "SELECT s.dagster_run_id, b.running_kind FROM sync_state s "
                "JOIN bench_resource b USING (resource) WHERE s.last_sync_status = 'running'"
            )
        ).all()
    kinds: dict[str, int] = {}
    for run_id, kind in running:
        run = new_run(instance, "sync_job", dg.DagsterRunStatus.STARTED, run_id)
        if kind == "ended_failed":
            instance.report_run_failed(run, message="worker pod evicted")
        elif kind == "ended_canceled":
            instance.report_run_canceled(run, message="canceled from the UI")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


# -- sensor ticks ------------------------------------------------------------------------------


@dataclasses.dataclass
class Ticks:
    name: str
    seconds: list[float]
    first_message: str
    last_message: str

    @property
    def first(self) -> float:
        return self.seconds[0]

    @property
    def later(self) -> float:
        return statistics.median(self.seconds[1:])


def run_ticks(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    ticks: int,
) -> Ticks:
    """``ticks`` ticks in a row, each in a new context as the daemon evaluates a sensor."""
    seconds, messages = [], []
    for _ in range(ticks):
        started = time.perf_counter()
        with dg.build_sensor_context(
            instance=instance,
            resources={"sync_tracker": tracker, "sync_alerting": SyncAlerting()},
        ) as context:
            result = sensor(context)
        seconds.append(time.perf_counter() - started)
        if not isinstance(result, dg.SkipReason) or result.skip_message is None:
            raise SystemExit(f"{sensor.name}: unexpected tick result {result!r}")
        messages.append(result.skip_message)
    return Ticks(sensor.name, seconds, messages[0], messages[-1])


def open_alert_counts(url: str, schema: str) -> dict[str, int]:
    store = SyncStore.from_url(url, schema=schema, auto_migrate=False)
    try:
        alerts = AlertStore(store)
        return {
            rule: len(alerts.list_alerts(status="open", rule=rule, limit=None)) for rule in RULES
        }
    finally:
        store.dispose()


def print_ticks(results: Sequence[Ticks], label: str) -> None:
    print(
        f"{'sensor (' + label + ')':<44}{'first tick s':>13}{'later median s':>16}"
        f"{'later max s':>13}  target < {TARGET_TICK_S:g} s"
    )
    for ticks in results:
        worst = max(ticks.seconds)
        verdict = "met" if worst < TARGET_TICK_S else "MISSED"
        print(
            f"{ticks.name:<44}{ticks.first:>13.3f}{ticks.later:>16.3f}"
            f"{max(ticks.seconds[1:]):>13.3f}  {verdict}"
        )


# -- Dagster alone -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DagsterAsset:
    resource: str
    key: dg.AssetKey
    job_name: str
    consecutive_failures: int


def dagster_assets(url: str, schema: str) -> list[DagsterAsset]:
    with connection(url, schema) as conn:
        rows = conn.execute(
            sa.text("SELECT resource, consecutive_failures FROM sync_state ORDER BY resource")
        ).all()
    return [
        DagsterAsset(
            resource=resource,
            key=dg.AssetKey(resource.split("/")),
            job_name="sync__" + resource.replace("/", "__"),
            consecutive_failures=failures,
        )
        for resource, failures in rows
    ]


def create_asset_runs(
    instance: dg.DagsterInstance, assets: Sequence[DagsterAsset], runs: int
) -> None:
    """Per asset, ``runs`` finished runs of its job, oldest first: the last failures fail.

    Runs are created with their final status, and each success reports its materialization.
    Their start/success/failure events are not written: the check reads the runs table, which
    they would not change, and writing them tripled the set-up time.
    """
    for number, asset in enumerate(assets, 1):
        failures = min(asset.consecutive_failures, runs)
        for i in range(runs):
            if i >= runs - failures:
                new_run(instance, asset.job_name, dg.DagsterRunStatus.FAILURE)
            else:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset.key, metadata={"dagster/row_count": 100 + i})
                )
                new_run(instance, asset.job_name, dg.DagsterRunStatus.SUCCESS)
        if number % 250 == 0:
            log(f"  Dagster runs for {number}/{len(assets)} assets")


def dagster_walk(
    instance: dg.DagsterInstance, assets: Sequence[DagsterAsset], threshold: int
) -> dict[str, float | None]:
    """The Dagster-only check: assets whose last ``threshold`` finished runs all failed."""
    flagged: dict[str, float | None] = {}
    for asset in assets:
        records = instance.get_run_records(
            dg.RunsFilter(job_name=asset.job_name, statuses=FINISHED), limit=threshold
        )
        if len(records) >= threshold and all(
            r.dagster_run.status == dg.DagsterRunStatus.FAILURE for r in records
        ):
            last = instance.fetch_materializations(asset.key, limit=1).records
            flagged[asset.resource] = last[0].timestamp if last else None
    return flagged


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# -- diagnosis ---------------------------------------------------------------------------------


@contextmanager
def captured_statements() -> Iterator[list[tuple[float, str, Any]]]:
    """Every statement on the sync tables while the block runs, with its execution time."""
    captured: list[tuple[float, str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: Any):
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: Any):
        if "sync_" in statement:
            elapsed = time.perf_counter() - conn.info.pop("bench_started")
            captured.append((elapsed, statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    try:
        yield captured
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", after)


@contextmanager
def raw_cursor(url: str, schema: str) -> Iterator[Any]:
    """A psycopg2 cursor in autocommit mode on ``schema``, JIT off as the package's reads."""
    engine = admin_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f'SET search_path TO "{schema}"')
        cursor.execute("SET jit = off")
        yield cursor
    finally:
        raw.close()
        engine.dispose()


def explain_tick(
    url: str,
    schema: str,
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
) -> list[tuple[float, str, Any]]:
    """One extra tick with every statement timed; the plans of the SELECTs over 100 ms."""
    with captured_statements() as statements:
        ticks = run_ticks(sensor, instance, tracker, 1)
    in_sql = sum(s for s, _, _ in statements)
    print(
        f"\n{sensor.name}: tick {ticks.first:.3f} s, {len(statements)} statements on the sync "
        f"tables taking {in_sql:.3f} s (the rest: context and resources, migration check, Python)"
    )
    for elapsed, statement, _ in sorted(statements, key=lambda s: -s[0])[:4]:
        print(f"  {elapsed * 1000:9.1f} ms  {' '.join(statement.split())[:110]}")
    with raw_cursor(url, schema) as cursor:
        for elapsed, statement, parameters in statements:
            if elapsed < 0.1 or not statement.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            print(f"\n  EXPLAIN (ANALYZE, BUFFERS) of the {elapsed * 1000:.0f} ms statement:")
            print("  " + " ".join(statement.split()))
            for (line,) in cursor.fetchall():
                print("    " + line)
    return statements


def state_reads(url: str, schema: str, rounds: int = 5) -> None:
    """What reading every sync_state row costs against reading the few a rule needs."""
    store = SyncStore.from_url(url, schema=schema, auto_migrate=False)
    try:
        reads: dict[str, Callable[[], list[Any]]] = {
            "list_states() (every row)": store.list_states,
            'list_states(status="failed")': lambda: store.list_states(status="failed"),
            'list_states(status="running")': lambda: store.list_states(status="running"),
        }
        print("\nReading sync_state through SyncStore (median of 5, in this process):")
        for label, read in reads.items():
            times, rows = [], 0
            for _ in range(rounds):
                seconds, states = timed(read)
                times.append(seconds)
                rows = len(states)
            print(f"  {label:<32}{rows:>7} rows {statistics.median(times) * 1000:>9.1f} ms")
    finally:
        store.dispose()


def cleared_visibility_ticks(
    url: str,
    schema: str,
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    ticks: int,
) -> list[Ticks]:
    """The slow-sync and volume ticks again, with sync_history's visibility map cleared.

    Their reads are index-only scans of ``ix_sync_history_resource_time``, which skip the heap
    only on pages the visibility map marks all-visible (vacuumed since their last change). In
    production the rows they read, each resource's newest runs, are the newest of the table,
    written since the last autovacuum: clearing the map (``pg_visibility``, created for the
    purpose and dropped) makes every row such a row, the worst case. VACUUM restores it.
    """
    with raw_cursor(url, schema) as cursor:
        cursor.execute(
            "SELECT extnamespace::regnamespace::text FROM pg_extension "
            "WHERE extname = 'pg_visibility'"
        )
        found = cursor.fetchone()
        if found is None:
            cursor.execute(f'CREATE EXTENSION pg_visibility SCHEMA "{schema}"')
        where = found[0] if found else f'"{schema}"'
        try:
            cursor.execute(f"SELECT {where}.pg_truncate_visibility_map('sync_history')")
            retimed = [run_ticks(sensor, instance, tracker, ticks) for sensor in HISTORY_SENSORS]
        finally:
            if found is None:
                cursor.execute("DROP EXTENSION pg_visibility")
            cursor.execute("VACUUM sync_history")
    print()
    print_ticks(retimed, "visibility map cleared")
    return retimed


# -- main --------------------------------------------------------------------------------------


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL")
    parser.add_argument("--resources", type=int, default=10_000, help="sync_state rows")
    parser.add_argument("--rows", type=int, default=5_000_000, help="sync_history rows")
    parser.add_argument("--ticks", type=int, default=5, help="ticks per sensor (first + later)")
    parser.add_argument(
        "--dagster-assets", type=int, default=1000, help="assets of the Dagster-only check (N)"
    )
    parser.add_argument("--dagster-runs", type=int, default=5, help="finished runs per asset")
    parser.add_argument("--walks", type=int, default=3, help="pooled Dagster-only walks timed")
    parser.add_argument("--seed", type=float, default=0.42, help="setseed() value, -1 to 1")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="afterwards, an instrumented tick per sensor with EXPLAIN of its slow SELECTs",
    )
    parser.add_argument(
        "--cleared-visibility",
        action="store_true",
        help="afterwards, the slow and volume ticks with sync_history's visibility map cleared",
    )
    args = parser.parse_args(argv)
    per = args.rows // max(args.resources, 1)
    if args.resources < 10 or not 40 <= per <= 700:
        parser.error("need --resources >= 10 and 40 to 700 history rows per resource")
    if args.ticks < 2 or not 0 < args.dagster_assets <= args.resources:
        parser.error("need --ticks >= 2 and 0 < --dagster-assets <= --resources")
    if args.dagster_runs < 3 or args.walks < 1 or not -1 <= args.seed <= 1:
        parser.error("need --dagster-runs >= 3, --walks >= 1, -1 <= --seed <= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = args.database_url
    tag = uuid.uuid4().hex[:8]
    big, small = f"bench_sensors_{tag}", f"bench_sensors_{tag}_n"
    dagster_db = f"bench_sensors_{tag}_dagster"
    started = time.perf_counter()
    dagster_url = create_dagster_database(url, dagster_db)
    storage = {"storage": {"postgres": {"postgres_url": dagster_url}}}
    try:
        with (
            dg.instance_for_test(overrides=storage) as instance,
            dg.instance_for_test(overrides=storage) as pooled,
        ):
            # `instance` stays as the daemon opens it; `pooled` holds its connections.
            pooled.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=2)
            run(args, url, big, small, instance, pooled)
    finally:
        for schema in (big, small):
            drop_schema(url, schema)
        drop_dagster_database(url, dagster_db)
        log("dropped the benchmark's schemas and Dagster database")
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s; load average now {load()}")


def run(
    args: argparse.Namespace,
    url: str,
    big: str,
    small: str,
    instance: dg.DagsterInstance,
    pooled: dg.DagsterInstance,
) -> None:
    per = args.rows // args.resources
    threshold = SyncAlerting().consecutive_failures_threshold
    print(f"load average (1/5/15 min) at the start: {load()} on {os.cpu_count()} cores")
    log(f"generating {args.resources:,} resources x {per} runs in {big}")
    data = generate(url, big, args.resources, per, args.seed)
    kinds = create_running_runs(url, big, pooled)
    log(f"generated in {data.seconds:.1f} s")
    tracker = SyncTracker(database_url=url, schema_name=big)
    results = []
    for sensor in SYNC_SENSORS:
        log(f"ticking {sensor.name}")
        results.append(run_ticks(sensor, instance, tracker, args.ticks))
    tick_load = load()
    alerts = open_alert_counts(url, big)

    n = args.dagster_assets
    log(f"generating {n:,} resources x {per} runs in {small}")
    small_data = generate(url, small, n, per, args.seed)
    assets = dagster_assets(url, small)
    log(f"creating {args.dagster_runs} Dagster runs for each of {n:,} assets")
    dagster_seconds, _ = timed(lambda: create_asset_runs(pooled, assets, args.dagster_runs))
    log(f"created in {dagster_seconds:.1f} s")
    small_tracker = SyncTracker(database_url=url, schema_name=small)
    small_ticks = run_ticks(sync_consecutive_failures_sensor, instance, small_tracker, args.ticks)
    log("walking the assets through the daemon-style instance (NullPool)")
    nullpool_s, flagged = timed(lambda: dagster_walk(instance, assets, threshold))
    walks = []
    for _ in range(args.walks):
        log("walking the assets through the pooled instance")
        seconds, pooled_flagged = timed(lambda: dagster_walk(pooled, assets, threshold))
        walks.append(seconds)
    walk_load = load()
    expected = {a.resource for a in assets if a.consecutive_failures >= threshold}
    store = SyncStore.from_url(url, schema=small, auto_migrate=False)
    try:
        sensor_flagged = {
            a.resource
            for a in AlertStore(store).list_alerts(
                status="open", rule="consecutive_failures", limit=None
            )
        }
    finally:
        store.dispose()
    if not set(flagged) == set(pooled_flagged) == sensor_flagged == expected:
        raise SystemExit(
            f"check failed: Dagster walk flagged {len(flagged)}/{len(pooled_flagged)}, the "
            f"sensor {len(sensor_flagged)}, expected {len(expected)}"
        )

    print(f"Sensor ticks on PostgreSQL: {args.resources:,} resources, {data.rows:,} history rows")
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in data.steps.items())
    print(
        f"({per} runs per resource over {SPREAD_DAYS} days, setseed({args.seed:g}); generated "
        f"in {data.seconds:.1f} s: {steps})"
    )
    print()
    print_mix(data)
    print(
        "running syncs by Dagster run: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    )
    print()
    print(
        f"{args.ticks} ticks per sensor, each in a new sensor context; load average after: "
        f"{tick_load}"
    )
    print_ticks(results, f"{args.resources:,} resources")
    print()
    print("open alerts after the ticks: " + ", ".join(f"{r} {c}" for r, c in alerts.items()))
    for ticks in results:
        print(f"  {ticks.name}")
        print(f"    first tick: {ticks.first_message[:240]}")
        print(f"    last tick:  {ticks.last_message[:240]}")

    later = statistics.median(walks)
    per_asset = later / n
    print()
    print(
        f"Consecutive failures, package vs Dagster alone ({threshold} in a row; "
        f"{args.dagster_runs} finished runs per asset; {len(expected)} of N = {n:,} failing)"
    )
    print(
        f"(N-resource schema generated in {small_data.seconds:.1f} s, Dagster runs in "
        f"{dagster_seconds:.1f} s; the walk and the sensor flagged the same {len(expected)} "
        f"resources; load average after the walks: {walk_load})"
    )
    print()
    print(f"{'at N, all measured':<56}{'seconds':>10}{'per asset ms':>14}")
    lines = [
        ("package tick, first (opens and delivers the alerts)", small_ticks.first),
        ("package tick, later median", small_ticks.later),
        ("Dagster walk, daemon instance (NullPool), 1 walk", nullpool_s),
        (f"Dagster walk, pooled, median of {args.walks}", later),
    ]
    for label, seconds in lines:
        print(f"{label:<56}{seconds:>10.3f}{seconds / n * 1000:>14.3f}")
    print(f"  (pooled walks: {', '.join(f'{w:.2f}' for w in walks)} s)")
    print()
    full = next(t for t in results if t.name == sync_consecutive_failures_sensor.name)
    at = f"{args.resources:,}"
    ratios = [
        ("at N: pooled walk / later tick (both measured)", later, small_ticks.later),
        ("at N: pooled walk / first tick (both measured)", later, small_ticks.first),
        ("at N: NullPool walk / later tick (both measured)", nullpool_s, small_ticks.later),
        (
            f"at {at}: pooled walk EXTRAPOLATED / later tick measured",
            per_asset * args.resources,
            full.later,
        ),
        (
            f"at {at}: pooled walk EXTRAPOLATED / first tick measured",
            per_asset * args.resources,
            full.first,
        ),
        (
            f"at {at}: NullPool walk EXTRAPOLATED / later tick measured",
            nullpool_s / n * args.resources,
            full.later,
        ),
    ]
    print(
        f"{'Dagster-only / package':<58}{'Dagster s':>11}{'package s':>11}{'ratio':>9}"
        f"  target >= {TARGET_RATIO:g}x"
    )
    for label, dagster_s, package_s in ratios:
        ratio = dagster_s / package_s
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(f"{label:<58}{dagster_s:>11.3f}{package_s:>11.3f}{ratio:>8.1f}x  {verdict}")

    if args.explain:
        print("\nWhere a tick's time goes (one extra, instrumented tick per sensor):")
        for sensor in SYNC_SENSORS:
            explain_tick(url, big, sensor, instance, tracker)
        state_reads(url, big)
    if args.cleared_visibility:
        log("ticking the history sensors with the visibility map cleared")
        cleared_visibility_ticks(url, big, instance, tracker, args.ticks)


if __name__ == "__main__":
    main()
