"""sync_observability: sync state, history, alerts and retention for Dagster, in real tables.

Examples:
    .. code-block:: python

        import dagster as dg
        from sync_observability import SyncTracker

        @dg.asset
        def accounts(context: dg.AssetExecutionContext, sync_tracker: SyncTracker):
            with sync_tracker.track(context, source_system="vantage") as sync:
                rows = fetch_accounts(modified_since=sync.watermark)
                sync.record(processed=len(rows))
            return dg.MaterializeResult(metadata=sync.metadata)
"""

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module that defines it. A name loads its module when first asked for
# (PEP 562), so a step process that only uses the tracker does not import the sensors, the
# checks, the retention job, the report asset or the observer (test_import_cost.py).
_EXPORTS: dict[str, str] = {
    "SyncAlerting": "sync_observability.alerts.resources",
    **dict.fromkeys(
        (
            "make_consecutive_failures_sensor",
            "make_slow_syncs_sensor",
            "make_stale_watermarks_sensor",
            "make_stuck_runs_sensor",
            "make_volume_anomalies_sensor",
            "make_watermark_not_moving_sensor",
            "sync_consecutive_failures_sensor",
            "sync_slow_syncs_sensor",
            "sync_stale_watermarks_sensor",
            "sync_stuck_runs_sensor",
            "sync_volume_anomalies_sensor",
            "sync_watermark_not_moving_sensor",
        ),
        "sync_observability.alerts.sensors",
    ),
    "make_schema_changes_sensor": "sync_observability.alerts.schema_changes",
    "make_sync_health_checks": "sync_observability.checks",
    "sync_observability_definitions": "sync_observability.definitions",
    **dict.fromkeys(
        (
            "ConfigurationError",
            "ConstraintViolationError",
            "DatabaseUnavailableError",
            "InvalidInputError",
            "StorageError",
            "SyncAlreadyRunningError",
            "SyncNotRunningError",
            "SyncObservabilityError",
            "SyncStateError",
            "WatermarkAheadError",
            "WatermarkBusyError",
            "WatermarkConflictError",
            "WatermarkError",
            "WatermarkRewindError",
        ),
        "sync_observability.errors",
    ),
    "make_asset_observer_sensor": "sync_observability.observer",
    "sync_asset_observer_sensor": "sync_observability.observer",
    "sync_retention_job": "sync_observability.retention",
    "sync_retention_schedule": "sync_observability.retention",
    "SyncOutcome": "sync_observability.storage.records",
    "SyncRecord": "sync_observability.storage.records",
    "SyncState": "sync_observability.storage.records",
    "SyncRun": "sync_observability.tracking",
    "SyncTracker": "sync_observability.tracking",
    # SQLAlchemy comes with the store: it loads when a store is created, not with the package.
    "SyncStore": "sync_observability.storage.store",
}

if TYPE_CHECKING:
    from sync_observability.alerts.resources import SyncAlerting
    from sync_observability.alerts.schema_changes import make_schema_changes_sensor
    from sync_observability.alerts.sensors import (
        make_consecutive_failures_sensor,
        make_slow_syncs_sensor,
        make_stale_watermarks_sensor,
        make_stuck_runs_sensor,
        make_volume_anomalies_sensor,
        make_watermark_not_moving_sensor,
        sync_consecutive_failures_sensor,
        sync_slow_syncs_sensor,
        sync_stale_watermarks_sensor,
        sync_stuck_runs_sensor,
        sync_volume_anomalies_sensor,
        sync_watermark_not_moving_sensor,
    )
    from sync_observability.checks import make_sync_health_checks
    from sync_observability.definitions import sync_observability_definitions
    from sync_observability.errors import (
        ConfigurationError,
        ConstraintViolationError,
        DatabaseUnavailableError,
        InvalidInputError,
        StorageError,
        SyncAlreadyRunningError,
        SyncNotRunningError,
        SyncObservabilityError,
        SyncStateError,
        WatermarkAheadError,
        WatermarkBusyError,
        WatermarkConflictError,
        WatermarkError,
        WatermarkRewindError,
    )
    from sync_observability.observer import make_asset_observer_sensor, sync_asset_observer_sensor
    from sync_observability.retention import sync_retention_job, sync_retention_schedule
    from sync_observability.storage.records import SyncOutcome, SyncRecord, SyncState
    from sync_observability.storage.store import SyncStore
    from sync_observability.tracking import SyncRun, SyncTracker

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ConfigurationError",
    "ConstraintViolationError",
    "DatabaseUnavailableError",
    "InvalidInputError",
    "StorageError",
    "SyncAlerting",
    "SyncAlreadyRunningError",
    "SyncNotRunningError",
    "SyncObservabilityError",
    "SyncOutcome",
    "SyncRecord",
    "SyncRun",
    "SyncState",
    "SyncStateError",
    "SyncStore",
    "SyncTracker",
    "WatermarkAheadError",
    "WatermarkBusyError",
    "WatermarkConflictError",
    "WatermarkError",
    "WatermarkRewindError",
    "make_asset_observer_sensor",
    "make_consecutive_failures_sensor",
    "make_schema_changes_sensor",
    "make_slow_syncs_sensor",
    "make_stale_watermarks_sensor",
    "make_stuck_runs_sensor",
    "make_sync_health_checks",
    "make_volume_anomalies_sensor",
    "make_watermark_not_moving_sensor",
    "sync_asset_observer_sensor",
    "sync_consecutive_failures_sensor",
    "sync_observability_definitions",
    "sync_retention_job",
    "sync_retention_schedule",
    "sync_slow_syncs_sensor",
    "sync_stale_watermarks_sensor",
    "sync_stuck_runs_sensor",
    "sync_volume_anomalies_sensor",
    "sync_watermark_not_moving_sensor",
]
