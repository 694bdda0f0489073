"""Stale limits from what Dagster already knows about an asset: its freshness policy or cron.

Where the alerting resource gives no ``stale_after`` for an asset's resource (no exact name, no
pattern), the limit comes from its definitions, first match wins:

1. its ``FreshnessPolicy`` (the 1.12+ API): ``time_window(fail_window=W)`` gives W;
   ``cron(deadline_cron=C, lower_bound_delta=D)`` gives C's longest gap between two deadlines
   plus D;
2. the cron of a schedule whose job targets it, or of its ``AutomationCondition.on_cron``:
   stale after two missed ticks (twice the cron's longest gap between two ticks, so a weekday
   schedule is not stale over a weekend);
3. else the policy's default.

The resource of an asset is its key's user string (``a/b``), as tracked and observed syncs
record it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

import dagster as dg

from sync_observability.alerts.rules import AlertPolicy

_GAPS_LOOKED_AT = 32  # consecutive ticks whose longest gap is the cron's gap
MISSED_TICKS = 2


def definition_stale_limits(
    repository_def: dg.RepositoryDefinition, now: dt.datetime
) -> dict[str, dt.timedelta]:
    """Resource -> stale limit, for every asset whose definitions imply one (see the module)."""
    graph = repository_def.asset_graph
    crons: dict[dg.AssetKey, list[tuple[str, str]]] = {}
    for schedule in repository_def.schedule_defs:
        if not repository_def.has_job(schedule.job_name):
            continue
        job = repository_def.get_job(schedule.job_name)
        cron_strings = schedule.cron_schedule
        if isinstance(cron_strings, str):
            cron_strings = [cron_strings]
        timezone = schedule.execution_timezone or "UTC"
        for key in job.asset_layer.selected_asset_keys:
            crons.setdefault(key, []).extend((c, timezone) for c in cron_strings)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    limits: dict[str, dt.timedelta] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        limit = _freshness_limit(getattr(node, "freshness_policy", None), day)
        if limit is None:
            ticks = crons.get(key, []) + list(_condition_crons(node.automation_condition))
            if ticks:
                limit = MISSED_TICKS * min(_longest_gap(c, tz, day) for c, tz in ticks)
        if limit is not None:
            limits[key.to_user_string()] = limit
    return limits


def with_definition_limits(policy: AlertPolicy, limits: Mapping[str, dt.timedelta]) -> AlertPolicy:
    """``policy`` with ``limits`` as ``stale_after`` wherever the policy itself sets none."""
    patterns = [(k, v) for k, v in policy.overrides.items() if "stale_after" in v]
    overrides = dict(policy.overrides)
    added = False
    for resource, limit in limits.items():
        if any(k == resource or fnmatchcase(resource, k) for k, _ in patterns):
            continue  # the user's threshold wins
        overrides[resource] = {**policy.overrides.get(resource, {}), "stale_after": limit}
        added = True
    if not added:
        return policy
    return dataclasses.replace(policy, overrides=overrides)


def _freshness_limit(policy: Any, day: dt.datetime) -> dt.timedelta | None:
    if policy is None:
        return None
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:
        return fail_window.to_timedelta()
    deadline_cron = getattr(policy, "deadline_cron", None)
    if deadline_cron is not None:
        gap = _longest_gap(deadline_cron, policy.timezone or "UTC", day)
        return gap + (policy.lower_bound_delta or dt.timedelta(0))
    return None


def _condition_crons(condition: Any) -> Iterator[tuple[str, str]]:
    """The crons of the ``CronTickPassedCondition``s in an automation condition's tree."""
    if condition is None:
        return
    cron = getattr(condition, "cron_schedule", None)
    if isinstance(cron, str):
        yield cron, getattr(condition, "cron_timezone", None) or "UTC"
    for child in condition.children:
        yield from _condition_crons(child)


@functools.lru_cache(maxsize=1024)
def _longest_gap(cron: str, timezone: str, day: dt.datetime) -> dt.timedelta:
    """The longest time between two consecutive ticks of ``cron`` from ``day`` on."""
    # Dagster's own cron iteration (timezones, DST): the schedules run on it.
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(day.timestamp(), cron, timezone)
    times = [next(ticks) for _ in range(_GAPS_LOOKED_AT)]
    return max(b - a for a, b in itertools.pairwise(times))


__all__ = ["definition_stale_limits", "with_definition_limits"]
