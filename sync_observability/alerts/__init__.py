"""Alerts: rules that find problems in sync state, their lifecycle, and where they are sent.

The rules are pure functions (``sync_state`` rows + ``now`` + thresholds -> findings); see
:mod:`sync_observability.alerts.rules`.
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
