"""The assets and jobs of ``bench_step_cost.py``, in a module its step processes can import.

``dg.reconstructable`` records this module and a job function by name; every step process of
the multiprocess executor imports the module and calls the function again. So the untracked side
must not import ``sync_observability``: it is imported inside the tracked builders, when a job
that uses it is built, as a code location using the package would import it. The tracked job's
database and schema come from the environment (``SYNC_OBS_BENCH_DATABASE_URL``,
``SYNC_OBS_BENCH_SCHEMA``), which the step processes inherit.
"""

import os

import dagster as dg

STEPS = 20
MAX_CONCURRENT = 2
DATABASE_URL_VAR = "SYNC_OBS_BENCH_DATABASE_URL"
SCHEMA_VAR = "SYNC_OBS_BENCH_SCHEMA"


def untracked_asset(name: str) -> dg.AssetsDefinition:
    """A trivial asset that does nothing."""

    @dg.asset(name=name)
    def step(context: dg.AssetExecutionContext) -> None:
        pass

    return step


def tracked_asset(name: str) -> dg.AssetsDefinition:
    """The same trivial asset, its (empty) body inside ``sync_tracker.track(context)``."""
    from sync_observability import SyncTracker

    @dg.asset(name=name)
    def step(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> None:
        with sync_tracker.track(context):
            pass

    return step


def _multiprocess_job(
    name: str, assets: list[dg.AssetsDefinition], resources: dict[str, object]
) -> dg.JobDefinition:
    executor = dg.multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT})
    job = dg.define_asset_job(name, executor_def=executor)
    defs = dg.Definitions(assets=assets, jobs=[job], resources=resources)
    return defs.resolve_job_def(name)


def untracked_job() -> dg.JobDefinition:
    """``STEPS`` independent trivial assets, run by the multiprocess executor."""
    assets = [untracked_asset(f"step_{i:02d}") for i in range(STEPS)]
    return _multiprocess_job("untracked_steps", assets, {})


def tracked_job() -> dg.JobDefinition:
    """The same ``STEPS`` assets, each tracked, with a ``SyncTracker`` configured from the
    environment."""
    from sync_observability import SyncTracker

    tracker = SyncTracker(
        database_url=os.environ[DATABASE_URL_VAR], schema_name=os.environ[SCHEMA_VAR]
    )
    assets = [tracked_asset(f"step_{i:02d}") for i in range(STEPS)]
    return _multiprocess_job("tracked_steps", assets, {"sync_tracker": tracker})
