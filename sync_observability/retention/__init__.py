"""Retention: archive old sync history, purge old archive rows and resolved alerts.

- :mod:`.steps`: the policy, its cutoffs and :func:`run_retention`, plain functions over the
  stores (the CLI's ``sync-obs archive`` runs them without Dagster);
- :mod:`.jobs`: ``sync_retention_job``, its op and config, and ``sync_retention_schedule``.

Examples:
    .. code-block:: python

        from sync_observability import SyncStore
        from sync_observability.retention import RetentionPolicy, run_retention

        result = run_retention(SyncStore.from_url("sqlite:///sync.db"), RetentionPolicy())
        print(result.counts)  # {'sync_history.archived': 1200, ...}
"""

from typing import TYPE_CHECKING, Any

from sync_observability.retention.steps import (
    DEFAULT_ALERTS_AFTER_DAYS,
    DEFAULT_ARCHIVE_AFTER_DAYS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_KEEP_LAST_PER_RESOURCE,
    DEFAULT_PURGE_AFTER_DAYS,
    LOCK_HELD,
    RETENTION_RESOURCE,
    RetentionCutoffs,
    RetentionPolicy,
    RetentionProgress,
    RetentionResult,
    StepResult,
    describe,
    retention_cutoffs,
    run_retention,
    skipped_result,
)

# The Dagster job and schedule load when first asked for: `sync-obs archive` and the cold tier's
# commands run the steps without importing Dagster (test_import_cost.py).
_JOBS = (
    "RETENTION_CRON",
    "SyncRetentionConfig",
    "make_sync_retention_schedule",
    "sync_retention",
    "sync_retention_job",
    "sync_retention_schedule",
)

if TYPE_CHECKING:
    from sync_observability.retention.jobs import (
        RETENTION_CRON,
        SyncRetentionConfig,
        make_sync_retention_schedule,
        sync_retention,
        sync_retention_job,
        sync_retention_schedule,
    )


def __getattr__(name: str) -> Any:
    if name not in _JOBS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from sync_observability.retention import jobs

    return getattr(jobs, name)


__all__ = [
    "DEFAULT_ALERTS_AFTER_DAYS",
    "DEFAULT_ARCHIVE_AFTER_DAYS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_KEEP_LAST_PER_RESOURCE",
    "DEFAULT_PURGE_AFTER_DAYS",
    "LOCK_HELD",
    "RETENTION_CRON",
    "RETENTION_RESOURCE",
    "RetentionCutoffs",
    "RetentionPolicy",
    "RetentionProgress",
    "RetentionResult",
    "StepResult",
    "SyncRetentionConfig",
    "describe",
    "make_sync_retention_schedule",
    "retention_cutoffs",
    "run_retention",
    "skipped_result",
    "sync_retention",
    "sync_retention_job",
    "sync_retention_schedule",
]
