"""The reports' resource filters take any name as data, never as SQL, on SQLite and PostgreSQL.

The strings of ``test_store.NASTY_NAMES`` (quotes, ``; DROP TABLE``, ``%s``, ``:param``, 255
characters) are stored as resources and then passed as the filter: each must find exactly its
own rows. Probes that match no resource (``' OR '1'='1``, LIKE wildcards) must find nothing, and
every table must still be there with the same rows. A filter built with an f-string fails here:
on a quote, or by answering a probe with every resource's rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability import SyncStore
from sync_observability.reports import cost_trends, quality_trends
from sync_observability.storage.reporting.daily_costs import daily_rollups
from sync_observability.storage.schema import metadata
from sync_observability_tests.conftest import Backend
from sync_observability_tests.reports.history import NOW, Run, add_runs
from sync_observability_tests.test_store import NASTY_NAMES, snapshot

# A name that is none of the stored ones, but would match all of them if spliced into SQL.
PROBES = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "') OR ('a'='a",
    '" OR ""="',
    "%",
    "_",
    "*",
    "accounts'; DROP TABLE sync_history; --",
]
DAY = NOW.date()


def _cost(i: int) -> float:
    return 1.25 + i


def _quality(i: int) -> float:
    return round(0.5 + i / 100, 2)


@pytest.fixture
def stored(store: SyncStore) -> SyncStore:
    """One successful sync per nasty name, two hours before NOW, with its own cost and score."""
    add_runs(
        store,
        [
            Run(
                name,
                NOW - dt.timedelta(hours=2, minutes=i),
                30,
                records=100 + i,
                metrics={"total_cost_usd": _cost(i), "overall_quality": _quality(i)},
            )
            for i, name in enumerate(NASTY_NAMES)
        ],
    )
    return store


def _tables(backend: Backend) -> set[str]:
    engine = backend.engine()
    try:
        schema = backend.schema if backend.name == "postgresql" else None
        return set(sa.inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def _filtered(store: SyncStore, name: str) -> dict[str, list[Any]]:
    """What each report (and the daily roll-ups under cost_trends) answers for ``name``."""
    since = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.timezone.utc)
    return {
        "cost_trends": [
            (r["date"], r["resource"], r["total_executions"], r["total_cost_usd"])
            for r in cost_trends(store, days=1, now=NOW, resource=name).to_dict("records")
        ],
        "quality_trends": [
            (r["date"], r["resource"], r["runs"], r["overall_quality"])
            for r in quality_trends(store, days=1, now=NOW, resource=name).to_dict("records")
        ],
        "daily_rollups": [
            (r.day, r.resource, r.executions, r.total_cost_usd, r.records_processed)
            for r in daily_rollups(store, since, NOW, resource=name)
        ],
    }


def test_each_stored_name_finds_exactly_its_own_rows(stored: SyncStore, backend: Backend) -> None:
    cost_trends(stored, days=1, now=NOW)  # the first report fills the roll-ups: snapshot after
    tables, rows = _tables(backend), snapshot(backend)
    assert set(metadata.tables) <= tables
    for i, name in enumerate(NASTY_NAMES):
        assert _filtered(stored, name) == {
            "cost_trends": [(DAY, name, 1, _cost(i))],
            "quality_trends": [(DAY, name, 1, _quality(i))],
            "daily_rollups": [(DAY, name, 1, _cost(i), 100 + i)],
        }, name
    assert _tables(backend) == tables
    assert snapshot(backend) == rows


@pytest.mark.parametrize("probe", PROBES)
def test_a_probe_finds_nothing_and_changes_nothing(
    stored: SyncStore, backend: Backend, probe: str
) -> None:
    (total,) = cost_trends(stored, days=1, now=NOW).to_dict("records")  # fills the roll-ups
    assert total["total_executions"] == len(NASTY_NAMES)
    tables, rows = _tables(backend), snapshot(backend)
    assert _filtered(stored, probe) == {
        "cost_trends": [],
        "quality_trends": [],
        "daily_rollups": [],
    }
    assert _tables(backend) == tables
    assert snapshot(backend) == rows
