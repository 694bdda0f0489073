"""What ``sync-obs run -- true`` adds to plain ``true`` (issue 16, part 1).

Each round runs every case once, in a random order, as a fresh process (wall time from spawn to
exit); the figures are medians and the ratio of medians against plain ``true`` in the same run,
plus the CPU time of the child (user + system) as a second, less load-sensitive measure:

- ``true``: the baseline;
- ``python -c pass``: the interpreter alone;
- ``import sync_observability``: the package, as every ``sync-obs`` command imports it;
- ``import sync_observability.cli``: the CLI with every command group;
- ``sync-obs run`` on SQLite: a file in a temporary folder, its schema made before the rounds;
- ``sync-obs run`` on PostgreSQL: a fresh schema on ``--database-url`` (skipped without one);
- with ``--baseline-tree LABEL=DIR`` (repeatable; a copy of the package from another commit,
  ``git archive COMMIT sync_observability | tar -x -C DIR``): ``sync-obs run`` on SQLite from
  that tree and from this one, all started the same way (the installed package's finder set
  aside, the tree first on ``sys.path``, then ``runpy`` as ``python -m`` does).

Each ``sync-obs run`` records a sync (two transactions) of its own resource, so the state row
exists and every round does the same work. A last line lists which heavy modules the CLI has
loaded when ``run`` starts (what ``sync-obs run`` imports besides what it needs).

Usage::

    flock /work/bench.lock python bench/bench_shell_run.py --rounds 15 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RUN_FROM_TREE = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("sync_observability.cli", run_name="__main__", alter_sys=True)
"""
HEAVY = ("dagster", "pandas", "matplotlib", "alembic", "numpy", "sqlalchemy", "psycopg2", "rich")


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of ``argv``, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database-url", default=os.environ.get("SYNC_OBS_TEST_POSTGRES_URL"))
    parser.add_argument("--baseline-tree", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args()

    py = sys.executable
    true = shutil.which("true") or "/bin/true"
    folder = Path(tempfile.mkdtemp(prefix="bench_shell_run_"))
    schema = f"bench_run_{uuid.uuid4().hex[:8]}"
    run = [py, "-m", "sync_observability.cli", "run"]
    cases = {
        "true": [true],
        "python -c pass": [py, "-c", "pass"],
        "import sync_observability": [py, "-c", "import sync_observability"],
        "import sync_observability.cli": [py, "-c", "import sync_observability.cli"],
        "sync-obs run -- true (SQLite)": [
            *run,
            *("--database-url", f"sqlite:///{folder / 'sync.db'}", "--resource", "bench/true"),
            *("--", true),
        ],
    }
    if args.baseline_tree:
        trees = [("this tree", Path(__file__).resolve().parent.parent)]
        for given in args.baseline_tree:
            label, _, tree = given.partition("=")
            trees.append((label, Path(tree)))
        for i, (label, tree) in enumerate(trees):
            db = f"sqlite:///{folder / f'tree{i}.db'}"
            cases[f"sync-obs run -- true (SQLite, {label})"] = [
                *(py, "-c", RUN_FROM_TREE, str(tree.resolve()), "run"),
                *("--database-url", db, "--resource", "bench/true", "--", true),
            ]
    if args.database_url:
        cases["sync-obs run -- true (PostgreSQL)"] = [
            *run,
            *("--database-url", args.database_url, "--schema", schema),
            *("--resource", "bench/true", "--", true),
        ]
    try:
        for argv in cases.values():  # warm the page cache and bytecode; make the schemas
            timed(argv)
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            names = list(cases)
            random.shuffle(names)
            for name in names:
                wall, cpu = timed(cases[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
        base_wall = statistics.median(walls["true"])
        base_cpu = statistics.median(cpus["true"])
        print(f"rounds: {args.rounds}, load average: {os.getloadavg()}")
        print("| case | wall median | wall / true | added to true | CPU median | CPU / true |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in cases:
            wall = statistics.median(walls[name])
            cpu = statistics.median(cpus[name])
            print(
                f"| {name} | {wall * 1000:.1f} ms | {wall / base_wall:.1f}x | "
                f"{(wall - base_wall) * 1000:.0f} ms | {cpu * 1000:.1f} ms | "
                f"{cpu / max(base_cpu, 1e-4):.0f}x |"
            )
        probe = (
            "import sys, sync_observability.cli\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
        )
        loaded = subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True)
        print(f"heavy modules loaded by the CLI before `run` starts: {loaded.stdout.strip()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if args.database_url:
            import sqlalchemy as sa

            engine = sa.create_engine(args.database_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()


if __name__ == "__main__":
    main()
