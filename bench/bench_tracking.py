"""Tracking overhead: a tracked sync against the hand-written SQL that records the same facts.

Each round runs one sync of each kind, in random order, on the same database:

- tracked: ``SyncTracker(...).track(None, resource=...)`` with ``sync.record(...)`` inside
  (start transaction + record + finish transaction), in its own fresh schema;
- hand-written: the same two transactions written directly against the driver (psycopg2, or the
  stdlib sqlite3 module with ``--sqlite``), in a second schema (file) created by the package's
  own migration, so tables, constraints and indexes are identical.

Resources are cycled so that ``sync_state`` rows are updated, not only inserted. The script
creates and drops its own schemas (or temporary SQLite files) and only prints a table.

Usage::

    python bench/bench_tracking.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        --iterations 2000
    python bench/bench_tracking.py --sqlite
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import sqlalchemy as sa

from sync_observability import SyncStore, SyncTracker
from sync_observability.storage.engine import redact

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 1.5
COUNTS = {"processed": 120, "created": 20, "updated": 100, "failed": 0}

# The two transactions of a sync, as the package writes them (guards included), by hand.
START_STATE = """
INSERT INTO sync_state AS s (resource, source_system, target_system, last_sync_status,
    started_at, current_sync_id, created_at, updated_at)
VALUES (%(resource)s, %(source)s, %(target)s, 'running', %(started)s, %(sync_id)s,
    %(started)s, %(started)s)
ON CONFLICT (resource) DO UPDATE SET last_sync_status = 'running',
    started_at = excluded.started_at, completed_at = NULL, duration_ms = NULL,
    current_sync_id = excluded.current_sync_id, dagster_run_id = excluded.dagster_run_id,
    source_system = coalesce(excluded.source_system, s.source_system),
    target_system = coalesce(excluded.target_system, s.target_system),
    updated_at = excluded.updated_at
WHERE s.last_sync_status != 'running' OR s.current_sync_id = excluded.current_sync_id
RETURNING last_sync_time, cursor
"""
START_HISTORY = """
INSERT INTO sync_history (sync_id, resource, source_system, target_system, sync_type,
    sync_start_time, sync_status, watermark_before, cursor_before)
VALUES (%(sync_id)s, %(resource)s, %(source)s, %(target)s, 'incremental', %(started)s,
    'running', %(watermark)s, %(cursor)s)
"""
FINISH_HISTORY = """
UPDATE sync_history SET sync_status = 'success', sync_end_time = %(ended)s,
    records_processed = %(processed)s, records_created = %(created)s,
    records_updated = %(updated)s, records_failed = %(failed)s,
    watermark_after = %(new_watermark)s, duration_ms = %(duration)s
WHERE sync_id = %(sync_id)s AND sync_status = 'running'
RETURNING sync_id
"""
FINISH_STATE = """
UPDATE sync_state SET last_sync_status = 'success', records_synced = %(processed)s,
    records_created = %(created)s, records_updated = %(updated)s, errors = '[]',
    completed_at = %(ended)s, duration_ms = %(duration)s, updated_at = %(ended)s,
    last_sync_time = %(new_watermark)s, consecutive_failures = 0, last_success_at = %(ended)s,
    watermark_advanced_at = %(ended)s, syncs_since_advance = 0
WHERE resource = %(resource)s AND current_sync_id = %(sync_id)s
    AND last_sync_status = 'running'
    AND last_sync_time IS NOT DISTINCT FROM %(watermark)s AND cursor IS NULL
RETURNING resource
"""
# Issue 6's audit trail: every change of the watermark, in the finish transaction.
FINISH_AUDIT = """
INSERT INTO watermark_changes (resource, sync_id, kind, watermark_before, watermark_after,
    changed_at)
VALUES (%(resource)s, %(sync_id)s, 'advance', %(watermark)s, %(new_watermark)s, %(ended)s)
"""


def _sqlite_sql(statement: str) -> str:
    """The same statement with sqlite3's named placeholders."""
    return re.sub(r"%\((\w+)\)s", r":\1", statement)


class HandWritten:
    """The minimal hand-written tracking: two guarded transactions on one DB-API connection."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        if dialect == "sqlite":
            self.statements = [
                _sqlite_sql(s)
                for s in (START_STATE, START_HISTORY, FINISH_HISTORY, FINISH_STATE, FINISH_AUDIT)
            ]
        else:
            self.statements = [
                START_STATE,
                START_HISTORY,
                FINISH_HISTORY,
                FINISH_STATE,
                FINISH_AUDIT,
            ]

    def _time(self, value: dt.datetime | None) -> Any:
        # The package stores SQLite timestamps as naive UTC text in SQLAlchemy's format.
        if value is None or self.dialect != "sqlite":
            return value
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")

    def _json(self, value: Any) -> Any:
        if value is None:
            return None
        return json.dumps(value) if self.dialect == "sqlite" else psycopg2.extras.Json(value)

    def _watermark(self, stored: Any) -> dt.datetime | None:
        if stored is None or isinstance(stored, dt.datetime):
            return stored
        return dt.datetime.fromisoformat(stored).replace(tzinfo=dt.timezone.utc)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        cur = self.conn.cursor()
        if self.dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()
        cur.close()

    def sync(self, resource: str, source: str, target: str, counts: dict[str, int]) -> None:
        """One successful sync of ``resource``: start, then finish with ``counts``."""
        start_state, start_history, finish_history, finish_state, finish_audit = self.statements
        sync_id = str(uuid.uuid4())
        started = dt.datetime.now(dt.timezone.utc)
        params: dict[str, Any] = {
            "resource": resource,
            "source": source,
            "target": target,
            "sync_id": sync_id,
            "started": self._time(started),
        }
        with self._transaction() as cur:
            cur.execute(start_state, params)
            row = cur.fetchone()
            if row is None:
                raise RuntimeError(f"{resource!r} is already running")
            watermark = self._watermark(row[0])
            cur.execute(
                start_history,
                params | {"watermark": self._time(watermark), "cursor": self._json(row[1])},
            )
        ended = max(dt.datetime.now(dt.timezone.utc), started)
        new_watermark = watermark if watermark is not None and watermark > started else started
        params |= counts | {
            "ended": self._time(ended),
            "duration": max(0, round((ended - started).total_seconds() * 1000)),
            "new_watermark": self._time(new_watermark),
            "watermark": self._time(watermark),
        }
        with self._transaction() as cur:
            cur.execute(finish_history, params)
            if cur.fetchone() is None:
                raise RuntimeError(f"sync {sync_id} is not running")
            cur.execute(finish_state, params)
            if cur.fetchone() is None:
                raise RuntimeError(f"sync_state of {resource!r} moved on")
            if new_watermark != watermark:
                cur.execute(finish_audit, params)


def tracked_sync(tracker: SyncTracker) -> Callable[[str, str, str, dict[str, int]], None]:
    """One successful sync through the package: ``track`` + ``record``."""

    def sync(resource: str, source: str, target: str, counts: dict[str, int]) -> None:
        with tracker.track(
            None, resource=resource, source_system=source, target_system=target
        ) as run:
            run.record(**counts)

    return sync


class Setup:
    """Both sides on one database: a tracker, a hand-written connection, and the cleanup."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = uuid.uuid4().hex[:8]
        self.cleanups: list[Callable[[], None]] = []
        self.tracked_store: SyncStore | None = None
        self.tracker: SyncTracker
        self.hand: HandWritten
        self.engine_label: str

    def open(self) -> None:
        if self.args.sqlite:
            self._open_sqlite()
        else:
            self._open_postgres()
        # First use migrates the tracked side; keep it out of the measurements.
        self.tracked_store = self.tracker.store

    def _open_postgres(self) -> None:
        url = self.args.database_url
        tracked_schema, hand_schema = f"bench_tracked_{self.tag}", f"bench_hand_{self.tag}"
        self.tracker = SyncTracker(database_url=url, schema_name=tracked_schema)
        self.cleanups.append(lambda: self._drop_schemas(url, tracked_schema, hand_schema))
        # The package's own migration builds the hand-written side's tables.
        SyncStore.from_url(url, schema=hand_schema).dispose()
        dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg2.connect(dsn, options=f"-csearch_path={hand_schema}")
        self.cleanups.insert(0, conn.close)
        self.hand = HandWritten(conn, "postgresql")
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.rollback()
        self.engine_label = f"PostgreSQL {version} at {redact(url)}"

    def _open_sqlite(self) -> None:
        folder = tempfile.TemporaryDirectory(prefix="bench_tracking_")
        self.cleanups.append(folder.cleanup)
        tracked_db, hand_db = Path(folder.name) / "tracked.db", Path(folder.name) / "hand.db"
        self.tracker = SyncTracker(database_url=f"sqlite:///{tracked_db}")
        SyncStore.from_url(f"sqlite:///{hand_db}").dispose()
        conn = sqlite3.connect(hand_db, timeout=30, isolation_level=None)
        # The same connection settings as the package's SQLite engine.
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=30000",
            "synchronous=NORMAL",
            "foreign_keys=ON",
        ):
            conn.execute(f"PRAGMA {pragma}")
        self.cleanups.insert(0, conn.close)
        self.hand = HandWritten(conn, "sqlite")
        self.engine_label = f"SQLite {sqlite3.sqlite_version} (temporary files, WAL)"

    @staticmethod
    def _drop_schemas(url: str, *schemas: str) -> None:
        parsed = sa.make_url(url).set(drivername="postgresql+psycopg2")
        engine = sa.create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()

    def close(self) -> None:
        if self.tracked_store is not None:
            self.tracked_store.dispose()
        for cleanup in self.cleanups:
            try:
                cleanup()
            except Exception as e:  # keep cleaning up; the run's own error matters more
                print(f"cleanup failed: {type(e).__name__}: {e}", file=sys.stderr)

    def check(self, expected: int) -> str:
        """Both sides must hold the same facts: ``expected`` successes, one state per resource."""
        sql = (
            "SELECT (SELECT count(*) FROM sync_history WHERE sync_status = 'success'),"
            " (SELECT count(*) FROM sync_state WHERE last_sync_status = 'success'),"
            " (SELECT sum(records_processed) FROM sync_history)"
        )
        assert self.tracked_store is not None
        with self.tracked_store.engine.connect() as conn:
            tracked = tuple(conn.execute(sa.text(sql)).one())
        cur = self.hand.conn.cursor()
        cur.execute(sql)
        hand = tuple(cur.fetchone())
        self.hand.conn.rollback()
        wanted = (expected, min(expected, self.args.resources), expected * COUNTS["processed"])
        if tracked != wanted or hand != wanted:
            raise SystemExit(f"check failed: tracked {tracked}, hand-written {hand}, want {wanted}")
        return f"{wanted[0]} successful syncs and {wanted[1]} sync_state rows on each side"


def measure(args: argparse.Namespace, setup: Setup) -> dict[str, tuple[list[float], float]]:
    """Run warm-up then measured rounds, each side once per round in random order.

    Returns, per side, the wall-clock milliseconds of every measured sync and the mean CPU
    milliseconds this process spent per sync (the driver's and the package's Python work,
    without the time spent waiting for the database).
    """
    sides = {"tracked": tracked_sync(setup.tracker), "hand-written": setup.hand.sync}
    resources = [f"bench/resource_{i:03d}" for i in range(args.resources)]
    rng = random.Random(args.seed)
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu = dict.fromkeys(sides, 0.0)
    for i in range(args.warmup + args.iterations):
        resource = resources[i % len(resources)]
        order = list(sides)
        rng.shuffle(order)
        for name in order:
            cpu_begin, begin = time.process_time(), time.perf_counter()
            sides[name](resource, "vantage", "warehouse", COUNTS)
            elapsed, cpu_elapsed = time.perf_counter() - begin, time.process_time() - cpu_begin
            if i >= args.warmup:
                wall[name].append(elapsed * 1000)
                cpu[name] += cpu_elapsed * 1000
    return {name: (wall[name], cpu[name] / args.iterations) for name in sides}


def report(
    args: argparse.Namespace, setup: Setup, times: dict[str, tuple[list[float], float]]
) -> None:
    print(f"Tracking overhead on {setup.engine_label}")
    print(
        f"{args.iterations} measured syncs per side after {args.warmup} warm-up, "
        f"{args.resources} resources, order randomized per round (seed {args.seed})"
    )
    print()
    print(f"{'side':<14}{'median ms':>11}{'p95 ms':>10}{'mean ms':>10}{'CPU ms/sync':>13}")
    medians = {}
    for name, (values, cpu) in times.items():
        medians[name] = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[-1]
        mean = statistics.fmean(values)
        print(f"{name:<14}{medians[name]:>11.3f}{p95:>10.3f}{mean:>10.3f}{cpu:>13.3f}")
    ratio = medians["tracked"] / medians["hand-written"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print()
    print(f"ratio of medians (tracked / hand-written): {ratio:.2f}x")
    print(f"target <= {TARGET_RATIO}x: {verdict}")


def profile(args: argparse.Namespace, setup: Setup) -> None:
    """Profile the tracked side alone (after the comparison) and print the hottest calls."""
    sync = tracked_sync(setup.tracker)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(args.iterations):
        sync(f"bench/resource_{i % args.resources:03d}", "vantage", "warehouse", COUNTS)
    profiler.disable()
    print()
    print(f"cProfile of {args.iterations} tracked syncs (cumulative time, top {args.profile}):")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL")
    parser.add_argument("--iterations", type=int, default=2000, help="measured syncs per side")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured syncs per side")
    parser.add_argument("--resources", type=int, default=50, help="distinct resources cycled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    parser.add_argument(
        "--sqlite", action="store_true", help="compare on temporary SQLite files instead"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="afterwards, cProfile the tracked side and print its N hottest calls",
    )
    args = parser.parse_args(argv)
    if args.iterations < 20 or args.warmup < 0 or args.resources < 1:
        parser.error("need --iterations >= 20, --warmup >= 0, --resources >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup = Setup(args)
    try:
        setup.open()
        times = measure(args, setup)
        checked = setup.check(args.warmup + args.iterations)
        report(args, setup, times)
        print(f"check: {checked}")
        if args.profile:
            profile(args, setup)
    finally:
        setup.close()


if __name__ == "__main__":
    main()
