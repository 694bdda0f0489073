"""PostgreSQL monthly partitioning of sync_history (issue 4 item 3): the conversion keeps every
row, future months exist ahead of time, retention archives whole old months by detach (and
falls back to batches for a month holding a row that must stay), and a run killed at any
instant leaves every row in exactly one table, which a rerun completes."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability import SyncStore
from sync_observability.cli import main
from sync_observability.retention import RetentionPolicy, run_retention
from sync_observability.storage import partitioning
from sync_observability.storage.records import SyncOutcome
from sync_observability.storage.schema import sync_history
from sync_observability_tests.conftest import Backend

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
WAIT_S = 60
NO_PURGE = 36500  # rows up to 1,500 days old: keep every archived row to compare
COLUMNS = ", ".join(c.name for c in sync_history.c)


def load(engine: sa.Engine, count: int, *, oldest_days: int, newest_days: int = 0) -> None:
    """``count`` successful syncs of 7 resources, evenly spread between the two ages."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO sync_history (sync_id, resource, sync_type, sync_start_time,
                    sync_end_time, sync_status, records_processed, metadata)
                SELECT gen_random_uuid()::text, 'resource_' || (i % 7), 'incremental', t.start,
                       t.start + interval '1 minute', 'success', i,
                       jsonb_build_object('i', i)
                FROM generate_series(1, :count) AS i,
                     LATERAL (SELECT CAST(:now AS timestamptz) - make_interval(
                         secs => (:newest + (:oldest - :newest) * (i::float8 / :count)) * 86400
                     ) AS start) AS t
                """
            ),
            {"count": count, "now": NOW, "oldest": oldest_days, "newest": newest_days},
        )


def checksum(engine: sa.Engine, table: str = "sync_history") -> tuple[int, str]:
    """Row count and an md5 of every row's text, in sync_id order."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.sync_id), ''))"
                f" FROM (SELECT {COLUMNS} FROM {table}) t"
            )
        ).one()
    return row[0], row[1]


def ids(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT sync_id FROM {table}")).scalars())


def names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in partitioning.partitions(conn)]


def finished_sync(store: SyncStore, resource: str, started: dt.datetime) -> str:
    sync_id = str(uuid.uuid4())
    store.start_sync(sync_id=sync_id, resource=resource, started_at=started)
    outcome = SyncOutcome(status="success", ended_at=started + dt.timedelta(minutes=1))
    store.finish_sync(sync_id=sync_id, resource=resource, started_at=started, outcome=outcome)
    return sync_id


def test_enable_keeps_every_row_and_is_safe_to_rerun(backend: Backend, store: SyncStore) -> None:
    engine = backend.engine()
    load(engine, 3000, oldest_days=400)
    finished_sync(store, "tracked", NOW - 3 * DAY)
    before = checksum(engine)
    assert before[0] == 3001

    result = partitioning.enable_partitioning(store, now=NOW, months_ahead=3)
    assert result.converted and result.rows == 3001
    assert checksum(engine) == before
    months = names(engine)
    assert months[0] == partitioning.partition_for(NOW - 400 * DAY).name
    assert months[-1] == "sync_history_p202609"  # June plus three months ahead
    assert len(months) == len(set(months)) == 17  # May 2025 to September 2026, none missing
    with engine.connect() as conn:
        assert partitioning.is_partitioned(conn)
        indexes = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'sync_history'")
            ).scalars()
        )
    assert {index.name for index in sync_history.indexes} | {"pk_sync_history"} <= indexes

    again = partitioning.enable_partitioning(store, now=NOW, months_ahead=3)
    assert not again.converted
    assert checksum(engine) == before

    # The tracking path on the partitioned table, and a replayed start is still a no-op.
    sync_id = str(uuid.uuid4())
    for _ in range(2):
        store.start_sync(sync_id=sync_id, resource="replayed", started_at=NOW)
    assert ids(engine, "sync_history") >= {sync_id}
    with engine.connect() as conn:
        copies = conn.execute(
            sa.text("SELECT count(*) FROM sync_history WHERE sync_id = :i"), {"i": sync_id}
        ).scalar_one()
    assert copies == 1
    engine.dispose()


def test_the_cli_enables_and_reports_partitioning(backend: Backend, store: SyncStore) -> None:
    engine = backend.engine()
    load(engine, 100, oldest_days=60)
    args = ["--database-url", backend.url, "--schema", backend.schema, "--json"]
    runner = CliRunner()
    status = runner.invoke(main, ["partition", "status", *args], env={"COLUMNS": "200"})
    assert status.exit_code == 0 and '"partitioned": false' in status.output
    enabled = runner.invoke(main, ["partition", "enable", *args], env={"COLUMNS": "200"})
    assert enabled.exit_code == 0, enabled.output
    assert '"converted": true' in enabled.output and '"rows": 100' in enabled.output
    again = runner.invoke(main, ["partition", "enable", *args], env={"COLUMNS": "200"})
    assert '"converted": false' in again.output
    status = runner.invoke(main, ["partition", "status", *args], env={"COLUMNS": "200"})
    assert '"partitioned": true' in status.output
    engine.dispose()


def test_future_partitions_are_created_ahead_and_take_their_rows_from_the_default(
    backend: Backend, store: SyncStore
) -> None:
    engine = backend.engine()
    partitioning.enable_partitioning(store, now=NOW, months_ahead=1)
    assert names(engine) == ["sync_history_p202606", "sync_history_p202607"]
    # A start far ahead of the partitions lands in the default partition, never refused.
    ahead = finished_sync(store, "clock_skew", NOW + 100 * DAY)
    with engine.connect() as conn:
        where = conn.execute(
            sa.text("SELECT tableoid::regclass::text FROM sync_history WHERE sync_id = :i"),
            {"i": ahead},
        ).scalar_one()
    assert where.endswith("sync_history_default")

    created = partitioning.ensure_partitions(store, now=NOW + 95 * DAY, months_ahead=2)
    assert created == ["sync_history_p202609", "sync_history_p202610", "sync_history_p202611"]
    assert partitioning.ensure_partitions(store, now=NOW + 95 * DAY, months_ahead=2) == []
    with engine.connect() as conn:
        where = conn.execute(
            sa.text("SELECT tableoid::regclass::text FROM sync_history WHERE sync_id = :i"),
            {"i": ahead},
        ).scalar_one()
    assert where.endswith("sync_history_p202609")
    assert ids(engine, "sync_history_default") == set()
    # A retention run creates the months ahead of its own now.
    run_retention(store, RetentionPolicy(), now=NOW + 200 * DAY)
    assert "sync_history_p202704" in names(engine)
    engine.dispose()


def test_old_months_are_archived_by_detach_and_the_rest_by_batches(
    backend: Backend, store: SyncStore
) -> None:
    engine = backend.engine()
    load(engine, 2000, oldest_days=300)
    # A running sync in an old month: that month must stay attached and go by batches.
    running = str(uuid.uuid4())
    store.start_sync(sync_id=running, resource="stuck", started_at=NOW - 200 * DAY)
    original = checksum(engine)
    partitioning.enable_partitioning(store, now=NOW, months_ahead=2)
    cutoff = NOW - 90 * DAY
    with engine.connect() as conn:
        to_archive = set(
            conn.execute(
                sa.text(
                    "SELECT sync_id FROM sync_history WHERE sync_start_time < :c "
                    "AND sync_status <> 'running'"
                ),
                {"c": cutoff},
            ).scalars()
        )
    whole = [
        p.name
        for p in partitioning.partitions(engine.connect())
        if p.end <= cutoff and p.name != partitioning.partition_for(NOW - 200 * DAY).name
    ]
    assert len(whole) >= 5

    result = run_retention(store, RetentionPolicy(batch_size=50), now=NOW)
    [step] = [s for s in result.steps if s.action == "archive"]
    assert step.rows == len(to_archive)
    assert step.partitions == len(whole)
    assert f"({len(whole)} whole months by detach)" in result.message
    assert step.batches > 0  # the month with the running sync and the one across the cutoff
    assert ids(engine, "sync_history_archive") == to_archive
    left = names(engine)
    assert not set(whole) & set(left)
    assert partitioning.partition_for(NOW - 200 * DAY).name in left
    assert ids(engine, partitioning.partition_for(NOW - 200 * DAY).name) == {running}
    # Every row is in exactly one of the two tables, unchanged.
    with engine.connect() as conn:
        both = conn.execute(
            sa.text(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.sync_id), ''))"
                f" FROM (SELECT {COLUMNS} FROM sync_history UNION ALL "
                f"SELECT {COLUMNS} FROM sync_history_archive) t"
            )
        ).one()
    assert tuple(both) == original
    again = run_retention(store, RetentionPolicy(batch_size=50), now=NOW)
    assert again.counts["sync_history.archived"] == 0
    engine.dispose()


def _archive_in_child(url: str, schema: str, now: dt.datetime) -> None:
    """Spawned child: archive slowly enough that the parent can kill it mid-run."""
    store = SyncStore.from_url(url, schema=schema)
    run_retention(
        store,
        RetentionPolicy(batch_size=20, purge_after_days=NO_PURGE),
        now=now,
        progress=lambda step, done, total: time.sleep(0.01),
    )


@pytest.mark.slow
def test_sigkill_during_detach_archival_loses_and_duplicates_nothing(
    backend: Backend, store: SyncStore
) -> None:
    engine = backend.engine()
    load(engine, 20_000, oldest_days=1500)
    partitioning.enable_partitioning(store, now=NOW, months_ahead=1)
    original = ids(engine, "sync_history")
    child = multiprocessing.get_context("spawn").Process(
        target=_archive_in_child, args=(backend.url, backend.schema, NOW)
    )
    child.start()
    deadline = time.monotonic() + WAIT_S
    while len(ids(engine, "sync_history_archive")) < 3_000:
        assert child.is_alive(), "the child ended before it could be killed"
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=WAIT_S)
    assert child.exitcode == -signal.SIGKILL

    def where() -> list[set[str]]:
        return [ids(engine, "sync_history"), ids(engine, "sync_history_archive")]

    tables = where()
    assert sum(len(t) for t in tables) == len(original)  # disjoint ...
    assert set().union(*tables) == set(original)  # ... and nothing lost
    assert len(tables[1]) < 19_000  # really killed mid-run

    deadline = time.monotonic() + WAIT_S
    policy = RetentionPolicy(purge_after_days=NO_PURGE)
    while (rerun := run_retention(store, policy, now=NOW)).skipped:
        assert time.monotonic() < deadline, "the killed run's lock was never released"
        time.sleep(0.05)
    tables = where()
    assert not tables[0] & tables[1]
    assert tables[0] | tables[1] == set(original)
    with engine.connect() as conn:
        old = conn.execute(
            sa.text("SELECT count(*) FROM sync_history WHERE sync_start_time < :c"),
            {"c": NOW - 90 * DAY},
        ).scalar_one()
    assert old == 0 and rerun.counts["sync_history.archived"] > 0
    engine.dispose()


def test_two_conversions_at_once_convert_once_and_syncs_carry_on(
    backend: Backend, store: SyncStore
) -> None:
    engine = backend.engine()
    load(engine, 2000, oldest_days=120)
    before = checksum(engine)
    results: list[Any] = []

    def convert() -> None:
        other = backend.store()
        try:
            results.append(partitioning.enable_partitioning(other, now=NOW))
        finally:
            other.dispose()

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    tracked = finished_sync(store, "during", NOW - DAY)  # waits for the lock, then lands
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(r.converted for r in results) == [False, True]
    count, _ = checksum(engine)
    assert count == before[0] + 1 and tracked in ids(engine, "sync_history")
    engine.dispose()


def test_a_month_whose_detach_cannot_get_the_lock_goes_by_batches(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store(max_retries=0)
    engine = backend.engine()
    load(engine, 300, oldest_days=200)
    partitioning.enable_partitioning(store, now=NOW)
    monkeypatch.setattr(partitioning, "LOCK_TIMEOUT", "50ms")
    with engine.connect() as reader:
        reader.execute(sa.text("BEGIN"))
        reader.execute(sa.text("SELECT count(*) FROM sync_history")).scalar_one()  # holds a lock
        result = run_retention(store, RetentionPolicy(purge_after_days=NO_PURGE), now=NOW)
        reader.execute(sa.text("ROLLBACK"))
    [step] = [s for s in result.steps if s.action == "archive"]
    assert step.partitions == 0 and step.rows > 0 and step.batches > 0
    with engine.connect() as conn:
        old = conn.execute(
            sa.text("SELECT count(*) FROM sync_history WHERE sync_start_time < :c"),
            {"c": NOW - 90 * DAY},
        ).scalar_one()
    assert old == 0
    store.dispose()
    engine.dispose()
