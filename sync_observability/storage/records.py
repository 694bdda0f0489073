"""The tables' rows as plain records: what the stores return and the tracker hands in.

Frozen and keyword-only; they import nothing but the standard library, so rules, reports and
the CLI can use them without loading SQLAlchemy's statements or Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncState:
    """One row of ``sync_state``: a resource's watermark and its last sync."""

    resource: str
    source_system: str | None
    target_system: str | None
    last_sync_time: dt.datetime | None
    cursor: Any
    last_sync_status: str
    records_synced: int
    records_created: int
    records_updated: int
    errors: list[dict[str, Any]]
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_ms: int | None
    consecutive_failures: int
    last_success_at: dt.datetime | None
    current_sync_id: str | None
    dagster_run_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    watermark_advanced_at: dt.datetime | None = None
    syncs_since_advance: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncRecord:
    """One row of ``sync_history``: one sync run."""

    sync_id: str
    resource: str
    source_system: str | None
    target_system: str | None
    sync_type: str
    sync_start_time: dt.datetime
    sync_end_time: dt.datetime | None
    sync_status: str
    records_processed: int
    records_created: int
    records_updated: int
    records_failed: int
    error_message: str | None
    errors: list[dict[str, Any]]
    watermark_before: dt.datetime | None
    watermark_after: dt.datetime | None
    cursor_before: Any
    cursor_after: Any
    duration_ms: int | None
    dagster_run_id: str | None
    asset_key: str | None
    partition_key: str | None
    retry_number: int
    metadata: dict[str, Any]
    observed: bool = False
    """Recorded by the asset observer from Dagster's event log (no ``track()`` call)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncOutcome:
    """What a finished sync writes: its status, counts, errors and new watermark."""

    status: str
    ended_at: dt.datetime
    records_processed: int = 0
    records_created: int = 0
    records_updated: int = 0
    records_failed: int = 0
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error_message: str | None = None
    watermark_after: dt.datetime | None = None
    cursor_after: Any = None
    cursor_advanced: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    allow_rewind: bool = False
    count_failure: bool = True
    refused: Sequence[RefusedChange] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefusedChange:
    """A watermark the sync proposed and was refused (kept in ``watermark_changes``)."""

    reason: str
    watermark_after: dt.datetime | None = None
    cursor_after: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatermarkChange:
    """One row of ``watermark_changes``: a change of a resource's watermark, or a refused one.

    ``kind`` is ``advance`` (a successful sync moved it), ``set`` or ``rewind`` (a manual
    change; ``rewind`` when it moved backwards) or ``refused``. ``sync_id`` is None for manual
    changes, which carry ``changed_by`` and ``reason``.
    """

    change_id: int
    resource: str
    sync_id: str | None
    kind: str
    watermark_before: dt.datetime | None
    watermark_after: dt.datetime | None
    cursor_before: Any
    cursor_after: Any
    changed_at: dt.datetime
    changed_by: str | None
    reason: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PendingEvent:
    """A validated operational event waiting in a sync's buffer; ``details_json`` is already
    JSON text (:mod:`.operation_store` writes it to ``operation_log``)."""

    category: str
    entity_key: str | None
    event_time: dt.datetime
    message: str
    details_json: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Alert:
    """One row of ``sync_alerts``: one occurrence of one rule's condition on one resource.

    ``notify_count`` and ``last_notified_at`` count every delivered notification (opened,
    reminders, resolved). ``since``, ``sync_id``, ``dagster_run_id`` and ``last_error`` come
    from the latest finding and make the notification readable.
    """

    alert_id: str
    rule: str
    resource: str
    severity: str
    status: str
    fingerprint: str
    message: str
    details: dict[str, Any]
    opened_at: dt.datetime
    last_seen_at: dt.datetime
    resolved_at: dt.datetime | None
    last_notified_at: dt.datetime | None
    notify_count: int
    resolution_message: str | None
    resolution_notified_at: dt.datetime | None
    since: dt.datetime | None
    sync_id: str | None
    dagster_run_id: str | None
    last_error: str | None
    last_delivery_error: str | None


FINDING_COLUMNS = (
    "severity",
    "message",
    "details",
    "since",
    "sync_id",
    "dagster_run_id",
    "last_error",
)
"""The ``sync_alerts`` columns a finding sets, on open and on every refresh."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertDraft:
    """What one finding writes into its alert row (a new one, or the open one it refreshes)."""

    rule: str
    resource: str
    fingerprint: str
    severity: str
    message: str
    details: dict[str, Any]
    since: dt.datetime | None = None
    sync_id: str | None = None
    dagster_run_id: str | None = None
    last_error: str | None = None

    def values(self) -> dict[str, Any]:
        """The columns a finding sets, on open and on every refresh."""
        return {name: getattr(self, name) for name in FINDING_COLUMNS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A notification claimed for sending by one tick.

    ``delivery_kind`` / ``delivered_sinks``: the kind a previous, partly failed attempt was
    sending and the sinks that accepted it then.
    """

    alert: Alert
    token: str
    delivery_kind: str | None
    delivered_sinks: tuple[str, ...]


__all__: Sequence[str] = (
    "FINDING_COLUMNS",
    "Alert",
    "AlertDraft",
    "Claim",
    "PendingEvent",
    "RefusedChange",
    "SyncOutcome",
    "SyncRecord",
    "SyncState",
    "WatermarkChange",
)
