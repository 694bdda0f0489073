"""No value given to a sync can block its resource (issue 11, items 4 to 6).

Counts past BIGINT are refused at the call; NUL characters and lone surrogates are replaced and
noted; long text is cut; a flood of errors is counted, not kept; a finish the database refuses
is replaced by a minimal one (RECORD_FAILED); a finish that cannot be written at all is reaped
by the tracker's next sync of the resource. Every database refusal here is real: a CHECK
constraint (PostgreSQL) or a trigger (SQLite), and a write lock held from another connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import (
    DatabaseUnavailableError,
    InvalidInputError,
    StorageError,
    SyncTracker,
)
from sync_observability.storage.records import SyncRecord
from sync_observability.tracking import MAX_ERRORS, TRACEBACK_LIMIT
from sync_observability.validation import MAX_BIGINT, clean_json, clean_text
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
FFFD = "\ufffd"


def last_sync(tracker: SyncTracker, resource: str) -> SyncRecord:
    return tracker.store.list_history(resource=resource, limit=1)[0]


def assert_not_running(tracker: SyncTracker, resource: str, status: str) -> None:
    state = tracker.get_state(resource)
    assert state is not None
    assert (state.last_sync_status, state.current_sync_id is not None) == (status, True)
    assert tracker.store.list_history(status="running", limit=None) == []


# -- pure helpers ---------------------------------------------------------------------------------


def test_clean_text_replaces_nul_and_lone_surrogates_and_marks_the_cut() -> None:
    assert clean_text("plain") == ("plain", False)
    assert clean_text("a\x00b\ud800c\udfff") == (f"a{FFFD}b{FFFD}c{FFFD}", True)
    assert clean_text("é😀") == ("é😀", False)  # a real astral character is one code point
    assert clean_text("x" * 10, 10) == ("x" * 10, False)  # exactly the limit: kept whole
    assert clean_text("x" * 11, 10) == ("[... 11 ch", False)  # no room: the marker only
    cut, replaced = clean_text("a" * 50 + "\x00" + "b" * 50, 40)
    # Cut first, then cleaned: the NUL was in the part cut off.
    assert (cut, replaced) == ("a" * 17 + "[... 84 characters cut]", False)
    head, _ = clean_text("x" * 100_000, 100)
    assert head == "x" * 74 + "[... 99926 characters cut]"
    tail, _ = clean_text("y" * 100_000 + "END", 100, keep_end=True)
    assert tail == "[... 99929 characters cut]" + "y" * 71 + "END"
    assert len(head) == len(tail) == 100


def test_clean_json_walks_keys_values_and_lists() -> None:
    value = {"k\x00": ["\ud83d", ("a", 1, 1.5, None, True)], 3: "ok"}
    assert clean_json(value) == ({f"k{FFFD}": [FFFD, ["a", 1, 1.5, None, True]], 3: "ok"}, True)
    assert clean_json({"a": ["b"]}) == ({"a": ["b"]}, False)


# -- counts ---------------------------------------------------------------------------------------


def test_a_count_past_bigint_is_refused_at_the_call_and_the_counts_stay(
    tracker: SyncTracker,
) -> None:
    with tracker.track(resource="big") as sync:
        sync.record(processed=2**62, created=1)
        with pytest.raises(InvalidInputError) as refused:
            sync.record(created=1, processed=2**62)
        assert refused.value.field == "processed"
        assert refused.value.value == 2**62
        assert "would bring the total to 9223372036854775808" in str(refused.value)
        # Nothing of the refused call was added, not even the valid created=1.
        assert sync.metadata["records_processed"].value == 2**62
        assert sync.metadata["records_created"].value == 1
        sync.record(processed=2**62 - 1)  # exactly the limit is fine
        with pytest.raises(InvalidInputError) as one_more:
            sync.record(processed=1)
        assert one_more.value.field == "processed"
        with pytest.raises(InvalidInputError) as alone:
            sync.record(failed=2**63)
        assert (alone.value.field, alone.value.reason) == (
            "failed",
            f"is beyond the largest count, {MAX_BIGINT}",
        )
    assert sync.status == "success"
    row = last_sync(tracker, "big")
    assert (row.sync_status, row.records_processed, row.records_created) == (
        "success",
        MAX_BIGINT,
        1,
    )
    state = tracker.get_state("big")
    assert state is not None
    assert (state.last_sync_status, state.records_synced) == ("success", MAX_BIGINT)
    assert sync.metadata["records_processed"].value == MAX_BIGINT


# -- text: NUL bytes, lone surrogates, length ---------------------------------------------------


def test_nul_and_lone_surrogates_in_add_error_are_replaced_and_noted(tracker: SyncTracker) -> None:
    with tracker.track(resource="text") as sync:
        sync.add_error("E_NUL", "a\x00b", row={"id": "x\x00", "tags": ["\ud800"]}, n=3)
        sync.add_error("E_OK", "clean", n=4)
        sync.add_error("E_KEY", "key", **{"k\x00": "\udc00v"})
    assert sync.status == "success"
    row = last_sync(tracker, "text")
    assert row.sync_status == "success"
    kept = [{k: v for k, v in e.items() if k != "timestamp"} for e in row.errors]
    assert kept == [
        {
            "code": "E_NUL",
            "message": f"a{FFFD}b",
            "row": {"id": f"x{FFFD}", "tags": [FFFD]},
            "n": 3,
            "sanitized": True,
        },
        {"code": "E_OK", "message": "clean", "n": 4},
        {"code": "E_KEY", "message": "key", f"k{FFFD}": f"{FFFD}v", "sanitized": True},
    ]
    state = tracker.get_state("text")
    assert state is not None
    assert state.errors == row.errors
    assert_not_running(tracker, "text", "success")


def test_nul_and_lone_surrogates_in_the_cursor_are_replaced_and_noted(
    tracker: SyncTracker,
) -> None:
    with tracker.track(resource="cur") as sync:
        sync.advance_watermark({"id": "a\x00b", "page": ["\ud800", 7]})
        sync.advance_watermark({"id": "a\x00c", "page": ["\ud800", 8]})
    assert sync.status == "success"
    state = tracker.get_state("cur")
    assert state is not None
    assert state.cursor == {"id": f"a{FFFD}c", "page": [FFFD, 8]}
    row = last_sync(tracker, "cur")
    assert row.cursor_after == {"id": f"a{FFFD}c", "page": [FFFD, 8]}
    # Noted once, however many cursors were cleaned.
    assert [(e["code"], e["sanitized"]) for e in row.errors] == [("CURSOR_SANITIZED", True)]
    assert_not_running(tracker, "cur", "success")
    # The cleaned cursor is what the next sync starts from and compares against.
    with tracker.track(resource="cur") as again:
        assert again.cursor == {"id": f"a{FFFD}c", "page": [FFFD, 8]}
        again.advance_watermark({"id": f"a{FFFD}d", "page": [FFFD, 9]})
    assert again.status == "success"


def test_nul_and_lone_surrogates_in_the_exception_are_replaced_and_it_is_re_raised_unchanged(
    tracker: SyncTracker,
) -> None:
    error = ValueError("bad\x00 \ud800 end")
    with pytest.raises(ValueError) as raised, tracker.track(resource="exc") as sync:
        sync.record(processed=2)
        raise error
    assert raised.value is error
    assert str(raised.value) == "bad\x00 \ud800 end"
    assert not getattr(raised.value, "__notes__", [])
    assert sync.status == "failed"
    row = last_sync(tracker, "exc")
    assert (row.sync_status, row.records_processed) == ("failed", 2)
    assert row.error_message == f"ValueError: bad{FFFD} {FFFD} end"
    [entry] = row.errors
    assert (entry["code"], entry["message"], entry["sanitized"]) == (
        "ValueError",
        f"bad{FFFD} {FFFD} end",
        True,
    )
    assert entry["traceback"].endswith(f"ValueError: bad{FFFD} {FFFD} end\n")
    assert "\x00" not in entry["traceback"]
    assert_not_running(tracker, "exc", "failed")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_exception_whose_str_fails_is_still_recorded(tracker: SyncTracker) -> None:
    with pytest.raises(_Unprintable), tracker.track(resource="unprintable"):
        raise _Unprintable
    row = last_sync(tracker, "unprintable")
    assert row.sync_status == "failed"
    assert row.error_message == "_Unprintable: <unprintable _Unprintable: RuntimeError>"
    assert_not_running(tracker, "unprintable", "failed")


def test_a_10_mb_message_and_exception_are_cut_to_the_limit(tracker: SyncTracker) -> None:
    big = "x" * 10_000_000
    marker = "[... 9990028 characters cut]"
    assert TRACEBACK_LIMIT == 10_000
    with pytest.raises(RuntimeError) as raised, tracker.track(resource="long") as sync:
        sync.add_error("BIG", big, detail="d" * 10_001)
        raise RuntimeError(big)
    assert str(raised.value) == big  # the user's exception is untouched
    row = last_sync(tracker, "long")
    assert row.sync_status == "failed"
    added, raised_entry = row.errors
    assert added["message"] == "x" * (10_000 - len(marker)) + marker
    assert added["detail"] == "d" * 9_977 + "[... 24 characters cut]"
    assert len(added["detail"]) == 10_000
    assert raised_entry["message"] == added["message"]
    assert row.error_message is not None
    assert len(row.error_message) == 10_000
    assert row.error_message.startswith("RuntimeError: xxx")
    # The traceback keeps its end: the last frame and the (cut) message.
    assert len(raised_entry["traceback"]) == 10_000
    assert raised_entry["traceback"].startswith("[... ")
    assert raised_entry["traceback"].endswith("x" * 100 + "\n")
    assert "sanitized" not in added
    assert_not_running(tracker, "long", "failed")


def test_100k_add_error_calls_keep_the_first_n_and_count_the_rest(tracker: SyncTracker) -> None:
    with tracker.track(resource="flood") as sync:
        for i in range(100_000):
            sync.add_error(f"E{i}", f"error {i}", i=i)
    assert MAX_ERRORS == 100
    assert sync.status == "success"
    row = last_sync(tracker, "flood")
    assert len(row.errors) == 101
    assert [e["code"] for e in row.errors[:100]] == [f"E{i}" for i in range(100)]
    assert row.errors[99]["i"] == 99
    dropped = row.errors[100]
    assert {k: v for k, v in dropped.items() if k != "timestamp"} == {
        "code": "ERRORS_DROPPED",
        "message": "99900 more errors after the first 100 were not kept",
        "count": 99_900,
    }
    state = tracker.get_state("flood")
    assert state is not None
    assert state.errors == row.errors
    assert sync.metadata["error_count"].value == 100_000
    assert_not_running(tracker, "flood", "success")


def test_the_block_s_exception_stays_last_after_dropped_errors(tracker: SyncTracker) -> None:
    with pytest.raises(KeyError), tracker.track(resource="flood") as sync:
        for i in range(MAX_ERRORS + 50):
            sync.add_error("E", str(i))
        raise KeyError("last")
    row = last_sync(tracker, "flood")
    assert [e["code"] for e in row.errors[-3:]] == ["E", "ERRORS_DROPPED", "KeyError"]
    assert row.errors[-2]["count"] == 50
    assert len(row.errors) == MAX_ERRORS + 2
    assert sync.metadata["error_count"].value == MAX_ERRORS + 51


# -- names and cursors refused at the call ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("resource", {"resource": "acc\x00ounts"}),
        ("resource", {"resource": "acc\ud800ounts"}),
        ("source_system", {"resource": "ok", "source_system": "van\x00tage"}),
        ("target_system", {"resource": "ok", "target_system": "\udfffwarehouse"}),
    ],
)
def test_a_nul_or_lone_surrogate_in_a_name_is_refused_naming_the_field(
    tracker: SyncTracker, field: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as refused, tracker.track(**kwargs):
        pytest.fail("the sync must not start")
    assert refused.value.field == field
    assert refused.value.reason == "must not contain a NUL character or a lone surrogate"
    assert tracker.store.list_resources() == []


def test_a_nul_in_an_error_code_is_refused_and_the_sync_goes_on(tracker: SyncTracker) -> None:
    with tracker.track(resource="codes") as sync:
        with pytest.raises(InvalidInputError) as refused:
            sync.add_error("E\x00", "m")
        assert refused.value.field == "code"
    assert sync.status == "success"
    assert last_sync(tracker, "codes").errors == []


def test_a_cursor_int_beyond_64_bits_is_refused_and_the_limit_round_trips(
    tracker: SyncTracker,
) -> None:
    with tracker.track(resource="ints") as sync:
        for bad in (10**40, {"id": [1, 2**63]}, -(2**63) - 1):
            with pytest.raises(InvalidInputError) as refused:
                sync.advance_watermark(bad)
            assert refused.value.field == "cursor"
            assert "beyond a 64-bit integer" in refused.value.reason
        sync.advance_watermark({"max": MAX_BIGINT, "min": -(2**63), "f": 0.5})
    assert sync.status == "success"
    state = tracker.get_state("ints")
    assert state is not None
    assert state.cursor == {"max": 9223372036854775807, "min": -9223372036854775808, "f": 0.5}
    assert isinstance(state.cursor["max"], int)
    # The next success compares against that cursor in SQL (SQLite's json()): still exact.
    with tracker.track(resource="ints") as again:
        assert again.cursor == state.cursor
        again.advance_watermark({"max": MAX_BIGINT, "min": -(2**63), "f": 0.25})
    assert again.status == "success"


# -- a finish the database refuses: the minimal finish ----------------------------------------


def _refuse_seven_processed(backend: Backend) -> None:
    """Make the database refuse, for real, a finish that records 7 rows processed."""
    engine = backend.engine()
    with engine.begin() as conn:
        if backend.name == "postgresql":
            conn.execute(
                sa.text(
                    f'ALTER TABLE "{backend.schema}".sync_history ADD CONSTRAINT no_sevens '
                    "CHECK (records_processed <> 7)"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER no_sevens BEFORE UPDATE ON sync_history "
                    "WHEN NEW.records_processed = 7 "
                    "BEGIN SELECT RAISE(ABORT, 'no sevens'); END"
                )
            )
    engine.dispose()


def test_a_refused_finish_of_a_clean_block_records_record_failed(
    tracker: SyncTracker, backend: Backend
) -> None:
    with tracker.track(resource="refused") as first:
        first.record(processed=1)
    _refuse_seven_processed(backend)

    with pytest.raises(StorageError) as raised, tracker.track(resource="refused") as sync:
        sync.record(processed=7)
        sync.advance_watermark(first.started_at + dt.timedelta(seconds=1))
    assert not isinstance(raised.value, DatabaseUnavailableError)
    assert sync.status == "failed"
    assert sync.metadata["sync_status"].value == "failed"

    row = last_sync(tracker, "refused")
    assert row.sync_id == sync.sync_id
    assert (row.sync_status, row.records_processed, row.watermark_after) == ("failed", 0, None)
    assert row.error_message is not None
    prefix = f"RECORD_FAILED: its end could not be recorded: {type(raised.value).__name__}: "
    assert row.error_message.startswith(prefix)
    assert [e["code"] for e in row.errors] == ["RECORD_FAILED"]
    state = tracker.get_state("refused")
    assert state is not None
    assert (state.last_sync_status, state.consecutive_failures) == ("failed", 1)
    assert state.last_sync_time == first.started_at  # the watermark did not move

    with tracker.track(resource="refused") as after:
        after.record(processed=8)
    assert after.status == "success"
    assert_not_running(tracker, "refused", "success")


def test_a_refused_finish_of_a_failing_block_re_raises_the_user_s_exception_unchanged(
    tracker: SyncTracker, backend: Backend
) -> None:
    tracker.store.migrate()  # the tables exist before the constraint is added
    _refuse_seven_processed(backend)
    mine = ValueError("mine")
    with pytest.raises(ValueError) as raised, tracker.track(resource="refused") as sync:
        sync.record(processed=7)
        raise mine
    assert raised.value is mine
    assert (type(raised.value), raised.value.args) == (ValueError, ("mine",))
    [note] = raised.value.__notes__
    assert note == (
        "sync_observability could not record this failure: "
        f"sync {sync.sync_id} of 'refused' recorded failed (RECORD_FAILED)"
    )
    row = last_sync(tracker, "refused")
    assert row.sync_status == "failed"
    assert row.error_message is not None
    assert row.error_message.startswith("RECORD_FAILED: its end could not be recorded: ")
    assert row.error_message.endswith(" (the sync failed with ValueError: mine)")
    assert_not_running(tracker, "refused", "failed")


# -- a finish that cannot be written at all: the database is locked past the budget ------------


@pytest.fixture
def sqlite_path(tmp_path: Any) -> Any:
    return tmp_path / "sync.db"


def _locked_tracker(path: Any, **kwargs: Any) -> SyncTracker:
    return Backend("sqlite", f"sqlite:///{path}").tracker(storage_timeout_seconds=1, **kwargs)


def test_an_unrecorded_finish_raises_and_the_next_sync_reaps_it(
    sqlite_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sync_observability")
    tracker = _locked_tracker(sqlite_path)
    with tracker.track(resource="accounts") as first:
        first.record(processed=1)

    locker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        with (
            pytest.raises(DatabaseUnavailableError),
            tracker.track(resource="accounts") as sync,
        ):
            sync.record(processed=5)
            locker.execute("BEGIN IMMEDIATE")
    finally:
        locker.rollback()
        locker.close()
    assert sync.status == "failed"
    assert sync.metadata["sync_status"].value == "failed"
    assert sync.metadata["watermark_after"].value == first.started_at.timestamp()
    assert tracker.store.get_sync(sync.sync_id).sync_status == "running"  # type: ignore[union-attr]

    with tracker.track(resource="accounts") as after:
        after.record(processed=6)
    assert after.status == "success"
    reaped = tracker.store.get_sync(sync.sync_id)
    assert reaped is not None
    assert reaped.sync_status == "failed"
    assert reaped.error_message == (
        "RECORD_FAILED: the sync ended but its end could not be recorded (the tracking "
        "database was unavailable); the watermark did not move"
    )
    assert reaped.watermark_after is None
    state = tracker.get_state("accounts")
    assert state is not None
    assert (state.last_sync_status, state.current_sync_id) == ("success", after.sync_id)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"sync_observability: the end of sync {sync.sync_id} of 'accounts'")
        for m in messages
    )
    reaped_message = (
        f"sync_observability: marked sync {sync.sync_id} failed (RECORD_FAILED): its end "
        "could not be recorded"
    )
    assert reaped_message in messages
    tracker.store.dispose()


def test_an_unrecorded_finish_only_warns_when_told_and_the_failing_block_raises_its_own(
    sqlite_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sync_observability")
    tracker = _locked_tracker(sqlite_path, raise_on_unrecorded_finish=False)
    locker = sqlite3.connect(sqlite_path, isolation_level=None)
    with tracker.track(resource="accounts") as sync:  # no exception: a warning only
        locker.execute("BEGIN IMMEDIATE")
    locker.rollback()
    assert sync.status == "failed"
    unrecorded = f"sync_observability: the end of sync {sync.sync_id} of 'accounts' could not"
    [warning] = [r for r in caplog.records if r.getMessage().startswith(unrecorded)]
    assert warning.levelno == logging.WARNING
    assert sync.errors[-1]["code"] == "RECORD_FAILED"

    # The failing block: its own exception, with a note; the next sync reaps it too.
    mine = KeyError("mine")
    with pytest.raises(KeyError) as raised, tracker.track(resource="accounts") as failing:
        locker.execute("BEGIN IMMEDIATE")
        raise mine
    locker.rollback()
    locker.close()
    assert raised.value is mine
    [note] = raised.value.__notes__
    assert note.startswith(
        "sync_observability could not record this failure: the end of sync "
        f"{failing.sync_id} of 'accounts' could not be recorded"
    )
    with tracker.track(resource="accounts") as after:
        pass
    assert after.status == "success"
    for sync_id in (sync.sync_id, failing.sync_id):
        reaped = tracker.store.get_sync(sync_id)
        assert reaped is not None
        assert (reaped.sync_status, reaped.errors[0]["code"]) == ("failed", "RECORD_FAILED")
    assert tracker.store.list_history(status="running", limit=None) == []
    tracker.store.dispose()
