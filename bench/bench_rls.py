"""Row-level security's cost: sensor ticks and tracking as the writer, RLS off against on.

In one run, on one PostgreSQL schema:

1. **Data.** ``bench_sensors.generate``: ``--resources`` ``sync_state`` rows and ``--rows``
   ``sync_history`` rows (the sensor benchmark's mix), then ``sync-obs roles create`` on the
   schema, a LOGIN role in ``sync_observability_writer`` (the code location; every tick and
   sync below runs as it) and one in ``sync_observability_reader`` (a team).
2. **Phases**, ``--rounds`` of each mode in the order ``off, on, on, off, off, on ...``: *on*
   is the team restricted to ``--pattern`` (``sync-obs roles restrict``: RLS enabled on every
   table, with the writer's and the restricted role's policies), *off* the same with the
   restriction lifted (RLS disabled). Each phase deletes the open alerts (as the owner), then
   ticks every sensor of ``SYNC_SENSORS`` ``--ticks`` times as ``bench_sensors`` does (the
   first tick opens and delivers the alerts, later ones refresh them), then tracks ``--syncs``
   syncs (``SyncTracker.track`` + ``record``) of 200 resources of their own, cycled. A warm-up
   phase first (not measured) reaps the stuck syncs and warms the caches.
3. **The team's reads** with RLS on, for information: ``list_states()`` and the ``status`` and
   ``dashboard`` reports as the restricted role against an unrestricted reader (median of 3).

Reported: per sensor and mode the first tick, the median and maximum of the later ticks
(medians over the rounds), per mode the tracked sync's median and p95, and the on/off ratios.
The schema and the LOGIN roles are dropped at the end; the group roles stay (cluster-wide).

Usage::

    python bench/bench_rls.py
    python bench/bench_rls.py --resources 1000 --rows 100000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import dagster as dg
import sqlalchemy as sa
from bench_sensors import (
    DEFAULT_URL,
    TARGET_TICK_S,
    Ticks,
    admin_engine,
    create_running_runs,
    drop_schema,
    generate,
    load,
    log,
    run_ticks,
)

from sync_observability import SyncStore, SyncTracker
from sync_observability.alerts.sensors import SYNC_SENSORS
from sync_observability.reports import REPORTS
from sync_observability.storage import roles


def admin(url: str, sql: str, **params: Any) -> list[Any]:
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def role_url(url: str, role: str) -> str:
    return sa.make_url(url).set(username=role, password=None).render_as_string(False)


def in_transaction(url: str, schema: str, fn: Callable[[sa.Connection, str], Any]) -> Any:
    store = SyncStore.from_url(url, schema=schema, auto_migrate=False)
    try:
        return store.db.write(lambda conn: fn(conn, schema), "bench roles")
    finally:
        store.dispose()


def set_rls(url: str, schema: str, team: str, pattern: str | None) -> None:
    """RLS on (the team restricted to ``pattern``) or off (``None``: restriction lifted)."""
    in_transaction(
        url, schema, lambda conn, s: roles.restrict(conn, s, team, pattern and [pattern])
    )
    (enabled,) = admin(
        url,
        "SELECT bool_and(relrowsecurity) FROM pg_class WHERE relnamespace = to_regnamespace(:s) "
        "AND relname = 'sync_history'",
        s=schema,
    )[0]
    assert enabled is (pattern is not None), (enabled, pattern)


def track(tracker: SyncTracker, resources: list[str], syncs: int) -> list[float]:
    seconds = []
    for i in range(syncs):
        resource = resources[i % len(resources)]
        started = time.perf_counter()
        with tracker.track(
            None, resource=resource, source_system="bench", target_system="warehouse"
        ) as run:
            run.record(processed=120, created=20, updated=100)
        seconds.append(time.perf_counter() - started)
    return seconds


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed_reads(url: str, schema: str, role: str, rounds: int = 3) -> dict[str, float]:
    store = SyncStore.from_url(role_url(url, role), schema=schema, auto_migrate=False)
    reads: dict[str, Callable[[], Any]] = {
        "list_states()": store.list_states,
        "report status": lambda: REPORTS["status"](store),
        "report dashboard": lambda: REPORTS["dashboard"](store),
    }
    try:
        out = {}
        for name, read in reads.items():
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                read()
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times)
        return out
    finally:
        store.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL (superuser)")
    parser.add_argument("--resources", type=int, default=10_000, help="sync_state rows")
    parser.add_argument("--rows", type=int, default=5_000_000, help="sync_history rows")
    parser.add_argument("--ticks", type=int, default=5, help="ticks per sensor per phase")
    parser.add_argument("--syncs", type=int, default=300, help="tracked syncs per phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases of each mode")
    parser.add_argument("--pattern", default="crm/*", help="the team's resource pattern")
    parser.add_argument("--seed", type=float, default=0.42, help="setseed() value, -1 to 1")
    args = parser.parse_args(argv)
    per = args.rows // max(args.resources, 1)
    if args.resources < 10 or not 40 <= per <= 700:
        parser.error("need --resources >= 10 and 40 to 700 history rows per resource")
    if args.ticks < 2 or args.syncs < 20 or args.rounds < 1:
        parser.error("need --ticks >= 2, --syncs >= 20, --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = args.database_url
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_rls_{tag}"
    writer, team, reader = (f"bench_rls_{tag}_{n}" for n in ("writer", "team", "reader"))
    started = time.perf_counter()
    try:
        with dg.instance_for_test() as instance:
            run(args, url, schema, writer, team, reader, instance)
    finally:
        drop_schema(url, schema)
        logins = [writer, team, reader]
        admin(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(:r)",
            r=logins,
        )
        for role in logins:
            admin(url, f'DROP ROLE IF EXISTS "{role}"')
        log("dropped the benchmark's schema and login roles")
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s; load average now {load()}")


def run(
    args: argparse.Namespace,
    url: str,
    schema: str,
    writer: str,
    team: str,
    reader: str,
    instance: dg.DagsterInstance,
) -> None:
    per = args.rows // args.resources
    print(f"load average (1/5/15 min) at the start: {load()} on {os.cpu_count()} cores")
    log(f"generating {args.resources:,} resources x {per} runs in {schema}")
    data = generate(url, schema, args.resources, per, args.seed)
    log(f"generated in {data.seconds:.1f} s")
    changes = in_transaction(url, schema, roles.create_roles)
    for role in (writer, team, reader):
        admin(url, f'CREATE ROLE "{role}" LOGIN')
    in_transaction(url, schema, lambda conn, s: roles.grant(conn, s, "writer", [writer]))
    in_transaction(url, schema, lambda conn, s: roles.grant(conn, s, "reader", [team, reader]))
    log(f"roles create: {len(changes)} changes")
    create_running_runs(url, schema, instance)
    # Resources of their own: the syncs timed here change nothing the sensors look at.
    healthy = [f"bench/tracked_{i:03d}" for i in range(200)]
    tracker = SyncTracker(database_url=role_url(url, writer), schema_name=schema)

    log("warm-up: every sensor once (reaps the stuck syncs), a few syncs")
    for sensor in SYNC_SENSORS:
        run_ticks(sensor, instance, tracker, 1)
    track(tracker, healthy, 50)

    ticks: dict[str, dict[str, list[Ticks]]] = {"off": {}, "on": {}}
    syncs: dict[str, list[float]] = {"off": [], "on": []}
    loads = []
    for round_ in range(args.rounds):
        # off-on, on-off, ...: neither mode always runs first.
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            set_rls(url, schema, team, args.pattern if mode == "on" else None)
            admin(url, f'DELETE FROM "{schema}".sync_alerts')
            log(f"round {round_ + 1}, RLS {mode}: ticking")
            for sensor in SYNC_SENSORS:
                ticks[mode].setdefault(sensor.name, []).append(
                    run_ticks(sensor, instance, tracker, args.ticks)
                )
            syncs[mode] += track(tracker, healthy, args.syncs)
            loads.append(load())
    set_rls(url, schema, team, args.pattern)
    visible = {
        who: SyncStore.from_url(role_url(url, who), schema=schema, auto_migrate=False)
        for who in (team, reader, writer)
    }
    counts = {who: store.count_states() for who, store in visible.items()}
    for store in visible.values():
        store.dispose()
    reads = {who: timed_reads(url, schema, who) for who in (reader, team)}

    print(
        f"\nRLS on/off at {args.resources:,} resources, {data.rows:,} history rows "
        f"(generated in {data.seconds:.0f} s); {args.rounds} round(s) of each mode, "
        f"{args.ticks} ticks per sensor per phase, {args.syncs} tracked syncs per phase"
    )
    print(f"load averages after each phase: {'; '.join(loads)}")
    print(
        f"sync_state rows visible with RLS on: writer {counts[writer]:,}, unrestricted reader "
        f"{counts[reader]:,}, team ({args.pattern}) {counts[team]:,}"
    )
    print()
    print(
        f"{'sensor (seconds; medians over rounds)':<40}{'first off':>10}{'first on':>10}"
        f"{'later off':>11}{'later on':>10}{'ratio':>8}{'max on':>8}  target < {TARGET_TICK_S:g} s"
    )
    worst = 0.0
    for sensor in SYNC_SENSORS:
        off, on = ticks["off"][sensor.name], ticks["on"][sensor.name]
        first_off = statistics.median(t.first for t in off)
        first_on = statistics.median(t.first for t in on)
        later_off = statistics.median(t.later for t in off)
        later_on = statistics.median(t.later for t in on)
        max_on = max(max(t.seconds) for t in on)
        worst = max(worst, max_on, max(max(t.seconds) for t in off))
        print(
            f"{sensor.name:<40}{first_off:>10.3f}{first_on:>10.3f}{later_off:>11.3f}"
            f"{later_on:>10.3f}{later_on / later_off:>7.2f}x{max_on:>8.3f}"
        )
    print(
        f"slowest tick of the run: {worst:.3f} s ({'met' if worst < TARGET_TICK_S else 'MISSED'})"
    )
    print()
    print(f"{'tracked sync (ms)':<40}{'median':>10}{'p95':>10}{'mean':>10}")
    for mode in ("off", "on"):
        values = syncs[mode]
        print(
            f"{'RLS ' + mode:<40}{statistics.median(values) * 1000:>10.2f}"
            f"{p95(values) * 1000:>10.2f}{statistics.mean(values) * 1000:>10.2f}"
        )
    ratio = statistics.median(syncs["on"]) / statistics.median(syncs["off"])
    print(f"{'ratio of medians on/off':<40}{ratio:>9.2f}x")
    print()
    print(f"{'reads with RLS on (median of 3, ms)':<40}{'reader':>10}{'team':>10}")
    for name in reads[reader]:
        print(f"{name:<40}{reads[reader][name] * 1000:>10.1f}{reads[team][name] * 1000:>10.1f}")


if __name__ == "__main__":
    sys.exit(main())
