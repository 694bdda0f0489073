"""Fixtures of the outage tests: throwaway PostgreSQL clusters and trackers, always cleaned up.

A cluster needs the PostgreSQL binaries: without them the tests are skipped locally and *fail*
in CI (``CI=true``), as the shared-server tests do. A cluster that cannot start is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from sync_observability import SyncTracker
from sync_observability_tests.conftest import IN_CI
from sync_observability_tests.outage.cluster import (
    PostgresCluster,
    find_bindir,
    unavailable_reason,
)


class ClusterFactory:
    """Starts clusters for one test (``make_cluster(max_connections=10)``); closes them all."""

    def __init__(self) -> None:
        self.clusters: list[PostgresCluster] = []

    def __call__(self, **settings: str | int) -> PostgresCluster:
        reason = unavailable_reason()
        if reason is not None:
            if IN_CI:
                pytest.fail(f"cannot start a throwaway PostgreSQL cluster: {reason}")
            pytest.skip(reason)
        bindir = find_bindir()
        assert bindir is not None
        cluster = PostgresCluster(bindir, settings=settings)
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def thaw_all(self) -> None:
        for cluster in self.clusters:
            cluster.thaw()

    def close_all(self) -> None:
        for cluster in reversed(self.clusters):
            cluster.close()


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """A factory of clusters that lives as long as the test: thawed, stopped and removed after."""
    factory = ClusterFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def cluster(make_cluster: ClusterFactory) -> PostgresCluster:
    """A started cluster with the default settings, for this test alone."""
    return make_cluster()


@pytest.fixture
def make_tracker(make_cluster: ClusterFactory) -> Iterator[Any]:
    """``make_tracker(url, storage_timeout_seconds=3)``: a SyncTracker disposed after the test.

    Torn down before the clusters: they are thawed first, so that no connection is closed on a
    server that cannot answer.
    """
    made: list[SyncTracker] = []

    def make(url: str, **kwargs: Any) -> SyncTracker:
        tracker = SyncTracker(database_url=url, **kwargs)
        made.append(tracker)
        return tracker

    yield make
    make_cluster.thaw_all()
    for tracker in made:
        if tracker._store is not None:
            with contextlib.suppress(Exception):
                tracker._store.dispose()
