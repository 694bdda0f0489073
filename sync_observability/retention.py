"""Retention: archive old sync history, purge old archive rows and resolved alerts.

The policy (seed 000): keep 90 days of ``sync_history`` online, move older finished rows into
``sync_history_archive``, and delete archive rows after a year; resolved ``sync_alerts`` go after
their own age. Cutoffs are plain functions of the time and the policy; the SQL lives in
:mod:`sync_observability.storage.retention_store`; this module runs the steps in order and holds
the Dagster job and schedule that run them daily.

Archival is state-aware: it never moves the sync that produced a resource's current watermark
(so ``watermark rewind --to-sync`` can name it and the trail of the state stays online), nor the
last ``keep_last_per_resource`` syncs of each resource, whatever their age.

A run archives first and purges second, so one run leaves the tables as the policy says (a
history row past the purge age is archived, then purged). A dry run counts exactly what a run
would move and delete, and changes nothing.

Examples:
    .. code-block:: python

        from sync_observability import SyncStore
        from sync_observability.retention import RetentionPolicy, run_retention

        result = run_retention(SyncStore.from_url("sqlite:///sync.db"), RetentionPolicy())
        print(result.counts)  # {'sync_history.archived': 1200, ...}
"""

# No `from __future__ import annotations`: Dagster reads the op's parameter annotations.

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from sync_observability.errors import InvalidInputError, SyncAlreadyRunningError
from sync_observability.storage import history_rollup, partitioning
from sync_observability.storage.retention_store import (
    ARCHIVE,
    DEFAULT_KEEP_LAST,
    HISTORY,
    PURGE_TARGETS,
    Batch,
    KeepSnapshot,
    Keyset,
    RetentionStore,
)
from sync_observability.storage.store import SyncStore
from sync_observability.tracking import SyncTracker, utcnow
from sync_observability.validation import check_aware

DEFAULT_ARCHIVE_AFTER_DAYS = 90
DEFAULT_PURGE_AFTER_DAYS = 365
DEFAULT_ALERTS_AFTER_DAYS = 90
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_KEEP_LAST_PER_RESOURCE = DEFAULT_KEEP_LAST
RETENTION_RESOURCE = "sync_observability/retention"
LOCK_HELD = "another retention run holds the lock"

RetentionProgress = Callable[[str, int, int], None]
"""Called as ``progress(step, rows_done, rows_planned)`` when a step starts and after each batch."""


def _default_table_ages() -> dict[str, int]:
    return {"sync_alerts": DEFAULT_ALERTS_AFTER_DAYS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """How old rows get before they move, and how a run moves them.

    Args:
        archive_after_days: finished ``sync_history`` rows that started longer ago than this are
            moved to ``sync_history_archive``.
        purge_after_days: archive rows that started longer ago than this are deleted; at least
            ``archive_after_days``.
        table_ages: days after which other tables' old rows are deleted, by table
            (``sync_alerts``: resolved alerts, by ``resolved_at``). A table left out is kept.
        batch_size: rows per transaction.
        dry_run: count what would move and be deleted; change nothing.
        keep_last_per_resource: the last this many syncs of each resource stay in
            ``sync_history`` whatever their age (0: only the age counts). The sync that produced
            a resource's current watermark stays too, always.
    """

    archive_after_days: int = DEFAULT_ARCHIVE_AFTER_DAYS
    purge_after_days: int = DEFAULT_PURGE_AFTER_DAYS
    table_ages: Mapping[str, int] = dataclasses.field(default_factory=_default_table_ages)
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    keep_last_per_resource: int = DEFAULT_KEEP_LAST_PER_RESOURCE

    def __post_init__(self) -> None:
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
        for name in self.table_ages:
            if name not in PURGE_TARGETS or name == ARCHIVE:
                others = sorted(set(PURGE_TARGETS) - {ARCHIVE})
                raise InvalidInputError(
                    "table_ages", name, f"is not a table retention purges by age ({others})"
                )


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

    action: str  # "archive" or "purge"
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
        """``sync_history.archived``, ``sync_alerts.purged``, ..."""
        return f"{self.table}.{self.action}d"


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
        verb = {"archive": "archive", "purge": "delete"}[step.action]
        verb = f"would {verb}" if dry_run else f"{verb}d"
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
            for i, step in enumerate(steps):
                if partitioned and step.action == "archive":
                    steps[i] = _archive_partitioned(
                        retention, step, policy, now, boundaries, progress
                    )
                    continue
                next_batch = _batches(retention, step, policy, now, boundaries)
                rows, batches = _drain(next_batch, step.name, step.rows, progress)
                steps[i] = dataclasses.replace(step, rows=rows, batches=batches)
    return RetentionResult(
        skipped=False,
        dry_run=policy.dry_run,
        message=describe(tuple(steps), dry_run=policy.dry_run),
        now=now,
        steps=tuple(steps),
        duration_ms=round((time.monotonic() - started) * 1000),
    )


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
    keep = policy.keep_last_per_resource
    # Reports stop reading these hours from the roll-ups before their rows leave.
    history_rollup.retire_before(retention.store, step.before)
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


# -- Dagster ---------------------------------------------------------------------------------

RETENTION_CRON = "17 3 * * *"


class SyncRetentionConfig(dg.Config):
    """Run config of ``sync_retention_job``; every field has a default, so none is needed."""

    archive_after_days: int = Field(
        default=DEFAULT_ARCHIVE_AFTER_DAYS,
        description="Move finished sync_history rows older than this to sync_history_archive.",
    )
    purge_after_days: int = Field(
        default=DEFAULT_PURGE_AFTER_DAYS,
        description="Delete sync_history_archive rows older than this (>= archive_after_days).",
    )
    alerts_after_days: int = Field(
        default=DEFAULT_ALERTS_AFTER_DAYS,
        description="Delete resolved, announced sync_alerts resolved longer ago than this.",
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, description="Rows moved or deleted per transaction."
    )
    dry_run: bool = Field(
        default=False, description="Only count what would be archived and deleted."
    )
    keep_last: int = Field(
        default=DEFAULT_KEEP_LAST_PER_RESOURCE,
        description=(
            "Keep the last this many syncs of each resource in sync_history whatever their age "
            "(0: only the age counts); the sync owning a resource's watermark is always kept."
        ),
    )

    def policy(self) -> RetentionPolicy:
        """The :class:`RetentionPolicy` this config describes."""
        return RetentionPolicy(
            archive_after_days=self.archive_after_days,
            purge_after_days=self.purge_after_days,
            table_ages={"sync_alerts": self.alerts_after_days},
            batch_size=self.batch_size,
            dry_run=self.dry_run,
            keep_last_per_resource=self.keep_last,
        )


@dg.op(
    name="sync_retention",
    description="Archive old sync_history rows and purge old archive rows and resolved alerts.",
)
def sync_retention(
    context: dg.OpExecutionContext, config: SyncRetentionConfig, sync_tracker: SyncTracker
) -> dg.Output[dict]:
    """Run retention, recorded as a sync of ``sync_observability/retention`` so failures alert."""
    policy = config.policy()
    try:
        with sync_tracker.track(
            context,
            resource=RETENTION_RESOURCE,
            source_system=HISTORY,
            target_system=ARCHIVE,
            sync_type="full",
        ) as sync:
            result = run_retention(sync_tracker.store, policy)
            if not result.dry_run:
                sync.record(processed=result.total_rows)
    except SyncAlreadyRunningError as refused:
        result = skipped_result(
            utcnow(),
            dry_run=policy.dry_run,
            message=f"{LOCK_HELD}: sync {refused.running_sync_id} is running",
        )
    if result.skipped:
        context.log.warning(f"sync_observability retention skipped: {result.message}")
    for step in result.steps:
        context.log.info(
            f"sync_observability retention: {step.name}: {step.rows:,} rows older than "
            f"{step.before.isoformat()}{' (dry run)' if result.dry_run else ''}"
        )
    return dg.Output(result.to_dict(), metadata=_metadata(result))


def _metadata(result: RetentionResult) -> dict[str, dg.MetadataValue]:
    metadata: dict[str, dg.MetadataValue] = {
        key: dg.MetadataValue.int(rows) for key, rows in result.counts.items()
    }
    metadata |= {
        f"{step.table}.before": dg.MetadataValue.timestamp(step.before) for step in result.steps
    }
    return metadata | {
        "dry_run": dg.MetadataValue.bool(result.dry_run),
        "skipped": dg.MetadataValue.bool(result.skipped),
        "message": dg.MetadataValue.text(result.message),
        "duration_ms": dg.MetadataValue.int(result.duration_ms),
    }


@dg.job(
    name="sync_retention_job",
    description=(
        "Daily retention of the sync_observability tables: archive, purge, delete old alerts."
    ),
)
def sync_retention_job() -> None:
    """Runs :func:`sync_retention`; needs the ``sync_tracker`` resource."""
    sync_retention()


def make_sync_retention_schedule(
    *,
    job: dg.JobDefinition = sync_retention_job,
    cron_schedule: str = RETENTION_CRON,
    execution_timezone: str = "UTC",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    name: str = "sync_retention_schedule",
) -> dg.ScheduleDefinition:
    """A daily schedule of ``job``, off-peak (03:17 UTC) by default.

    It starts STOPPED: the purge deletes rows for good and audit rules differ (seed 000: "purge
    >1 year, unless required for audit"), so turning it on is the user's decision. Pass
    ``default_status=dg.DefaultScheduleStatus.RUNNING`` to have it on from the first deploy.
    """
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=default_status,
        description="Runs sync_retention_job daily, off-peak.",
    )


sync_retention_schedule = make_sync_retention_schedule()
