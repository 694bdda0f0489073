"""Assets with no tracker code (and one tracked), in a module Dagster's step processes import.

``dg.reconstructable`` records the job functions by name; each step process of the
multiprocess executor imports this module and calls them again.
"""

# No `from __future__ import annotations`: Dagster reads the asset parameters' annotations.
import os
import time

import dagster as dg

from sync_observability import SyncTracker

RELEASE_FILE = "SYNC_OBS_TEST_RELEASE_FILE"  # the hanging asset waits for this file
STARTED_FILE = "SYNC_OBS_TEST_STARTED_FILE"  # ... after writing this one


@dg.asset
def upstream() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 12})


@dg.asset(deps=[upstream], retry_policy=dg.RetryPolicy(max_retries=1))
def flaky(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    if context.retry_number == 0:
        raise ConnectionError("source answered 503")
    return dg.MaterializeResult(metadata={"dagster/row_count": 7})


@dg.asset(deps=[upstream])
def broken() -> None:
    raise ValueError("column 'amount' missing")


@dg.asset(deps=[broken])
def after_broken() -> None:
    pass


@dg.multi_asset(specs=[dg.AssetSpec("multi_ok"), dg.AssetSpec("multi_bad")])
def multi() -> dg.MaterializeResult:
    yield dg.MaterializeResult(asset_key="multi_ok", metadata={"dagster/row_count": 3})
    raise RuntimeError("second table failed")


@dg.asset
def tracked(context: dg.AssetExecutionContext, sync_tracker: SyncTracker) -> dg.MaterializeResult:
    with sync_tracker.track(context) as sync:
        sync.record(processed=5)
    return dg.MaterializeResult(metadata=sync.metadata)


@dg.asset
def hanging() -> None:
    with open(os.environ[STARTED_FILE], "w") as f:
        f.write(str(os.getpid()))
    while not os.path.exists(os.environ[RELEASE_FILE]):
        time.sleep(0.05)


MIXED = [upstream, flaky, broken, after_broken, multi, tracked]


def _executor() -> dg.ExecutorDefinition:
    return dg.multiprocess_executor.configured(
        {
            "max_concurrent": 4,
            "start_method": {"forkserver": {"preload_modules": ["dagster", "sync_observability"]}},
        }
    )


def mixed_job() -> dg.JobDefinition:
    """Successes, a retried step, a failure, a skipped asset, a multi-asset, a tracked one."""
    defs = dg.Definitions(
        assets=MIXED,
        jobs=[dg.define_asset_job("mixed", executor_def=_executor())],
        resources={"sync_tracker": SyncTracker.configure_at_launch()},
    )
    return defs.resolve_job_def("mixed")


def hanging_job() -> dg.JobDefinition:
    """One step that runs until it is killed (or released)."""
    defs = dg.Definitions(
        assets=[hanging], jobs=[dg.define_asset_job("hanging_job", executor_def=_executor())]
    )
    return defs.resolve_job_def("hanging_job")
