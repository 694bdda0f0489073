"""The sync tables' rows as plain records: what the stores return and the tracker hands in.

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


__all__: Sequence[str] = (
    "RefusedChange",
    "SyncOutcome",
    "SyncRecord",
    "SyncState",
    "WatermarkChange",
)
