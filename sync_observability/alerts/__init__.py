"""Alerts: rules that find problems in sync state, their lifecycle, and where they are sent.

- :mod:`~sync_observability.alerts.rules`: pure functions (``sync_state`` rows + ``now`` +
  thresholds -> findings) and :class:`Thresholds`, the one place the default limits live;
- :mod:`~sync_observability.alerts.lifecycle`: findings open, refresh and resolve alerts, due
  notifications are delivered; :mod:`~sync_observability.alerts.sinks`: log, webhook, Slack;
- :mod:`~sync_observability.alerts.reaping`: stuck and orphaned syncs marked failed (the
  tracker and the stuck-run sensor);
- :mod:`~sync_observability.alerts.resources`: the ``SyncAlerting`` resource;
  :mod:`~sync_observability.alerts.sensors`: the six Dagster sensors.

This package imports only the rules, so the tracker can import :mod:`.reaping` without
loading the sensors and sinks; the Dagster objects are imported from ``sync_observability``.
"""

from sync_observability.alerts.rules import (
    CONSECUTIVE_FAILURES,
    RULES,
    SLOW_SYNC,
    STALE_WATERMARK,
    STUCK_RUN,
    VOLUME_ANOMALY,
    WATERMARK_NOT_MOVING,
    AlertPolicy,
    Finding,
    Thresholds,
    check_consecutive_failures,
    check_slow_syncs,
    check_stale_watermarks,
    check_stuck_runs,
    check_volume_anomalies,
    check_watermark_not_moving,
)

__all__ = [
    "CONSECUTIVE_FAILURES",
    "RULES",
    "SLOW_SYNC",
    "STALE_WATERMARK",
    "STUCK_RUN",
    "VOLUME_ANOMALY",
    "WATERMARK_NOT_MOVING",
    "AlertPolicy",
    "Finding",
    "Thresholds",
    "check_consecutive_failures",
    "check_slow_syncs",
    "check_stale_watermarks",
    "check_stuck_runs",
    "check_volume_anomalies",
    "check_watermark_not_moving",
]
