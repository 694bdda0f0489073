"""sync_observability_definitions: the sensors, resources and checks as one ``dg.Definitions``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg

from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.schema_changes import make_schema_changes_sensor
from sync_observability.alerts.sensors import SYNC_SENSORS
from sync_observability.checks import AssetLike, make_sync_health_checks
from sync_observability.observer import make_asset_observer_sensor
from sync_observability.report_asset import sync_health_report
from sync_observability.retention import sync_retention_job, sync_retention_schedule
from sync_observability.tracking import SyncTracker


def sync_observability_definitions(
    *,
    tracker: SyncTracker | None = None,
    alerting: SyncAlerting | None = None,
    assets_to_check: Iterable[AssetLike] = (),
    sensors: bool = True,
    observe: dg.AssetSelection | None = None,
    watch_schemas: Sequence[str] = (),
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
        observe: assets to observe with no code: adds ``sync_asset_observer_sensor``, which
            records their materializations and failures from Dagster's event log
            (``dg.AssetSelection.all()``: every asset of this code location). See
            :func:`~sync_observability.observer.make_asset_observer_sensor`.
        watch_schemas: PostgreSQL schemas whose tables you want to hear about: adds
            ``sync_schema_changes_sensor``, which alerts when a DROP or ALTER touches a table in
            them (needs ``sync-obs ddl enable``). See
            :func:`~sync_observability.alerts.schema_changes.make_schema_changes_sensor`.

    Examples:
        .. code-block:: python

            tracker = SyncTracker()
            defs = dg.Definitions.merge(
                dg.Definitions(assets=[accounts], resources={"sync_tracker": tracker}),
                sync_observability_definitions(
                    tracker=tracker,
                    alerting=SyncAlerting(webhook_url=dg.EnvVar("SYNC_ALERTS_WEBHOOK_URL")),
                    assets_to_check=[accounts],
                    observe=dg.AssetSelection.all(),  # every asset, tracked or not
                ),
            )
    """
    alerting = alerting if alerting is not None else SyncAlerting()
    assets_to_check = list(assets_to_check)
    checks = make_sync_health_checks(assets_to_check, alerting=alerting) if assets_to_check else []
    observers = [make_asset_observer_sensor(observe)] if observe is not None else []
    if watch_schemas:
        observers.append(make_schema_changes_sensor(schemas=watch_schemas))
    return dg.Definitions(
        assets=[sync_health_report],
        jobs=[sync_retention_job],
        schedules=[sync_retention_schedule],
        sensors=(list(SYNC_SENSORS) if sensors else []) + observers,
        asset_checks=checks,
        resources={
            "sync_tracker": tracker if tracker is not None else SyncTracker(),
            "sync_alerting": alerting,
        },
    )


__all__ = ["sync_observability_definitions"]
