"""DDL tracking: the event triggers' cost per DDL statement, and user-activity at 5 M events.

Part 1, overhead: two throwaway databases on the same server, one with ``sync-obs ddl enable``'s
event triggers, one without. Each round runs ``--statements`` DDL statements on each: for each
table a CREATE TABLE, an ALTER TABLE ... ADD COLUMN and a DROP TABLE, each in its own
transaction as a migration tool or a person would, the two databases' triplets back to back in
random order (paired: both sides see the same moments of a loaded machine). Reported: the
median seconds per round and side, the ratio, and the median paired difference per statement.

Part 2, reports: a throwaway database whose ``ddl_events`` gets ``--events`` rows (5,000,000)
over the last 60 days from ``--users`` session users with two client addresses each, written by
``INSERT ... SELECT generate_series``; the roll-up is filled once (timed), then each report is
timed: one warm-up, median of ``--repeat`` calls. user-activity is also timed without the
roll-up (``rollups="off"``) for comparison. Target: user-activity under 100 ms.

Usage::

    flock /work/bench.lock python bench/bench_ddl.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from sync_observability import SyncStore
from sync_observability.clock import utcnow
from sync_observability.reports.ddl import ddl_history, ddl_impact, user_activity
from sync_observability.storage import ddl as tracking
from sync_observability.storage.reporting.ddl import refresh_ddl_rollup

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 100.0


def log(message: str) -> None:
    print(message, flush=True)


@contextmanager
def throwaway_database(url: str, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def triplet(conn: sa.Connection, table: str) -> float:
    """Seconds for CREATE, ALTER and DROP of ``table``, each its own transaction."""
    started = time.perf_counter()
    conn.exec_driver_sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text)")
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN amount numeric")
    conn.exec_driver_sql(f"DROP TABLE {table}")
    return time.perf_counter() - started


def overhead(url: str, statements: int, repeat: int) -> None:
    """Paired: each CREATE/ALTER/DROP triplet runs on both databases back to back, in random
    order, so that both sides see the same moments of the (shared, loaded) machine."""
    with (
        throwaway_database(url, "bench_ddl_on") as on,
        throwaway_database(url, "bench_ddl_off") as off,
    ):
        store = SyncStore.from_url(on)
        store.db.write(lambda conn: tracking.enable(conn, store.schema), "enable")
        engines = {
            name: sa.create_engine(u, isolation_level="AUTOCOMMIT", poolclass=sa.pool.QueuePool)
            for name, u in (("tracked", on), ("plain", off))
        }
        totals: dict[str, list[float]] = {"tracked": [], "plain": []}
        differences: list[float] = []
        with engines["tracked"].connect() as tracked, engines["plain"].connect() as plain:
            conns = {"tracked": tracked, "plain": plain}
            for conn in conns.values():
                conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS bench")
            for round_ in range(repeat + 1):  # the first round warms both up
                spent = {"tracked": 0.0, "plain": 0.0}
                for i in range(statements // 3):
                    order = random.sample(list(conns), 2)
                    seconds = {n: triplet(conns[n], f"bench.t_{round_}_{i}") for n in order}
                    for name in spent:
                        spent[name] += seconds[name]
                    if round_ > 0:
                        differences.append((seconds["tracked"] - seconds["plain"]) / 3)
                if round_ > 0:
                    for name in spent:
                        totals[name].append(spent[name])
        for engine in engines.values():
            engine.dispose()
        recorded = store.db.read(
            lambda conn: conn.exec_driver_sql("SELECT count(*) FROM ddl_events").scalar(), "count"
        )
        store.dispose()
    tracked_s, plain_s = (statistics.median(totals[k]) for k in ("tracked", "plain"))
    count = statements // 3 * 3
    log(f"\n## DDL overhead: {count} statements per side and round, {repeat} rounds")
    log("| side | median s per round | min s | max s | ms per statement (median round) |")
    log("|---|---:|---:|---:|---:|")
    for name in ("tracked", "plain"):
        values = totals[name]
        log(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
            f"{max(values):.3f} | {statistics.median(values) / count * 1000:.2f} |"
        )
    log(
        f"ratio of medians tracked/plain {tracked_s / plain_s:.2f}x; paired difference per "
        f"statement: median {statistics.median(differences) * 1000:+.2f} ms "
        f"(of {len(differences)} triplets); {recorded:,} ddl_events rows written"
    )


def fill(url: str, events: int, users: int) -> float:
    """``events`` rows over the last 60 days by ``users`` users; returns seconds."""
    now = utcnow()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("SET search_path = sync_observability")
        conn.execute(
            sa.text(
                "INSERT INTO ddl_events (event_time, command_tag, object_type, object_identity, "
                " schema_name, statement, db_session_user, client_address, application_name, "
                " transaction_id) "
                "SELECT :now - (i::float8 / :events) * interval '60 days', "
                " (ARRAY['CREATE TABLE', 'ALTER TABLE', 'DROP TABLE', 'GRANT', 'CREATE INDEX'])"
                "   [1 + i % 5], 'table', 'analytics.t_' || (i % 5000), 'analytics', "
                " 'ALTER TABLE analytics.t_' || (i % 5000) || ' ADD COLUMN c int', "
                " 'user_' || (i % :users), '10.0.' || (i / 7 % 2) || '.' || (i % :users), 'bench', "
                " pg_current_xact_id()::text::bigint "
                "FROM generate_series(1, :events) AS i"
            ),
            {"now": now, "events": events, "users": users},
        )
    engine.dispose()
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, int]:
    """Median and min milliseconds of ``repeat`` calls after a warm-up, and the rows."""
    rows = len(fn())
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), rows


def reports(url: str, events: int, users: int, repeat: int) -> None:
    with throwaway_database(url, "bench_ddl_reports") as target:
        store = SyncStore.from_url(target)
        store.migrate()
        log(f"\nfilling ddl_events with {events:,} rows ...")
        log(f"filled in {fill(target, events, users):.1f} s")
        store.db.write(lambda conn: conn.exec_driver_sql("ANALYZE ddl_events"), "analyze")
        started = time.perf_counter()
        refresh_ddl_rollup(store)
        first = time.perf_counter() - started
        # The horizon is the oldest transaction running anywhere on the server: wait for it to
        # pass the fill (another session's long transaction holds it back).
        for _ in range(120):
            rolled = store.db.read(
                lambda conn: conn.exec_driver_sql(
                    "SELECT coalesce(sum(events), 0) FROM ddl_events_hourly"
                ).scalar(),
                "rolled",
            )
            if rolled == events:
                break
            time.sleep(1)
            refresh_ddl_rollup(store)
        hourly = store.db.read(
            lambda conn: conn.exec_driver_sql("SELECT count(*) FROM ddl_events_hourly").scalar(),
            "hourly rows",
        )
        log(f"first roll-up refresh {first:.1f} s; {rolled:,} events rolled into {hourly:,} rows")
        store.db.write(lambda conn: conn.exec_driver_sql("ANALYZE ddl_events_hourly"), "analyze")
        raw = SyncStore.from_url(target, rollups="off")
        cases = [
            ("user-activity (roll-up, refresh)", lambda: user_activity(store)),
            ("user-activity (read, no refresh)", lambda: user_activity(read_only)),
            ("user-activity (rollups off)", lambda: user_activity(raw)),
            ("roll-up refresh, nothing new", lambda: [refresh_ddl_rollup(store)]),
            ("ddl-history (7 days, 200 rows)", lambda: ddl_history(store)),
            ("ddl-impact (30 days, top 50)", lambda: ddl_impact(store)),
        ]
        read_only = SyncStore.from_url(target, rollups="read")
        log(f"\n## Reports at {events:,} ddl_events rows, {users} users; median of {repeat}")
        log("| report | median ms | min ms | rows | target |")
        log("|---|---:|---:|---:|---|")
        for name, fn in cases:
            median, fastest, rows = timed(fn, repeat if "off" not in name else max(3, repeat // 4))
            target_text = f"< {TARGET_MS:.0f} ms" if name.endswith("(roll-up, refresh)") else "-"
            log(f"| {name} | {median:.1f} | {fastest:.1f} | {rows} | {target_text} |")
        for s in (store, raw, read_only):
            s.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--statements", type=int, default=500)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    args = parser.parse_args()
    if not args.skip_overhead:
        overhead(args.database_url, args.statements, max(3, args.repeat // 2))
    if not args.skip_reports:
        reports(args.database_url, args.events, args.users, args.repeat)


if __name__ == "__main__":
    main()
