"""Retention steps: archive old sync history, purge old archive rows and resolved alerts.

The policy (seed 000, docs/seeds.md): keep 90 days of ``sync_history`` online, move older finished
rows into ``sync_history_archive``, and delete archive rows after a year; resolved ``sync_alerts``
go after their own age. Cutoffs are plain functions of the time and the policy; the SQL lives in
:mod:`sync_observability.storage.retention_store`; this module runs the steps in order, as plain
functions over the stores (no Dagster: the job and schedule that run them daily are in
:mod:`.jobs`).

Archival is state-aware: it never moves the sync that produced a resource's current watermark
(so ``watermark rewind --to-sync`` can name it and the trail of the state stays online), nor the
last ``keep_last_per_resource`` syncs of each resource, whatever their age.

A run archives first and purges second, so one run leaves the tables as the policy says (a
history row past the purge age is archived, then purged). A dry run counts exactly what a run
would move and delete, and changes nothing.

With a cold tier (``RetentionPolicy.cold``, see :mod:`sync_observability.cold.export`) a run
does all three tiers: history -> archive, then archive (and operation log) rows past the cold age
-> verified Parquet files, then the purges (which then find no archive row the export did not
take first, since the cold age is at most the purge age), then the optional cold purge.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError
from sync_observability.storage.constants import DEFAULT_KEEP_LAST
from sync_observability.validation import check_aware

if TYPE_CHECKING:
    # The retention SQL, and SQLAlchemy with it, loads when a run starts, not with the job.
    from sync_observability.cold.export import ColdPolicy
    from sync_observability.storage.retention_store import (
        Batch,
        KeepSnapshot,
        Keyset,
        RetentionStore,
    )
    from sync_observability.storage.store import SyncStore

DEFAULT_ARCHIVE_AFTER_DAYS = 90
DEFAULT_PURGE_AFTER_DAYS = 365
DEFAULT_ALERTS_AFTER_DAYS = 90
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_KEEP_LAST_PER_RESOURCE = DEFAULT_KEEP_LAST
RETENTION_RESOURCE = "sync_observability/retention"
LOCK_HELD = "another retention run holds the lock"
COLD_TABLE = "cold"
"""The ``table`` of the cold purge's step: whole months of cold files (``cold.purged`` rows)."""

RetentionProgress = Callable[[str, int, int], None]
"""Called as ``progress(step, rows_done, rows_planned)`` when a step starts and after each batch."""


def _default_table_ages() -> dict[str, int]:
    return table_ages(DEFAULT_ALERTS_AFTER_DAYS, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """How old rows get before they move, and how a run moves them.

    Args:
        archive_after_days: finished ``sync_history`` rows that started longer ago than this are
            moved to ``sync_history_archive``.
        purge_after_days: archive rows that started longer ago than this are deleted; at least
            ``archive_after_days``.
        table_ages: days after which other tables' old rows are deleted, by table
            (``sync_alerts``: resolved alerts, by ``resolved_at``; ``ddl_events`` by
            ``event_time``). A table left out is kept.
        batch_size: rows per transaction.
        dry_run: count what would move and be deleted; change nothing.
        keep_last_per_resource: the last this many syncs of each resource stay in
            ``sync_history`` whatever their age (0: only the age counts). The sync that produced
            a resource's current watermark stays too, always.
        cold: where and after how long archive rows go to the cold tier (None: no cold tier);
            its ``older_than_days`` is at most ``purge_after_days``, so the purge never deletes
            a row before it went cold. Its ``dry_run`` follows this policy's.
    """

    archive_after_days: int = DEFAULT_ARCHIVE_AFTER_DAYS
    purge_after_days: int = DEFAULT_PURGE_AFTER_DAYS
    table_ages: Mapping[str, int] = dataclasses.field(default_factory=_default_table_ages)
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    keep_last_per_resource: int = DEFAULT_KEEP_LAST_PER_RESOURCE
    cold: ColdPolicy | None = None

    def __post_init__(self) -> None:
        from sync_observability.storage.retention_store import ARCHIVE, PURGE_TARGETS

        ages = {
            "archive_after_days": self.archive_after_days,
            "purge_after_days": self.purge_after_days,
            **{f"table_ages[{name!r}]": days for name, days in self.table_ages.items()},
        }
        for field, days in ages.items():
            _check_positive_int(field, days)
        _check_positive_int("batch_size", self.batch_size)
        keep = self.keep_last_per_resource
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise InvalidInputError("keep_last_per_resource", keep, "must be an int >= 0")
        if self.purge_after_days < self.archive_after_days:
            raise InvalidInputError(
                "purge_after_days",
                self.purge_after_days,
                f"must be at least archive_after_days ({self.archive_after_days})",
            )
        if self.cold is not None and self.cold.older_than_days > self.purge_after_days:
            raise InvalidInputError(
                "cold.older_than_days",
                self.cold.older_than_days,
                f"must be at most purge_after_days ({self.purge_after_days}): the purge would "
                "delete archive rows before they went cold",
            )
        for name in self.table_ages:
            if name not in PURGE_TARGETS or name == ARCHIVE:
                others = sorted(set(PURGE_TARGETS) - {ARCHIVE})
                raise InvalidInputError(
                    "table_ages", name, f"is not a table retention purges by age ({others})"
                )


def table_ages(alerts_after_days: int, ddl_events_after_days: int | None) -> dict[str, int]:
    """:attr:`RetentionPolicy.table_ages` from the job's and the CLI's options (``ddl_events``
    only when an age is given)."""
    ages = {"sync_alerts": alerts_after_days}
    if ddl_events_after_days is not None:
        ages["ddl_events"] = ddl_events_after_days
    return ages


def _check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(field, value, "must be a positive int")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionCutoffs:
    """The instants before which rows are old: ``archive_before`` for ``sync_history``,
    ``purge_before`` for ``sync_history_archive``, ``table_before`` for the other tables."""

    archive_before: dt.datetime
    purge_before: dt.datetime
    table_before: Mapping[str, dt.datetime]


def retention_cutoffs(now: dt.datetime, policy: RetentionPolicy) -> RetentionCutoffs:
    """The cutoffs of ``policy`` at ``now`` (timezone-aware): ``now`` minus each age in days."""
    now = check_aware("now", now)
    return RetentionCutoffs(
        archive_before=now - dt.timedelta(days=policy.archive_after_days),
        purge_before=now - dt.timedelta(days=policy.purge_after_days),
        table_before={
            name: now - dt.timedelta(days=days) for name, days in policy.table_ages.items()
        },
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepResult:
    """One step of a run: rows of ``table`` older than ``before`` archived or purged."""

    action: str  # "archive", "export" (to the cold tier) or "purge"
    table: str
    into: str | None
    before: dt.datetime
    rows: int  # moved or deleted; in a dry run, what would be
    batches: int
    partitions: int = 0  # whole months archived by detach (partitioned sync_history only)

    @property
    def name(self) -> str:
        """``archive sync_history``, ``purge sync_alerts``, ..."""
        return f"{self.action} {self.table}"

    @property
    def count_key(self) -> str:
        """``sync_history.archived``, ``sync_history_archive.exported``, ``cold.purged``..."""
        done = {"export": "exported"}.get(self.action, f"{self.action}d")
        return f"{self.table}.{done}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionResult:
    """What a retention run did (or, in a dry run, would do).

    ``skipped`` is True when another run held the lock; then nothing was counted or changed.
    """

    skipped: bool
    dry_run: bool
    message: str
    now: dt.datetime
    steps: tuple[StepResult, ...]
    duration_ms: int

    @property
    def counts(self) -> dict[str, int]:
        """Rows per table and action, e.g. ``{"sync_history.archived": 12, ...}``."""
        return {step.count_key: step.rows for step in self.steps}

    @property
    def total_rows(self) -> int:
        """Rows archived plus rows purged."""
        return sum(step.rows for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps in ISO 8601)."""
        return {
            "status": "skipped" if self.skipped else "finished",
            "dry_run": self.dry_run,
            "message": self.message,
            "now": self.now.isoformat(),
            "duration_ms": self.duration_ms,
            "counts": self.counts,
            "steps": [
                dataclasses.asdict(step) | {"before": step.before.isoformat()}
                for step in self.steps
            ],
        }


def describe(steps: tuple[StepResult, ...], *, dry_run: bool) -> str:
    """One line saying what the steps moved, e.g. ``archived 12 rows of sync_history ...``."""
    if not steps:
        return "nothing to do"
    parts = []
    for step in steps:
        verb, done = {
            "archive": ("archive", "archived"),
            "export": ("export", "exported"),
            "purge": ("delete", "deleted"),
        }[step.action]
        verb = f"would {verb}" if dry_run else done
        where = f" into {step.into}" if step.into else ""
        months = f" ({step.partitions} whole months by detach)" if step.partitions else ""
        parts.append(f"{verb} {step.rows:,} rows of {step.table}{where}{months}")
    return "; ".join(parts)


def run_retention(
    store: SyncStore,
    policy: RetentionPolicy | None = None,
    *,
    now: dt.datetime | None = None,
    progress: RetentionProgress | None = None,
) -> RetentionResult:
    """Archive and purge per ``policy`` (or count, in a dry run), one batch per transaction.

    Only one run works at a time: when another holds the lock (PostgreSQL), this returns at once
    with ``skipped=True``. Interrupting a run at any point loses and duplicates nothing; the
    next run carries on where it stopped.

    Args:
        store: the database to clean.
        policy: ages, batch size and dry run; the defaults of :class:`RetentionPolicy` if None.
        now: the instant the cutoffs count back from (the current time if None).
        progress: called as ``progress(step, rows_done, rows_planned)``.
    """
    from sync_observability.storage import partitioning
    from sync_observability.storage.retention_store import ARCHIVE, RetentionStore

    policy = policy or RetentionPolicy()
    now = check_aware("now", now or utcnow())
    cutoffs = retention_cutoffs(now, policy)
    started = time.monotonic()
    retention = RetentionStore(store)
    with retention.exclusive_run() as acquired:
        if not acquired:
            return skipped_result(now, dry_run=policy.dry_run)
        # Read once per run: the last-K rule of every batch joins against them.
        boundaries = retention.keep_snapshot(policy.keep_last_per_resource)
        steps = _plan(retention, cutoffs, policy.keep_last_per_resource, boundaries)
        partitioned = retention.partitioned()
        if partitioned and not policy.dry_run:
            partitioning.ensure_partitions(store, now=now)
        if not policy.dry_run:
            done: list[StepResult] = []
            for step in steps:
                if partitioned and step.action == "archive":
                    step = _archive_partitioned(retention, step, policy, now, boundaries, progress)
                else:
                    next_batch = _batches(retention, step, policy, now, boundaries)
                    rows, batches = _drain(next_batch, step.name, step.rows, progress)
                    step = dataclasses.replace(step, rows=rows, batches=batches)
                done.append(step)
                if step.action == "archive" and policy.cold is not None:
                    done += _cold_steps(retention, policy.cold, now, progress)
            steps = done
        elif policy.cold is not None:
            cold = _cold_steps(
                retention,
                dataclasses.replace(policy.cold, dry_run=True),
                now,
                progress,
                also_archived=(policy.keep_last_per_resource, boundaries),
            )
            # The export takes every archive row the purge would, before it runs.
            rest = [
                dataclasses.replace(step, rows=0) if step.table == ARCHIVE else step
                for step in steps[1:]
            ]
            steps = [steps[0], *cold, *rest]
    return RetentionResult(
        skipped=False,
        dry_run=policy.dry_run,
        message=describe(tuple(steps), dry_run=policy.dry_run),
        now=now,
        steps=tuple(steps),
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _cold_steps(
    retention: RetentionStore,
    cold: ColdPolicy,
    now: dt.datetime,
    progress: RetentionProgress | None,
    *,
    also_archived: tuple[int, KeepSnapshot | None] | None = None,
) -> list[StepResult]:
    """Export to the cold tier (and purge it) under the run's lock, as steps of the run.

    ``also_archived`` (a dry run): count too the history rows this run would archive first.
    """
    from sync_observability.cold.export import export_locked
    from sync_observability.cold.layout import HISTORY_TABLE

    result = export_locked(retention.store, cold, now=now, progress=progress)
    steps = []
    for table in result.tables:
        rows = table.rows + table.recovered
        if also_archived is not None and table.table == HISTORY_TABLE:
            keep_last, boundaries = also_archived
            rows += retention.count_archivable(
                table.before, keep_last=keep_last, boundaries=boundaries
            )
        steps.append(
            StepResult(
                action="export",
                table=table.source,
                into=result.url,
                before=table.before,
                rows=rows,
                batches=table.files,
            )
        )
    if cold.purge_cold_after_days is not None:
        steps.append(
            StepResult(
                action="purge",
                table=COLD_TABLE,
                into=None,
                before=now - dt.timedelta(days=cold.purge_cold_after_days),
                rows=result.purged_rows,
                batches=result.purged_files,
            )
        )
    return steps


def skipped_result(now: dt.datetime, *, dry_run: bool, message: str = LOCK_HELD) -> RetentionResult:
    """The result of a run that did nothing because another run was at work."""
    return RetentionResult(
        skipped=True, dry_run=dry_run, message=message, now=now, steps=(), duration_ms=0
    )


def _plan(
    retention: RetentionStore,
    cutoffs: RetentionCutoffs,
    keep_last: int,
    boundaries: KeepSnapshot | None,
) -> list[StepResult]:
    """The steps in order, each with the exact count of rows it would take now.

    History rows already past the purge age are archived and then purged by the same run, so
    they count towards both steps (the rows archival keeps are in neither count).
    """
    from sync_observability.storage.retention_store import ARCHIVE, HISTORY, PURGE_TARGETS

    archive, purge = cutoffs.archive_before, cutoffs.purge_before
    steps = [
        StepResult(
            action="archive",
            table=HISTORY,
            into=ARCHIVE,
            before=archive,
            rows=retention.count_archivable(archive, keep_last=keep_last, boundaries=boundaries),
            batches=0,
        ),
        StepResult(
            action="purge",
            table=ARCHIVE,
            into=None,
            before=purge,
            rows=retention.count_purgeable(PURGE_TARGETS[ARCHIVE], purge)
            + retention.count_archivable(purge, keep_last=keep_last, boundaries=boundaries),
            batches=0,
        ),
    ]
    for target in retention.existing_purge_targets():
        before = cutoffs.table_before.get(target.table)
        if target.table != ARCHIVE and before is not None:
            rows = retention.count_purgeable(target, before)
            steps.append(
                StepResult(
                    action="purge",
                    table=target.table,
                    into=None,
                    before=before,
                    rows=rows,
                    batches=0,
                )
            )
    return steps


def _archive_partitioned(
    retention: RetentionStore,
    step: StepResult,
    policy: RetentionPolicy,
    now: dt.datetime,
    snapshot: KeepSnapshot | None,
    progress: RetentionProgress | None,
) -> StepResult:
    """Archive a partitioned ``sync_history``: whole old months by detach, then the rest by
    batches, one partition at a time (see :mod:`sync_observability.storage.partitioning`)."""
    from sync_observability.storage import partitioning
    from sync_observability.storage.reporting import hourly_rollups

    keep = policy.keep_last_per_resource
    # Reports stop reading these hours from the roll-ups before their rows leave.
    hourly_rollups.retire_before(retention.store, step.before)
    rows, months = partitioning.archive_partitions(
        retention.store,
        before=step.before,
        now=now,
        keeps=retention.must_stay(step.before, keep, snapshot),
    )
    if progress is not None:
        progress(step.name, rows, step.rows)
    batches = 0
    for leaf in retention.leaf_tables():

        def next_batch(after: Keyset | None, leaf: str = leaf) -> Batch:
            return retention.archive_batch(
                before=step.before,
                after=after,
                limit=policy.batch_size,
                now=now,
                keep_last=keep,
                boundaries=snapshot,
                partition=leaf,
            )

        def report(name: str, done: int, planned: int, base: int = rows) -> None:
            if progress is not None:
                progress(name, base + done, planned)

        leaf_rows, leaf_batches = _drain(next_batch, step.name, step.rows, report)
        rows += leaf_rows
        batches += leaf_batches
    return dataclasses.replace(step, rows=rows, batches=batches, partitions=len(months))


def _batches(
    retention: RetentionStore,
    step: StepResult,
    policy: RetentionPolicy,
    now: dt.datetime,
    boundaries: KeepSnapshot | None,
) -> Callable[[Keyset | None], Batch]:
    """The function that runs the next batch of ``step`` after a keyset position."""
    if step.action == "archive":
        return lambda after: retention.archive_batch(
            before=step.before,
            after=after,
            limit=policy.batch_size,
            now=now,
            keep_last=policy.keep_last_per_resource,
            boundaries=boundaries,
        )
    from sync_observability.storage.retention_store import PURGE_TARGETS

    target = PURGE_TARGETS[step.table]
    return lambda after: retention.purge_batch(
        target, before=step.before, after=after, limit=policy.batch_size
    )


def _drain(
    next_batch: Callable[[Keyset | None], Batch],
    name: str,
    planned: int,
    progress: RetentionProgress | None,
) -> tuple[int, int]:
    """Run batches, each starting after the last row of the one before, until one is empty."""
    rows = batches = 0
    after: Keyset | None = None
    if progress is not None:
        progress(name, 0, planned)
    while True:
        batch = next_batch(after)
        if batch.rows == 0 or batch.last is None:
            return rows, batches
        rows += batch.rows
        batches += 1
        after = batch.last
        if progress is not None:
            progress(name, rows, planned)


__all__: Sequence[str] = (
    "DEFAULT_ALERTS_AFTER_DAYS",
    "DEFAULT_ARCHIVE_AFTER_DAYS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_KEEP_LAST_PER_RESOURCE",
    "DEFAULT_PURGE_AFTER_DAYS",
    "LOCK_HELD",
    "RETENTION_RESOURCE",
    "RetentionCutoffs",
    "RetentionPolicy",
    "RetentionProgress",
    "RetentionResult",
    "StepResult",
    "describe",
    "retention_cutoffs",
    "run_retention",
    "skipped_result",
)
