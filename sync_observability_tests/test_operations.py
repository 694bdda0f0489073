"""operation_log: typed helpers, validation, batching and replay safety, on SQLite and PostgreSQL.

Most tests drive a real ``SyncRun`` (``start_host``) on a sync started in the store, outside
``tracker.track``, so that they choose when its events are flushed; the tests that need the
sync's end go through ``tracker.track``, which flushes the events and records it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from sync_observability import (
    ConstraintViolationError,
    DatabaseUnavailableError,
    InvalidInputError,
    SyncRun,
    SyncStore,
    SyncTracker,
)
from sync_observability.storage.operation_store import (
    count_operations,
    insert_operations,
    list_operations,
)
from sync_observability.storage.schema import OPERATION_CATEGORIES, operation_log
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def start_host(
    store: SyncStore, resource: str = "vendor/prices", started_at: dt.datetime = T0
) -> SyncRun:
    """A real SyncRun on a sync started in ``store``, outside ``track``: its events wait for a
    full batch or ``_flush_operation_log``, and its end is not recorded."""
    record = store.start_sync(sync_id=str(uuid.uuid4()), resource=resource, started_at=started_at)
    return SyncRun(record, store=store)


@pytest.fixture
def host(store: SyncStore) -> SyncRun:
    return start_host(store)


def rows(store: SyncStore, **filters: Any) -> list[Any]:
    return list_operations(store, limit=None, **filters)


# -- what each helper writes ---------------------------------------------------------------------


def test_each_typed_helper_writes_its_category_and_fields(store: SyncStore, host: SyncRun) -> None:
    at = T0 + dt.timedelta(minutes=5)
    host.log_data_quality_error(
        "fractional_volume", "volume 10.5 is not whole", entity_key="AAPL|2024-03-01", rule="v1"
    )
    host.log_dedup_conflict(
        "AAPL|2024-03-01", {"close": 1.0}, {"close": 1.5}, "kept_existing", event_time=at
    )
    host.log_authority_conflict("MSFT|2024-03-01", "vendor_a", "vendor_b", "vendor_b")
    host.log_cast_error("volume", "12x", "bigint", "invalid input syntax", entity_key="IBM")
    host.log_cast_error("price", 3.5 + 1j, "numeric", "complex number")
    host.log_upsert_failure("prices", "duplicate key value", entity_key="AAPL")
    host.log_concurrency_issue("prices", "RowExclusiveLock", "lock timeout", pid=4242)
    host.log_event("backup", "nightly dump", details={"file_path": "/backups/x.dump"})
    assert rows(store) == []  # buffered until the batch fills or the sync ends
    host._flush_operation_log()

    written = rows(store, sync_id=host.sync_id)
    assert {(r.resource, r.sync_id) for r in written} == {(host.resource, host.sync_id)}
    by_category: dict[str, list[Any]] = {}
    for r in written:
        by_category.setdefault(r.category, []).append(r)
    assert sorted(by_category) == sorted(
        [
            "data_quality_error",
            "dedup_conflict",
            "authority_conflict",
            "cast_error",
            "upsert_failure",
            "concurrency_issue",
            "backup",
        ]
    )
    dq = by_category["data_quality_error"][0]
    assert (dq.entity_key, dq.details) == (
        "AAPL|2024-03-01",
        {"error_type": "fractional_volume", "detail": "volume 10.5 is not whole", "rule": "v1"},
    )
    assert dq.message == "fractional_volume: volume 10.5 is not whole"
    dedup = by_category["dedup_conflict"][0]
    assert dedup.event_time == at
    assert dedup.details == {
        "existing": {"close": 1.0},
        "incoming": {"close": 1.5},
        "resolution": "kept_existing",
    }
    authority = by_category["authority_conflict"][0]
    assert authority.details == {
        "source_a": "vendor_a",
        "source_b": "vendor_b",
        "preferred_source": "vendor_b",
    }
    casts = sorted(by_category["cast_error"], key=lambda r: r.details["column_name"])
    assert [c.details["raw_value"] for c in casts] == ["(3.5+1j)", "12x"]
    assert casts[1].details == {
        "column_name": "volume",
        "raw_value": "12x",
        "target_type": "bigint",
        "detail": "invalid input syntax",
    }
    assert by_category["concurrency_issue"][0].details["pid"] == 4242
    assert by_category["backup"][0].details == {"file_path": "/backups/x.dump"}
    assert by_category["backup"][0].entity_key is None
    assert all(r.log_time >= r.event_time or r.category == "dedup_conflict" for r in written)
    assert host.operation_counts == count_operations(store, host.sync_id)
    assert host.operation_counts["cast_error"] == 2


@pytest.mark.parametrize("category", OPERATION_CATEGORIES)
def test_every_category_is_accepted_by_the_table(
    store: SyncStore, host: SyncRun, category: str
) -> None:
    host.log_event(category, f"a {category} event", entity_key="k")
    host._flush_operation_log()
    assert [(r.category, r.message) for r in rows(store)] == [(category, f"a {category} event")]


def test_the_table_refuses_an_unknown_category(store: SyncStore, host: SyncRun) -> None:
    # The CHECK constraint backs the Python validation for writers that bypass it.
    statement = sa.insert(operation_log).values(
        category="not_a_category",
        resource="r",
        sync_id=host.sync_id,
        event_time=T0,
        message="m",
    )

    def write(conn: sa.Connection) -> None:
        conn.execute(statement)

    with pytest.raises(ConstraintViolationError, match="ck_operation_log_category"):
        store.db.write(write, "insert a bad category")


def test_the_table_refuses_details_that_are_not_an_object(store: SyncStore, host: SyncRun) -> None:
    statement = sa.insert(operation_log).values(
        category="backup", resource="r", sync_id=host.sync_id, event_time=T0, message="m"
    )

    def write(conn: sa.Connection) -> None:
        conn.execute(statement.values(details=[1, 2]))

    with pytest.raises(ConstraintViolationError, match="details_is_object"):
        store.db.write(write, "insert array details")


# -- validation: the error names the field and the value, and nothing is written ---------------

NAIVE = dt.datetime(2024, 3, 1, 12, 0)


class Unserializable:
    pass


BAD_CALLS: list[tuple[str, Callable[[SyncRun], None], str, Any]] = [
    ("unknown category", lambda h: h.log_event("dedup", "m"), "category", "dedup"),
    ("category not a str", lambda h: h.log_event(["backup"], "m"), "category", ["backup"]),
    ("message not a str", lambda h: h.log_event("backup", 42), "message", 42),
    ("entity key an int", lambda h: h.log_event("backup", "m", entity_key=7), "entity_key", 7),
    ("entity key empty", lambda h: h.log_event("backup", "m", entity_key=""), "entity_key", ""),
    ("details a list", lambda h: h.log_event("backup", "m", details=[1]), "details", [1]),
    (
        "details NaN",
        lambda h: h.log_event("backup", "m", details={"x": float("nan")}),
        "details",
        None,
    ),
    (
        "details object",
        lambda h: h.log_event("backup", "m", details={"x": Unserializable()}),
        "details",
        None,
    ),
    ("details int key", lambda h: h.log_event("backup", "m", details={1: "x"}), None, 1),
    ("naive time", lambda h: h.log_event("backup", "m", event_time=NAIVE), "event_time", NAIVE),
    (
        "time a string",
        lambda h: h.log_event("backup", "m", event_time="2024-03-01"),
        "event_time",
        "2024-03-01",
    ),
    (
        "dedup key None",
        lambda h: h.log_dedup_conflict(None, {}, {}, "kept_existing"),
        "entity_key",
        None,
    ),
    (
        "dedup row a list",
        lambda h: h.log_dedup_conflict("k", [1], {}, "kept_existing"),
        "existing",
        [1],
    ),
    (
        "dedup row with a set",
        lambda h: h.log_dedup_conflict("k", {}, {"v": {1}}, "kept_existing"),
        "incoming",
        None,
    ),
    ("dedup no resolution", lambda h: h.log_dedup_conflict("k", {}, {}, ""), "resolution", ""),
    (
        "authority preferred elsewhere",
        lambda h: h.log_authority_conflict("k", "a", "b", "c"),
        "preferred",
        "c",
    ),
    (
        "authority blank source",
        lambda h: h.log_authority_conflict("k", " ", "b", "b"),
        "source_a",
        " ",
    ),
    ("cast no column", lambda h: h.log_cast_error(None, "x", "int", "d"), "column", None),
    ("cast type int", lambda h: h.log_cast_error("c", "x", 5, "d"), "target_type", 5),
    ("cast detail bytes", lambda h: h.log_cast_error("c", "x", "int", b"d"), "detail", b"d"),
    ("upsert no table", lambda h: h.log_upsert_failure("", "d"), "table_name", ""),
    (
        "concurrency pid str",
        lambda h: h.log_concurrency_issue("t", "lock", "d", pid="12"),
        "pid",
        "12",
    ),
    (
        "concurrency pid negative",
        lambda h: h.log_concurrency_issue("t", "lock", "d", pid=-1),
        "pid",
        -1,
    ),
    (
        "extra shadows a field",
        lambda h: h.log_cast_error("c", "x", "int", "d", column_name="u"),
        None,
        None,
    ),
    (
        "extra unserializable",
        lambda h: h.log_upsert_failure("t", "d", when=T0),
        "when",
        T0,
    ),
    ("dq blank type", lambda h: h.log_data_quality_error("", "d"), "error_type", ""),
]


def test_bad_input_names_field_and_value_and_writes_nothing(
    store: SyncStore, host: SyncRun
) -> None:
    host.log_event("backup", "a good event first")
    for name, call, field, value in BAD_CALLS:
        with pytest.raises(InvalidInputError) as raised:
            call(host)
        if field is not None:
            assert raised.value.field == field, name
            assert f"invalid {field}=" in str(raised.value), name
        if value is not None:
            assert raised.value.value == value, name
        assert host.operation_counts == {"backup": 1}, name
    host._flush_operation_log()
    assert [r.message for r in rows(store)] == ["a good event first"]


def test_events_are_refused_once_the_sync_has_ended(tracker: SyncTracker) -> None:
    with tracker.track(None, resource="vendor/prices") as sync:
        sync.log_event("maintenance", "before the end")
    with pytest.raises(InvalidInputError, match="not running"):
        sync.log_event("maintenance", "after the end")
    assert [r.message for r in rows(tracker.store)] == ["before the end"]
    assert sync.operation_counts == {"maintenance": 1}


# -- batching ------------------------------------------------------------------------------------


@pytest.fixture
def statements(store: SyncStore) -> Iterator[list[str]]:
    """Every statement the store's engine sends to the database (one entry per round trip)."""
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    yield sent
    sa.event.remove(store.engine, "before_cursor_execute", count)


def test_ten_thousand_events_take_ten_inserts(
    store: SyncStore, host: SyncRun, statements: list[str]
) -> None:
    n, batch = 10_000, host.operation_log_batch_size
    assert batch == 1000
    for i in range(n):
        host.log_cast_error("price", f"x{i}", "numeric", "bad", entity_key=f"k{i}")
    host._flush_operation_log()

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == n // batch
    # Per batch: the transaction's time budget (SQLite's busy timeout, PostgreSQL's timeouts
    # and search_path), BEGIN IMMEDIATE on SQLite (PostgreSQL begins implicitly), the INSERT.
    assert len(statements) <= 3 * (n // batch)
    written = rows(store, sync_id=host.sync_id)
    assert len(written) == n
    assert sorted(int(r.entity_key[1:]) for r in written) == list(range(n))
    assert host.operation_counts == {"cast_error": n}


def test_a_full_batch_is_written_without_waiting_for_the_end(
    store: SyncStore, host: SyncRun
) -> None:
    host.operation_log_batch_size = 3
    for i in range(7):
        host.log_event("upsert_failure", f"e{i}")
        assert len(rows(store)) == 3 * ((i + 1) // 3)
    host._flush_operation_log()
    assert [r.message for r in rows(store)] == [f"e{i}" for i in range(7)]
    host._flush_operation_log()  # nothing left: writes nothing more
    assert len(rows(store)) == 7


def test_threads_logging_into_one_sync_lose_nothing(store: SyncStore, host: SyncRun) -> None:
    host.operation_log_batch_size = 50
    threads, per_thread = 4, 500

    def log(t: int) -> None:
        for i in range(per_thread):
            host.log_event("data_import", f"t{t}-{i}", entity_key=f"{t}:{i}")

    workers = [threading.Thread(target=log, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()
    host._flush_operation_log()
    keys = sorted(r.entity_key for r in rows(store))
    assert keys == sorted(f"{t}:{i}" for t in range(threads) for i in range(per_thread))
    assert host.operation_counts == {"data_import": threads * per_thread}


def test_events_of_two_syncs_stay_apart(tracker: SyncTracker) -> None:
    with (
        tracker.track(None, resource="vendor/a") as a,
        tracker.track(None, resource="vendor/b") as b,
    ):
        a.log_event("backup", "a1")
        b.log_event("backup", "b1")
        b.log_event("maintenance", "b2")
    store = tracker.store
    assert [r.message for r in rows(store, sync_id=a.sync_id)] == ["a1"]
    assert [r.message for r in rows(store, resource="vendor/b")] == ["b1", "b2"]
    assert sorted(r.message for r in rows(store, category="backup")) == ["a1", "b1"]
    assert store.get_sync(a.sync_id).metadata["operations"] == {"backup": 1}
    assert store.get_sync(b.sync_id).metadata["operations"] == {"backup": 1, "maintenance": 1}


# -- retries: a batch is written exactly once ----------------------------------------------------


def _driver_error(backend: Backend) -> Exception:
    """The error the driver raises when a connection drops (transient for the store)."""
    if backend.name == "postgresql":
        return psycopg2.OperationalError("server closed the connection unexpectedly")
    import sqlite3

    return sqlite3.OperationalError("database is locked")


def _fail_commits(store: SyncStore, error: Exception, *, commit_first: bool, times: int) -> None:
    """Make the next ``times`` commits fail; with ``commit_first`` after the commit landed.

    ``commit_first`` is a lost acknowledgement: the server committed, the client saw an error.
    """
    left = [times]

    def on_commit(conn: sa.Connection) -> None:
        if left[0] == 0:
            return
        left[0] -= 1
        if commit_first:
            conn.connection.driver_connection.commit()
        raise sa.exc.OperationalError("COMMIT", None, error)

    sa.event.listen(store.engine, "commit", on_commit)


@pytest.mark.parametrize("commit_first", [False, True], ids=["not committed", "ack lost"])
def test_a_retried_batch_is_written_exactly_once(
    backend: Backend, store: SyncStore, host: SyncRun, commit_first: bool
) -> None:
    host.operation_log_batch_size = 4
    for i in range(4):  # the first batch goes in cleanly
        host.log_event("data_import", f"e{i}")
    _fail_commits(store, _driver_error(backend), commit_first=commit_first, times=1)
    for i in range(4, 10):  # the second batch's commit fails once, then it is retried
        host.log_event("data_import", f"e{i}")
    host._flush_operation_log()
    assert [r.message for r in rows(store)] == [f"e{i}" for i in range(10)]


def test_a_batch_that_could_not_be_written_stays_buffered(backend: Backend) -> None:
    store = backend.store(max_retries=0)
    try:
        host = start_host(store)
        host.operation_log_batch_size = 2
        host.log_event("export", "e0")
        _fail_commits(store, _driver_error(backend), commit_first=False, times=1)
        with pytest.raises(DatabaseUnavailableError):
            host.log_event("export", "e1")  # fills the batch; its write fails
        assert rows(store) == []
        host.log_event("export", "e2")  # the next batch write carries the kept events too
        host._flush_operation_log()
        assert [r.message for r in rows(store)] == ["e0", "e1", "e2"]
        assert host.operation_counts == {"export": 3}
    finally:
        store.dispose()


def test_insert_operations_without_events_writes_nothing(
    store: SyncStore, statements: list[str]
) -> None:
    insert_operations(store, [], resource="r", sync_id="s", written_before=0, log_time=T0)
    assert statements == []


# -- end to end through the tracker --------------------------------------------------------------


def test_events_logged_in_a_tracked_sync_land_with_counts_in_metadata(
    tracker: SyncTracker,
) -> None:
    with tracker.track(None, resource="vendor/prices", source_system="vendor_a") as sync:
        sync.record(processed=3)
        sync.log_dedup_conflict("AAPL|2024-03-01", {"close": 1}, {"close": 2}, "replaced")
        sync.log_cast_error("volume", "12x", "bigint", "invalid")
        sync.log_cast_error("volume", "13y", "bigint", "invalid")
    written = rows(tracker.store, sync_id=sync.sync_id)
    assert sorted(r.category for r in written) == ["cast_error", "cast_error", "dedup_conflict"]
    assert {r.resource for r in written} == {"vendor/prices"}
    expected = {"cast_error": 2, "dedup_conflict": 1}
    assert sync.operation_counts == expected
    assert tracker.store.get_sync(sync.sync_id).metadata["operations"] == expected


def test_a_failed_sync_still_writes_its_events(tracker: SyncTracker) -> None:
    with pytest.raises(RuntimeError), tracker.track(None, resource="vendor/prices") as sync:
        sync.log_upsert_failure("prices", "duplicate key")
        raise RuntimeError("boom")
    assert [r.category for r in rows(tracker.store, sync_id=sync.sync_id)] == ["upsert_failure"]
    assert tracker.store.get_sync(sync.sync_id).sync_status == "failed"


def test_manual_operation_outside_dagster(tracker: SyncTracker) -> None:
    # Seed 004's track_operation('Database Maintenance', 'MAINTENANCE') ... complete_operation.
    with tracker.track(None, resource="maintenance/vacuum", sync_type="full") as operation:
        operation.log_event(
            "maintenance", "VACUUM ANALYZE", details={"tables": ["sync_history"], "reindex": True}
        )
    record = tracker.store.get_sync(operation.sync_id)
    assert (record.resource, record.sync_status, record.dagster_run_id) == (
        "maintenance/vacuum",
        "success",
        None,
    )
    (event,) = rows(tracker.store, resource="maintenance/vacuum")
    assert (event.category, event.sync_id) == ("maintenance", operation.sync_id)
    assert json.loads(json.dumps(event.details)) == {"tables": ["sync_history"], "reindex": True}
    assert record.metadata["operations"] == {"maintenance": 1}
