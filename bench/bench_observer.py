"""The asset observer (issue 13) on a backlog and in steady state, against Dagster's own reads.

In one run, on a Dagster instance whose run, event log and schedule storage are dagster-postgres
on a fresh database (created here, dropped at the end) and a tracking store in a fresh schema of
that database:

1. **Assets.** 1,000 assets in one code location: two dbt-like multi-assets of 200 keys each
   (``dbt_core/model_NNN``, ``dbt_marts/model_NNN``, one step each, subsettable), two daily
   partitioned dbt-like multi-assets of 200 keys each (``dbt_daily_a/...``, ``dbt_daily_b/...``,
   ``BackfillPolicy.single_run()``) and 200 single assets (``ingest/table_NNN``, as
   Airbyte/Fivetran/Sling syncs).
2. **Backlog.** Real runs (``dg.materialize``, in-process executor), ``--workers`` processes
   at a time: one run per single asset (every 10th fails), ``--dbt-runs`` runs of each
   unpartitioned project (some fail part-way: the models not built yet are failed syncs, the
   ones built are successes), and single-run backfills of ``--backfill-days`` partitions of
   the partitioned projects (some fail part-way), as many as it takes to reach ``--backlog``
   materializations and failures. The generating processes use pooled connections
   (``optimize_for_webserver``) and ``DAGSTER_EVENT_BATCH_SIZE``, so that Dagster writes a
   ranged run's materializations of one output in one INSERT (its batch path; the rows are the
   same): a 200-key step of an unpartitioned project costs Dagster about 20 to 25 ms per
   materialization here (STEP_OUTPUT, ASSET_MATERIALIZATION and its index rows, each its own
   transaction), which for 50,000 would take 15 to 20 minutes. What the observer reads is
   what production runs leave: the same event types, one PLANNED event per asset and
   partition, one run status change per run. Then ``ANALYZE`` of the database (again after
   the drain), as autovacuum would have done by then in a long-lived deployment: 150,000 new
   ``event_logs`` rows in minutes otherwise leave the planner estimating a few thousand rows
   per event type (``--no-analyze`` keeps the stale statistics).
3. **Drain.** The observer (``make_asset_observer_sensor()``, defaults: every asset,
   ``tick_seconds=25``), evaluated tick after tick as the daemon does (a new
   ``dg.build_sensor_context(instance=..., definitions=..., resources={"sync_tracker": ...},
   cursor=<the last tick's>)`` per tick, on the instance as the daemon opens it: NullPool, one
   connection per query) until a tick says nothing is left. Reported: each tick's wall time
   (target: every tick under 30 s), the number of ticks, the total, the rows written; the rows
   must be exactly what the runs imply (one per asset and partition each run planned:
   materialized = success, else failed) and match Dagster's own counts of the events.
4. **Dagster's reads of the same events**, on the same instance, before and after the drain:
   ``instance.fetch_materializations(AssetRecordsFilter(asset_key=...), limit=1000)`` paged for
   each of the 1,000 keys, and the deprecated ``instance.get_event_records(EventRecordsFilter(
   <type>, after_cursor=...), limit=5000)`` paged for ``ASSET_MATERIALIZATION`` alone and with
   ``ASSET_MATERIALIZATION_PLANNED`` and ``STEP_FAILURE`` (the events the failures come from).
   Ratio: the drain's total against the faster of the two passes.
5. **Steady ticks.** ``--steady-rounds`` rounds of each of two shapes of 100 new events: 100
   one-asset runs (5% failing), and one run of 100 models of ``dbt_core``. Each round: the
   runs, then the observer's tick and Dagster's reads of those 100 events (per key for the
   1,000 keys after the previous storage id, and after-cursor for the three event types), in a
   random order. Target: every tick under 1 s. Median, max and the ratio of medians.

``--profile N`` adds, unmeasured, one cProfile'd drain tick (the first tick of a second drain
into another fresh schema) and one cProfile'd steady tick of 100 one-asset runs: the time in
the observer's parts, the SQL statements per run by kind and their time, connections opened,
and the N hottest functions.

Usage::

    python bench/bench_observer.py
    python bench/bench_observer.py --profile 25
    python bench/bench_observer.py --backlog 10000 --steady-rounds 2   # about 5 minutes
"""

# No `from __future__ import annotations`: Dagster reads the assets' parameter annotations.
import argparse
import collections
import contextlib
import cProfile
import dataclasses
import io
import multiprocessing
import os
import pstats
import random
import re
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg
import sqlalchemy as sa
from bench_step_cost import bench_database, loadavg, postgres_instance

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TICK_TARGET_S = 30.0
STEADY_TARGET_S = 1.0
MODELS = 200  # keys per dbt-like project
SINGLES = 200
UNPARTITIONED = ("dbt_core", "dbt_marts")
PARTITIONED = ("dbt_daily_a", "dbt_daily_b")
FAIL_TAG = "bench/fail"  # a single asset raises
FAIL_AFTER_TAG = "bench/fail_after"  # a project raises after building this many models
READ_PAGE = 5_000
KEY_PAGE = 1_000
EVENT_BATCH_SIZE = "10000"
DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01")
# Console logging off (failing steps would print tracebacks); every event is still stored.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
EventType = dg.DagsterEventType
READ_TYPES = (
    EventType.ASSET_MATERIALIZATION,
    EventType.ASSET_MATERIALIZATION_PLANNED,
    EventType.STEP_FAILURE,
)
TICK_MESSAGE = re.compile(r"observed (\d+) ended runs?: (\d+) syncs recorded")


# --- the code location ------------------------------------------------------------------------


def dbt_project(name: str, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """A dbt-like step: builds its selected models in order; fails after ``FAIL_AFTER_TAG``."""
    keys = [dg.AssetKey([name, f"model_{i:03d}"]) for i in range(MODELS)]

    @dg.multi_asset(
        name=f"{name}_models",
        specs=[dg.AssetSpec(key, partitions_def=partitions_def) for key in keys],
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
    )
    def _models(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        fail_after = context.run.tags.get(FAIL_AFTER_TAG)
        selected = [key for key in keys if key in context.selected_asset_keys]
        for i, key in enumerate(selected):
            if fail_after is not None and i >= int(fail_after):
                raise RuntimeError(f'relation "{key.path[-1]}" does not exist')
            yield dg.MaterializeResult(asset_key=key, metadata={"dagster/row_count": 100 + i})

    return _models


def single_asset(number: int) -> dg.AssetsDefinition:
    """An ingestion sync: one asset, one step; fails when the run is tagged ``FAIL_TAG``."""

    @dg.asset(name=f"table_{number:03d}", key_prefix="ingest")
    def _table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        if context.run.tags.get(FAIL_TAG):
            raise ConnectionError("source answered 503")
        return dg.MaterializeResult(metadata={"dagster/row_count": 1_000 + number})

    return _table


PROJECTS = {name: dbt_project(name, None) for name in UNPARTITIONED} | {
    name: dbt_project(name, DAILY) for name in PARTITIONED
}
SINGLE_ASSETS = [single_asset(i) for i in range(SINGLES)]
ASSETS: list[dg.AssetsDefinition] = [*PROJECTS.values(), *SINGLE_ASSETS]
ALL_KEYS = [key for assets_def in ASSETS for key in assets_def.keys]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run to launch, and the syncs it implies."""

    kind: str  # "single", "dbt" or "backfill"
    target: str  # a project's name, or the single asset's number
    models: int = MODELS  # dbt: how many models the run selects
    fail_after: int | None = None  # dbt/backfill: models built before the step fails
    days: tuple[str, str] | None = None  # backfill: the first and last partition
    fails: bool = False  # single

    @property
    def partitions(self) -> int:
        if self.days is None:
            return 1
        return len(DAILY.get_partition_keys_in_range(dg.PartitionKeyRange(*self.days)))

    @property
    def syncs(self) -> int:
        """Rows the observer must write: one per planned asset (partition)."""
        return 1 if self.kind == "single" else self.models * self.partitions

    @property
    def successes(self) -> int:
        if self.kind == "single":
            return 0 if self.fails else 1
        built = self.models if self.fail_after is None else min(self.fail_after, self.models)
        return built * self.partitions


def execute(instance: dg.DagsterInstance, spec: RunSpec) -> None:
    """Launch ``spec``'s run in process; check it ended as planned."""
    tags: dict[str, str] = {}
    selection: Any = None
    if spec.kind == "single":
        assets = [SINGLE_ASSETS[int(spec.target)]]
        if spec.fails:
            tags[FAIL_TAG] = "1"
    else:
        project = PROJECTS[spec.target]
        assets = [project]
        if spec.models < MODELS:
            selection = dg.AssetSelection.assets(*sorted(project.keys)[: spec.models])
        if spec.fail_after is not None:
            tags[FAIL_AFTER_TAG] = str(spec.fail_after)
        if spec.days is not None:
            tags["dagster/asset_partition_range_start"] = spec.days[0]
            tags["dagster/asset_partition_range_end"] = spec.days[1]
    result = dg.materialize(
        assets,
        instance=instance,
        run_config=QUIET,
        tags=tags,
        selection=selection,
        raise_on_error=False,
    )
    if result.success != (spec.successes == spec.syncs):
        raise SystemExit(f"run {result.run_id} of {spec} ended {result.success}, not as planned")


def generate(url: str, specs: Sequence[RunSpec], worker: int) -> tuple[int, float]:
    """A worker process: launch ``specs`` in order; (runs, seconds)."""
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = EVENT_BATCH_SIZE
    warnings.filterwarnings("ignore")
    begin = last = time.perf_counter()
    with postgres_instance(url) as instance:
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        syncs = 0
        for done, spec in enumerate(specs, start=1):
            execute(instance, spec)
            syncs += spec.syncs
            if time.perf_counter() - last > 30 or done == len(specs):
                last = time.perf_counter()
                print(
                    f"    worker {worker}: {done}/{len(specs)} runs, {syncs:,} syncs, "
                    f"{last - begin:.0f} s",
                    flush=True,
                )
    return len(specs), time.perf_counter() - begin


class Generator:
    """Spreads runs over ``workers`` processes (spawned: nothing of this process is shared)."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.workers = workers
        self.pool = multiprocessing.get_context("spawn").Pool(workers)

    def run(self, specs: Sequence[RunSpec]) -> float:
        begin = time.perf_counter()
        slices = [list(specs[i :: self.workers]) for i in range(self.workers)]
        jobs = [(self.url, part, i + 1) for i, part in enumerate(slices) if part]
        self.pool.starmap(generate, jobs)
        return time.perf_counter() - begin

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def backlog_specs(args: argparse.Namespace, rng: random.Random) -> list[RunSpec]:
    """The backlog's runs, shuffled: singles, dbt runs, then backfills up to ``--backlog``."""
    specs = [RunSpec("single", str(i), fails=i % 10 == 9) for i in range(SINGLES)]
    outcomes = [None, None, 150, None, None, 0, None, 60]  # models built before failing
    for project in UNPARTITIONED:
        for i in range(args.dbt_runs):
            specs.append(RunSpec("dbt", project, fail_after=outcomes[i % len(outcomes)]))
    keys = DAILY.get_partition_keys()
    start = 0
    i = 0
    while sum(s.syncs for s in specs) < args.backlog:
        days = keys[start : start + args.backfill_days]
        if len(days) < args.backfill_days:
            raise SystemExit("not enough daily partitions for that backlog")
        project = PARTITIONED[i % len(PARTITIONED)]
        fail_after = 100 if i % 4 == 3 else None
        specs.append(RunSpec("backfill", project, fail_after=fail_after, days=(days[0], days[-1])))
        i += 1
        if i % len(PARTITIONED) == 0:
            start += args.backfill_days
    rng.shuffle(specs)
    return specs


def steady_specs(shape: str, rng: random.Random) -> list[RunSpec]:
    """100 new events: 100 one-asset runs, or one run of 100 models."""
    if shape == "dbt":
        return [RunSpec("dbt", UNPARTITIONED[0], models=100)]
    numbers = rng.sample(range(SINGLES), 100)
    return [RunSpec("single", str(n), fails=rng.random() < 0.05) for n in numbers]


# --- infrastructure ---------------------------------------------------------------------------


def analyze(url: str) -> float:
    """``ANALYZE`` the whole database, as autovacuum would have by now; its seconds."""
    begin = time.perf_counter()
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - begin


def history_counts(url: str, schema: str) -> dict[str, int]:
    """``sync_history`` rows of ``schema`` by status, and observed ones."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f'SELECT sync_status, observed, count(*) FROM "{schema}".sync_history '
                    "GROUP BY 1, 2"
                )
            ).all()
    finally:
        engine.dispose()
    counts: dict[str, int] = collections.Counter()
    for status, observed, n in rows:
        counts[status] += n
        counts["total"] += n
        counts["observed"] += n if observed else 0
    return dict(counts)


def check_rows(url: str, schema: str, specs: Sequence[RunSpec], label: str) -> dict[str, int]:
    counts = history_counts(url, schema)
    want_total = sum(s.syncs for s in specs)
    want_success = sum(s.successes for s in specs)
    found = (counts.get("total", 0), counts.get("success", 0), counts.get("observed", 0))
    if found != (want_total, want_success, want_total):
        raise SystemExit(
            f"check failed ({label}): {counts} rows, want {want_total} observed, "
            f"{want_success} successes"
        )
    print(
        f"  check ({label}): {want_total:,} rows = {want_success:,} successes + "
        f"{want_total - want_success:,} failures, all observed, as the runs imply",
        flush=True,
    )
    return counts


# --- the observer -----------------------------------------------------------------------------


@dataclasses.dataclass
class Tick:
    seconds: float
    runs: int
    syncs: int
    more: bool


class Observer:
    """The sensor evaluated as the daemon does: a new context per tick, the cursor carried."""

    def __init__(self, instance: dg.DagsterInstance, url: str, schema: str) -> None:
        from sync_observability import SyncTracker
        from sync_observability.observer import make_asset_observer_sensor

        self.instance = instance
        self.url = url
        self.schema = schema
        self.tracker = SyncTracker(database_url=url, schema_name=schema)
        self.tracker.store  # migrate now, not in the first tick  # noqa: B018
        self.sensor = make_asset_observer_sensor()
        self.defs = dg.Definitions(
            assets=ASSETS, sensors=[self.sensor], resources={"sync_tracker": self.tracker}
        )
        self.defs.get_repository_def()  # loaded once, as in a code server
        self.cursor: str | None = None

    def tick(self) -> Tick:
        begin = time.perf_counter()
        with dg.build_sensor_context(
            instance=self.instance,
            definitions=self.defs,
            resources={"sync_tracker": self.tracker},
            cursor=self.cursor,
        ) as context:
            result = self.sensor(context)
        seconds = time.perf_counter() - begin
        assert isinstance(result, dg.SensorResult), result
        self.cursor = result.cursor
        text = result.skip_reason.skip_message if result.skip_reason else ""
        found = TICK_MESSAGE.search(text or "")
        if found is None:
            raise SystemExit(f"unexpected tick result: {text!r}")
        return Tick(seconds, int(found[1]), int(found[2]), "more to read" in (text or ""))

    def drain(self, label: str) -> list[Tick]:
        ticks = []
        while True:
            tick = self.tick()
            ticks.append(tick)
            print(
                f"    {label} tick {len(ticks)}: {tick.seconds:.2f} s, {tick.runs} runs, "
                f"{tick.syncs:,} syncs{', more' if tick.more else ''}",
                flush=True,
            )
            if not tick.more:
                return ticks


# --- Dagster's reads --------------------------------------------------------------------------


def read_per_key(instance: dg.DagsterInstance, after: int | None) -> int:
    """Every materialization after ``after`` through ``fetch_materializations``, key by key."""
    found = 0
    for key in ALL_KEYS:
        cursor = None
        while True:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
                limit=KEY_PAGE,
                cursor=cursor,
                ascending=True,
            )
            found += len(result.records)
            if not result.has_more:
                break
            cursor = result.cursor
    return found


def read_by_type(
    instance: dg.DagsterInstance, event_type: dg.DagsterEventType, after: int | None
) -> int:
    """Every event of ``event_type`` after ``after`` through ``get_event_records``, paged."""
    found = 0
    cursor = after
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_event_records is deprecated (breaking in 2.0)
        while True:
            records = instance.get_event_records(
                dg.EventRecordsFilter(event_type, after_cursor=cursor),
                limit=READ_PAGE,
                ascending=True,
            )
            found += len(records)
            if len(records) < READ_PAGE:
                return found
            cursor = records[-1].storage_id


@dataclasses.dataclass
class Reads:
    per_key: float
    per_key_count: int
    by_type: dict[dg.DagsterEventType, float]
    by_type_count: dict[dg.DagsterEventType, int]

    @property
    def materializations(self) -> float:
        return self.by_type[EventType.ASSET_MATERIALIZATION]

    @property
    def three_types(self) -> float:
        return sum(self.by_type.values())


def dagster_reads(instance: dg.DagsterInstance, after: int | None) -> Reads:
    begin = time.perf_counter()
    per_key_count = read_per_key(instance, after)
    per_key = time.perf_counter() - begin
    times, counts = {}, {}
    for event_type in READ_TYPES:
        begin = time.perf_counter()
        counts[event_type] = read_by_type(instance, event_type, after)
        times[event_type] = time.perf_counter() - begin
    if per_key_count != counts[EventType.ASSET_MATERIALIZATION]:
        raise SystemExit(f"per key {per_key_count} != by type {counts} materializations")
    return Reads(per_key, per_key_count, times, counts)


def max_storage_id(instance: dg.DagsterInstance) -> int:
    return instance.event_log_storage.get_maximum_record_id() or 0


# --- profile ----------------------------------------------------------------------------------

DAGSTER_TABLES = re.compile(
    r"\b(event_logs|runs|run_tags|asset_keys|asset_event_tags|kvs|instance_info|"
    r"secondary_indexes|dynamic_partitions|concurrency_\w+|alembic_version|snapshots|"
    r"asset_check_executions|bulk_actions|jobs|job_ticks|instigators)\b"
)


class StatementCounter:
    """Counts and times every SQL statement of every engine, by owner and by shape."""

    def __init__(self) -> None:
        self.count: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        self.shapes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.shape_seconds: collections.Counter[tuple[str, str]] = collections.Counter()
        self.samples: dict[tuple[str, str], tuple[str, Any]] = {}  # a statement and parameters
        self.connects = 0
        self._started: dict[int, float] = {}

    def before(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def after(self, conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        seconds = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        owner = "dagster" if DAGSTER_TABLES.search(statement) else "tracker"
        shape = (owner, " ".join(statement.split())[:90])
        self.count[owner] += 1
        self.seconds[owner] += seconds
        self.shapes[shape] += 1
        self.shape_seconds[shape] += seconds
        self.samples[shape] = (statement, parameters)

    def commit(self, conn: Any) -> None:
        self.count["commit"] += 1

    def connect(self, *args: Any) -> None:
        self.connects += 1

    @contextlib.contextmanager
    def listening(self) -> Iterator["StatementCounter"]:
        hooks: list[tuple[Any, str, Callable[..., None]]] = [
            (sa.engine.Engine, "before_cursor_execute", self.before),
            (sa.engine.Engine, "after_cursor_execute", self.after),
            (sa.engine.Engine, "commit", self.commit),
            (sa.pool.Pool, "connect", self.connect),
        ]
        for target, name, fn in hooks:
            sa.event.listen(target, name, fn)
        try:
            yield self
        finally:
            for target, name, fn in hooks:
                sa.event.remove(target, name, fn)


def explain(url: str, schema: str, statement: str, parameters: Any) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a captured SELECT, with the tracker's search path."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f'SET search_path = "{schema}", public')
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            lines = [row[0] for row in cursor.fetchall()]
            raw.rollback()
            return lines
        finally:
            raw.close()
    finally:
        engine.dispose()


PARTS = {
    "ended_runs (fetch_run_status_changes)": "ended_runs",
    "run_records (get_records_for_run)": "run_records",
    "run_syncs (interpret events)": "run_syncs",
    "record_observed_runs (write)": "record_observed_runs",
    "_lock_states (states, one statement)": "_lock_states",
    "_selected (resolve the selection)": "_selected",
    "deserialize events (deserialize_value)": "deserialize_value",
}


def profile_tick(observer: Observer, label: str, top: int) -> None:
    """One tick under cProfile and the statement counter; prints where the time went."""
    profiler = cProfile.Profile()
    counter = StatementCounter()
    with counter.listening():
        profiler.enable()
        tick = observer.tick()
        profiler.disable()
    print(f"\nprofile: {label}: {tick.seconds:.2f} s under cProfile, {tick.runs} runs, ", end="")
    print(f"{tick.syncs:,} syncs")
    stats = pstats.Stats(profiler)
    cumulative: dict[str, tuple[int, float]] = {}
    for (_, _, func), (_, calls, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        for name, wanted in PARTS.items():
            if func == wanted and cum > cumulative.get(name, (0, 0.0))[1]:
                cumulative[name] = (calls, cum)
    for name, (calls, cum) in cumulative.items():
        print(f"  {name:45s} {calls:7d} calls  {cum:7.2f} s cumulative")
    runs = max(tick.runs, 1)
    for owner in ("dagster", "tracker"):
        print(
            f"  {owner} statements: {counter.count[owner]:,} ({counter.count[owner] / runs:.1f} "
            f"per run), {counter.seconds[owner]:.2f} s in execute"
        )
    print(f"  commits (SQLAlchemy): {counter.count['commit']:,}; new DBAPI connections: ", end="")
    print(f"{counter.connects:,} ({counter.connects / runs:.1f} per run)")
    print("  statements by time in execute (count, total, mean):")
    for shape, seconds in counter.shape_seconds.most_common(14):
        n = counter.shapes[shape]
        print(
            f"    {n:6,d} {seconds:6.2f} s {seconds / n * 1000:6.2f} ms  {shape[0]:8s} {shape[1]}"
        )
    slow_selects = [
        shape
        for shape, _ in counter.shape_seconds.most_common()
        if shape[1].startswith("SELECT") and "pg_advisory" not in shape[1]
    ][:2]
    for shape in slow_selects:
        statement, parameters = counter.samples[shape]
        print(f"  EXPLAIN (ANALYZE, BUFFERS) of the last {shape[0]} {shape[1][:40]}...:")
        for line in explain(observer.url, observer.schema, statement, parameters):
            print(f"    {line}")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_callees(r"observed.py.*\((_write_runs|_lock_states)\)")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


# --- report -----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def report_drain(ticks: list[Tick], reads: list[Reads], rows: dict[str, int]) -> bool:
    working = [t for t in ticks if t.runs]
    seconds = [t.seconds for t in ticks]
    total = sum(seconds)
    best_key = min(r.per_key for r in reads)
    best_mat = min(r.materializations for r in reads)
    best_three = min(r.three_types for r in reads)
    met = max(seconds) < TICK_TARGET_S
    print("\nbacklog drain")
    print(
        f"  rows: {rows.get('total', 0):,} ({rows.get('success', 0):,} success, "
        f"{rows.get('failed', 0):,} failed); runs: {sum(t.runs for t in ticks):,}"
    )
    print(
        f"  ticks: {len(ticks)} ({len(working)} with runs); per tick max {max(seconds):.2f} s, "
        f"median {statistics.median(seconds):.2f} s; total {total:.1f} s; "
        f"{rows.get('total', 0) / total:,.0f} rows/s -> {'met' if met else 'MISSED'} (< 30 s)"
    )
    for r, when in zip(reads, ("before the drain", "after the drain"), strict=False):
        counts = ", ".join(f"{n:,} {t.value}" for t, n in r.by_type_count.items())
        print(
            f"  Dagster reads {when}: fetch_materializations x {len(ALL_KEYS)} keys "
            f"{r.per_key:.1f} s ({r.per_key_count:,}); get_event_records "
            f"{r.materializations:.1f} s materializations, {r.three_types:.1f} s three types "
            f"({counts})"
        )
    print(
        f"  ratio drain / fastest read: {ratio(total, best_key)} per key, "
        f"{ratio(total, best_mat)} materializations by type, {ratio(total, best_three)} three "
        "types"
    )
    return met


def report_steady(shape: str, ticks: list[float], reads: list[Reads]) -> bool:
    met = max(ticks) < STEADY_TARGET_S
    tick_median = statistics.median(ticks)
    per_key = statistics.median(r.per_key for r in reads)
    mats = statistics.median(r.materializations for r in reads)
    three = statistics.median(r.three_types for r in reads)
    print(
        f"  steady {shape}: tick median {tick_median * 1000:.0f} ms, max {max(ticks) * 1000:.0f} "
        f"ms ({len(ticks)} rounds) -> {'met' if met else 'MISSED'} (< 1 s); Dagster reads "
        f"median: per key {per_key * 1000:.0f} ms ({ratio(tick_median, per_key)}), "
        f"materializations {mats * 1000:.0f} ms ({ratio(tick_median, mats)}), three types "
        f"{three * 1000:.0f} ms ({ratio(tick_median, three)})"
    )
    return met


# --- main -------------------------------------------------------------------------------------


def steady(
    args: argparse.Namespace,
    rng: random.Random,
    instance: dg.DagsterInstance,
    observer: Observer,
    generator: Generator,
    done: list[RunSpec],
    url: str,
) -> dict[str, tuple[list[float], list[Reads]]]:
    results: dict[str, tuple[list[float], list[Reads]]] = {}
    shapes = ["singles", "dbt"] * args.steady_rounds
    for shape in shapes:
        specs = steady_specs(shape, rng)
        after = max_storage_id(instance)
        took = generator.run(specs)
        done += specs
        timed: dict[str, Any] = {}
        order = ["observer", "dagster"]
        rng.shuffle(order)
        for side in order:
            if side == "observer":
                tick = observer.tick()
                if tick.syncs != sum(s.syncs for s in specs) or tick.more:
                    raise SystemExit(f"steady tick wrote {tick}, want {len(specs)} runs")
                timed["observer"] = tick.seconds
            else:
                reads = dagster_reads(instance, after)
                if reads.per_key_count != sum(s.successes for s in specs):
                    raise SystemExit(f"steady reads found {reads.per_key_count} materializations")
                timed["dagster"] = reads
        ticks, reads_list = results.setdefault(shape, ([], []))
        ticks.append(timed["observer"])
        reads_list.append(timed["dagster"])
        r = timed["dagster"]
        print(
            f"    steady {shape} round {len(ticks)}: runs {took:.1f} s; tick "
            f"{timed['observer'] * 1000:.0f} ms; Dagster per key {r.per_key * 1000:.0f} ms, "
            f"three types {r.three_types * 1000:.0f} ms (order {', '.join(order)})",
            flush=True,
        )
    check_rows(url, observer.schema, done, "after the steady rounds")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL server to create the benchmark's database on (needs CREATEDB)",
    )
    parser.add_argument("--backlog", type=int, default=50_000, help="materializations+failures")
    parser.add_argument("--dbt-runs", type=int, default=12, help="runs of each dbt project")
    parser.add_argument("--backfill-days", type=int, default=25, help="partitions per backfill")
    parser.add_argument("--steady-rounds", type=int, default=4, help="rounds of each shape")
    parser.add_argument("--workers", type=int, default=2, help="processes launching runs")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="no ANALYZE after generating the backlog and after the drain (stale statistics)",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile; top N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order")
    args = parser.parse_args(argv)
    if args.backlog < 1 or args.steady_rounds < 1 or args.workers < 1:
        parser.error("--backlog, --steady-rounds and --workers must be at least 1")
    if not 1 <= args.backfill_days <= 100:
        parser.error("--backfill-days must be 1 to 100")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    start_load = loadavg()
    began = time.perf_counter()
    print(f"load average at start: {start_load}")
    print(f"Python {sys.version.split()[0]}, dagster {dg.__version__}, {os.cpu_count()} CPUs")
    print(f"{len(ALL_KEYS)} assets: {len(PROJECTS)} dbt-like projects x {MODELS}, {SINGLES} single")
    with bench_database(args.database_url) as url, postgres_instance(url) as instance:
        print(f"dagster-postgres instance and tracking schemas on {sa.make_url(url).database}")
        generator = Generator(url, args.workers)
        try:
            specs = backlog_specs(args, rng)
            kinds = collections.Counter(s.kind for s in specs)
            total = sum(s.syncs for s in specs)
            print(
                f"backlog: {len(specs)} runs ({', '.join(f'{n} {k}' for k, n in kinds.items())}),"
                f" {total:,} syncs ({sum(s.successes for s in specs):,} materializations), "
                f"{args.workers} processes",
                flush=True,
            )
            generated = generator.run(specs)
            print(f"  backlog generated in {generated:.0f} s", flush=True)
            if args.analyze:
                print(f"  ANALYZE of the database: {analyze(url):.1f} s", flush=True)

            print("Dagster's reads of the backlog (before the drain)", flush=True)
            reads = [dagster_reads(instance, None)]
            schema = f"bench_observer_{uuid.uuid4().hex[:8]}"
            observer = Observer(instance, url, schema)
            print(f"draining into schema {schema}", flush=True)
            ticks = observer.drain("drain")
            rows = check_rows(url, schema, specs, "after the drain")
            counts = reads[0].by_type_count
            if (
                counts[EventType.ASSET_MATERIALIZATION],
                counts[EventType.ASSET_MATERIALIZATION_PLANNED],
            ) != (
                rows.get("success", 0),
                rows.get("total", 0),
            ):
                raise SystemExit(f"Dagster counts {counts} disagree with the rows {rows}")
            print("  check: Dagster's counts agree (materializations = successes, planned = rows)")
            print("Dagster's reads of the backlog (after the drain)", flush=True)
            reads.append(dagster_reads(instance, None))
            drain_met = report_drain(ticks, reads, rows)
            if args.analyze:
                print(f"  ANALYZE of the database: {analyze(url):.1f} s", flush=True)

            print(f"\nsteady ticks: {args.steady_rounds} rounds of each shape", flush=True)
            done = list(specs)
            results = steady(args, rng, instance, observer, generator, done, url)
            print("\nsteady ticks")
            steady_met = all([report_steady(s, t, r) for s, (t, r) in results.items()])

            if args.profile:
                second = Observer(instance, url, f"bench_observer_{uuid.uuid4().hex[:8]}")
                profile_tick(second, "first tick of a second drain (fresh schema)", args.profile)
                specs = steady_specs("singles", rng)
                generator.run(specs)
                profile_tick(observer, "steady tick of 100 one-asset runs", args.profile)
        finally:
            generator.close()
    print()
    print(f"targets: drain ticks < 30 s {'met' if drain_met else 'MISSED'}; ", end="")
    print(f"steady tick < 1 s {'met' if steady_met else 'MISSED'}")
    print(f"load average at start: {start_load}")
    print(f"load average at end:   {loadavg()}")
    print(f"benchmark took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
