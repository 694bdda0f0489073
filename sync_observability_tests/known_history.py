"""A small, known history for the Prometheus exposition tests, and the values it must show.

Written through the store's own lifecycle calls (and the alert store), at times relative to a
``now`` the caller passes: ages are then exact when the collector's clock is that ``now``.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa

from sync_observability.storage.alert_store import AlertStore
from sync_observability.storage.records import AlertDraft, SyncOutcome
from sync_observability.storage.schema import sync_history_archive
from sync_observability.storage.store import SyncStore

MINUTE = dt.timedelta(minutes=1)

# What the exposition of the history below must say, given `now`.
STATUS = {
    "accounts": "success",
    "funds": "failed",
    "investors": "running",
    "positions": "running",
    "prices": "never_run",
}
SECONDS_SINCE_SUCCESS = {"accounts": 3600.0, "funds": 7200.0, "positions": 300.0}
CONSECUTIVE_FAILURES = {"accounts": 0, "funds": 2, "investors": 0, "positions": 0, "prices": 0}
LAST_DURATION_SECONDS = {"accounts": 30.0, "funds": 4.5}
LAST_RECORDS = {"accounts": 120, "funds": 3, "investors": 0, "positions": 40, "prices": 0}
OPEN_ALERTS = {("consecutive_failures", "critical"): 1, ("stale_watermark", "warning"): 2}
HISTORY_ROWS = 7  # accounts 1, funds 3, investors 1, positions 2
ARCHIVE_ROWS = 2
OLDEST_RUNNING_SECONDS = 900.0  # investors, started 15 minutes before now


def _sync(
    store: SyncStore,
    resource: str,
    started: dt.datetime,
    ended: dt.datetime | None,
    status: str = "success",
    records: int = 0,
) -> None:
    sync_id = str(uuid.uuid4())
    store.start_sync(sync_id=sync_id, resource=resource, started_at=started)
    if ended is not None:
        store.finish_sync(
            sync_id=sync_id,
            resource=resource,
            started_at=started,
            outcome=SyncOutcome(
                status=status,
                ended_at=ended,
                records_processed=records,
                error_message=None if status == "success" else "source did not answer",
            ),
        )


def write_known_history(store: SyncStore, now: dt.datetime) -> None:
    """The history whose exposition the constants above describe."""
    hour = 60 * MINUTE
    _sync(store, "accounts", now - hour - dt.timedelta(seconds=30), now - hour, records=120)
    _sync(store, "funds", now - 2 * hour - dt.timedelta(seconds=10), now - 2 * hour, records=5)
    for minutes_ago in (20, 10):
        ended = now - minutes_ago * MINUTE
        _sync(store, "funds", ended - dt.timedelta(seconds=4.5), ended, "failed", records=3)
    _sync(store, "investors", now - 15 * MINUTE, None)
    _sync(store, "positions", now - 6 * MINUTE, now - 5 * MINUTE, records=40)
    _sync(store, "positions", now - 3 * MINUTE, None)
    # A resource registered but never run (a state row only, as `watermark set --create` makes).
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sync_state (resource) VALUES ('prices')"))
        for n in range(ARCHIVE_ROWS):
            started = now - dt.timedelta(days=400 + n)
            conn.execute(
                sa.insert(sync_history_archive).values(
                    sync_id=str(uuid.uuid4()),
                    resource="accounts",
                    sync_type="full",
                    sync_start_time=started,
                    sync_end_time=started + MINUTE,
                    sync_status="success",
                    archived_at=now - dt.timedelta(days=30),
                )
            )

    alerts = AlertStore(store)

    def draft(rule: str, resource: str, severity: str) -> AlertDraft:
        return AlertDraft(
            rule=rule,
            resource=resource,
            fingerprint=f"{rule}:{resource}",
            severity=severity,
            message=f"{rule} on {resource}",
            details={},
        )

    def keep_open(rule: str, drafts: list[AlertDraft]) -> None:
        alerts.apply_findings(
            rule, drafts, now=now, checked=None, resolution_message=lambda a, n: "cleared"
        )

    keep_open("consecutive_failures", [draft("consecutive_failures", "funds", "critical")])
    # Opened for two resources, then one of them clears: a resolved alert is not counted.
    stale = [draft("stale_watermark", r, "warning") for r in ("accounts", "investors", "prices")]
    keep_open("stale_watermark", stale)
    keep_open("stale_watermark", [d for d in stale if d.resource != "prices"])
    if store.dialect == "postgresql":
        # The row counts are the planner's statistics: bring them up to date.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("sync_history", "sync_history_archive"):
                conn.execute(sa.text(f'ANALYZE "{store.schema}".{table}'))
