"""The ``sync_health`` check results a sensor reports when an alert opens or resolves.

A check only runs with its asset or by hand, so when the asset fails the UI shows the check's
execution failing, never the "3 in a row" it is about. The consecutive-failures and stale
sensors therefore report the check's result themselves (``SensorResult(asset_events=...)``,
stored by Dagster's daemon) for every resource whose alert opened or resolved on the tick, when
the code location declares a ``sync_health`` check on the asset of that name: the check and
Dagster's asset health turn red when the alert opens and green when it resolves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import dagster as dg

from sync_observability.alerts.rules import AlertPolicy
from sync_observability.checks import CHECK_NAME, sync_health

if TYPE_CHECKING:
    from sync_observability.storage.store import SyncStore


def check_evaluations(
    repository_def: dg.RepositoryDefinition | None,
    store: SyncStore,
    resources: Iterable[str],
    policy: AlertPolicy,
    now: dt.datetime,
) -> list[dg.AssetCheckEvaluation]:
    """The ``sync_health`` result of each of ``resources`` whose asset declares the check."""
    if repository_def is None:
        return []
    declared = repository_def.asset_graph.asset_check_keys
    evaluations = []
    for resource in sorted(set(resources)):
        key = dg.AssetKey.from_user_string(resource)
        if dg.AssetCheckKey(key, CHECK_NAME) not in declared:
            continue
        result = sync_health(resource, store.get_state(resource), policy, now)
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=result.passed,
                severity=result.severity,
                description=result.description,
                metadata=result.metadata,
            )
        )
    return evaluations


__all__ = ["check_evaluations"]
