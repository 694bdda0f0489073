"""Seven Vantage syncs (seed 001's resources), simulated: incremental fetches, occasional timeouts.

Seed 001 is the ``vantage_sync_state`` design described in docs/seeds.md.

Nothing leaves the machine. Each asset asks the tracker for its watermark, "fetches" the rows
modified since then (a pseudo-random count from the resource name and the time; the first sync
is a bigger backfill), records the counts, and now and then fails with a simulated API timeout,
which the tracker records and Dagster reports as a failed step.

Environment:
    SYNC_OBS_DEMO_FAILURE_RATE: probability that a sync fails (default 0.15; 0 never, 1 always).
    SYNC_OBS_DEMO_SEED: makes the outcomes reproducible: the k-th sync of a resource then depends
        only on the seed, the resource and k, not on the time.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.
import dataclasses
import datetime as dt
import os
import random
import time

import dagster as dg

from sync_observability.errors import InvalidInputError
from sync_observability.tracking import SyncRun, SyncTracker

FAILURE_RATE_ENV = "SYNC_OBS_DEMO_FAILURE_RATE"
SEED_ENV = "SYNC_OBS_DEMO_SEED"
DEFAULT_FAILURE_RATE = 0.15
# The first sync has no watermark and fetches everything: about this many hours of changes.
BACKFILL_HOURS = 24
# An incremental sync after a long outage fetches at most this many hours of changes.
MAX_CATCH_UP_HOURS = 24 * 7

# Seed 001's seeded resources: description, and rows modified per hour at the source.
VANTAGE_RESOURCES: dict[str, tuple[str, int]] = {
    "accounts": ("Vantage account entities", 40),
    "funds": ("Fund structures", 5),
    "cashflows": ("Cash movement transactions", 300),
    "commitments": ("Investment commitments", 20),
    "investors": ("Investor entities", 15),
    "investments": ("Investment positions", 60),
    "valuations": ("Asset valuations", 120),
}


class VantageAPITimeout(TimeoutError):
    """The (simulated) Vantage API did not answer in time."""


@dataclasses.dataclass(frozen=True)
class SimulatedFetch:
    """What one simulated fetch returned: new and changed rows, or a timeout."""

    created: int
    updated: int
    times_out: bool

    @property
    def processed(self) -> int:
        """Rows fetched and written."""
        return self.created + self.updated


def simulate_fetch(
    rows_per_hour: int,
    *,
    modified_since: dt.datetime | None,
    now: dt.datetime,
    salt: str,
    failure_rate: float,
) -> SimulatedFetch:
    """The rows a Vantage endpoint would return for ``modified_since``; same salt, same answer.

    Args:
        rows_per_hour: how many rows change per hour at the source.
        modified_since: the watermark (None on the first sync: a backfill).
        now: when the fetch happens.
        salt: seeds the pseudo-random draws (include the resource name).
        failure_rate: probability in [0, 1] that the request times out.
    """
    rng = random.Random(salt)
    if modified_since is None:
        created = round(rows_per_hour * BACKFILL_HOURS * rng.uniform(0.8, 1.2))
        updated = 0
    else:
        hours = min(max((now - modified_since).total_seconds() / 3600, 0.0), MAX_CATCH_UP_HOURS)
        changed = round(rows_per_hour * hours * rng.uniform(0.7, 1.3))
        # Sources trickle a few changes even between back-to-back syncs.
        changed += rng.randint(0, max(1, rows_per_hour // 10))
        created = round(changed * rng.uniform(0.05, 0.3))
        updated = changed - created
    return SimulatedFetch(created=created, updated=updated, times_out=rng.random() < failure_rate)


def configured_failure_rate() -> float:
    """``SYNC_OBS_DEMO_FAILURE_RATE`` as a probability (default 0.15)."""
    raw = os.environ.get(FAILURE_RATE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_FAILURE_RATE
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise InvalidInputError(FAILURE_RATE_ENV, raw, "must be a number between 0 and 1")
    return rate


def _salt(resource: str, tracker: SyncTracker, sync: SyncRun) -> str:
    seed = os.environ.get(SEED_ENV)
    if not seed:
        return f"{resource}|{sync.started_at.isoformat()}"
    # This sync's own history row is already written: earlier syncs are all rows but one.
    earlier = len(tracker.store.list_history(resource=sync.resource, limit=None)) - 1
    return f"{resource}|seed={seed}|sync={earlier}"


def _vantage_asset(resource: str, description: str, rows_per_hour: int) -> dg.AssetsDefinition:
    @dg.asset(
        name=resource,
        key_prefix="vantage",
        group_name="vantage",
        description=f"{description}, synced incrementally from the (simulated) Vantage API.",
        kinds={"python"},
    )
    def vantage_sync(
        context: dg.AssetExecutionContext, sync_tracker: SyncTracker
    ) -> dg.MaterializeResult:
        rate = configured_failure_rate()  # a bad setting fails here, before a sync is recorded
        with sync_tracker.track(
            context, source_system="vantage", target_system="warehouse"
        ) as sync:
            fetch = simulate_fetch(
                rows_per_hour,
                modified_since=sync.watermark,
                now=sync.started_at,
                salt=_salt(resource, sync_tracker, sync),
                failure_rate=rate,
            )
            # Stands in for the network and the upserts, so durations are not all zero.
            time.sleep(min(fetch.processed, 200) / 20_000)
            if fetch.times_out:
                since = "the beginning" if sync.watermark is None else sync.watermark.isoformat()
                raise VantageAPITimeout(
                    f"Vantage API request for {resource} modified since {since} timed out "
                    f"after 30s (simulated; {FAILURE_RATE_ENV}={rate})"
                )
            sync.record(processed=fetch.processed, created=fetch.created, updated=fetch.updated)
            context.log.info(
                f"{resource}: {fetch.created} created, {fetch.updated} updated since "
                f"{sync.watermark.isoformat() if sync.watermark else 'the beginning'}"
            )
        return dg.MaterializeResult(metadata=sync.metadata)

    return vantage_sync


vantage_assets: list[dg.AssetsDefinition] = [
    _vantage_asset(name, description, rate)
    for name, (description, rate) in VANTAGE_RESOURCES.items()
]

vantage_sync_job = dg.define_asset_job(
    "vantage_sync_job",
    selection=dg.AssetSelection.groups("vantage"),
    description="Sync every Vantage resource into the warehouse (simulated).",
)

vantage_sync_schedule = dg.ScheduleDefinition(
    name="vantage_sync_schedule",
    job=vantage_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly Vantage sync; stopped until you turn it on in the UI.",
)
