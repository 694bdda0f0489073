"""Watermark integrity (issue 6): guarded advance, audit trail, manual set and rewind, CLI.

Every test runs on SQLite and PostgreSQL (the ``backend`` fixture).
"""

# No `from __future__ import annotations`: the Dagster asset below reads its annotations.

import datetime as dt
import json
import multiprocessing
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability import (
    InvalidInputError,
    SyncAlreadyRunningError,
    SyncOutcome,
    SyncStore,
    SyncTracker,
    WatermarkRewindError,
)
from sync_observability.cli.watermark import watermark
from sync_observability.errors import (
    SyncStateError,
    WatermarkAheadError,
    WatermarkBusyError,
    WatermarkConflictError,
)
from sync_observability.storage.schema import sync_state
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


UTC = dt.timezone.utc
T0 = dt.datetime(2025, 11, 5, 10, 0, tzinfo=UTC)
PROCESS_TIMEOUT_S = 60


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def watermark_columns(backend: Backend) -> list[dict[str, Any]]:
    """Every resource's watermark as stored, read with a separate engine."""
    engine = backend.engine()
    try:
        with engine.connect() as conn:
            query = sa.select(
                sync_state.c.resource,
                sync_state.c.last_sync_time,
                sync_state.c.cursor,
                sync_state.c.watermark_advanced_at,
                sync_state.c.syncs_since_advance,
            ).order_by(sync_state.c.resource)
            return [dict(r) for r in conn.execute(query).mappings()]
    finally:
        engine.dispose()


def sync_to(tracker: SyncTracker, resource: str, value: Any) -> str:
    with tracker.track(resource=resource) as sync:
        sync.advance_watermark(value)
    return sync.sync_id


# -- guarded advance -------------------------------------------------------------------------


def test_a_future_dated_watermark_is_refused_recorded_and_nothing_moves(
    tracker: SyncTracker, backend: Backend
) -> None:
    first = sync_to(tracker, "accounts", now() - dt.timedelta(hours=1))
    before = watermark_columns(backend)
    current = tracker.get_watermark("accounts")
    future = now() + dt.timedelta(days=2)

    with pytest.raises(WatermarkAheadError) as refused, tracker.track(resource="accounts") as sync:
        sync.record(processed=3)
        sync.advance_watermark(future)
    message = str(refused.value)
    assert "'accounts'" in message
    assert current.isoformat() in message
    assert future.isoformat() in message
    assert (refused.value.current, refused.value.proposed) == (current, future)
    assert watermark_columns(backend) == before

    row = tracker.store.get_sync(sync.sync_id)
    assert row.sync_status == "failed"
    assert row.watermark_after is None
    assert row.error_message.startswith("WATERMARK_AHEAD: ")
    assert [e["code"] for e in row.errors] == ["WATERMARK_AHEAD"]
    state = tracker.get_state("accounts")
    assert (state.last_sync_status, state.consecutive_failures) == ("failed", 1)
    changes = tracker.watermark_changes("accounts")
    assert [(c.kind, c.sync_id) for c in changes] == [("refused", sync.sync_id), ("advance", first)]
    assert changes[0].watermark_after == future
    assert changes[0].watermark_before == current
    assert changes[0].reason.startswith("WATERMARK_AHEAD: ")


def test_the_store_refuses_a_future_watermark_at_the_end_too(
    store: SyncStore, backend: Backend
) -> None:
    record = store.start_sync(sync_id=str(uuid.uuid4()), resource="funds", started_at=T0)
    before = watermark_columns(backend)
    with pytest.raises(WatermarkAheadError, match="'funds'"):
        store.finish_sync(
            sync_id=record.sync_id,
            resource="funds",
            started_at=T0,
            outcome=SyncOutcome(
                status="success", ended_at=T0, watermark_after=T0 + dt.timedelta(minutes=6)
            ),
        )
    assert watermark_columns(backend) == before
    assert store.get_sync(record.sync_id).sync_status == "failed"
    assert store.get_state("funds").last_sync_status == "failed"
    # Five minutes of clock skew is allowed, not more.
    ok = store.start_sync(sync_id=str(uuid.uuid4()), resource="funds", started_at=T0)
    store.finish_sync(
        sync_id=ok.sync_id,
        resource="funds",
        started_at=T0,
        outcome=SyncOutcome(
            status="success", ended_at=T0, watermark_after=T0 + dt.timedelta(minutes=5)
        ),
    )
    assert store.get_state("funds").last_sync_time == T0 + dt.timedelta(minutes=5)


def test_max_ahead_is_configurable_per_resource(backend: Backend) -> None:
    tracker = backend.tracker(
        max_watermark_ahead_minutes=1,
        watermark_ahead_overrides={"feeds/*": 120, "feeds/x": 60 * 24 * 400},
    )
    try:
        in_an_hour = now() + dt.timedelta(hours=1)
        sync_to(tracker, "feeds/a", in_an_hour)
        assert tracker.get_watermark("feeds/a") == in_an_hour
        far = now() + dt.timedelta(days=365)
        sync_to(tracker, "feeds/x", far)  # the exact name beats the pattern
        assert tracker.get_watermark("feeds/x") == far
        with pytest.raises(WatermarkAheadError):
            sync_to(tracker, "other", now() + dt.timedelta(minutes=3))
        assert tracker.get_watermark("other") is None
    finally:
        tracker.store.dispose()


def test_a_backwards_watermark_is_refused_and_nothing_moves(
    tracker: SyncTracker, backend: Backend
) -> None:
    sync_to(tracker, "accounts", T0)
    before = watermark_columns(backend)
    older = T0 - dt.timedelta(days=1)
    with pytest.raises(WatermarkRewindError) as refused, tracker.track(resource="accounts") as sync:
        sync.advance_watermark(older)
    assert T0.isoformat() in str(refused.value)
    assert older.isoformat() in str(refused.value)
    assert "'accounts'" in str(refused.value)
    assert watermark_columns(backend) == before
    assert tracker.store.get_sync(sync.sync_id).error_message.startswith("WATERMARK_REWIND: ")

    # The same for a manual change without allow_rewind.
    with pytest.raises(WatermarkRewindError) as manual:
        tracker.set_watermark("accounts", older, reason="oops", changed_by="ana")
    assert "'accounts'" in str(manual.value) and older.isoformat() in str(manual.value)
    assert watermark_columns(backend) == before
    last = tracker.watermark_changes("accounts", limit=1)[0]
    assert (last.kind, last.changed_by, last.sync_id) == ("refused", "ana", None)
    assert "oops" in last.reason and "WATERMARK_REWIND" in last.reason


@pytest.mark.parametrize("what", ["time", "cursor"])
def test_a_watermark_changed_under_a_running_sync_is_never_overwritten(
    tracker: SyncTracker, backend: Backend, what: str
) -> None:
    with tracker.track(resource="cashflows") as first:
        first.advance_watermark(T0)
        first.advance_watermark({"page": 1, "ids": ["a", "ü"]})
    newer_time, newer_cursor = T0 + dt.timedelta(hours=1), {"page": 7, "ids": ["z"]}
    engine = backend.engine()
    try:
        with (
            pytest.raises(WatermarkConflictError) as refused,
            tracker.track(resource="cashflows") as sync,
        ):
            sync.advance_watermark(T0 + dt.timedelta(minutes=30))
            sync.advance_watermark({"page": 2, "ids": ["b"]})
            # Another writer (an older client, an operator's UPDATE) moves it meanwhile.
            change = {"last_sync_time": newer_time} if what == "time" else {"cursor": newer_cursor}
            with engine.begin() as conn:
                conn.execute(sa.update(sync_state).values(change))
    finally:
        engine.dispose()
    state = tracker.get_state("cashflows")
    if what == "time":
        assert (state.last_sync_time, state.cursor) == (newer_time, {"page": 1, "ids": ["a", "ü"]})
        assert newer_time.isoformat() in str(refused.value)
    else:
        assert (state.last_sync_time, state.cursor) == (T0, newer_cursor)
    assert "'cashflows'" in str(refused.value)
    row = tracker.store.get_sync(sync.sync_id)
    assert (row.sync_status, row.watermark_after, row.cursor_after) == ("failed", None, None)
    assert row.errors[-1]["code"] == "WATERMARK_CONFLICT"
    assert state.last_sync_status == "failed"
    assert tracker.watermark_changes("cashflows", limit=1)[0].kind == "refused"
    # The next sync starts from the value that was kept.
    with tracker.track(resource="cashflows") as nxt:
        assert (nxt.watermark, nxt.cursor) == (state.last_sync_time, state.cursor)


def _serialized_sync(
    url: str, schema: str, value: str, goes_first: bool, events: tuple[Any, Any, Any], out: Any
) -> None:
    """Child process: one sync of "shared" advancing to ``value``, in the order ``events`` set.

    The first process starts its sync and keeps it running until the second has met it
    (``SyncAlreadyRunningError``); the second starts again once the first has finished.
    """
    started, met_running, finished = events

    def wait(event: Any, what: str) -> None:
        if not event.wait(timeout=PROCESS_TIMEOUT_S):
            raise TimeoutError(f"the other process never {what}")

    def sync_to_value() -> None:
        try:
            with tracker.track(resource="shared") as sync:
                if goes_first:
                    started.set()
                    wait(met_running, "met the running sync")
                sync.advance_watermark(dt.datetime.fromisoformat(value))
            out.put(("ok", value))
        except WatermarkRewindError:
            out.put(("rewind refused", value))

    try:
        tracker = SyncTracker(database_url=url, schema_name=schema)
        tracker.store  # noqa: B018 - migrate before the race
        if goes_first:
            try:
                sync_to_value()
            finally:
                finished.set()
        else:
            wait(started, "started its sync")
            try:
                with pytest.raises(SyncAlreadyRunningError):
                    tracker.track(resource="shared").__enter__()
            finally:
                met_running.set()
            wait(finished, "finished its sync")
            sync_to_value()
        tracker.store.dispose()
    except BaseException:
        out.put(("error", traceback.format_exc()))
        raise


@pytest.mark.parametrize("first", ["older", "newer"])
def test_two_processes_never_leave_the_older_watermark(backend: Backend, first: str) -> None:
    older, newer = now() - dt.timedelta(hours=2), now() - dt.timedelta(hours=1)
    ctx = multiprocessing.get_context("spawn")
    # The order is explicit: the first starts, the second meets it running, the first
    # finishes, the second starts again.
    events, out = (ctx.Event(), ctx.Event(), ctx.Event()), ctx.Queue()
    values = {"older": older, "newer": newer}
    children = [
        ctx.Process(
            target=_serialized_sync,
            args=(
                backend.url,
                backend.schema,
                values[name].isoformat(),
                name == first,
                events,
                out,
            ),
        )
        for name in ("older", "newer")
    ]
    for child in children:
        child.start()
    results = [out.get(timeout=PROCESS_TIMEOUT_S) for _ in children]
    for child in children:
        child.join(timeout=PROCESS_TIMEOUT_S)
    assert all(r[0] != "error" for r in results), results
    tracker = backend.tracker()
    try:
        assert tracker.get_watermark("shared") == newer
        history = tracker.store.list_history(resource="shared")
        if first == "newer":
            assert sorted(results) == [
                ("ok", newer.isoformat()),
                ("rewind refused", older.isoformat()),
            ]
            assert [r.sync_status for r in history] == ["failed", "success"]
            assert history[0].errors[0]["code"] == "WATERMARK_REWIND"
        else:
            assert sorted(r[0] for r in results) == ["ok", "ok"]
            assert [r.watermark_after for r in history] == [newer, older]
        kinds = [c.kind for c in tracker.watermark_changes("shared")]
        assert kinds == (["refused", "advance"] if first == "newer" else ["advance", "advance"])
    finally:
        tracker.store.dispose()


def test_a_sync_reaped_and_finishing_late_cannot_overwrite_a_newer_watermark(
    tracker: SyncTracker,
) -> None:
    late = tracker.store.start_sync(sync_id=str(uuid.uuid4()), resource="funds", started_at=T0)
    assert tracker.store.reap_sync(late.sync_id, code="ORPHANED", message="gone", now=T0)
    newer = sync_to(tracker, "funds", now() - dt.timedelta(minutes=1))
    kept = tracker.get_watermark("funds")
    with pytest.raises(SyncStateError):
        tracker.store.finish_sync(
            sync_id=late.sync_id,
            resource="funds",
            started_at=T0,
            outcome=SyncOutcome(status="success", ended_at=T0, watermark_after=T0),
        )
    assert tracker.get_watermark("funds") == kept
    assert [c.sync_id for c in tracker.watermark_changes("funds")] == [newer]


# -- audit trail, set and rewind -------------------------------------------------------------


def test_every_move_is_audited_with_its_sync_and_a_still_watermark_is_not(
    tracker: SyncTracker, backend: Backend
) -> None:
    a = sync_to(tracker, "accounts", T0)
    sync_to(tracker, "accounts", T0)  # the same source value again: no change
    with tracker.track(resource="accounts") as b:
        b.advance_watermark(T0)  # the time stays...
        b.advance_watermark(42)  # ...and the cursor moves
    changes = tracker.watermark_changes("accounts")
    assert [(c.kind, c.sync_id) for c in changes] == [("advance", b.sync_id), ("advance", a)]
    assert (changes[0].cursor_before, changes[0].cursor_after) == (None, 42)
    assert (changes[0].watermark_before, changes[0].watermark_after) == (T0, T0)
    assert (changes[1].watermark_before, changes[1].watermark_after) == (None, T0)
    state = tracker.get_state("accounts")
    assert state.syncs_since_advance == 0
    assert state.watermark_advanced_at == changes[0].changed_at


def test_a_rewind_is_audited_and_the_next_sync_starts_from_it(
    tracker: SyncTracker, backend: Backend
) -> None:
    t1, t2, t3 = (T0 + dt.timedelta(hours=h) for h in (1, 2, 3))
    with tracker.track(resource="funds") as s1:
        s1.advance_watermark(t1)
        s1.advance_watermark({"id": 10})
    sync_to(tracker, "funds", t2)
    sync_to(tracker, "funds", t3)

    change = tracker.rewind_to_sync(
        "funds", s1.sync_id, reason="rows after t1 were loaded wrong", changed_by="ana"
    )
    assert (change.kind, change.sync_id, change.changed_by) == ("rewind", None, "ana")
    assert (change.watermark_before, change.watermark_after) == (t3, t1)
    assert change.cursor_after == {"id": 10}
    assert change.reason == "rows after t1 were loaded wrong"
    assert tracker.watermark_changes("funds", limit=1)[0] == change
    state = tracker.get_state("funds")
    assert (state.last_sync_time, state.cursor, state.syncs_since_advance) == (t1, {"id": 10}, 0)

    with tracker.track(resource="funds") as nxt:
        assert (nxt.watermark, nxt.cursor) == (t1, {"id": 10})
        # Refused while the resource is running, and recorded as refused.
        with pytest.raises(WatermarkBusyError, match=nxt.sync_id):
            tracker.rewind_to_sync("funds", s1.sync_id, reason="again", changed_by="bo")
        nxt.advance_watermark(t2)
    assert tracker.get_watermark("funds") == t2
    kinds = [(c.kind, c.changed_by) for c in tracker.watermark_changes("funds", limit=3)]
    assert kinds == [("advance", None), ("refused", "bo"), ("rewind", "ana")]


def test_set_watermark_rules(tracker: SyncTracker, backend: Backend) -> None:
    # A resource that never synced gets a never_run row holding the watermark.
    change = tracker.set_watermark("new", T0, reason="backfill from November", changed_by="ana")
    assert (change.kind, change.watermark_before, change.watermark_after) == ("set", None, T0)
    state = tracker.get_state("new")
    assert (state.last_sync_status, state.last_sync_time) == ("never_run", T0)
    with tracker.track(resource="new") as first:
        assert first.watermark == T0

    forward = tracker.set_watermark("new", {"page": 3}, reason="skip two pages")
    assert (forward.kind, forward.cursor_after) == ("set", {"page": 3})
    assert forward.changed_by  # the OS user by default
    back = tracker.set_watermark("new", T0, reason="re-fetch", allow_rewind=True)
    assert back.kind == "rewind"
    with pytest.raises(WatermarkAheadError):
        tracker.set_watermark("new", now() + dt.timedelta(hours=1), reason="typo")
    for bad, field in (
        (dict(reason=""), "reason"),
        (dict(reason="x", changed_by=""), "changed_by"),
    ):
        with pytest.raises(InvalidInputError) as refused:
            tracker.set_watermark("new", T0, **bad)
        assert refused.value.field == field
    with pytest.raises(InvalidInputError, match="naive"):
        tracker.set_watermark("new", T0.replace(tzinfo=None), reason="x")
    with pytest.raises(InvalidInputError) as not_a_sync:
        tracker.rewind_to_sync("other", first.sync_id, reason="x")
    assert not_a_sync.value.field == "sync_id"
    assert tracker.get_state("new").last_sync_time == T0


def test_the_watermark_cli_shows_sets_and_rewinds(tracker: SyncTracker, backend: Backend) -> None:
    sync_id = sync_to(tracker, "vantage/accounts", T0)
    sync_to(tracker, "vantage/accounts", T0 + dt.timedelta(hours=1))
    db = ["--database-url", backend.url, "--schema", backend.schema]
    runner = CliRunner()

    result = runner.invoke(
        watermark,
        [
            "rewind",
            "vantage/accounts",
            "--to-sync",
            sync_id,
            "--reason",
            "bad load",
            "--by",
            "ana",
            *db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rewind" in result.output
    result = runner.invoke(watermark, ["show", "vantage/accounts", "--json", *db])
    assert result.exit_code == 0, result.output
    [shown] = json.loads(result.output)
    assert shown["last_sync_time"] == T0.isoformat()
    assert [c["kind"] for c in shown["changes"]] == ["rewind", "advance", "advance"]
    assert shown["changes"][0]["changed_by"] == "ana"

    result = runner.invoke(
        watermark,
        ["set", "vantage/accounts", '{"page": 2}', "--cursor", "--reason", "skip", *db],
    )
    assert result.exit_code == 0, result.output
    assert tracker.get_state("vantage/accounts").cursor == {"page": 2}
    result = runner.invoke(
        watermark, ["set", "vantage/accounts", "2020-01-01T00:00:00Z", "--reason", "r", *db]
    )
    assert result.exit_code == 1
    assert "backwards" in result.output and "allow_rewind" in result.output
    result = runner.invoke(watermark, ["show", "vantage/accounts", *db])
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and "vantage/accounts" in result.output
    assert tracker.get_watermark("vantage/accounts") == T0
