"""Issue 16's report budgets: ``status``, ``top-errors`` and ``volume-anomalies`` before and after.

One run, one data set, two versions of the package:

1. **Data** (``--phase generate``, run with the *before* tree on ``PYTHONPATH``): a fresh schema
   loaded exactly as ``bench_reports.py`` loads it (``bench_sensors.generate`` with the reports'
   run metrics; no operational events, which none of these reports reads), 5,000,000 history rows
   over 90 days at 10,000 resources by default.
2. **Before** (``--phase time``, the before tree): the first roll-up refresh, then each report
   called as a user calls it (``REPORTS[name](store, now=NOW)``, NOW the newest sync start of the
   data, the same instant in both phases): one warm-up, ``--repeat`` timed calls, and one more
   call whose SELECTs are re-run under ``EXPLAIN (ANALYZE, BUFFERS)`` (``bench_reports``'s
   capture).
3. **After** (``--phase time``, this tree): the schema is migrated by this package (its own
   roll-up refresh follows), then the same calls. The answers of both phases are compared.

The schema is dropped at the end. The before tree is the package at a git revision (``--before``,
default ``main``), exported with ``git archive`` into a temporary directory.

Usage::

    flock /work/bench.lock python bench/bench_report_budgets.py
    python bench/bench_report_budgets.py --resources 1000 --rows 100000 --plans
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPORTS_TIMED = {
    "status": ("status", {}),
    "top-errors": ("top-errors", {}),
    "volume-anomalies": ("volume-anomalies", {}),
    "volume-anomalies --all": ("volume-anomalies", {"include_normal": True}),
    # The data ends at the time of the run, often in a day's first hours: the same reports
    # with now at 14:xx UTC of the day before (its hours then are all rolled up).
    "volume-anomalies @14h": ("volume-anomalies", {"afternoon": True}),
    "volume-anomalies --all @14h": (
        "volume-anomalies",
        {"include_normal": True, "afternoon": True},
    ),
}
TARGETS_MS = {"status": 10.0, "top-errors": 10.0, "volume-anomalies": 100.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def generate(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, HERE)
    import bench_reports
    import bench_sensors

    bench_sensors.HISTORY = bench_sensors.HISTORY.replace(
        bench_reports.SENSORS_METADATA, bench_reports.REPORTS_METADATA
    )
    per = args.rows // args.resources
    data = bench_sensors.generate(args.database_url, args.schema, args.resources, per, args.seed)
    with bench_sensors.connection(args.database_url, args.schema) as conn:
        import sqlalchemy as sa

        now = conn.execute(sa.text("SELECT max(sync_start_time) FROM sync_history")).scalar_one()
    return {"rows": data.rows, "seconds": data.seconds, "now": now.isoformat()}


def time_phase(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, HERE)
    import bench_reports
    import bench_sensors
    import sqlalchemy as sa

    import sync_observability
    from sync_observability import SyncStore
    from sync_observability.reports import REPORTS
    from sync_observability.storage.reporting.hourly_rollups import refresh_rollups

    now = dt.datetime.fromisoformat(args.now)
    started = time.perf_counter()
    store = SyncStore.from_url(args.database_url, schema=args.schema)  # migrates if need be
    migrated_s = time.perf_counter() - started
    out: dict[str, Any] = {"package": sync_observability.__file__, "migrate_s": migrated_s}
    try:
        started = time.perf_counter()
        refresh_rollups(store)
        out["first_refresh_s"] = time.perf_counter() - started
        out["load_before"] = bench_sensors.load()
        results: dict[str, Any] = {}
        for label, (name, kwargs) in REPORTS_TIMED.items():
            log(f"timing {label} ({args.label})")

            options = dict(kwargs)
            when = now
            if options.pop("afternoon", False):
                when = now.replace(hour=14) - dt.timedelta(days=1 if now.hour < 14 else 0)

            def call(store: Any, name: str = name, options: dict = options, when=when) -> Any:
                return REPORTS[name](store, now=when, **options)

            answer = call(store)  # warm-up
            times = []
            for _ in range(args.repeat):
                begin = time.perf_counter()
                answer = call(store)
                times.append((time.perf_counter() - begin) * 1000)
            explained = bench_reports.explain_report(store, call)
            results[label] = {
                "times_ms": times,
                "rows": len(answer),
                "answer": answer.to_json(orient="records", date_format="iso"),
                "sql_ms": sum(e.execution_ms for e in explained),
                "scans": [e.scans for e in explained],
                "plans": [[e.statement[:800], e.plan] for e in explained],
            }
        out["reports"] = results
        out["load_after"] = bench_sensors.load()
        with store.engine.connect() as conn:
            out["rolled_until"] = str(
                conn.execute(sa.text("SELECT rolled_until FROM sync_rollup_state")).scalar()
            )
    finally:
        store.dispose()
    return out


def run_phase(tree: str, phase: str, args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    """This script's ``phase`` in a child process importing the package from ``tree``."""
    script = os.path.join(tree, "bench", os.path.basename(__file__))
    command = [sys.executable, script, "--phase", phase, "--schema", args.schema]
    command += ["--database-url", args.database_url, "--resources", str(args.resources)]
    command += ["--rows", str(args.rows), "--repeat", str(args.repeat), "--seed", str(args.seed)]
    for key, value in extra.items():
        command += [f"--{key}", value]
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True)
    if phase == "drop":
        return {}
    log(f"{phase} {extra.get('label', '')}: {done.stdout[:300]}")
    return json.loads(done.stdout)


def export_tree(revision: str, into: str) -> str:
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", revision], check=True, stdout=subprocess.PIPE
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    # The before tree runs this script too (it may not have it yet).
    with open(__file__, encoding="utf-8") as source:
        text = source.read()
    with open(os.path.join(into, "bench", os.path.basename(__file__)), "w") as target:
        target.write(text)
    return into


def drop(args: argparse.Namespace) -> None:
    sys.path.insert(0, HERE)
    import bench_sensors

    bench_sensors.drop_schema(args.database_url, args.schema)


def summary(before: dict[str, Any], after: dict[str, Any], plans: bool) -> None:
    print(
        f"first refresh: before {before['first_refresh_s']:.1f} s, after (migration "
        f"{after['migrate_s']:.1f} s, which empties the roll-ups) {after['first_refresh_s']:.1f} s"
    )
    print(f"rolled until: before {before['rolled_until']}, after {after['rolled_until']}")
    print(f"load before phase: {before['load_before']} -> {before['load_after']}")
    print(f"load after phase:  {after['load_before']} -> {after['load_after']}")
    header = (
        f"{'report':<24}{'rows b/a':>12}{'median before':>15}{'median after':>14}{'ratio':>8}"
        f"{'SQL b/a':>16}{'target':>8}  same answer"
    )
    print(header)
    print("-" * len(header))
    for label in REPORTS_TIMED:
        b, a = before["reports"][label], after["reports"][label]
        mb, ma = statistics.median(b["times_ms"]), statistics.median(a["times_ms"])
        target = TARGETS_MS.get(label)
        verdict = "-" if target is None else ("met" if ma < target else "MISSED")
        print(
            f"{label:<24}{b['rows']:>6}/{a['rows']:<5}{mb:>15.1f}{ma:>14.1f}{mb / ma:>7.1f}x"
            f"{b['sql_ms']:>8.1f}/{a['sql_ms']:<7.1f}{'-' if target is None else target:>8}"
            f"  {b['answer'] == a['answer']} ({verdict})"
        )
    for phase, result in (("before", before), ("after", after)):
        for label, timed in result["reports"].items():
            print(f"\n{label} ({phase}): scans {timed['scans']}; times {timed['times_ms']}")
            if plans:
                for statement, plan in timed["plans"]:
                    print(f"  {statement}")
                    for line in plan:
                        print("      " + line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per report")
    parser.add_argument("--seed", type=float, default=0.42)
    parser.add_argument("--before", default="main", help="git revision measured as the baseline")
    parser.add_argument(
        "--after",
        help="git revision (or a directory holding a copy of the tree) measured against it "
        "(default: this tree as it is)",
    )
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN in full")
    parser.add_argument(
        "--phase", choices=("all", "generate", "time", "drop", "compare"), default="all"
    )
    parser.add_argument("--results", nargs=2, help="(compare phase) before.json after.json")
    parser.add_argument("--schema", default=f"bench_budgets_{uuid.uuid4().hex[:8]}")
    parser.add_argument("--save", help="write PREFIX.before.json and PREFIX.after.json")
    parser.add_argument("--now", help="(time phase) the reports' now")
    parser.add_argument("--label", default="", help="(time phase) before or after")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase == "generate":
        print(json.dumps(generate(args)))
        return
    if args.phase == "time":
        print(json.dumps(time_phase(args)))
        return
    if args.phase == "drop":
        drop(args)
        return
    if args.phase == "compare":  # two time phases' outputs, run by hand on one schema
        with open(args.results[0]) as b, open(args.results[1]) as a:
            summary(json.load(b), json.load(a), args.plans)
        return
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench_budgets_") as before_tree,
        tempfile.TemporaryDirectory(prefix="bench_budgets_") as after_tree,
    ):
        export_tree(args.before, before_tree)
        after_root = ROOT
        if args.after and os.path.isdir(args.after):
            after_root = args.after  # a copy of a tree, uncommitted changes included
        elif args.after:
            after_root = export_tree(args.after, after_tree)
        try:
            log(f"generating {args.rows:,} rows at {args.resources:,} resources in {args.schema}")
            data = run_phase(before_tree, "generate", args)
            log(f"generated {data['rows']:,} rows in {data['seconds']:.0f} s; now = {data['now']}")
            before = run_phase(before_tree, "time", args, now=data["now"], label="before")
            after = run_phase(after_root, "time", args, now=data["now"], label="after")
            if args.save:  # both phases' figures and plans, for --phase compare
                for name, result in (("before", before), ("after", after)):
                    with open(f"{args.save}.{name}.json", "w") as out:
                        json.dump(result, out)
        finally:
            run_phase(ROOT, "drop", args)
    print(
        f"{data['rows']:,} history rows, {args.resources:,} resources; reports at now = "
        f"{data['now']}; before = {args.before} ({before['package']}), after = "
        f"{args.after or 'this tree'} ({after['package']}); "
        f"median of {args.repeat} calls after a warm-up, wall ms in the process"
    )
    summary(before, after, args.plans)
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
