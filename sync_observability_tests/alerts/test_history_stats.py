"""Recent durations and volumes per resource (the slow and volume sensors' one query each)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from sync_observability import SyncStore
from sync_observability.storage.history_stats import recent_durations_ms, recent_volumes
from sync_observability_tests.alerts.dagster_helpers import past_sync, utcnow

HOUR = dt.timedelta(hours=1)


def _history(store: SyncStore) -> None:
    start = utcnow() - 100 * HOUR
    # orders: 8 successes with a failure after the 4th; durations 1001.., volumes 10, 20, ...
    for i in range(8):
        past_sync(
            store,
            "orders",
            started_at=start + i * 2 * HOUR,
            duration=dt.timedelta(milliseconds=1001 + i),
            processed=10 * (i + 1),
        )
        if i == 3:
            past_sync(store, "orders", started_at=start + (i * 2 + 1) * HOUR, status="failed")
    past_sync(store, "broken", started_at=start, status="failed")
    past_sync(store, "single", started_at=start, processed=7)


def test_newest_first_limited_per_resource_and_only_successes(store: SyncStore) -> None:
    _history(store)
    # The latest success (1008 ms) is what the slow rule judges: it is left out.
    assert recent_durations_ms(store, limit=5) == {"orders": [1007, 1006, 1005, 1004, 1003]}
    assert recent_volumes(store, limit=3) == {"orders": [80, 70, 60], "single": [7]}
    assert recent_volumes(store, limit=100)["orders"] == [80, 70, 60, 50, 40, 30, 20, 10]
    assert recent_durations_ms(store, limit=0) == {}


def test_a_failed_latest_sync_leaves_every_success_in(store: SyncStore) -> None:
    _history(store)
    past_sync(store, "orders", started_at=utcnow() - HOUR, status="failed")
    assert recent_durations_ms(store, limit=2) == {"orders": [1008, 1007]}
    assert recent_volumes(store, limit=2) == {"orders": [80, 70], "single": [7]}


def test_sqlite_walks_the_resource_time_index(tmp_path: Any) -> None:
    """Without ANALYZE statistics SQLite must still not walk every successful run."""
    store = SyncStore.from_url(f"sqlite:///{tmp_path / 'plan.db'}")
    _history(store)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "sync_history" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    recent_durations_ms(store)
    recent_volumes(store)
    sa.event.remove(store.engine, "before_cursor_execute", capture)
    assert len(statements) == 2
    with store.engine.connect() as conn:
        for statement, parameters in statements:
            plan = " | ".join(
                row[-1]
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
            assert "ix_sync_history_resource_time (resource=?)" in plan, plan
            assert "ix_sync_history_status_time" not in plan, plan
    store.dispose()
