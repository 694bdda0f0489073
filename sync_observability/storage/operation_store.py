"""Every SQL statement on ``operation_log``: the batched insert and the reads behind reports.

A batch of events is one multi-row ``INSERT``: the prebuilt statement below is executed with a
list of parameter sets, which SQLAlchemy sends to PostgreSQL as ``INSERT ... VALUES (...), (...)``
pages of up to 1,000 rows ("insertmanyvalues") and to SQLite as one ``executemany``.
``bench/bench_operations.py`` measures it against a plain ``execute_values`` of the same rows.

Each batch is its own transaction, retried whole on transient errors by the store. A retry after a
lost commit acknowledgement must not write the batch twice: before re-inserting, a retry counts the
sync's rows and skips the batch when the earlier attempt is already there (only one ``SyncRun``
writes a sync's events, so the count is known).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from sync_observability.storage.constants import OPERATION_LOG_BATCH_ROWS as BATCH_ROWS
from sync_observability.storage.records import PendingEvent
from sync_observability.storage.schema import UTCDateTime, operation_log
from sync_observability.storage.store import SyncStore


class _JSONText(sa.TypeDecorator[str]):
    """JSON the caller already serialized (validating it did); bound as text, never re-encoded.

    PostgreSQL converts the text literal to the ``jsonb`` column on insert.
    """

    impl = sa.Text
    cache_ok = True


# Bind names differ from column names: SQLAlchemy reserves those for its own VALUES parameters.
_INSERT_EVENTS = (
    sa.insert(operation_log)
    .values(
        category=sa.bindparam("p_category", type_=sa.String()),
        resource=sa.bindparam("p_resource", type_=sa.String()),
        sync_id=sa.bindparam("p_sync_id", type_=sa.String()),
        entity_key=sa.bindparam("p_entity_key", type_=sa.Text()),
        event_time=sa.bindparam("p_event_time", type_=UTCDateTime()),
        message=sa.bindparam("p_message", type_=sa.Text()),
        details=sa.bindparam("p_details", type_=_JSONText()),
        log_time=sa.bindparam("p_log_time", type_=UTCDateTime()),
    )
    .execution_options(insertmanyvalues_page_size=BATCH_ROWS)
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperationEvent:
    """One row of ``operation_log``."""

    event_id: int
    category: str
    resource: str
    sync_id: str
    entity_key: str | None
    event_time: dt.datetime
    message: str
    details: dict[str, Any]
    log_time: dt.datetime


def insert_operations(
    store: SyncStore,
    events: Sequence[PendingEvent],
    *,
    resource: str,
    sync_id: str,
    written_before: int,
    log_time: dt.datetime,
) -> None:
    """Write one batch of a sync's events in one transaction (one multi-row INSERT).

    Args:
        store: the store whose engine and retry policy to use.
        events: the batch, validated.
        resource: the resource being synced.
        sync_id: the sync the events belong to.
        written_before: how many of this sync's events earlier batches wrote; lets a retry
            recognise that an attempt whose acknowledgement was lost did commit.
        log_time: when the batch is written (aware UTC).
    """
    if not events:
        return
    params = [
        {
            "p_category": e.category,
            "p_resource": resource,
            "p_sync_id": sync_id,
            "p_entity_key": e.entity_key,
            "p_event_time": e.event_time,
            "p_message": e.message,
            "p_details": e.details_json,
            "p_log_time": log_time,
        }
        for e in events
    ]
    attempts = 0

    def tx(conn: sa.Connection) -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1 and _count_for_sync(conn, sync_id) == written_before + len(params):
            return  # the previous attempt committed; only its acknowledgement was lost
        conn.execute(_INSERT_EVENTS, params)

    store.db.write(tx, f"log {len(params)} operation events of sync {sync_id}")


def _count_for_sync(conn: sa.Connection, sync_id: str) -> int:
    query = sa.select(sa.func.count()).where(operation_log.c.sync_id == sync_id)
    return conn.execute(query).scalar_one()


def list_operations(
    store: SyncStore,
    *,
    sync_id: str | None = None,
    resource: str | None = None,
    category: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = 1000,
) -> list[OperationEvent]:
    """Events, oldest first (by event time, then id), filtered by each argument given."""
    query = sa.select(operation_log).order_by(operation_log.c.event_time, operation_log.c.event_id)
    if sync_id is not None:
        query = query.where(operation_log.c.sync_id == sync_id)
    if resource is not None:
        query = query.where(operation_log.c.resource == resource)
    if category is not None:
        query = query.where(operation_log.c.category == category)
    if since is not None:
        query = query.where(operation_log.c.event_time >= since)
    if until is not None:
        query = query.where(operation_log.c.event_time < until)
    if limit is not None:
        query = query.limit(limit)

    def read(conn: sa.Connection) -> list[OperationEvent]:
        return [OperationEvent(**row) for row in conn.execute(query).mappings()]

    return store.db.read(read, "list operation events")


def count_operations(store: SyncStore, sync_id: str) -> Mapping[str, int]:
    """How many events of each category a sync wrote (categories with none are left out)."""
    query = (
        sa.select(operation_log.c.category, sa.func.count())
        .where(operation_log.c.sync_id == sync_id)
        .group_by(operation_log.c.category)
        .order_by(operation_log.c.category)
    )

    def read(conn: sa.Connection) -> dict[str, int]:
        return {category: n for category, n in conn.execute(query).all()}

    return store.db.read(read, f"count operation events of sync {sync_id}")
