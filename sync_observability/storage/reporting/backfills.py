"""What the tracker's hot path needs of the roll-ups: a backfill reopens the hours it lands in.

A sync started with a ``started_at`` more than :data:`BACKFILL_AFTER` in the past may land in an
hour :mod:`.hourly_rollups` already aggregated. :meth:`SyncStore.start_sync
<sync_observability.storage.store.SyncStore.start_sync>` then runs :func:`reopen_statement` in
the transaction that inserts the history row, so the next refresh aggregates that day again;
normal syncs pay nothing. Kept apart so that starting a sync does not import the roll-ups.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync_observability.clock import floor_day, floor_hour
from sync_observability.storage.schema import UTCDateTime, sync_rollup_state

BACKFILL_AFTER = dt.timedelta(minutes=1)


def is_backfill(started_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a sync starting at ``started_at`` may land in an hour already rolled up."""
    if started_at.tzinfo is None:
        return False  # refused with its own error when the row is written
    return started_at < now - BACKFILL_AFTER


def reopen_statement(started_at: dt.datetime) -> sa.Update:
    """The UPDATE that makes the day of a backfilled ``started_at`` (and later ones) open.

    Run in the transaction that inserts the history row; it waits for a concurrent refresh's
    lock, so the refresh either saw the row or is undone from that hour by this update.
    """
    hour = floor_day(started_at)  # the day's count in sync_history_daily is redone whole
    state = sync_rollup_state.c
    return (
        sa.update(sync_rollup_state)
        # Hours before rolled_from are read live: a backfill there changes no roll-up.
        .where(state.rolled_until > hour, state.rolled_from <= floor_hour(started_at))
        .values(
            rolled_until=sa.case(
                (state.rolled_from < hour, sa.literal(hour, UTCDateTime())),
                else_=state.rolled_from,
            )
        )
    )
