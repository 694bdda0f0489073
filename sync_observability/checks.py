"""Asset checks that show a tracked asset's sync health in the Dagster UI.

One ``sync_health`` check per asset reads the asset's ``sync_state`` row (the resource named by
the asset key, as :meth:`SyncTracker.track` records it) and applies the same rules as the
sensors: it fails with severity ERROR after N consecutive failures and with severity WARN when
no sync has succeeded for too long. The checks run with the asset (``dg.materialize``) or on
their own from the UI.
"""

# No `from __future__ import annotations`: Dagster reads the resource parameter's annotation.
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from sync_observability.alerts.rules import (
    AlertPolicy,
    Thresholds,
    check_consecutive_failures,
    check_stale_watermarks,
)
from sync_observability.storage.store import SyncState
from sync_observability.tracking import SyncTracker, utcnow

CHECK_NAME = "sync_health"

AssetLike = dg.AssetKey | str | Sequence[str] | dg.AssetsDefinition | dg.AssetSpec


def make_sync_health_checks(
    asset_keys_or_assets: Iterable[AssetLike],
    *,
    consecutive_failures_threshold: int = 3,
    stale_after_hours: float = 24.0,
) -> list[dg.AssetChecksDefinition]:
    """One ``sync_health`` asset check per tracked asset.

    Args:
        asset_keys_or_assets: asset keys (``AssetKey``, ``"vantage/accounts"``, a list of
            parts), asset specs, or assets definitions (every key of a multi-asset).
        consecutive_failures_threshold: failures in a row that fail the check (ERROR).
        stale_after_hours: hours without a successful sync that fail the check (WARN).

    Returns:
        The checks, to pass to ``dg.Definitions(asset_checks=...)``. Each needs the
        ``sync_tracker`` resource.

    Examples:
        .. code-block:: python

            defs = dg.Definitions(
                assets=[accounts],
                asset_checks=make_sync_health_checks([accounts]),
                resources={"sync_tracker": SyncTracker()},
            )
    """
    policy = AlertPolicy(
        defaults=Thresholds(
            consecutive_failures=consecutive_failures_threshold,
            stale_after=dt.timedelta(hours=stale_after_hours),
        )
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
    limits = policy.defaults

    @dg.asset_check(
        asset=key,
        name=CHECK_NAME,
        description=(
            f"Fails (ERROR) after {limits.consecutive_failures} consecutive failed syncs of "
            f"{resource!r}, and (WARN) when it has had no successful sync for "
            f"{limits.stale_after.total_seconds() / 3600:g} h."
        ),
    )
    def _check(sync_tracker: SyncTracker) -> dg.AssetCheckResult:
        return sync_health(resource, sync_tracker.get_state(resource), policy, utcnow())

    return _check


def sync_health(
    resource: str, state: SyncState | None, policy: AlertPolicy, now: dt.datetime
) -> dg.AssetCheckResult:
    """The check result for one resource's state (None: it never synced).

    Consecutive failures fail the check with severity ERROR, staleness with WARN (ERROR wins
    when both hold); a resource that never synced fails with WARN, as its asset is probably not
    tracked under this name.
    """
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
