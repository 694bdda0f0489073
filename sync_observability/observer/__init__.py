"""Observe every asset with no code: sync rows from Dagster's own event log (issue 13)."""

from sync_observability.observer.sensor import (
    OBSERVER_SENSOR_NAME,
    make_asset_observer_sensor,
    sync_asset_observer_sensor,
)

__all__ = ["OBSERVER_SENSOR_NAME", "make_asset_observer_sensor", "sync_asset_observer_sensor"]
