"""Operational event log: 100,000 events logged through a sync against a plain bulk INSERT.

Each repetition runs every side once, in random order, on the same PostgreSQL database:

- logged: ``sync.log_event(...)`` for each event inside one sync (validation, buffering, a
  multi-row INSERT per 1,000 events, one transaction each, the rest flushed at the end);
- typed: the same number of events through the typed helpers (``log_dedup_conflict``,
  ``log_cast_error``, ``log_data_quality_error``), for information;
- plain: the same rows (the logged side's categories, messages, keys and details) written with
  psycopg2's ``execute_values`` (pages of 1,000 rows, one transaction), JSON encoding included.

Every side writes into its own schema created by the package's migration (same table, CHECK
constraints and indexes), emptied before each repetition. Reported: median seconds per side over
the repetitions and the ratio of medians (target: logged at most 3x plain).

``--variants`` instead compares two ways of writing a batch at the storage level, on PostgreSQL
and on a temporary SQLite file: the prebuilt INSERT executed with a list of parameter sets (what
operation_store.py does) against ``insert().values([...])`` built per batch.

Usage::

    python bench/bench_operations.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/bench_operations.py --variants
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import sqlalchemy as sa

from sync_observability import SyncOutcome, SyncRun, SyncStore, SyncTracker
from sync_observability.metrics import RunMetricsMixin
from sync_observability.operations import OperationLogMixin
from sync_observability.storage import operation_store
from sync_observability.storage.operation_store import PendingEvent
from sync_observability.storage.schema import operation_log

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 3.0
RESOURCE = "vendor/prices"
CATEGORIES = ("dedup_conflict", "cast_error", "data_quality_error")
PLAIN_INSERT = """
INSERT INTO operation_log (category, resource, sync_id, entity_key, event_time, message,
    details, log_time) VALUES %s
"""

Event = tuple[str, str, str, dict[str, Any]]  # category, entity key, message, details


def make_events(n: int) -> list[Event]:
    """Events shaped like seed 003's: a key, a short message, a small details object."""
    events = []
    for i in range(n):
        key = f"SYM{i % 500:04d}|2024-03-01T{i % 24:02d}:00:00Z"
        category = CATEGORIES[i % len(CATEGORIES)]
        if category == "dedup_conflict":
            details: dict[str, Any] = {
                "existing": {"close": 101.25, "volume": 1200},
                "incoming": {"close": 101.5, "volume": 1200},
                "resolution": "kept_existing",
            }
        elif category == "cast_error":
            details = {"column_name": "volume", "raw_value": f"{i}x", "target_type": "bigint"}
        else:
            details = {"error_type": "fractional_volume", "detail": f"volume {i}.5"}
        events.append((category, key, f"{category} on {key}", details))
    return events


class _Run(OperationLogMixin, RunMetricsMixin):
    """The mixins' host when SyncRun does not carry them (yet): what SyncRun provides."""

    def __init__(self, store: SyncStore, sync_id: str) -> None:
        self._store = store
        self.sync_id = sync_id
        self.resource = RESOURCE
        self._init_operation_log()
        self._init_run_metrics()


def log_through_sync(store: SyncStore, events: list[Event], *, typed: bool) -> None:
    """One sync that logs every event, then ends (flushing the rest)."""
    if hasattr(SyncRun, "log_event"):
        tracker = SyncTracker(database_url=str(store.engine.url), schema_name=store.schema)
        tracker._store = store
        with tracker.track(None, resource=RESOURCE) as sync:
            _log_all(sync, events, typed=typed)
        return
    started = dt.datetime.now(dt.timezone.utc)
    record = store.start_sync(sync_id=str(uuid.uuid4()), resource=RESOURCE, started_at=started)
    run = _Run(store, record.sync_id)
    _log_all(run, events, typed=typed)
    run._flush_operation_log()
    ended = dt.datetime.now(dt.timezone.utc)
    outcome = SyncOutcome(status="success", ended_at=ended, watermark_after=started)
    store.finish_sync(sync_id=run.sync_id, resource=RESOURCE, started_at=started, outcome=outcome)


def _log_all(sync: Any, events: list[Event], *, typed: bool) -> None:
    if not typed:
        for category, key, message, details in events:
            sync.log_event(category, message, entity_key=key, details=details)
        return
    for category, key, _message, d in events:
        if category == "dedup_conflict":
            sync.log_dedup_conflict(key, d["existing"], d["incoming"], d["resolution"])
        elif category == "cast_error":
            sync.log_cast_error(d["column_name"], d["raw_value"], d["target_type"], "invalid")
        else:
            sync.log_data_quality_error(d["error_type"], d["detail"], entity_key=key)


def plain_insert(dsn: str, schema: str, events: list[Event]) -> None:
    """The same rows with execute_values, the way one would write them by hand."""
    sync_id = str(uuid.uuid4())
    conn = psycopg2.connect(dsn, options=f"-csearch_path={schema}")
    try:
        with conn, conn.cursor() as cursor:
            now = dt.datetime.now(dt.timezone.utc)
            rows = [
                (category, RESOURCE, sync_id, key, now, message, json.dumps(details), now)
                for category, key, message, details in events
            ]
            psycopg2.extras.execute_values(cursor, PLAIN_INSERT, rows, page_size=1000)
    finally:
        conn.close()


def _count_and_empty(store: SyncStore) -> int:
    with store.engine.begin() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM operation_log")).scalar_one()
        if store.dialect == "postgresql":
            conn.execute(sa.text("TRUNCATE operation_log"))
        else:
            conn.execute(sa.text("DELETE FROM operation_log"))
    return n


def compare(args: argparse.Namespace) -> None:
    events = make_events(args.events)
    schemas = {
        side: f"bench_ops_{side}_{uuid.uuid4().hex[:6]}" for side in ("logged", "typed", "plain")
    }
    stores = {side: SyncStore.from_url(args.database_url, schema=s) for side, s in schemas.items()}
    dsn = (
        stores["plain"]
        .engine.url.set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    sides: dict[str, Callable[[], None]] = {
        "logged": lambda: log_through_sync(stores["logged"], events, typed=False),
        "typed": lambda: log_through_sync(stores["typed"], events, typed=True),
        "plain": lambda: plain_insert(dsn, schemas["plain"], events),
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    rng = random.Random(args.seed)
    try:
        for rep in range(args.warmup + args.repeat):
            order = list(sides)
            rng.shuffle(order)
            for side in order:
                start, cpu_start = time.perf_counter(), time.process_time()
                sides[side]()
                elapsed = time.perf_counter() - start
                cpu_used = time.process_time() - cpu_start
                written = _count_and_empty(stores[side])
                if written != len(events):
                    raise SystemExit(f"{side} wrote {written} rows, not {len(events)}")
                if rep >= args.warmup:
                    times[side].append(elapsed)
                    cpu[side].append(cpu_used)
    finally:
        for store in stores.values():
            store.dispose()
        admin = sa.create_engine(
            sa.make_url(args.database_url).set(drivername="postgresql+psycopg2"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            for schema in schemas.values():
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    wired = "SyncTracker.track" if hasattr(SyncRun, "log_event") else "the mixins on a minimal host"
    print(f"{args.events:,} operational events, PostgreSQL, through {wired}")
    print(f"repetitions: {args.repeat} (after {args.warmup} warm-up), interleaved in random order")
    print()
    print(f"{'side':<8}{'median s':>10}{'min s':>9}{'max s':>9}{'events/s':>12}{'CPU s':>8}")
    medians = {side: statistics.median(t) for side, t in times.items()}
    for side, t in times.items():
        rate = args.events / medians[side]
        used = statistics.median(cpu[side])
        print(
            f"{side:<8}{medians[side]:>10.3f}{min(t):>9.3f}{max(t):>9.3f}{rate:>12,.0f}{used:>8.3f}"
        )
    print("(CPU s: median CPU time of this Python process, i.e. without the server's work)")
    print()
    for side in ("logged", "typed"):
        ratio = medians[side] / medians["plain"]
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(f"ratio of medians ({side} / plain): {ratio:.2f}x", end="  ")
        print(f"(target <= {TARGET_RATIO}x: {verdict})")


# -- --variants: how to write one batch ------------------------------------------------------------


def _values_list_insert(store: SyncStore, batch: list[PendingEvent], sync_id: str) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        {
            "category": e.category,
            "resource": RESOURCE,
            "sync_id": sync_id,
            "entity_key": e.entity_key,
            "event_time": e.event_time,
            "message": e.message,
            "details": sa.literal(e.details_json, sa.Text()),  # already JSON text
            "log_time": now,
        }
        for e in batch
    ]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(operation_log).values(rows))


def variants(args: argparse.Namespace) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    pending = [
        PendingEvent(
            category=c, entity_key=k, event_time=now, message=m, details_json=json.dumps(d)
        )
        for c, k, m, d in make_events(args.events)
    ]
    batches = [pending[i : i + 1000] for i in range(0, len(pending), 1000)]
    with tempfile.TemporaryDirectory() as folder:
        targets = {
            "postgresql": (args.database_url, f"bench_ops_var_{uuid.uuid4().hex[:6]}"),
            "sqlite": (f"sqlite:///{Path(folder) / 'ops.db'}", "unused"),
        }
        for name, (url, schema) in targets.items():
            store = SyncStore.from_url(url, schema=schema)

            def executemany(store: SyncStore = store) -> None:
                sync_id, written = str(uuid.uuid4()), 0
                for batch in batches:
                    operation_store.insert_operations(
                        store,
                        batch,
                        resource=RESOURCE,
                        sync_id=sync_id,
                        written_before=written,
                        log_time=now,
                    )
                    written += len(batch)

            def values_list(store: SyncStore = store) -> None:
                sync_id = str(uuid.uuid4())
                for batch in batches:
                    _values_list_insert(store, batch, sync_id)

            ways = {"executemany": executemany, "values(list)": values_list}
            times: dict[str, list[float]] = {way: [] for way in ways}
            rng = random.Random(args.seed)
            for rep in range(args.warmup + args.repeat):
                order = list(ways)
                rng.shuffle(order)
                for way in order:
                    start = time.perf_counter()
                    ways[way]()
                    elapsed = time.perf_counter() - start
                    assert _count_and_empty(store) == len(pending)
                    if rep >= args.warmup:
                        times[way].append(elapsed)
            for way, t in times.items():
                print(f"{name:<11}{way:<14}median {statistics.median(t):.3f} s over {len(t)}")
            if name == "postgresql":
                with store.engine.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            store.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL")
    parser.add_argument("--events", type=int, default=100_000, help="events per side and run")
    parser.add_argument("--repeat", type=int, default=5, help="measured repetitions")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured repetitions first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-repetition order")
    parser.add_argument(
        "--variants", action="store_true", help="compare executemany and values(list) batches"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.repeat < 3:
        raise SystemExit("--repeat must be at least 3 (medians over at least three runs)")
    if args.variants:
        variants(args)
    else:
        compare(args)


if __name__ == "__main__":
    sys.exit(main())
