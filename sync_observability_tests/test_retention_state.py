"""State-aware retention on SQLite and PostgreSQL (issue 6 item 5): archival never moves the sync
that produced a resource's current watermark nor the last K syncs of each resource, however old,
and a purge never deletes an archived sync that owns the watermark."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability import InvalidInputError, SyncStore
from sync_observability.cli.archive import archive
from sync_observability.retention import RetentionPolicy, SyncRetentionConfig, run_retention
from sync_observability.storage.records import SyncOutcome
from sync_observability.storage.retention_store import RetentionStore, _archivable
from sync_observability.storage.schema import sync_history, sync_history_archive
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def sync(
    store: SyncStore,
    resource: str,
    started: dt.datetime,
    status: str = "success",
    *,
    watermark: dt.datetime | None = None,
) -> str:
    """One finished sync through the store, started at ``started`` (watermark default: start)."""
    sync_id = str(uuid.uuid4())
    store.start_sync(sync_id=sync_id, resource=resource, started_at=started)
    outcome = SyncOutcome(
        status=status,
        ended_at=started + dt.timedelta(minutes=5),
        watermark_after=watermark,
        error_message=None if status == "success" else "HTTP 503",
    )
    store.finish_sync(sync_id=sync_id, resource=resource, started_at=started, outcome=outcome)
    return sync_id


def seed(store: SyncStore) -> dict[str, list[str]]:
    """Resources whose owning sync and last syncs are past the 90-day cutoff, oldest first."""
    ids: dict[str, list[str]] = {}
    # Advanced by its 30th sync, then failed 12 times: the owner is not among the last 10.
    start = NOW - 400 * DAY
    ids["moving"] = [sync(store, "moving", start + i * DAY) for i in range(30)]
    ids["moving"] += [sync(store, "moving", start + (30 + i) * DAY, "failed") for i in range(12)]
    # Rewound to its 5th sync: that sync owns the watermark again.
    start = NOW - 300 * DAY
    ids["rewound"] = [sync(store, "rewound", start + i * DAY) for i in range(25)]
    store.rewind_to_sync("rewound", ids["rewound"][4], reason="replay", changed_by="test")
    # Set by hand to a value no sync produced: no sync owns it, the last 10 stay.
    start = NOW - 250 * DAY
    ids["manual"] = [sync(store, "manual", start + i * DAY) for i in range(15)]
    store.set_watermark("manual", start + 14.5 * DAY, reason="skip a bad day", changed_by="test")
    # Fewer syncs than K: all stay.
    ids["few"] = [sync(store, "few", NOW - (200 - i) * DAY) for i in range(4)]
    # Half recent: the last 10 are 5 recent and the 5 newest old ones.
    ids["recent"] = [sync(store, "recent", NOW - (185 - 10 * i) * DAY) for i in range(15)]
    # Its later syncs leave the watermark where it was: the latest of them owns it.
    start = NOW - 500 * DAY
    ids["stalled"] = [sync(store, "stalled", start)]
    ids["stalled"] += [
        sync(store, "stalled", start + i * HOUR, watermark=start) for i in range(1, 16)
    ]
    return ids


def history(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(sync_history)).mappings()]


def ids_in(engine: sa.Engine, table: sa.Table) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.sync_id)).scalars())


def expected_kept(store: SyncStore, rows: list[dict[str, Any]], keep_last: int) -> set[str]:
    """The rows state-aware retention must keep, worked out in Python from the tables."""
    kept: set[str] = set()
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_resource.setdefault(row["resource"], []).append(row)
    for resource, runs in by_resource.items():
        runs.sort(key=lambda r: r["sync_start_time"])
        kept |= {r["sync_id"] for r in runs[len(runs) - keep_last :]} if keep_last else set()
        state = store.get_state(resource)
        owners = [
            r
            for r in runs
            if r["sync_status"] == "success" and r["watermark_after"] == state.last_sync_time
        ]
        if owners:
            kept.add(owners[-1]["sync_id"])
    return kept


@dataclasses.dataclass
class Expected:
    ids: dict[str, list[str]]
    kept: set[str]
    to_archive: set[str]


def plan(store: SyncStore, engine: sa.Engine, keep_last: int) -> Expected:
    ids = seed(store)
    rows = history(engine)
    kept = expected_kept(store, rows, keep_last)
    old = {r["sync_id"] for r in rows if r["sync_start_time"] < NOW - 90 * DAY}
    return Expected(ids=ids, kept=kept, to_archive=old - kept)


def test_the_owner_and_the_last_k_stay_everything_else_past_the_cutoff_moves(
    backend: Backend, store: SyncStore
) -> None:
    engine = backend.engine()
    expected = plan(store, engine, keep_last=10)
    ids = expected.ids
    # The cases are what they claim: owners and last syncs past the cutoff, one rewound owner.
    assert ids["moving"][29] in expected.kept and ids["moving"][29] not in ids["moving"][-10:]
    assert ids["rewound"][4] in expected.kept
    assert set(ids["manual"]) & expected.kept == set(ids["manual"][-10:])
    assert ids["stalled"][-1] in expected.kept and len(set(ids["stalled"]) & expected.kept) == 10
    recent = {r["sync_id"] for r in history(engine) if r["sync_start_time"] >= NOW - 90 * DAY}
    assert recent == set(ids["recent"][-5:])
    policy = RetentionPolicy(batch_size=7, purge_after_days=3650, table_ages={})

    dry = run_retention(store, dataclasses.replace(policy, dry_run=True), now=NOW)
    assert dry.counts["sync_history.archived"] == len(expected.to_archive)
    assert ids_in(engine, sync_history_archive) == set()

    result = run_retention(store, policy, now=NOW)
    assert result.counts["sync_history.archived"] == len(expected.to_archive)
    assert ids_in(engine, sync_history_archive) == expected.to_archive
    online = ids_in(engine, sync_history)
    assert expected.kept <= online
    assert set(ids["few"]) <= online
    assert set(ids["recent"]) & online == set(ids["recent"][-10:])
    assert set(ids["moving"]) & online == {ids["moving"][29], *ids["moving"][-10:]}
    assert set(ids["rewound"]) & online == {ids["rewound"][4], *ids["rewound"][-10:]}

    again = run_retention(store, policy, now=NOW)
    assert again.counts["sync_history.archived"] == 0
    assert (
        run_retention(store, dataclasses.replace(policy, dry_run=True), now=NOW).counts[
            "sync_history.archived"
        ]
        == 0
    )
    assert ids_in(engine, sync_history) == online
    engine.dispose()


@pytest.mark.parametrize("keep_last", [0, 3])
def test_keep_last_is_the_policy_s_and_the_owner_stays_even_at_zero(
    backend: Backend, store: SyncStore, keep_last: int
) -> None:
    engine = backend.engine()
    expected = plan(store, engine, keep_last=keep_last)
    policy = RetentionPolicy(
        batch_size=5, purge_after_days=3650, table_ages={}, keep_last_per_resource=keep_last
    )
    dry = run_retention(store, dataclasses.replace(policy, dry_run=True), now=NOW)
    assert dry.counts["sync_history.archived"] == len(expected.to_archive)
    result = run_retention(store, policy, now=NOW)
    assert result.counts["sync_history.archived"] == len(expected.to_archive)
    assert ids_in(engine, sync_history_archive) == expected.to_archive
    online = ids_in(engine, sync_history)
    assert expected.kept <= online
    ids = expected.ids
    assert set(ids["few"]) & online == set(ids["few"][-max(1, keep_last) :])
    assert {ids["moving"][29], ids["rewound"][4], ids["stalled"][-1]} <= online
    if keep_last == 0:  # only the owners and the recent syncs are left
        owners = {ids["moving"][29], ids["rewound"][4], ids["stalled"][-1], ids["few"][-1]}
        assert online == owners | set(ids["recent"][-5:])
    engine.dispose()


def test_a_purge_keeps_an_archived_sync_that_owns_the_watermark(
    backend: Backend, store: SyncStore
) -> None:
    """A row archived before it owned the watermark (here: a manual set to its value) stays."""
    engine = backend.engine()
    start = NOW - 800 * DAY
    old = [sync(store, "legacy", start + i * DAY) for i in range(5)]
    policy = RetentionPolicy(
        archive_after_days=90, purge_after_days=400, table_ages={}, keep_last_per_resource=0
    )
    # Archive everything but the owner (the last sync) with no purge, then rewind by hand to
    # the second sync's watermark while it is in the archive.
    first = run_retention(store, dataclasses.replace(policy, purge_after_days=3650), now=NOW)
    assert first.counts["sync_history.archived"] == 4
    store.set_watermark(
        "legacy", start + DAY, reason="restore", changed_by="test", allow_rewind=True
    )
    dry = run_retention(store, dataclasses.replace(policy, dry_run=True), now=NOW)
    result = run_retention(store, policy, now=NOW)
    # The former owner is archived then purged; of the archive, only the new owner stays.
    assert dry.counts == result.counts
    assert result.counts["sync_history.archived"] == 1
    assert result.counts["sync_history_archive.purged"] == 4
    assert ids_in(engine, sync_history_archive) == {old[1]}
    assert ids_in(engine, sync_history) == set()
    again = run_retention(store, policy, now=NOW)
    assert again.total_rows == 0
    engine.dispose()


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10"])
def test_a_bad_keep_last_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="keep_last_per_resource"):
        RetentionPolicy(keep_last_per_resource=bad)


def test_the_job_config_carries_keep_last() -> None:
    assert SyncRetentionConfig().policy().keep_last_per_resource == 10
    assert SyncRetentionConfig(keep_last=0).policy().keep_last_per_resource == 0


def test_the_cli_passes_keep_last(backend: Backend, store: SyncStore) -> None:
    engine = backend.engine()
    ids = [sync(store, "cli", NOW - (200 - i) * DAY) for i in range(6)]  # the last one owns
    for keep_last, archived in (("10", 0), ("2", 4), ("0", 1)):
        result = CliRunner().invoke(
            archive,
            [
                *("--database-url", backend.url, "--schema", backend.schema),
                "--json",
                "--keep-last",
                keep_last,
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["counts"]["sync_history.archived"] == archived
    assert ids_in(engine, sync_history) == {ids[-1]}  # the owner, even at --keep-last 0
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_watermark_rewound_during_a_run_keeps_its_new_owner(
    backend: Backend, store: SyncStore
) -> None:
    """PostgreSQL reads what archival keeps once per run (KeepSnapshot); a watermark rewound
    after that read is still honoured by every later batch, and the snapshot's rule counts
    exactly what the per-row rule counts."""
    engine = backend.engine()
    retention = RetentionStore(store)
    expected = plan(store, engine, keep_last=3)
    before = NOW - 90 * DAY
    snapshot = retention.keep_snapshot(3)
    assert snapshot is not None
    key = sync_history.c.sync_id
    per_row = sa.select(sa.func.count()).where(_archivable(sync_history, key, before, 3))
    with engine.connect() as conn:
        assert conn.execute(per_row).scalar_one() == len(expected.to_archive)
    assert retention.count_archivable(before, keep_last=3, boundaries=snapshot) == len(
        expected.to_archive
    )
    # After the snapshot: the "moving" resource is rewound to its 3rd sync, which the snapshot
    # says archival may move; the batch must see the current watermark and keep it.
    moving = expected.ids["moving"]
    store.rewind_to_sync("moving", moving[2], reason="replay", changed_by="test")
    moved = 0
    while True:
        batch = retention.archive_batch(
            before=before, after=None, limit=1000, now=NOW, keep_last=3, boundaries=snapshot
        )
        moved += batch.rows
        if batch.rows == 0:
            break
    online = ids_in(engine, sync_history)
    assert moving[2] in online
    assert moving[29] not in online  # no longer the owner: it moved
    assert moved == len(expected.to_archive)  # one kept more (the new owner), one fewer kept
    engine.dispose()
