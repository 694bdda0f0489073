"""Child-process targets that die in the middle of a tracked sync (``os._exit``, no cleanup).

Run with the ``spawn`` start method, so each child is a fresh interpreter like a Dagster worker.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.
import os
from typing import Any

import dagster as dg

from sync_observability import SyncTracker

EXIT_CODE = 17
DYING_ASSET_KEY = dg.AssetKey(["crm", "orders"])


@dg.asset(key=DYING_ASSET_KEY)
def dying_orders(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> None:
    """Starts its sync, records a few rows, then its process is killed."""
    with sync_tracker.track(context, source_system="crm") as sync:
        sync.record(processed=5)
        os._exit(EXIT_CODE)


def materialize_and_die(instance_ref: Any, database_url: str, schema: str) -> None:
    """Materialize :func:`dying_orders` in a real Dagster run on the given instance."""
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        dg.materialize(
            [dying_orders],
            instance=instance,
            resources={"sync_tracker": SyncTracker(database_url=database_url, schema_name=schema)},
        )


def track_and_die(database_url: str, schema: str, resource: str) -> None:
    """Track a sync outside Dagster (no run id) and die in the middle of it."""
    tracker = SyncTracker(database_url=database_url, schema_name=schema)
    with tracker.track(resource=resource, source_system="ledger"):
        os._exit(EXIT_CODE)
