"""SyncAlerting: where alerts go and the thresholds the sync sensors apply.

The resource holds configuration only; the sensors in :mod:`sync_observability.alerts.sensors`
ask it for the :class:`~sync_observability.alerts.rules.AlertPolicy` and the sinks on every tick.
Its threshold defaults are :class:`~sync_observability.alerts.rules.Thresholds`' own, in the
units config can express.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from sync_observability.alerts.rules import AlertPolicy, Thresholds
from sync_observability.alerts.sinks import LogSink, Sink, SlackSink, WebhookSink
from sync_observability.errors import ConfigurationError, InvalidInputError

# Override keys that config (YAML/JSON numbers) can express, mapped to the Thresholds
# timedelta they set; the other Thresholds fields are given by their own names.
_DURATION_KEYS = {
    "stuck_after_minutes": ("stuck_after", "minutes"),
    "stale_after_hours": ("stale_after", "hours"),
    "slow_after_minutes": ("slow_after", "minutes"),
    "not_moving_after_hours": ("not_moving_after", "hours"),
}
_KEY_ALIASES = {"consecutive_failures_threshold": "consecutive_failures"}
_DEFAULTS = Thresholds()
_MINUTE = dt.timedelta(minutes=1)
_HOUR = dt.timedelta(hours=1)


class SyncAlerting(dg.ConfigurableResource):
    """Alert thresholds and destinations for the sync sensors (resource key ``sync_alerting``).

    Every notification goes to the Dagster log; also to a JSON webhook when ``webhook_url`` is
    set and to Slack when ``slack_webhook_url`` is set (or a dagster-slack ``SlackResource`` is
    given to the sensor factories). Webhook URLs are secrets: pass them with ``dg.EnvVar``; they
    are never logged.

    Examples:
        .. code-block:: python

            alerting = SyncAlerting(
                webhook_url=dg.EnvVar("SYNC_ALERTS_WEBHOOK_URL"),
                dagster_ui_url="https://dagster.example.com",
                overrides={"vantage/*": {"stale_after_hours": 48}},
                muted=["sandbox/*"],
            )
            defs = dg.Definitions.merge(my_defs, sync_observability_definitions(alerting=alerting))
    """

    webhook_url: str | None = Field(
        default=None,
        repr=False,
        description="URL that receives each notification as a JSON POST. A secret: use dg.EnvVar.",
    )
    slack_webhook_url: str | None = Field(
        default=None,
        repr=False,
        description="Slack incoming-webhook URL for notifications. A secret: use dg.EnvVar.",
    )
    slack_channel: str | None = Field(
        default=None,
        description="Slack channel (#alerts) when posting through a dagster-slack SlackResource.",
    )
    dagster_ui_url: str | None = Field(
        default=None,
        description="Base URL of the Dagster UI (https://dagster.example.com) for run links.",
    )
    consecutive_failures_threshold: int = Field(
        default=_DEFAULTS.consecutive_failures,
        description="Failures in a row that open a consecutive-failures alert.",
    )
    stuck_after_minutes: float = Field(
        default=_DEFAULTS.stuck_after / _MINUTE,
        description=(
            "A sync running longer than this is reaped (TIMED_OUT) and alerted. A sync whose "
            "Dagster run has ended is reaped (ORPHANED) on the next tick whatever its age."
        ),
    )
    stale_after_hours: float = Field(
        default=_DEFAULTS.stale_after / _HOUR,
        description="A resource without a successful sync for longer is stale.",
    )
    slow_after_minutes: float = Field(
        default=_DEFAULTS.slow_after / _MINUTE,
        description="A successful sync that took longer than this is slow.",
    )
    slow_factor: float | None = Field(
        default=_DEFAULTS.slow_factor,
        description="A sync is also slow above this many times its recent median; null: off.",
    )
    volume_sigma: float = Field(
        default=_DEFAULTS.volume_sigma,
        description="Records processed outside mean +/- this many standard deviations alert.",
    )
    not_moving_after_syncs: int = Field(
        default=_DEFAULTS.not_moving_after_syncs,
        description=(
            "Successful syncs in a row that leave the watermark unchanged before a "
            "watermark_not_moving warning."
        ),
    )
    not_moving_after_hours: float | None = Field(
        default=None,
        description=(
            "Also warn when syncs keep succeeding this long without moving the watermark; "
            "null: off."
        ),
    )
    renotify_after_minutes: float | None = Field(
        default=240.0,
        description="Remind about a still-open alert this often; null: never remind.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one webhook or Slack request."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Per-resource thresholds: resource name or fnmatch pattern (vantage/*) -> fields. "
            "Fields: consecutive_failures, stuck_after_minutes, stale_after_hours, "
            "slow_after_minutes, slow_factor, slow_min_samples, volume_sigma, volume_window, "
            "volume_min_samples, not_moving_after_syncs, not_moving_after_hours, muted. An "
            "exact name beats a pattern, a longer pattern a shorter one."
        ),
    )
    muted: list[str] = Field(
        default_factory=list,
        description="Resources (or fnmatch patterns) that never alert.",
    )

    def policy(self) -> AlertPolicy:
        """The thresholds as an :class:`AlertPolicy` for the rules.

        Raises:
            ConfigurationError: an override names an unknown field or has an invalid value.
        """
        try:
            defaults = Thresholds(
                consecutive_failures=self.consecutive_failures_threshold,
                stuck_after=dt.timedelta(minutes=self.stuck_after_minutes),
                stale_after=dt.timedelta(hours=self.stale_after_hours),
                slow_after=dt.timedelta(minutes=self.slow_after_minutes),
                slow_factor=self.slow_factor,
                volume_sigma=self.volume_sigma,
                not_moving_after_syncs=self.not_moving_after_syncs,
                not_moving_after=(
                    None
                    if self.not_moving_after_hours is None
                    else dt.timedelta(hours=self.not_moving_after_hours)
                ),
            )
            overrides = {key: _threshold_fields(key, v) for key, v in self.overrides.items()}
            return AlertPolicy(defaults=defaults, overrides=overrides, muted=self.muted)
        except InvalidInputError as error:
            raise ConfigurationError(f"SyncAlerting: {error}") from error

    @property
    def renotify_after(self) -> dt.timedelta | None:
        """How often a still-open alert is re-sent; None when reminders are off."""
        if self.renotify_after_minutes is None:
            return None
        return dt.timedelta(minutes=self.renotify_after_minutes)

    def sinks(self, log: Any, *, slack_client: Any = None) -> list[Sink]:
        """Where notifications go: the log, then the webhook and Slack when configured.

        Args:
            log: a ``logging.Logger`` or Dagster's ``context.log``.
            slack_client: a slack_sdk-like client (dagster-slack's ``SlackResource.get_client()``);
                used instead of ``slack_webhook_url`` when given, posting to ``slack_channel``.
        """
        sinks: list[Sink] = [LogSink(log, dagster_ui_url=self.dagster_ui_url)]
        if self.webhook_url:
            sinks.append(
                WebhookSink(
                    self.webhook_url,
                    timeout=self.webhook_timeout_seconds,
                    dagster_ui_url=self.dagster_ui_url,
                )
            )
        if slack_client is not None:
            if not self.slack_channel:
                raise ConfigurationError(
                    "SyncAlerting: set slack_channel to post through a Slack client"
                )
            sinks.append(
                SlackSink(
                    client=slack_client,
                    channel=self.slack_channel,
                    dagster_ui_url=self.dagster_ui_url,
                )
            )
        elif self.slack_webhook_url:
            sinks.append(
                SlackSink(
                    webhook_url=self.slack_webhook_url,
                    dagster_ui_url=self.dagster_ui_url,
                    timeout=self.webhook_timeout_seconds,
                )
            )
        return sinks


def _threshold_fields(key: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Config-friendly override fields (``stale_after_hours: 48``) as Thresholds fields."""
    fields: dict[str, Any] = {}
    for name, value in given.items():
        if name in _DURATION_KEYS:
            field, unit = _DURATION_KEYS[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInputError(f"overrides[{key!r}].{name}", value, "must be a number")
            fields[field] = dt.timedelta(**{unit: value})
        else:
            fields[_KEY_ALIASES.get(name, name)] = value
    return fields


__all__ = ["SyncAlerting"]
