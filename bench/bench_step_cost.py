"""What a Dagster step pays for being observed (issue 17): imports, resource setup and the syncs.

Four measures, each against its baseline in the same run, the two sides alternating in a random
order per round; medians and the ratio of medians (observed / baseline):

- import: the wall time of a fresh interpreter running ``import dagster`` against one running
  ``import dagster, sync_observability`` (target: at most 1.3x). Then, each in a fresh
  interpreter, which of pandas, matplotlib, Alembic, numpy, SQLAlchemy and psycopg2 are in
  ``sys.modules`` after ``import sync_observability`` and after loading the example Definitions
  (the module that ``workspace.yaml`` loads, its Definitions validated as a code server would
  load them);
- step: ``dg.materialize([asset])`` of a trivial asset, in process, on a dagster-postgres
  instance, against the same asset with its body inside ``sync_tracker.track(context)`` and a
  ``SyncTracker`` resource: resource setup plus the sync's two transactions (target: 1.05x);
- run: the wall time of ``dg.execute_job`` of 20 independent trivial assets with the
  multiprocess executor, two steps at a time, untracked against all tracked: every step process
  imports the package and sets the resource up (target: 1.05x). The jobs are in
  ``step_cost_job.py`` beside this script;
- transactions: a sync's two transactions through ``SyncTracker.track`` (the package's schema)
  against ``bench_tracking.py``'s hand-written SQL on bare tables (the columns, their defaults
  and a primary key each: no CHECK, no other index), one sync each per round, 50 resources
  cycled (issue 17's aim: 1.5x).

The script creates a database ``sync_obs_bench_<hex>`` on the server of ``--database-url`` for
the Dagster instance (run, event log and schedule storage) and the trackers' fresh schemas, and
drops it at the end. Dagster's console logger is set to WARNING on both sides so that the event
log does not drown the results; every event is still stored. Each step process still prints its
STEP_WORKER_STARTED line to stderr (Dagster logs it before the run's configuration applies).

Each round also records the CPU time of this process and of the children that ended during it
(the interpreters, the step processes), printed as a second ratio: on a shared machine it moves
less with other load than the wall time, which the targets are about. The package's modules are
compiled to bytecode for the run, as an installed package's are (``package_bytecode``;
``--source-only`` does not).

Usage::

    python bench/bench_step_cost.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/bench_step_cost.py --rounds-import 5 --rounds-step 10 --rounds-run 1
    python bench/bench_step_cost.py --only import
"""

# The multiprocess executor starts its step processes with "spawn", which runs this file's top
# level again in each of them: import nothing here that a Dagster step would not import anyway
# (sync_observability is imported in the functions that use it).
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import step_cost_job
import yaml

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("pandas", "matplotlib", "alembic", "numpy", "sqlalchemy", "psycopg2")
# Dagster's default console logger prints every event at DEBUG; the events are still stored.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class Side:
    """The measured rounds of one side, in seconds."""

    wall: list[float] = field(default_factory=list)
    # CPU of this process and of the children that ended meanwhile (interpreters, step
    # processes): what the side costs the machine, less disturbed by other load than the wall.
    cpu: list[float] = field(default_factory=list)


@dataclass
class Measure:
    """The timings of one comparison, in seconds."""

    name: str
    baseline: Side
    observed: Side
    target: float  # the highest acceptable ratio of wall-time medians, from issue 17
    unit: str  # "s" or "ms", for printing
    notes: list[str] = field(default_factory=list)  # printed under the table

    @property
    def ratio(self) -> float:
        return statistics.median(self.observed.wall) / statistics.median(self.baseline.wall)

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.observed.cpu) / statistics.median(self.baseline.cpu)

    def show(self, seconds: float) -> str:
        return show(seconds, self.unit)


def show(seconds: float, unit: str) -> str:
    return f"{seconds * 1000:.1f} ms" if unit == "ms" else f"{seconds:.3f} s"


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def alternate(
    sides: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int,
    rng: random.Random,
    *,
    unit: str = "s",
    print_every: int = 1,
) -> dict[str, Side]:
    """Run every side once per round, in a random order; the times of measured rounds."""
    times = {name: Side() for name in sides}
    for i in range(warmup + rounds):
        order = list(sides)
        rng.shuffle(order)
        for name in order:
            cpu, begin = cpu_seconds(), time.perf_counter()
            sides[name]()
            elapsed = time.perf_counter() - begin
            if i >= warmup:
                times[name].wall.append(elapsed)
                times[name].cpu.append(cpu_seconds() - cpu)
        if i >= warmup and (i - warmup + 1) % print_every == 0:
            took = ", ".join(
                f"{name} {show(times[name].wall[-1], unit)} (CPU {show(times[name].cpu[-1], unit)})"
                for name in sides
            )
            print(f"  round {i - warmup + 1}/{rounds}: {took}", flush=True)
    return times


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter of this venv; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"python -c {code!r} failed:\n{done.stderr}")
    return done.stdout


def examples_module() -> str:
    """The module whose Definitions ``workspace.yaml`` loads."""
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    for entry in workspace.get("load_from", []):
        target = entry.get("python_module") if isinstance(entry, dict) else None
        if isinstance(target, dict):
            target = target.get("module_name")
        if target:
            return target
    raise SystemExit("workspace.yaml names no python_module")


def heavy_modules_after(load: str) -> list[str]:
    """Which of ``HEAVY_MODULES`` a fresh interpreter holds after running ``load``."""
    listed = f"[m for m in {HEAVY_MODULES!r} if m in sys.modules]"
    code = f"{load}\nimport json, sys\nprint(json.dumps({listed}))"
    return json.loads(run_python(code).strip().splitlines()[-1])


def measure_import(args: argparse.Namespace, rng: random.Random) -> Measure:
    print(f"import: {args.rounds_import} rounds after {args.warmup_import} warm-up", flush=True)
    times = alternate(
        {
            "dagster": lambda: run_python("import dagster"),
            "dagster+sync_observability": lambda: run_python("import dagster, sync_observability"),
        },
        args.rounds_import,
        args.warmup_import,
        rng,
    )
    module = examples_module()
    load_examples = (
        "import importlib, dagster as dg\n"
        f"module = importlib.import_module({module!r})\n"
        "for value in vars(module).values():\n"
        "    if isinstance(value, dg.Definitions):\n"
        "        dg.Definitions.validate_loadable(value)"
    )
    notes = []
    for label, load in (
        ("import sync_observability", "import sync_observability"),
        (f"loading {module}", load_examples),
    ):
        present = heavy_modules_after(load)
        found = ", ".join(present) if present else "none"
        notes.append(f"in sys.modules after {label}: {found} (of {', '.join(HEAVY_MODULES)})")
        print(f"  {notes[-1]}", flush=True)
    return Measure(
        "import: dagster vs dagster + sync_observability",
        times["dagster"],
        times["dagster+sync_observability"],
        target=1.3,
        unit="s",
        notes=notes,
    )


@contextmanager
def package_bytecode(enabled: bool) -> Iterator[str]:
    """The package's modules compiled to bytecode for the run, as an installed package has them.

    pip compiles a wheel's modules when it installs it, and dagster's are compiled here; an
    editable install under ``PYTHONDONTWRITEBYTECODE=1`` (as in this environment) compiles the
    package's source again in every process, a cost only the observed side of each comparison
    pays. (A cache elsewhere, ``PYTHONPYCACHEPREFIX``, would not do: the multiprocess executor
    starts its step processes with ``-B`` when this one has it, so they could not fill it.)
    The ``__pycache__`` folders made here are removed at the end. Yields what is printed with
    the results.
    """
    import compileall

    package = REPO / "sync_observability"
    if not enabled:
        setting = os.environ.get("PYTHONDONTWRITEBYTECODE")
        yield f"bytecode: as the environment has it (PYTHONDONTWRITEBYTECODE={setting})"
        return
    existing = set(package.rglob("__pycache__"))
    try:
        if not compileall.compile_dir(package, quiet=1):
            raise SystemExit(f"could not compile {package}")
        yield f"bytecode: {package.name} compiled for the run (compileall), as installed"
    finally:
        for folder in set(package.rglob("__pycache__")) - existing:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server of ``server_url``, dropped on exit; its URL."""
    name = f"sync_obs_bench_{uuid.uuid4().hex[:8]}"
    server = sa.make_url(server_url).set(drivername="postgresql")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: connections a step process or a tracker's pool may still hold.
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def postgres_instance(url: str) -> Iterator[dg.DagsterInstance]:
    """A test instance whose run, event log and schedule storage are dagster-postgres at ``url``."""

    def storage(module: str, cls: str) -> dict[str, Any]:
        return {"module": module, "class": cls, "config": {"postgres_url": url}}

    overrides = {
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def count_syncs(url: str, schema: str) -> int:
    """The successful syncs recorded in ``schema``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            sql = f"SELECT count(*) FROM \"{schema}\".sync_history WHERE sync_status = 'success'"
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def check_syncs(url: str, schema: str, expected: int) -> None:
    found = count_syncs(url, schema)
    if found != expected:
        raise SystemExit(f"check failed: {found} successful syncs in {schema}, want {expected}")
    print(f"  check: {found} successful syncs recorded in {schema}")


def measure_step(
    args: argparse.Namespace, rng: random.Random, instance: dg.DagsterInstance, url: str
) -> Measure:
    from sync_observability import SyncTracker

    schema = f"bench_step_{uuid.uuid4().hex[:8]}"
    untracked = step_cost_job.untracked_asset("bench_step")
    tracked = step_cost_job.tracked_asset("bench_step")
    tracker = SyncTracker(database_url=url, schema_name=schema)

    def materialize(asset: dg.AssetsDefinition, resources: dict[str, Any]) -> None:
        result = dg.materialize([asset], instance=instance, resources=resources, run_config=QUIET)
        if not result.success:
            raise SystemExit("a step failed")

    print(f"step: {args.rounds_step} rounds after {args.warmup_step} warm-up", flush=True)
    times = alternate(
        {
            "untracked": lambda: materialize(untracked, {}),
            "tracked": lambda: materialize(tracked, {"sync_tracker": tracker}),
        },
        args.rounds_step,
        args.warmup_step,
        rng,
        unit="ms",
    )
    check_syncs(url, schema, args.warmup_step + args.rounds_step)
    return Measure(
        "step: in-process trivial asset, untracked vs tracked",
        times["untracked"],
        times["tracked"],
        target=1.05,
        unit="ms",
    )


def measure_transactions(args: argparse.Namespace, rng: random.Random, url: str) -> Measure:
    import bench_tracking
    import psycopg2

    from sync_observability import SyncTracker

    tag = uuid.uuid4().hex[:8]
    tracked_schema, bare_schema = f"bench_tx_{tag}", f"bench_bare_{tag}"
    tracker = SyncTracker(database_url=url, schema_name=tracked_schema)
    store = tracker.store  # migrates the tracked schema, outside the measure
    # Bare tables: the columns, their defaults and NOT NULLs, and a primary key each (what the
    # statements' lookups and ON CONFLICT need); no CHECK, no foreign key, no other index.
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn, options=f"-csearch_path={bare_schema}")
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{bare_schema}"')
        for table, key in (
            ("sync_state", "resource"),
            ("sync_history", "sync_id"),
            ("watermark_changes", "change_id"),
        ):
            cur.execute(
                f'CREATE TABLE "{bare_schema}".{table} '
                f'(LIKE "{tracked_schema}".{table} INCLUDING DEFAULTS, PRIMARY KEY ({key}))'
            )
    conn.commit()
    hand = bench_tracking.HandWritten(conn, "postgresql")
    tracked = bench_tracking.tracked_sync(tracker)
    resources = [f"bench/resource_{i:02d}" for i in range(50)]
    cycle = {"tracked": 0, "bare": 0}

    def sync(name: str, run: Callable[[str, str, str, dict[str, int]], None]) -> None:
        resource = resources[cycle[name] % len(resources)]
        cycle[name] += 1
        run(resource, "vantage", "warehouse", bench_tracking.COUNTS)

    print(
        f"transactions: {args.rounds_tx} syncs a side after {args.warmup_tx} warm-up",
        flush=True,
    )
    try:
        times = alternate(
            {
                "bare": lambda: sync("bare", hand.sync),
                "tracked": lambda: sync("tracked", tracked),
            },
            args.rounds_tx,
            args.warmup_tx,
            rng,
            unit="ms",
            print_every=max(1, args.rounds_tx // 4),
        )
    finally:
        conn.close()
        store.dispose()
    return Measure(
        "transactions: a sync's two, bare tables by hand vs tracked",
        times["bare"],
        times["tracked"],
        target=1.5,
        unit="ms",
        notes=[
            "transactions: the tracked side on the package's schema (CHECKs, indexes); the "
            "hand-written SQL of bench_tracking.py on tables with a primary key each only"
        ],
    )


def measure_run(
    args: argparse.Namespace, rng: random.Random, instance: dg.DagsterInstance, url: str
) -> Measure:
    schema = f"bench_run_{uuid.uuid4().hex[:8]}"
    # Read by step_cost_job.tracked_job in this process and in every step process.
    os.environ[step_cost_job.DATABASE_URL_VAR] = url
    os.environ[step_cost_job.SCHEMA_VAR] = schema
    jobs = {
        "untracked": dg.reconstructable(step_cost_job.untracked_job),
        "tracked": dg.reconstructable(step_cost_job.tracked_job),
    }

    def execute(job: dg.ReconstructableJob) -> None:
        with dg.execute_job(job, instance=instance, run_config=QUIET) as result:
            if not result.success:
                raise SystemExit("a run failed")

    steps, concurrent = step_cost_job.STEPS, step_cost_job.MAX_CONCURRENT
    print(
        f"run: {args.rounds_run} rounds after {args.warmup_run} warm-up, {steps} steps, "
        f"multiprocess executor, {concurrent} at a time",
        flush=True,
    )
    times = alternate(
        {name: lambda job=job: execute(job) for name, job in jobs.items()},
        args.rounds_run,
        args.warmup_run,
        rng,
    )
    check_syncs(url, schema, steps * (args.warmup_run + args.rounds_run))
    return Measure(
        f"run: {steps} steps, multiprocess, untracked vs tracked",
        times["untracked"],
        times["tracked"],
        target=1.05,
        unit="s",
    )


def report(measures: list[Measure]) -> None:
    rows = [
        (
            "measure",
            "rounds",
            "baseline median",
            "observed median",
            "ratio",
            "target",
            "met?",
            "CPU ratio",
        )
    ]
    for m in measures:
        rows.append(
            (
                m.name,
                str(len(m.observed.wall)),
                m.show(statistics.median(m.baseline.wall)),
                m.show(statistics.median(m.observed.wall)),
                f"{m.ratio:.2f}x",
                f"<= {m.target}x",
                "met" if m.ratio <= m.target else "MISSED",
                f"{m.cpu_ratio:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    notes = [note for m in measures for note in m.notes]
    if notes:
        print()
        for note in notes:
            print(note)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL server to create the benchmark's database on (needs CREATEDB)",
    )
    parser.add_argument("--rounds-import", type=int, default=15, help="measured import rounds")
    parser.add_argument("--rounds-step", type=int, default=30, help="measured step rounds")
    parser.add_argument("--rounds-run", type=int, default=3, help="measured run rounds")
    parser.add_argument("--warmup-import", type=int, default=1, help="unmeasured import rounds")
    parser.add_argument("--warmup-step", type=int, default=3, help="unmeasured step rounds")
    parser.add_argument("--warmup-run", type=int, default=1, help="unmeasured run rounds")
    parser.add_argument(
        "--only",
        choices=("import", "step", "run", "transactions"),
        help="run one measure (default: all four)",
    )
    parser.add_argument("--rounds-tx", type=int, default=2000, help="measured syncs a side")
    parser.add_argument("--warmup-tx", type=int, default=200, help="unmeasured syncs a side")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    parser.add_argument(
        "--source-only",
        action="store_true",
        help="do not compile the package's bytecode for the run (see package_bytecode)",
    )
    args = parser.parse_args(argv)
    if min(args.rounds_import, args.rounds_step, args.rounds_run, args.rounds_tx) < 1:
        parser.error("every --rounds-* must be at least 1")
    if min(args.warmup_import, args.warmup_step, args.warmup_run, args.warmup_tx) < 0:
        parser.error("every --warmup-* must be at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    wanted = [args.only] if args.only else ["import", "step", "run", "transactions"]
    start_load = loadavg()
    print(f"load average at start: {start_load}")
    print(f"Python {sys.version.split()[0]}, dagster {dg.__version__}, {os.cpu_count()} CPUs")
    print(f"order randomized per round (seed {args.seed})", flush=True)
    measures = []
    with package_bytecode(not args.source_only) as bytecode:
        print(bytecode, flush=True)
        if "import" in wanted:
            measures.append(measure_import(args, rng))
        if {"step", "run", "transactions"} & set(wanted):
            with bench_database(args.database_url) as url, postgres_instance(url) as instance:
                database = sa.make_url(url).database
                print(f"dagster-postgres instance and trackers on database {database}")
                if "step" in wanted:
                    measures.append(measure_step(args, rng, instance, url))
                if "run" in wanted:
                    measures.append(measure_run(args, rng, instance, url))
                if "transactions" in wanted:
                    measures.append(measure_transactions(args, rng, url))
    print()
    report(measures)
    print()
    print(bytecode)
    print(f"load average at start: {start_load}")
    print(f"load average at end:   {loadavg()}")


if __name__ == "__main__":
    main()
