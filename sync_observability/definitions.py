"""sync_observability_definitions: the sensors, resources and checks as one ``dg.Definitions``."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.sensors import SYNC_SENSORS
from sync_observability.checks import AssetLike, make_sync_health_checks
from sync_observability.report_asset import sync_health_report
from sync_observability.retention import sync_retention_job, sync_retention_schedule
from sync_observability.tracking import SyncTracker


def sync_observability_definitions(
    *,
    tracker: SyncTracker | None = None,
    alerting: SyncAlerting | None = None,
    assets_to_check: Iterable[AssetLike] = (),
    sensors: bool = True,
) -> dg.Definitions:
    """Everything sync_observability adds to a Dagster project, to merge with your own.

    Args:
        tracker: the ``sync_tracker`` resource. When your Definitions bind ``sync_tracker``
            already, pass that same object: ``dg.Definitions.merge`` refuses two different
            resources under one key. Default: ``SyncTracker()``.
        alerting: the ``sync_alerting`` resource (thresholds, webhook, Slack). Default:
            ``SyncAlerting()``, which alerts to the Dagster log only.
        assets_to_check: assets (or keys) that get a ``sync_health`` asset check, with the
            alerting resource's failure and staleness thresholds.
        sensors: include the six alert sensors (consecutive failures, stuck runs, stale
            watermarks, slow syncs, volume anomalies, watermark not moving), running by
            default.

    Examples:
        .. code-block:: python

            tracker = SyncTracker()
            defs = dg.Definitions.merge(
                dg.Definitions(assets=[accounts], resources={"sync_tracker": tracker}),
                sync_observability_definitions(
                    tracker=tracker,
                    alerting=SyncAlerting(webhook_url=dg.EnvVar("SYNC_ALERTS_WEBHOOK_URL")),
                    assets_to_check=[accounts],
                ),
            )
    """
    alerting = alerting if alerting is not None else SyncAlerting()
    assets_to_check = list(assets_to_check)
    checks = make_sync_health_checks(assets_to_check, alerting=alerting) if assets_to_check else []
    return dg.Definitions(
        assets=[sync_health_report],
        jobs=[sync_retention_job],
        schedules=[sync_retention_schedule],
        sensors=list(SYNC_SENSORS) if sensors else [],
        asset_checks=checks,
        resources={
            "sync_tracker": tracker if tracker is not None else SyncTracker(),
            "sync_alerting": alerting,
        },
    )


__all__ = ["sync_observability_definitions"]
