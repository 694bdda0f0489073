"""Asset checks that show a tracked asset's sync health in the Dagster UI.

One ``sync_health`` check per asset reads the asset's ``sync_state`` row (the resource named by
the asset key, as :meth:`SyncTracker.track` records it) and applies the same rules as the
sensors: it fails with severity ERROR after N consecutive failures and with severity WARN when
no sync has succeeded for too long. Given the ``SyncAlerting`` resource the sensors use, the
checks apply its thresholds, per-resource overrides and mutes, so the UI agrees with the
alerts. The checks run with the asset (``dg.materialize``) or on their own from the UI.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.
import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from sync_observability.alerts.expected import definition_stale_limits, with_definition_limits
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import (
    AlertPolicy,
    check_consecutive_failures,
    check_stale_watermarks,
)
from sync_observability.clock import utcnow
from sync_observability.storage.records import SyncState
from sync_observability.tracking import SyncTracker

CHECK_NAME = "sync_health"

AssetLike = dg.AssetKey | str | Sequence[str] | dg.AssetsDefinition | dg.AssetSpec


def make_sync_health_checks(
    asset_keys_or_assets: Iterable[AssetLike],
    *,
    consecutive_failures_threshold: int | None = None,
    stale_after_hours: float | None = None,
    alerting: SyncAlerting | None = None,
) -> list[dg.AssetChecksDefinition]:
    """One ``sync_health`` asset check per tracked asset.

    Args:
        asset_keys_or_assets: asset keys (``AssetKey``, ``"vantage/accounts"``, a list of
            parts), asset specs, or assets definitions (every key of a multi-asset).
        consecutive_failures_threshold: failures in a row that fail the check (ERROR); default
            the alerting resource's, else the rule's (``Thresholds``: 3).
        stale_after_hours: hours without a successful sync that fail the check (WARN); default
            the alerting resource's, else the rule's (``Thresholds``: 24).
        alerting: the ``sync_alerting`` resource the sensors use: its thresholds, per-resource
            overrides and muted resources apply (a muted resource's check passes). The two
            arguments above, when given, replace its global thresholds only.

    Returns:
        The checks, to pass to ``dg.Definitions(asset_checks=...)``. Each needs the
        ``sync_tracker`` resource.

    Examples:
        .. code-block:: python

            alerting = SyncAlerting(overrides={"vantage/*": {"stale_after_hours": 48}})
            defs = dg.Definitions(
                assets=[accounts],
                asset_checks=make_sync_health_checks([accounts], alerting=alerting),
                resources={"sync_tracker": SyncTracker(), "sync_alerting": alerting},
            )

    Raises:
        ConfigurationError: the alerting resource's thresholds or overrides are invalid.
        InvalidInputError: a threshold given here is invalid.
    """
    policy = alerting.policy() if alerting is not None else AlertPolicy()
    given: dict[str, Any] = {}
    if consecutive_failures_threshold is not None:
        given["consecutive_failures"] = consecutive_failures_threshold
    if stale_after_hours is not None:
        given["stale_after"] = dt.timedelta(hours=stale_after_hours)
    if given:
        policy = AlertPolicy(
            defaults=dataclasses.replace(policy.defaults, **given),
            overrides=policy.overrides,
            muted=policy.muted,
        )
    keys: dict[dg.AssetKey, None] = {}
    for item in asset_keys_or_assets:
        keys.update(dict.fromkeys(_asset_keys(item)))
    return [_sync_health_check(key, policy) for key in keys]


def _asset_keys(item: AssetLike) -> list[dg.AssetKey]:
    if isinstance(item, dg.AssetsDefinition):
        return list(item.keys)
    if isinstance(item, dg.AssetSpec):
        return [item.key]
    if isinstance(item, str):
        return [dg.AssetKey.from_user_string(item)]
    return [dg.AssetKey.from_coercible(item)]


def _sync_health_check(key: dg.AssetKey, policy: AlertPolicy) -> dg.AssetChecksDefinition:
    resource = key.to_user_string()
    limits = policy.for_resource(resource)
    description = (
        f"Fails (ERROR) after {limits.consecutive_failures} consecutive failed syncs of "
        f"{resource!r}, and (WARN) when it has had no successful sync for "
        f"{limits.stale_after.total_seconds() / 3600:g} h (or what the asset's freshness policy "
        "or schedule implies, when the alerting policy sets no limit for it)."
    )
    if limits.muted:
        description = f"{resource!r} is muted in the alerting policy: the check always passes."

    @dg.asset_check(asset=key, name=CHECK_NAME, description=description)
    def _check(
        context: dg.AssetCheckExecutionContext, sync_tracker: SyncTracker
    ) -> dg.AssetCheckResult:
        now = utcnow()
        applied = policy
        repository = _repository(context)
        if repository is not None:  # the stale limit its freshness policy or cron implies
            applied = with_definition_limits(policy, definition_stale_limits(repository, now))
        return sync_health(resource, sync_tracker.get_state(resource), applied, now)

    return _check


def _repository(context: dg.AssetCheckExecutionContext) -> dg.RepositoryDefinition | None:
    try:
        return context.op_execution_context.repository_def
    except Exception:  # dg.materialize runs without one
        return None


def sync_health(
    resource: str, state: SyncState | None, policy: AlertPolicy, now: dt.datetime
) -> dg.AssetCheckResult:
    """The check result for one resource's state (None: it never synced).

    Consecutive failures fail the check with severity ERROR, staleness with WARN (ERROR wins
    when both hold); a resource that never synced fails with WARN, as its asset is probably not
    tracked under this name. A resource ``policy`` mutes passes, as the sensors never alert on
    it.
    """
    if policy.for_resource(resource).muted:
        return dg.AssetCheckResult(
            passed=True,
            description=f"{resource} is muted in the alerting policy: not judged.",
            metadata={"status": state.last_sync_status if state else "never_run", "muted": True},
        )
    if state is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"No sync of {resource!r} recorded in sync_state: the asset never ran, or it "
                "tracks its syncs under another resource name."
            ),
            metadata={"status": "never_run"},
        )
    failures = check_consecutive_failures([state], policy, now)
    stale = check_stale_watermarks([state], policy, now)
    findings = failures + stale
    metadata: dict[str, Any] = {
        "status": state.last_sync_status,
        "consecutive_failures": state.consecutive_failures,
        "last_sync_time": _timestamp(state.last_sync_time),
        "last_success_at": _timestamp(state.last_success_at),
        "records_synced": state.records_synced,
    }
    if not findings:
        return dg.AssetCheckResult(
            passed=True,
            description=f"{resource} is healthy (last sync {state.last_sync_status}).",
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR if failures else dg.AssetCheckSeverity.WARN,
        description="; ".join(f.message for f in findings),
        metadata=metadata,
    )


def _timestamp(value: dt.datetime | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.timestamp(value)


__all__ = ["CHECK_NAME", "make_sync_health_checks", "sync_health"]
