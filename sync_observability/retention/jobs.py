"""The Dagster side of retention: ``sync_retention_job``, its op and config, and the schedule.

The steps themselves are plain functions in :mod:`.steps`; the op runs them as a tracked sync of
``sync_observability/retention``, so a failing retention alerts like any other sync.
"""

# No `from __future__ import annotations`: Dagster reads the op's parameter annotations.

import os
from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from sync_observability.clock import utcnow
from sync_observability.cold.export import COLD_URL_ENV, DEFAULT_OLDER_THAN_DAYS, ColdPolicy
from sync_observability.errors import SyncAlreadyRunningError
from sync_observability.retention.steps import (
    DEFAULT_ALERTS_AFTER_DAYS,
    DEFAULT_ARCHIVE_AFTER_DAYS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_KEEP_LAST_PER_RESOURCE,
    DEFAULT_PURGE_AFTER_DAYS,
    LOCK_HELD,
    RETENTION_RESOURCE,
    RetentionPolicy,
    RetentionResult,
    run_retention,
    skipped_result,
    table_ages,
)
from sync_observability.tracking import SyncTracker

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
    cold_url: str | None = Field(
        default=None,
        description=(
            "The cold tier: a local folder or an fsspec URL (s3://bucket/prefix, ...) that "
            "archive rows older than cold_after_days are exported to as Parquet before they "
            f"leave the database. Unset: the environment variable {COLD_URL_ENV}; neither: no "
            "cold tier."
        ),
    )
    cold_after_days: int = Field(
        default=DEFAULT_OLDER_THAN_DAYS,
        description="Export archive and operation-log rows older than this (<= purge_after_days).",
    )
    purge_cold_after_days: int | None = Field(
        default=None,
        description="Delete whole months of cold files older than this (unset: keep them).",
    )
    ddl_events_after_days: int | None = Field(
        default=None,
        description="Delete ddl_events recorded longer ago than this (unset: keep them, an "
        "audit trail).",
    )

    def policy(self) -> RetentionPolicy:
        """The :class:`RetentionPolicy` this config describes (the cold URL read now)."""
        url = self.cold_url or os.environ.get(COLD_URL_ENV) or None
        cold = None
        if url:
            cold = ColdPolicy(
                url=url,
                older_than_days=self.cold_after_days,
                purge_cold_after_days=self.purge_cold_after_days,
                dry_run=self.dry_run,
            )
        return RetentionPolicy(
            archive_after_days=self.archive_after_days,
            purge_after_days=self.purge_after_days,
            table_ages=table_ages(self.alerts_after_days, self.ddl_events_after_days),
            batch_size=self.batch_size,
            dry_run=self.dry_run,
            keep_last_per_resource=self.keep_last,
            cold=cold,
        )


@dg.op(
    name="sync_retention",
    description=(
        "Archive old sync_history rows, export archive rows to the cold tier when one is "
        "configured, and purge old archive rows and resolved alerts."
    ),
)
def sync_retention(
    context: dg.OpExecutionContext, config: SyncRetentionConfig, sync_tracker: SyncTracker
) -> dg.Output[dict]:
    """Run retention, recorded as a sync of ``sync_observability/retention`` so failures alert."""
    from sync_observability.storage.retention_store import ARCHIVE, HISTORY

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

    It starts STOPPED: the purge deletes rows for good and audit rules differ (seed 000,
    docs/seeds.md: "purge >1 year, unless required for audit"), so turning it on is the user's
    decision. Pass ``default_status=dg.DefaultScheduleStatus.RUNNING`` to have it on from the first
    deploy.
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


__all__: Sequence[str] = (
    "RETENTION_CRON",
    "SyncRetentionConfig",
    "make_sync_retention_schedule",
    "sync_retention",
    "sync_retention_job",
    "sync_retention_schedule",
)
