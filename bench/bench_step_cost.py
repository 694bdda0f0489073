"""What a Dagster step pays for being observed (issue 17): imports, resource setup and the syncs.

Three measures, each against its baseline in the same run, the two sides alternating in a random
order per round; medians and the ratio of medians (observed / baseline):

- import: the wall time of a fresh interpreter running ``import dagster`` against one running
  ``import dagster, sync_observability`` (target: at most 1.3x). Then, each in a fresh
  interpreter, which of pandas, matplotlib, Alembic and numpy are in ``sys.modules`` after
  ``import sync_observability`` and after loading the example Definitions (the module that
  ``workspace.yaml`` loads, its Definitions validated as a code server would load them);
- step: ``dg.materialize([asset])`` of a trivial asset, in process, on a dagster-postgres
  instance, against the same asset with its body inside ``sync_tracker.track(context)`` and a
  ``SyncTracker`` resource: resource setup plus the sync's two transactions (target: 1.05x);
- run: the wall time of ``dg.execute_job`` of 20 independent trivial assets with the
  multiprocess executor, two steps at a time, untracked against all tracked: every step process
  imports the package and sets the resource up (target: 1.05x). The jobs are in
  ``step_cost_job.py`` beside this script.

The script creates a database ``sync_obs_bench_<hex>`` on the server of ``--database-url`` for
the Dagster instance (run, event log and schedule storage) and the trackers' fresh schemas, and
drops it at the end. Dagster's console logger is set to WARNING on both sides so that the event
log does not drown the results; every event is still stored. Each step process still prints its
STEP_WORKER_STARTED line to stderr (Dagster logs it before the run's configuration applies). The
two transactions against hand-written SQL on bare tables are ``bench_tracking.py``'s measure.

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
HEAVY_MODULES = ("pandas", "matplotlib", "alembic", "numpy")
# Dagster's default console logger prints every event at DEBUG; the events are still stored.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class Measure:
    """The timings of one comparison, in seconds."""

    name: str
    baseline: list[float]
    observed: list[float]
    target: float  # the highest acceptable ratio of medians, from issue 17
    unit: str  # "s" or "ms", for printing
    notes: list[str] = field(default_factory=list)  # printed under the table

    @property
    def ratio(self) -> float:
        return statistics.median(self.observed) / statistics.median(self.baseline)

    def show(self, seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms" if self.unit == "ms" else f"{seconds:.3f} s"


def alternate(
    sides: dict[str, Callable[[], object]], rounds: int, warmup: int, rng: random.Random
) -> dict[str, list[float]]:
    """Run every side once per round, in a random order; the wall times of measured rounds."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(warmup + rounds):
        order = list(sides)
        rng.shuffle(order)
        for name in order:
            begin = time.perf_counter()
            sides[name]()
            elapsed = time.perf_counter() - begin
            if i >= warmup:
                times[name].append(elapsed)
        if i >= warmup:
            took = ", ".join(f"{name} {times[name][-1]:.3f} s" for name in sides)
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
    )
    check_syncs(url, schema, args.warmup_step + args.rounds_step)
    return Measure(
        "step: in-process trivial asset, untracked vs tracked",
        times["untracked"],
        times["tracked"],
        target=1.05,
        unit="ms",
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
    rows = [("measure", "rounds", "baseline median", "observed median", "ratio", "target", "met?")]
    for m in measures:
        rows.append(
            (
                m.name,
                str(len(m.observed)),
                m.show(statistics.median(m.baseline)),
                m.show(statistics.median(m.observed)),
                f"{m.ratio:.2f}x",
                f"<= {m.target}x",
                "met" if m.ratio <= m.target else "MISSED",
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
        "--only", choices=("import", "step", "run"), help="run one measure (default: all three)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    args = parser.parse_args(argv)
    if min(args.rounds_import, args.rounds_step, args.rounds_run) < 1:
        parser.error("every --rounds-* must be at least 1")
    if min(args.warmup_import, args.warmup_step, args.warmup_run) < 0:
        parser.error("every --warmup-* must be at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    wanted = [args.only] if args.only else ["import", "step", "run"]
    start_load = loadavg()
    print(f"load average at start: {start_load}")
    print(f"Python {sys.version.split()[0]}, dagster {dg.__version__}, {os.cpu_count()} CPUs")
    print(f"order randomized per round (seed {args.seed})", flush=True)
    measures = []
    if "import" in wanted:
        measures.append(measure_import(args, rng))
    if "step" in wanted or "run" in wanted:
        with bench_database(args.database_url) as url, postgres_instance(url) as instance:
            print(f"dagster-postgres instance and trackers on database {sa.make_url(url).database}")
            if "step" in wanted:
                measures.append(measure_step(args, rng, instance, url))
            if "run" in wanted:
                measures.append(measure_run(args, rng, instance, url))
    print()
    report(measures)
    print()
    print(f"load average at start: {start_load}")
    print(f"load average at end:   {loadavg()}")


if __name__ == "__main__":
    main()
