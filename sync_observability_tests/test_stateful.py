"""Random lifecycles through SyncStore, checked against an in-memory model after every step.

The model is the contract's rules (docs/contract.md) written out plainly: one running sync per
resource; a success moves the watermark to the advanced value, else to the sync's start time (never
backwards); a failure or a reap never moves it; ``consecutive_failures`` grows on each failure and
resets on success; a finish of a sync that is no longer running is refused, unless it replays the
very same outcome (a lost commit acknowledgement). A fake clock keeps every example deterministic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from sync_observability import (
    SyncAlreadyRunningError,
    SyncNotRunningError,
    SyncOutcome,
    SyncRun,
    SyncStore,
    WatermarkRewindError,
)
from sync_observability.errors import WatermarkAheadError
from sync_observability.storage.schema import sync_history, sync_state
from sync_observability.storage.watermark_rule import DEFAULT_MAX_AHEAD
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """SQLite, PostgreSQL, and PostgreSQL with sync_history partitioned by month."""
    yield from make_backend(request, tmp_path)


pytestmark = pytest.mark.slow

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
TICK = dt.timedelta(seconds=1, milliseconds=7)
RESOURCES = ("accounts", 'it\'s "cash"; DROP TABLE x --')
SOURCE = "vantage"
REAP_CODE = "STUCK"
COUNT_NAMES = ("processed", "created", "updated", "failed")

counts = st.fixed_dictionaries({name: st.integers(0, 1_000) for name in COUNT_NAMES})


def _duration_ms(start: dt.datetime, end: dt.datetime) -> int:
    return round((end - start).total_seconds() * 1000)


def _outcome(run: SyncRun, status: str, ended_at: dt.datetime, message: str | None) -> SyncOutcome:
    """The outcome SyncTracker.track would write for ``run``, ended at the fake clock's time."""
    return dataclasses.replace(run._outcome(status, message), ended_at=ended_at)


@dataclasses.dataclass
class ModelSync:
    """What the model expects of one sync: its history row, plus what it holds in memory."""

    row: dict[str, Any]
    counts: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0)
    )
    advanced_to: dt.datetime | None = None
    cursor_to: Any = None
    cursor_advanced: bool = False
    outcome: SyncOutcome | None = None  # the finish that ended it (None while running or reaped)


def _new_state(resource: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "resource": resource,
        "source_system": SOURCE,
        "target_system": None,
        "last_sync_time": None,
        "cursor": None,
        "records_synced": 0,
        "records_created": 0,
        "records_updated": 0,
        "errors": [],
        "consecutive_failures": 0,
        "last_success_at": None,
        "dagster_run_id": None,
        "created_at": now,
        "watermark_advanced_at": None,
        "syncs_since_advance": 0,
    }


def _new_history_row(
    sync_id: str, resource: str, sync_type: str, now: dt.datetime, state: dict[str, Any]
) -> dict[str, Any]:
    return {
        "sync_id": sync_id,
        "resource": resource,
        "source_system": SOURCE,
        "target_system": None,
        "sync_type": sync_type,
        "sync_start_time": now,
        "sync_end_time": None,
        "sync_status": "running",
        "records_processed": 0,
        "records_created": 0,
        "records_updated": 0,
        "records_failed": 0,
        "error_message": None,
        "errors": [],
        "watermark_before": state["last_sync_time"],
        "watermark_after": None,
        "cursor_before": state["cursor"],
        "cursor_after": None,
        "duration_ms": None,
        "dagster_run_id": None,
        "asset_key": None,
        "partition_key": None,
        "retry_number": 0,
        "metadata": {},
        "observed": False,
    }


def _run_machine(store: SyncStore, max_examples: int, step_count: int) -> None:
    class SyncLifecycle(RuleBasedStateMachine):
        running = Bundle("running")  # ids of syncs that are running
        ended = Bundle("ended")  # ids of syncs that were finished or reaped

        def __init__(self) -> None:
            super().__init__()
            with store.engine.begin() as conn:
                conn.execute(sa.delete(sync_history))
                conn.execute(sa.delete(sync_state))
            self.now = T0
            self.started = 0
            self.states: dict[str, dict[str, Any]] = {}
            self.model: dict[str, ModelSync] = {}
            self.runs: dict[str, SyncRun] = {}

        def tick(self) -> dt.datetime:
            self.now += TICK
            return self.now

        @initialize()
        def tables_are_empty(self) -> None:
            assert store.list_states() == []
            assert store.list_history(limit=None) == []

        # -- rules -------------------------------------------------------------------------

        @rule(
            target=running,
            resource=st.sampled_from(RESOURCES),
            sync_type=st.sampled_from(["incremental", "full"]),
            replay=st.booleans(),
        )
        def start(self, resource: str, sync_type: str, replay: bool) -> Any:
            """Start a sync; while one runs, a second is refused and a replayed start is a no-op.

            A replay is the running sync's own start sent again, because its commit
            acknowledgement was lost.
            """
            state = self.states.get(resource)
            if state is not None and state["last_sync_status"] == "running":
                running = self.model[state["current_sync_id"]]
                if replay:
                    again = store.start_sync(
                        sync_id=running.row["sync_id"],
                        resource=resource,
                        started_at=running.row["sync_start_time"],
                        sync_type=running.row["sync_type"],
                        source_system=SOURCE,
                    )
                    assert dataclasses.asdict(again) == running.row
                else:
                    self.started += 1
                    with pytest.raises(SyncAlreadyRunningError) as refused:
                        store.start_sync(
                            sync_id=f"sync-{self.started:04d}",
                            resource=resource,
                            started_at=self.tick(),
                        )
                    assert refused.value.running_sync_id == running.row["sync_id"]
                return multiple()

            now = self.tick()
            self.started += 1
            sync_id = f"sync-{self.started:04d}"
            record = store.start_sync(
                sync_id=sync_id,
                resource=resource,
                started_at=now,
                sync_type=sync_type,
                source_system=SOURCE,
            )
            state = self.states.setdefault(resource, _new_state(resource, now))
            state |= {
                "last_sync_status": "running",
                "started_at": now,
                "completed_at": None,
                "duration_ms": None,
                "current_sync_id": sync_id,
                "updated_at": now,
            }
            self.model[sync_id] = ModelSync(
                _new_history_row(sync_id, resource, sync_type, now, state)
            )
            assert dataclasses.asdict(record) == self.model[sync_id].row
            self.runs[sync_id] = SyncRun(record, store=store)
            return sync_id

        @rule(sync_id=running, counts=counts)
        def record(self, sync_id: str, counts: dict[str, int]) -> None:
            self.runs[sync_id].record(**counts)
            for name, value in counts.items():
                self.model[sync_id].counts[name] += value

        @rule(
            sync_id=running,
            by_time=st.booleans(),
            offset_s=st.integers(-3600, 3600),
            cursor=st.integers(0, 50),
            allow_rewind=st.booleans(),
        )
        def advance(
            self, sync_id: str, by_time: bool, offset_s: int, cursor: int, allow_rewind: bool
        ) -> None:
            """Advance the watermark by a datetime or a cursor; a rewind needs allow_rewind."""
            running, run = self.model[sync_id], self.runs[sync_id]
            if by_time:
                before = running.row["watermark_before"]
                # Around the current watermark: half are rewinds, some run ahead of the clock.
                value: Any = (before or self.now) + dt.timedelta(seconds=offset_s)
            else:
                before, value = running.row["cursor_before"], cursor
            if before is not None and value < before and not allow_rewind:
                with pytest.raises(WatermarkRewindError):
                    run.advance_watermark(value)
                return
            run.advance_watermark(value, allow_rewind=allow_rewind)
            if by_time:
                running.advanced_to = value
            else:
                running.cursor_to, running.cursor_advanced = value, True

        @rule(
            target=ended,
            sync_id=consumes(running),
            how=st.sampled_from(["success", "success", "failed", "reap"]),
        )
        def end(self, sync_id: str, how: str) -> str:
            """End a running sync: it succeeds, fails, or is reaped (an orphan or a stuck run)."""
            if how == "reap":
                self.reap(sync_id)
            else:
                self.finish(sync_id, how)
            return sync_id

        @rule(sync_id=ended, late=st.sampled_from(["success", "failed", "replay", "reap"]))
        def late_message(self, sync_id: str, late: str) -> None:
            """A finish or reap of an ended sync is refused; a replay of its own finish is not.

            The replay is the very finish that ended it, sent again because its commit
            acknowledgement was lost: it must change nothing.
            """
            ended = self.model[sync_id]
            now = self.tick()
            if late == "reap":
                assert not store.reap_sync(sync_id, code=REAP_CODE, message="late", now=now)
                return
            if late == "replay" and ended.outcome is not None:
                outcome = ended.outcome
            else:
                status = "failed" if late == "failed" else "success"
                outcome = _outcome(self.runs[sync_id], status, now, None)
            finish = {
                "sync_id": sync_id,
                "resource": ended.row["resource"],
                "started_at": ended.row["sync_start_time"],
                "outcome": outcome,
            }
            if outcome is ended.outcome:
                store.finish_sync(**finish)
                return
            with pytest.raises(SyncNotRunningError) as refused:
                store.finish_sync(**finish)
            assert refused.value.status == ended.row["sync_status"]

        # -- what the model expects of an ending -------------------------------------------

        def finish(self, sync_id: str, status: str) -> None:
            running = self.model[sync_id]
            row, got = running.row, running.counts
            state = self.states[row["resource"]]
            now = self.tick()
            message = f"RuntimeError: planned failure of {sync_id}" if status == "failed" else None
            outcome = _outcome(self.runs[sync_id], status, now, message)
            finish = {
                "sync_id": sync_id,
                "resource": row["resource"],
                "started_at": row["sync_start_time"],
                "outcome": outcome,
            }
            advanced = running.advanced_to
            if (
                status == "success"
                and advanced is not None
                and advanced != row["watermark_before"]
                and advanced > now + DEFAULT_MAX_AHEAD
            ):
                # Refused at the end: recorded as a failure carrying the refusal's error.
                with pytest.raises(WatermarkAheadError) as refused:
                    store.finish_sync(**finish)
                code, error = WatermarkAheadError.code, refused.value
                entry = {"code": code, "message": str(error), "timestamp": now.isoformat()}
                outcome = dataclasses.replace(
                    outcome,
                    status="failed",
                    errors=[*outcome.errors, entry],
                    error_message=f"{code}: {error}",
                )
                status, message = "failed", outcome.error_message
            else:
                store.finish_sync(**finish)
            running.outcome = outcome
            duration = _duration_ms(row["sync_start_time"], now)
            row |= {
                "sync_status": status,
                "sync_end_time": now,
                "records_processed": got["processed"],
                "records_created": got["created"],
                "records_updated": got["updated"],
                "records_failed": got["failed"],
                "error_message": message,
                "errors": outcome.errors,
                "duration_ms": duration,
                # The run's metrics and per-category event counts (none recorded here).
                "metadata": outcome.metadata,
            }
            state |= {
                "last_sync_status": status,
                "records_synced": got["processed"],
                "records_created": got["created"],
                "records_updated": got["updated"],
                "errors": outcome.errors,
                "completed_at": now,
                "duration_ms": duration,
                "updated_at": now,
            }
            if status == "failed":
                state["consecutive_failures"] += 1
                return
            before, start = row["watermark_before"], row["sync_start_time"]
            if running.advanced_to is not None:
                watermark = running.advanced_to
            elif before is not None and before > start:
                watermark = before  # the default never moves an advanced watermark backwards
            else:
                watermark = start
            moved = watermark != before or (
                running.cursor_advanced and running.cursor_to != state["cursor"]
            )
            row["watermark_after"] = watermark
            state |= {
                "last_sync_time": watermark,
                "consecutive_failures": 0,
                "last_success_at": now,
            }
            if moved:
                state |= {"watermark_advanced_at": now, "syncs_since_advance": 0}
            else:
                state["syncs_since_advance"] += 1
            if running.cursor_advanced:
                row["cursor_after"] = state["cursor"] = running.cursor_to

        def reap(self, sync_id: str) -> None:
            row = self.model[sync_id].row
            state = self.states[row["resource"]]
            now = self.tick()
            message = f"no heartbeat from {sync_id}"
            assert store.reap_sync(sync_id, code=REAP_CODE, message=message, now=now)
            error = {"code": REAP_CODE, "message": message, "timestamp": now.isoformat()}
            duration = _duration_ms(row["sync_start_time"], now)
            row |= {
                "sync_status": "failed",
                "sync_end_time": now,
                "error_message": f"{REAP_CODE}: {message}",
                "errors": [error],
                "duration_ms": duration,
            }
            state |= {
                "last_sync_status": "failed",
                "errors": [error],
                "completed_at": now,
                "duration_ms": duration,
                "updated_at": now,
                "consecutive_failures": state["consecutive_failures"] + 1,
            }

        # -- the database agrees with the model after every step ---------------------------

        @invariant()
        def database_matches_model(self) -> None:
            states = {s.resource: dataclasses.asdict(s) for s in store.list_states()}
            assert states == self.states
            history = {r.sync_id: dataclasses.asdict(r) for r in store.list_history(limit=None)}
            assert history == {sync_id: m.row for sync_id, m in self.model.items()}
            for resource, state in states.items():
                running = [
                    r["sync_id"]
                    for r in history.values()
                    if r["resource"] == resource and r["sync_status"] == "running"
                ]
                expected = state["last_sync_status"] == "running"
                assert running == ([state["current_sync_id"]] if expected else [])

    run_state_machine_as_test(
        SyncLifecycle,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=step_count,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


def test_store_agrees_with_the_model_after_every_step(backend: Backend) -> None:
    store = backend.store()
    try:
        if backend.name == "sqlite":
            _run_machine(store, max_examples=40, step_count=30)
        else:
            _run_machine(store, max_examples=20, step_count=20)
    finally:
        store.dispose()
