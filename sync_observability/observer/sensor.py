"""The asset observer sensor: every asset's syncs from Dagster's event log, with no code.

Each tick reads the runs that ended since its cursor (the storage id of the last run status
change it handled: ``RUN_SUCCESS``, ``RUN_FAILURE``, ``RUN_CANCELED``, in storage order), reads
each run's step and asset events, and records the syncs of the selected assets
(:mod:`.events` says which) through the ``sync_tracker`` resource's store, one transaction per
run (:mod:`sync_observability.storage.observed`). A tick stops after ``tick_seconds`` and the
next one goes on from there, so a backlog drains over several ticks. The cursor moves only
past runs whose rows are committed, and a run is written once whatever the cursor says, so a
lost cursor, a replayed tick or two racing ticks never duplicate a row.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.
import collections
import concurrent.futures
import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from sync_observability.clock import utcnow
from sync_observability.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    SyncObservabilityError,
)
from sync_observability.observer.events import RUN_END_TYPES, STEP_TYPES, RunEnd, run_syncs
from sync_observability.storage.constants import MAX_NAME_LENGTH
from sync_observability.storage.observed import ObservedSync, record_observed_runs
from sync_observability.tracking import SyncTracker

OBSERVER_SENSOR_NAME = "sync_asset_observer_sensor"
RUNS_PER_QUERY = 100
SYNCS_PER_TRANSACTION = 2_000
READ_AHEAD = 4  # runs whose events are read at once
EVENTS_PER_QUERY = 5_000
ALL_ASSETS = dg.AssetSelection.all()
OWN_ASSETS = frozenset({"sync_health_report"})
"""The package's own assets: its report is not a sync to observe."""
_STORAGE_SECONDS = 45.0  # every database call of a tick together, inside Dagster's 60 s


def make_asset_observer_sensor(
    selection: dg.AssetSelection | None = ALL_ASSETS,
    *,
    name: str = OBSERVER_SENSOR_NAME,
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    row_count_metadata_key: str = "dagster/row_count",
    count_retried_failures: bool = False,
    lookback_hours: float = 24.0,
    tick_seconds: float = 25.0,
) -> dg.SensorDefinition:
    """A sensor that records every materialization and failure of the selected assets.

    Observed assets land in ``sync_state`` / ``sync_history`` as tracked ones do, resource =
    the asset key's user string (``a/b``), one sync per partition, ``observed`` set on their
    history rows. The alert sensors, reports, retention and the CLI treat them as any other
    resource. An asset whose code calls ``sync_tracker.track()`` keeps the tracker's rows: the
    observer adds none for that run and asset.

    Args:
        selection: the observed assets, resolved against the code location the sensor is in
            (default: all of them); None: every asset of every run, any code location. The
            package's own ``sync_health_report`` asset is never observed.
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        row_count_metadata_key: the materialization metadata giving ``records_processed``.
        count_retried_failures: count a failed attempt that Dagster retries in
            ``consecutive_failures`` (default: only the last attempt counts, as for tracked
            syncs; every attempt is in ``sync_history``).
        lookback_hours: where a sensor without a cursor (new, or reset) starts: runs that ended
            in the last this many hours.
        tick_seconds: a tick stops reading new runs after this long; the next one goes on.

    Returns:
        The sensor. It needs the ``sync_tracker`` resource.

    Examples:
        .. code-block:: python

            defs = dg.Definitions.merge(
                dg.Definitions(assets=[my_dbt_assets, orders]),
                sync_observability_definitions(observe=dg.AssetSelection.all()),
            )
    """
    if lookback_hours < 0:
        raise InvalidInputError("lookback_hours", lookback_hours, "must be >= 0")
    if not 0 < tick_seconds <= 50:
        raise InvalidInputError("tick_seconds", tick_seconds, "must be > 0 and <= 50")
    if not row_count_metadata_key:
        raise InvalidInputError("row_count_metadata_key", row_count_metadata_key, "is empty")

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Records every materialization and failure of the observed assets from Dagster's "
            "event log into sync_state and sync_history (no tracker code needed)."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, sync_tracker: SyncTracker) -> dg.SensorResult:
        selected = _selected(context, selection)
        store = sync_tracker.store
        now = utcnow()
        tick = _Tick(context, store, now, stop_at=time.monotonic() + tick_seconds)
        with store.db.deadline(_STORAGE_SECONDS):
            while not tick.out_of_time:
                batch = ended_runs(context.instance, tick.cursor, now, lookback_hours)
                with _prefetched(context.instance, batch) as read:
                    for storage_id, end, records in read:
                        syncs = run_syncs(
                            end,
                            records,
                            selected=selected,
                            row_count_key=row_count_metadata_key,
                            count_retried_failures=count_retried_failures,
                        )
                        tick.add(storage_id, end.run_id, syncs)
                        if tick.late():
                            tick.out_of_time = True
                            break
                tick.flush()
                if len(batch) < RUNS_PER_QUERY:
                    break
        runs, written, skipped, more = tick.runs, tick.written, tick.skipped, tick.out_of_time
        cursor = tick.cursor
        message = f"observed {runs} ended run{'' if runs == 1 else 's'}: {written} syncs recorded"
        if skipped:
            message += f"; {skipped} run{'' if skipped == 1 else 's'} skipped (see the tick's log)"
        if more:
            message += "; more to read next tick"
        if written or skipped:
            context.log.info(f"sync_observability: {message}")
        return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=cursor.serialize())

    return _sensor


class _Tick:
    """One tick's progress: runs read, written in batches, and the cursor past what is written."""

    def __init__(
        self, context: dg.SensorEvaluationContext, store: Any, now: dt.datetime, stop_at: float
    ) -> None:
        self.context, self.store, self.now, self.stop_at = context, store, now, stop_at
        self.cursor = ObserverCursor.parse(context.cursor)
        self.pending: list[tuple[int, str, list[ObservedSync]]] = []
        self.pending_syncs = 0
        self.runs = self.written = self.skipped = 0
        self.out_of_time = False

    def late(self) -> bool:
        return time.monotonic() >= self.stop_at

    def add(self, storage_id: int, run_id: str, syncs: list[ObservedSync]) -> None:
        """Queue a run's syncs; write the queue when it is big enough."""
        for sync in syncs:
            if len(sync.resource) > MAX_NAME_LENGTH:
                self.context.log.error(
                    f"sync_observability: asset key {sync.resource[:80]!r}... is longer than "
                    f"{MAX_NAME_LENGTH} characters: not recorded"
                )
        syncs = [s for s in syncs if len(s.resource) <= MAX_NAME_LENGTH]
        if len(syncs) > SYNCS_PER_TRANSACTION:
            self.flush()
            self._write_big_run(storage_id, run_id, syncs)
            return
        self.pending.append((storage_id, run_id, syncs))
        self.pending_syncs += len(syncs)
        if self.pending_syncs >= SYNCS_PER_TRANSACTION:
            self.flush()

    def flush(self) -> None:
        """Write the queued runs in one transaction; the cursor moves past them."""
        if not self.pending:
            return
        pending, self.pending, self.pending_syncs = self.pending, [], 0
        try:
            self.written += record_observed_runs(
                self.store, [(run_id, syncs) for _, run_id, syncs in pending], now=self.now
            )
        except DatabaseUnavailableError:
            raise  # the next tick retries from the cursor
        except SyncObservabilityError:
            # One run the database refuses must not stop every later one: one at a time.
            for storage_id, run_id, syncs in pending:
                self._write_alone(storage_id, run_id, syncs)
            return
        self.runs += len(pending)
        self.cursor = ObserverCursor(after_storage_id=pending[-1][0])

    def _write_alone(self, storage_id: int, run_id: str, syncs: list[ObservedSync]) -> None:
        try:
            self.written += record_observed_runs(self.store, [(run_id, syncs)], now=self.now)
        except DatabaseUnavailableError:
            raise
        except SyncObservabilityError as error:
            self.context.log.error(
                f"sync_observability: the syncs of run {run_id} could not be recorded and are "
                f"skipped: {error}"
            )
            self.skipped += 1
        self.runs += 1
        self.cursor = ObserverCursor(after_storage_id=storage_id)

    def _write_big_run(self, storage_id: int, run_id: str, syncs: list[ObservedSync]) -> None:
        """A run bigger than a transaction, in parts; a tick out of time goes on next tick."""
        written_before = self.written
        for start in range(0, len(syncs), SYNCS_PER_TRANSACTION):
            part = syncs[start : start + SYNCS_PER_TRANSACTION]
            # Parts written on an earlier tick write nothing now: only new rows use up time.
            if self.written > written_before and self.late():
                self.out_of_time = True
                return
            if start + SYNCS_PER_TRANSACTION < len(syncs):
                self.written += record_observed_runs(self.store, [(run_id, part)], now=self.now)
            else:
                self._write_alone(storage_id, run_id, part)


class ObserverCursor:
    """The sensor's cursor: the storage id of the last run status change handled."""

    def __init__(self, after_storage_id: int | None = None) -> None:
        self.after_storage_id = after_storage_id

    @classmethod
    def parse(cls, text: str | None) -> "ObserverCursor":
        """The cursor Dagster kept; a missing or unreadable one starts afresh (lookback)."""
        if not text:
            return cls()
        try:
            value = json.loads(text)["after_storage_id"]
        except (ValueError, KeyError, TypeError):
            return cls()
        return cls(value if isinstance(value, int) and not isinstance(value, bool) else None)

    def serialize(self) -> str:
        """The cursor as Dagster stores it."""
        return json.dumps({"after_storage_id": self.after_storage_id})


def ended_runs(
    instance: dg.DagsterInstance, cursor: ObserverCursor, now: dt.datetime, lookback_hours: float
) -> list[tuple[int, RunEnd]]:
    """The next runs that ended after the cursor, oldest status change first."""
    after_timestamp = None
    if cursor.after_storage_id is None:
        after_timestamp = (now - dt.timedelta(hours=lookback_hours)).timestamp()
    found = []
    for event_type in RUN_END_TYPES:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                event_type=event_type,
                after_storage_id=cursor.after_storage_id,
                after_timestamp=after_timestamp,
            ),
            limit=RUNS_PER_QUERY,
            ascending=True,
        ).records
        found += records
    # Each type's first RUNS_PER_QUERY: together, the first RUNS_PER_QUERY of all three.
    found.sort(key=lambda r: r.storage_id)
    return [(r.storage_id, _run_end(r)) for r in found[:RUNS_PER_QUERY]]


@contextlib.contextmanager
def _prefetched(
    instance: dg.DagsterInstance, batch: list[tuple[int, RunEnd]]
) -> Iterator[Iterator[tuple[int, RunEnd, list[Any]]]]:
    """The batch's runs with their events, read a few runs ahead on threads.

    Reading a run's events is mostly waiting on the event log (dagster-postgres connects for
    each query); a few reads at once keep a tick of many small runs short.
    """
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=READ_AHEAD, thread_name_prefix="sync_observability-observer"
    )

    def read() -> Iterator[tuple[int, RunEnd, list[Any]]]:
        pending: collections.deque[tuple[int, RunEnd, concurrent.futures.Future[list[Any]]]]
        pending = collections.deque()
        ends = iter(batch)
        for storage_id, end in ends:
            pending.append((storage_id, end, pool.submit(run_records, instance, end.run_id)))
            if len(pending) > READ_AHEAD:
                first_id, first_end, future = pending.popleft()
                yield first_id, first_end, future.result()
        while pending:
            first_id, first_end, future = pending.popleft()
            yield first_id, first_end, future.result()

    try:
        yield read()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_records(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    """The run's events that decide its syncs, in order."""
    records: list[Any] = []
    cursor = None
    while True:
        page = instance.get_records_for_run(
            run_id, cursor=cursor, of_type=set(STEP_TYPES), limit=EVENTS_PER_QUERY
        )
        records += page.records
        if not page.has_more:
            return records
        cursor = page.cursor


def _run_end(record: Any) -> RunEnd:
    entry = record.event_log_entry
    event = entry.dagster_event
    message = None
    error = getattr(event.event_specific_data, "error", None) if event else None
    if error is not None:
        message = error.message.strip()
    elif event is not None and event.message:
        message = event.message
    return RunEnd(
        run_id=entry.run_id,
        event_type=event.event_type,
        at=dt.datetime.fromtimestamp(entry.timestamp, tz=dt.timezone.utc),
        message=message,
    )


def _selected(
    context: dg.SensorEvaluationContext, selection: dg.AssetSelection | None
) -> Callable[[str], bool]:
    if selection is None:
        return lambda key: key not in OWN_ASSETS
    keys = {key.to_user_string() for key in selection.resolve(context.repository_def.asset_graph)}
    return (keys - OWN_ASSETS).__contains__


sync_asset_observer_sensor = make_asset_observer_sensor()
"""The observer with its defaults: every asset of the code location it is defined in."""

__all__ = [
    "OBSERVER_SENSOR_NAME",
    "ObserverCursor",
    "make_asset_observer_sensor",
    "sync_asset_observer_sensor",
]
