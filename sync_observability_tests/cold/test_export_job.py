"""``sync_retention_job`` with a cold URL: one run does all three tiers (real Dagster execution).

History past the online window moves to the archive, archive rows past the cold age (those just
archived included) and old operation-log events go to Parquet files, and whole months past the
cold window leave the cold tier. Without a cold URL the job does what it always did.
"""

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_observability.cold import layout
from sync_observability.cold.export import COLD_URL_ENV
from sync_observability.retention import RetentionPolicy, sync_retention_job
from sync_observability.storage.schema import operation_log, sync_history, sync_history_archive
from sync_observability_tests.cold.conftest import (
    UTC,
    archive_rows,
    insert,
    operation_rows,
    table_rows,
)
from sync_observability_tests.conftest import Backend


def _history(now: dt.datetime, ages_days: list[int]) -> list[dict[str, Any]]:
    """Finished syncs of one resource, one per age."""
    rows = []
    for age in ages_days:
        start = now - dt.timedelta(days=age, hours=1)
        rows.append(
            {
                "sync_id": str(uuid.uuid4()),
                "resource": "orders",
                "sync_type": "full",
                "sync_start_time": start,
                "sync_end_time": start + dt.timedelta(minutes=5),
                "sync_status": "success",
                "errors": [],
                "metadata": {"age": age},
            }
        )
    return rows


def _cold_ids(root: Any, table: str) -> set[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: set[Any] = set()
    for entry in layout.read_manifest(root):
        if entry.table == table:
            data = pq.read_table(pa.BufferReader((root / entry.path).read_bytes()))
            ids |= set(data.column(layout.ID_COLUMNS[table]).to_pylist())
    return ids


def test_one_run_with_a_cold_url_does_all_three_tiers(backend: Backend, tmp_path: Path) -> None:
    now = dt.datetime.now(UTC)  # the job reads the clock; every age below is days from a cutoff
    engine = backend.engine()
    backend.store().dispose()  # migrate
    history = _history(now, [5, 30, 120, 200, 400, 500])
    archive = archive_rows(60, start=now - dt.timedelta(days=900), step=dt.timedelta(days=10))
    events = operation_rows(20, start=now - dt.timedelta(days=600), step=dt.timedelta(days=30))
    with engine.begin() as conn:
        conn.execute(sa.insert(sync_history), history)
    insert(engine, archive, events)
    url = str(tmp_path / "cold")
    config = {
        "cold_url": url,
        "cold_after_days": 365,
        "purge_after_days": 365,
        "purge_cold_after_days": 700,
        "keep_last": 0,
    }
    tracker = backend.tracker()
    with dg.instance_for_test() as instance:
        result = sync_retention_job.execute_in_process(
            run_config={"ops": {"sync_retention": {"config": config}}},
            resources={"sync_tracker": tracker},
            instance=instance,
        )
    assert result.success
    counts = result.output_for_node("sync_retention")["counts"]

    def age(moment: dt.datetime) -> float:
        return (now - moment) / dt.timedelta(days=1)

    # Tier 1 -> 2: history older than 90 days left sync_history.
    online = {r["sync_id"] for r in history if age(r["sync_start_time"]) < 90}
    left = table_rows(engine, sync_history)
    assert {k for k, r in left.items() if r["resource"] == "orders"} == online
    # Tier 2 -> 3: the archive keeps 90..365 days; older rows (the two just archived too) are
    # cold, except whole months past 700 days, which the cold purge deleted.
    in_archive = set(table_rows(engine, sync_history_archive))
    everything = history + archive
    assert in_archive == {r["sync_id"] for r in everything if 90 <= age(r["sync_start_time"]) < 365}
    cold_cutoff = now - dt.timedelta(days=700)
    root = layout.open_root(url)
    cold = _cold_ids(root, "sync_history")
    assert {r["sync_id"] for r in history if age(r["sync_start_time"]) > 365} <= cold
    for row in everything:
        start = row["sync_start_time"]
        month_end = (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        expected = age(start) > 365 and month_end > cold_cutoff
        assert (row["sync_id"] in cold) == expected, (start, month_end, cold_cutoff)
    events_left = [r["event_time"] for r in table_rows(engine, operation_log).values()]
    assert sorted(events_left) == [e["event_time"] for e in events if age(e["event_time"]) < 365]
    assert len(_cold_ids(root, "operation_log")) == len(events) - len(events_left)
    purged_ids = {r["sync_id"] for r in archive if age(r["sync_start_time"]) > 365} - cold
    assert purged_ids  # some months did go
    assert counts["sync_history_archive.exported"] == len(cold) + len(purged_ids)
    assert counts["cold.purged"] == len(purged_ids)  # no event is 700 days old
    assert counts["sync_history_archive.purged"] == 0  # the export had taken them
    tracker.store.dispose()


def test_the_cold_url_comes_from_the_environment_and_without_one_nothing_goes_cold(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(UTC)
    engine = backend.engine()
    backend.store().dispose()
    archive = archive_rows(4, start=now - dt.timedelta(days=300), step=dt.timedelta(days=1))
    insert(engine, archive, [])
    run_config = {"ops": {"sync_retention": {"config": {"cold_after_days": 200}}}}
    tracker = backend.tracker()
    monkeypatch.delenv(COLD_URL_ENV, raising=False)
    with dg.instance_for_test() as instance:
        plain = sync_retention_job.execute_in_process(
            run_config=run_config, resources={"sync_tracker": tracker}, instance=instance
        )
        assert (
            "sync_history_archive.exported" not in plain.output_for_node("sync_retention")["counts"]
        )
        assert len(table_rows(engine, sync_history_archive)) == 4
        monkeypatch.setenv(COLD_URL_ENV, str(tmp_path / "cold"))
        cold = sync_retention_job.execute_in_process(
            run_config=run_config, resources={"sync_tracker": tracker}, instance=instance
        )
    assert cold.output_for_node("sync_retention")["counts"]["sync_history_archive.exported"] == 4
    assert table_rows(engine, sync_history_archive) == {}
    assert _cold_ids(layout.open_root(str(tmp_path / "cold")), "sync_history") == {
        r["sync_id"] for r in archive
    }
    tracker.store.dispose()


def test_a_cold_age_past_the_purge_age_is_refused(tmp_path: Path) -> None:
    from sync_observability.cold.export import ColdPolicy
    from sync_observability.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"cold\.older_than_days.*purge_after_days"):
        RetentionPolicy(
            purge_after_days=365, cold=ColdPolicy(url=str(tmp_path), older_than_days=400)
        )
