"""SyncTracker.track outside Dagster (context=None), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_observability import (
    DatabaseUnavailableError,
    InvalidInputError,
    SyncNotRunningError,
    SyncObservabilityError,
    SyncRecord,
    SyncRun,
    SyncTracker,
    WatermarkRewindError,
)
from sync_observability.tracking import TRACEBACK_LIMIT
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend
from sync_observability_tests.test_store import snapshot


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


UTC = dt.timezone.utc


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def last_sync(tracker: SyncTracker, resource: str) -> SyncRecord:
    return tracker.store.list_history(resource=resource, limit=1)[0]


def test_first_sync_starts_without_a_watermark_and_success_sets_it_to_the_start_time(
    tracker: SyncTracker,
) -> None:
    assert tracker.get_state("accounts") is None
    assert tracker.get_watermark("accounts") is None
    with tracker.track(
        resource="accounts", source_system="vantage", target_system="warehouse", sync_type="full"
    ) as first:
        assert (first.watermark, first.cursor, first.status) == (None, None, "running")
        assert tracker.get_state("accounts").last_sync_status == "running"
        time.sleep(0.002)  # so that the end time is measurably later than the start time
        first.record(processed=3, created=1, updated=2)
    assert first.status == "success"

    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert state.last_sync_time == first.started_at
    assert state.completed_at > first.started_at  # the watermark is the start, not the end
    assert (state.source_system, state.target_system) == ("vantage", "warehouse")
    assert tracker.get_watermark("accounts") == first.started_at
    row = last_sync(tracker, "accounts")
    assert (row.sync_id, row.sync_type, row.sync_status) == (first.sync_id, "full", "success")
    assert (row.watermark_before, row.watermark_after) == (None, first.started_at)
    assert row.dagster_run_id is None
    assert row.asset_key is None

    with tracker.track(resource="accounts") as second:
        assert second.watermark == first.started_at
    assert tracker.get_watermark("accounts") == second.started_at
    assert tracker.get_state("funds") is None


def test_advance_watermark_with_a_datetime_sets_last_sync_time(tracker: SyncTracker) -> None:
    # Ahead of the clock, within the default 5 minutes of allowed skew.
    ahead = (now() + dt.timedelta(minutes=3)).astimezone(dt.timezone(dt.timedelta(hours=-7)))
    with tracker.track(resource="accounts") as first:
        first.advance_watermark(ahead)
    assert tracker.get_watermark("accounts") == ahead
    assert tracker.get_watermark("accounts").tzinfo == UTC
    assert last_sync(tracker, "accounts").watermark_after == ahead

    # A sync that does not advance it keeps a watermark that is ahead of its own start time.
    with tracker.track(resource="accounts") as second:
        assert second.watermark == ahead
    assert tracker.get_watermark("accounts") == ahead


def test_advance_watermark_with_a_json_value_sets_the_cursor(tracker: SyncTracker) -> None:
    cursor = {"page_token": "abc'; --", "ids": [1, 2, 3], "ünï": None}
    with tracker.track(resource="cashflows") as first:
        first.advance_watermark(cursor)
    state = tracker.get_state("cashflows")
    assert state is not None
    assert state.cursor == cursor
    assert state.last_sync_time == first.started_at  # the time watermark still defaults
    assert last_sync(tracker, "cashflows").cursor_after == cursor

    with tracker.track(resource="cashflows") as second:
        assert second.cursor == cursor
    assert last_sync(tracker, "cashflows").cursor_before == cursor
    assert last_sync(tracker, "cashflows").cursor_after is None  # not advanced this time
    assert tracker.get_state("cashflows").cursor == cursor


def test_a_rewind_is_refused_unless_allowed(tracker: SyncTracker) -> None:
    ahead = now() + dt.timedelta(minutes=3)
    with tracker.track(resource="funds") as first:
        first.advance_watermark(ahead)
        first.advance_watermark(10)
    before = tracker.get_state("funds")
    assert before is not None

    # Refused inside the block and caught: the sync succeeds without the refused values.
    with tracker.track(resource="funds") as caught:
        with pytest.raises(WatermarkRewindError) as refused:
            caught.advance_watermark(ahead - dt.timedelta(hours=1))
        assert refused.value.current == ahead
        assert refused.value.resource == "funds"
        assert "allow_rewind" in str(refused.value)
        with pytest.raises(WatermarkRewindError):
            caught.advance_watermark(5)
    after = tracker.get_state("funds")
    assert after is not None
    assert after.last_sync_status == "success"
    assert (after.last_sync_time, after.cursor) == (ahead, 10)

    # Not caught: the sync fails and neither watermark moves.
    with pytest.raises(WatermarkRewindError), tracker.track(resource="funds") as uncaught:
        uncaught.advance_watermark(ahead - dt.timedelta(hours=1))
    failed = tracker.get_state("funds")
    assert failed is not None
    assert failed.last_sync_status == "failed"
    assert (failed.last_sync_time, failed.cursor) == (ahead, 10)
    assert last_sync(tracker, "funds").errors[0]["code"] == "WATERMARK_REWIND"

    with tracker.track(resource="funds") as forced:
        forced.advance_watermark(ahead - dt.timedelta(hours=1), allow_rewind=True)
        forced.advance_watermark(5, allow_rewind=True)
    rewound = tracker.get_state("funds")
    assert rewound is not None
    assert (rewound.last_sync_time, rewound.cursor) == (ahead - dt.timedelta(hours=1), 5)


def _fail_with_a_long_cause() -> None:
    try:
        raise KeyError("k" * 12000)
    except KeyError as cause:
        raise ValueError("boom ünï 'quoted'") from cause


def test_an_exception_is_recorded_and_re_raised_and_the_watermark_stays(
    tracker: SyncTracker,
) -> None:
    with tracker.track(resource="accounts") as ok:
        pass
    with pytest.raises(ValueError) as raised, tracker.track(resource="accounts") as sync:
        sync.record(processed=5, failed=5)
        _fail_with_a_long_cause()
    assert str(raised.value) == "boom ünï 'quoted'"
    assert sync.status == "failed"

    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "failed"
    assert state.last_sync_time == ok.started_at
    assert state.consecutive_failures == 1
    assert state.records_synced == 5
    row = last_sync(tracker, "accounts")
    assert row.sync_id == sync.sync_id
    assert row.sync_status == "failed"
    assert row.error_message == "ValueError: boom ünï 'quoted'"
    assert (row.watermark_before, row.watermark_after) == (ok.started_at, None)
    assert (row.records_processed, row.records_failed) == (5, 5)
    [error] = row.errors
    assert state.errors == row.errors
    assert (error["code"], error["message"]) == ("ValueError", "boom ünï 'quoted'")
    full = "".join(traceback.format_exception(raised.value))
    assert len(full) > TRACEBACK_LIMIT  # long enough that truncation happened
    assert len(error["traceback"]) == TRACEBACK_LIMIT
    # The head (the long cause) is cut; the end, with the error and where it came from, is kept.
    assert not error["traceback"].startswith("Traceback")
    assert 'raise ValueError("boom' in error["traceback"]
    assert error["traceback"].endswith("ValueError: boom ünï 'quoted'\n")
    assert sync.metadata["sync_status"].value == "failed"
    assert sync.metadata["watermark_after"].value == ok.started_at.timestamp()


def test_a_keyboard_interrupt_is_recorded_too(tracker: SyncTracker) -> None:
    with pytest.raises(KeyboardInterrupt), tracker.track(resource="accounts"):
        raise KeyboardInterrupt
    row = last_sync(tracker, "accounts")
    assert row.sync_status == "failed"
    assert row.error_message == "KeyboardInterrupt: "


def test_add_error_on_a_successful_sync_keeps_the_errors(tracker: SyncTracker) -> None:
    with tracker.track(resource="accounts") as sync:
        sync.add_error("PARSE_ERROR", "Invalid JSON in record ID 12345", record_id="12345")
        sync.add_error("SKIPPED", "ünï", context={"line": 3, "tags": ["a"]})
        sync.record(processed=10, failed=2)
    assert sync.status == "success"
    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert state.last_sync_time == sync.started_at
    row = last_sync(tracker, "accounts")
    assert row.error_message is None
    assert state.errors == row.errors == sync.errors
    assert [(e["code"], e["message"]) for e in row.errors] == [
        ("PARSE_ERROR", "Invalid JSON in record ID 12345"),
        ("SKIPPED", "ünï"),
    ]
    assert row.errors[0]["record_id"] == "12345"
    assert row.errors[1]["context"] == {"line": 3, "tags": ["a"]}
    assert all(dt.datetime.fromisoformat(e["timestamp"]).tzinfo for e in row.errors)
    assert sync.metadata["error_count"].value == 2


def test_metadata_after_the_block_mirrors_what_was_stored(tracker: SyncTracker) -> None:
    with tracker.track(resource="accounts") as first:
        first.record(processed=4, created=1, updated=3)
        first.record(processed=3, created=2, updated=1, failed=1)
    meta = first.metadata
    row = last_sync(tracker, "accounts")
    assert meta["dagster/row_count"] == dg.MetadataValue.int(7)
    assert meta["records_processed"].value == row.records_processed == 7
    assert meta["records_created"].value == row.records_created == 3
    assert meta["records_updated"].value == row.records_updated == 4
    assert meta["records_failed"].value == row.records_failed == 1
    assert meta["duration_ms"].value == row.duration_ms
    assert meta["duration_ms"].value >= 0
    assert meta["watermark_before"] == dg.MetadataValue.null()
    assert meta["watermark_after"].value == first.started_at.timestamp()
    assert meta["sync_id"].value == row.sync_id == first.sync_id
    assert meta["sync_status"].value == "success"
    dg.MaterializeResult(metadata=meta)  # accepted as Dagster metadata

    with tracker.track(resource="accounts") as second:
        pass
    assert second.metadata["watermark_before"].value == first.started_at.timestamp()
    assert second.metadata["dagster/row_count"].value == 0


def test_a_sync_reaped_while_it_ran_is_not_overwritten(
    tracker: SyncTracker, backend: Backend
) -> None:
    with tracker.track(resource="accounts") as ok:
        pass
    with pytest.raises(SyncNotRunningError), tracker.track(resource="accounts") as sync:
        sync.record(processed=9)
        # Meanwhile the stuck-run rule (or an operator) reaps it.
        assert tracker.store.reap_sync(sync.sync_id, code="STUCK", message="too long", now=now())
        reaped = snapshot(backend)
    assert snapshot(backend) == reaped
    state = tracker.get_state("accounts")
    assert state is not None
    assert (state.last_sync_status, state.last_sync_time) == ("failed", ok.started_at)
    assert last_sync(tracker, "accounts").error_message == "STUCK: too long"

    # When the block itself fails, its own exception is what the caller sees, with a note.
    with pytest.raises(ValueError) as raised, tracker.track(resource="accounts") as sync:
        assert tracker.store.reap_sync(sync.sync_id, code="STUCK", message="again", now=now())
        reaped = snapshot(backend)
        raise ValueError("boom")
    assert snapshot(backend) == reaped
    assert any("could not record this failure" in n for n in raised.value.__notes__)
    assert last_sync(tracker, "accounts").error_message == "STUCK: again"


def test_record_and_add_error_after_the_block_are_refused(tracker: SyncTracker) -> None:
    with tracker.track(resource="accounts") as sync:
        sync.record(processed=1)
    for late_call in (lambda: sync.record(processed=5), lambda: sync.add_error("E", "late")):
        with pytest.raises(InvalidInputError):
            late_call()
    assert sync.metadata["dagster/row_count"].value == 1
    assert sync.metadata["error_count"].value == 0


# -- bad input -------------------------------------------------------------------------------


BAD_TRACK_ARGUMENTS: list[tuple[dict[str, Any], str, Any]] = [
    ({"resource": ""}, "resource", ""),
    ({"resource": " \t\n"}, "resource", " \t\n"),
    ({"resource": "r" * 256}, "resource", "r" * 256),
    ({"resource": 42}, "resource", 42),
    ({"resource": None}, "resource", None),  # and no context to take the asset key from
    ({"sync_type": "weekly"}, "sync_type", "weekly"),
    ({"sync_type": "FULL"}, "sync_type", "FULL"),
    ({"source_system": ""}, "source_system", ""),
    ({"target_system": "t" * 256}, "target_system", "t" * 256),
]


def test_bad_track_arguments_are_refused_before_anything_is_written(
    tracker: SyncTracker, backend: Backend
) -> None:
    tracker.store  # noqa: B018 - create the tables, so the snapshot below can read them
    before = snapshot(backend)
    for kwargs, field, value in BAD_TRACK_ARGUMENTS:
        entered = False
        with (
            pytest.raises(InvalidInputError) as refused,
            tracker.track(**({"resource": "accounts"} | kwargs)),
        ):
            entered = True
        assert not entered, kwargs
        assert (refused.value.field, refused.value.value) == (field, value)
        message = str(refused.value)
        assert field in message
        assert repr(value)[:200] in message
    assert snapshot(backend) == before
    # 255 characters is the limit, not 254.
    with tracker.track(resource="r" * 255):
        pass
    assert tracker.get_state("r" * 255) is not None


NAIVE = dt.datetime(2025, 11, 5, 10, 0)


class Opaque:
    """Not JSON-serializable."""

    def __repr__(self) -> str:
        return "<Opaque thing>"


BAD_CALLS: list[tuple[str, Callable[[SyncRun], Any], str, Any]] = [
    ("negative count", lambda s: s.record(processed=-1), "processed", -1),
    ("negative count among good ones", lambda s: s.record(processed=5, failed=-2), "failed", -2),
    ("bool count", lambda s: s.record(created=True), "created", True),
    ("float count", lambda s: s.record(updated=1.5), "updated", 1.5),
    ("naive watermark", lambda s: s.advance_watermark(NAIVE), "watermark", NAIVE),
    ("set cursor", lambda s: s.advance_watermark({1, 2}), "cursor", {1, 2}),
    ("NaN cursor", lambda s: s.advance_watermark(float("nan")), "cursor", float("nan")),
    ("opaque cursor", lambda s: s.advance_watermark([Opaque()]), "cursor", "<Opaque thing>"),
    (
        "opaque error detail",
        lambda s: s.add_error("E", "m", payload=Opaque()),
        "details['payload']",
        "<Opaque thing>",
    ),
    ("empty error code", lambda s: s.add_error("", "m"), "code", ""),
    ("non-string message", lambda s: s.add_error("E", 404), "message", 404),
]


def _assert_names_field_and_value(error: InvalidInputError, field: str, value: Any) -> None:
    message = str(error)
    assert error.field == field
    assert field in message
    shown = value if isinstance(value, str) and value.startswith("<") else repr(value)
    assert shown in message


def test_bad_values_caught_inside_the_block_are_not_recorded(tracker: SyncTracker) -> None:
    with tracker.track(resource="accounts") as first:
        first.advance_watermark(7)
    with tracker.track(resource="accounts") as sync:
        sync.record(processed=2, created=1)
        for case, call, field, value in BAD_CALLS:
            with pytest.raises(InvalidInputError) as refused:
                call(sync)
            _assert_names_field_and_value(refused.value, field, value)
            assert sync.errors == [], case
    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert (state.records_synced, state.records_created, state.records_updated) == (2, 1, 0)
    assert state.errors == []
    assert state.cursor == 7
    assert state.last_sync_time == sync.started_at
    row = last_sync(tracker, "accounts")
    assert (row.records_processed, row.records_failed, row.cursor_after) == (2, 0, None)


def test_bad_values_not_caught_fail_the_sync_and_move_nothing(tracker: SyncTracker) -> None:
    with tracker.track(resource="accounts") as first:
        first.advance_watermark(7)
    for n, (case, call, field, value) in enumerate(BAD_CALLS, start=1):
        with (
            pytest.raises(InvalidInputError) as refused,
            tracker.track(resource="accounts") as sync,
        ):
            sync.record(processed=2)
            call(sync)
        _assert_names_field_and_value(refused.value, field, value)
        row = last_sync(tracker, "accounts")
        assert row.sync_id == sync.sync_id, case
        assert row.sync_status == "failed", case
        assert row.error_message == f"InvalidInputError: {refused.value}", case
        assert (row.records_processed, row.records_created, row.records_failed) == (2, 0, 0), case
        assert row.watermark_after is None, case
        state = tracker.get_state("accounts")
        assert state is not None
        assert (state.last_sync_time, state.cursor) == (first.started_at, 7), case
        assert state.consecutive_failures == n, case


# -- secrets ---------------------------------------------------------------------------------


def test_a_database_password_never_appears_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Port 1 on loopback refuses connections at once: the transient-error path, fast.
    tracker = SyncTracker(
        database_url="postgresql://postgres:s3cretpw@127.0.0.1:1/nodb", max_retries=1
    )
    entered = False
    with pytest.raises(DatabaseUnavailableError) as failed, tracker.track(resource="accounts"):
        entered = True
    assert not entered
    assert isinstance(failed.value, SyncObservabilityError)
    assert "gave up after 2 attempts" in str(failed.value)
    everything = "".join(traceback.format_exception(failed.value))
    assert "127.0.0.1" in everything  # the chain does describe the connection...
    assert "s3cretpw" not in everything  # ...but never with its password
    assert caplog.records, "the retry was expected to be logged"
    assert "s3cretpw" not in caplog.text
    assert all("s3cretpw" not in str(r.args) for r in caplog.records)


@pytest.mark.postgres
def test_a_database_password_stays_out_of_urls_and_metadata(
    postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The local server trusts loopback, so a URL with a password connects all the same.
    url = sa.make_url(postgres_database_url).set(password="s3cretpw")
    tracker = SyncTracker(
        database_url=url.render_as_string(hide_password=False), schema_name="t_password"
    )
    try:
        with tracker.track(resource="accounts") as sync:
            sync.record(processed=1)
        assert "s3cretpw" not in tracker.store.url
        assert "***" in tracker.store.url
        assert "s3cretpw" not in repr(sync.metadata)
        assert "s3cretpw" not in caplog.text
    finally:
        with tracker.store.engine.begin() as conn:
            conn.execute(sa.text('DROP SCHEMA "t_password" CASCADE'))
        tracker.store.dispose()
