"""``sync_schema_changes_sensor``: an alert when a DROP or ALTER touches a table you watch.

Reads ``ddl_events`` (filled by ``sync-obs ddl enable``'s event triggers, PostgreSQL) for DROP
and ALTER commands on tables in the schemas you list, and alerts through the same lifecycle and
sinks as the other alert sensors (``sync_alerting``), naming the object, the statement and the
session user (and client address) that ran it.

Decisions where the issue was silent:

- **One alert per event**: the fingerprint is ``schema_change:<event_id>``, so two ALTERs of one
  table are two notifications; the alert's ``resource`` is the object (``analytics.orders``).
  DROP is ``critical``, ALTER ``warning``.
- **An event, not a condition**: nothing "clears" a schema change, so its alert stays open for
  ``open_for`` (default 24 hours: ``sync-obs alerts --status open`` lists the day's changes)
  and then resolves, with one resolution notification. No reminders: a change does not get
  more urgent.
- **Cursor**: the sensor's cursor is a transaction horizon over ``ddl_events`` (see
  :mod:`sync_observability.storage.reporting.ddl`), not an event id: ids are taken at insert,
  not at commit, so a DDL transaction committing after a later one would fall behind an id
  cursor. Each tick reads every visible event from the horizon on; those of transactions not yet
  below the horizon are read again by later ticks and de-duplicated by their fingerprint (their
  alert is open), so a DDL is alerted on the first tick after its commit, once. Changes made
  before the sensor's first tick are not alerted (``sync-obs report ddl-history`` lists them).
"""

# No `from __future__ import annotations`: Dagster reads the resource parameters' annotations.
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from sync_observability.alerts.lifecycle import deliver_pending, record_findings
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.alerts.rules import CRITICAL, SCHEMA_CHANGE, WARNING, Finding
from sync_observability.alerts.sensors import TICK_STORAGE_SECONDS, MessageFn
from sync_observability.clock import utcnow
from sync_observability.errors import InvalidInputError
from sync_observability.tracking import SyncTracker

if TYPE_CHECKING:
    from sync_observability.storage.records import Alert

DEFAULT_OBJECT_TYPES = ("table", "table column", "foreign table")
"""``ddl_events.object_type`` values the sensor watches by default: tables (a renamed column
is recorded as a ``table column``, other ALTER TABLEs as the ``table``)."""
_MAX_EVENTS = 500  # per tick; the rest on the next
_STATEMENT_IN_MESSAGE = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchemaChangeFinding(Finding):
    """A :class:`Finding` about one ``ddl_events`` row: its fingerprint names the event."""

    event_id: int

    @property
    def fingerprint(self) -> str:
        """``schema_change:<event_id>``: one alert per event."""
        return f"{self.rule}:{self.event_id}"


def schema_change_finding(event: dict[str, Any]) -> SchemaChangeFinding:
    """The finding of one ``ddl_events`` row (a DROP or ALTER)."""
    statement = " ".join((event["statement"] or "").split())
    if len(statement) > _STATEMENT_IN_MESSAGE:
        statement = statement[: _STATEMENT_IN_MESSAGE - 3] + "..."
    where = f" from {event['client_address']}" if event["client_address"] else ""
    what = event["object_identity"] or event["object_type"]
    tag = event["command_tag"]
    return SchemaChangeFinding(
        rule=SCHEMA_CHANGE,
        resource=what[:255],
        severity=CRITICAL if tag.startswith("DROP") else WARNING,
        message=f"{tag} on {event['object_type']} {what} by {event['db_session_user']}"
        f"{where}: {statement}",
        since=event["event_time"],
        details={
            "event_id": event["event_id"],
            "command_tag": tag,
            "object_type": event["object_type"],
            "object_identity": event["object_identity"],
            "schema_name": event["schema_name"],
            "statement": event["statement"],
            "db_session_user": event["db_session_user"],
            "client_address": event["client_address"],
            "application_name": event["application_name"],
            "event_time": event["event_time"],
        },
        event_id=event["event_id"],
    )


def _still_open(alert: "Alert") -> SchemaChangeFinding:
    """An open alert as the finding that keeps it open (its own content, unchanged)."""
    return SchemaChangeFinding(
        rule=alert.rule,
        resource=alert.resource,
        severity=alert.severity,
        message=alert.message,
        since=alert.since,
        details=alert.details,
        event_id=int(alert.fingerprint.rpartition(":")[2]),
    )


def _check_names(field: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidInputError(field, values, "must be a non-empty list of names")
    return tuple(values)


def make_schema_changes_sensor(
    *,
    schemas: Sequence[str],
    object_types: Sequence[str] = DEFAULT_OBJECT_TYPES,
    open_for: dt.timedelta = dt.timedelta(hours=24),
    name: str = "sync_schema_changes_sensor",
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    message_fn: MessageFn | None = None,
    slack: Any = None,
) -> dg.SensorDefinition:
    """A sensor that alerts when a DROP or ALTER touches a table in ``schemas``.

    Needs DDL tracking on (``sync-obs ddl enable``, PostgreSQL, in the database of the
    ``sync_tracker``'s URL). Each DROP/ALTER event on an object of ``object_types`` in one of
    ``schemas`` opens one alert (fingerprint ``schema_change:<event_id>``) naming the object,
    the statement and who ran it; it resolves ``open_for`` later. Delivered through the
    ``sync_alerting`` sinks (log, webhook, Slack) like the other alert sensors.

    Args:
        schemas: the schemas to watch, e.g. the ones your assets write.
        object_types: ``ddl_events.object_type`` values to alert on (default: tables).
        open_for: how long an alert stays open before it resolves.
        name: the sensor's name.
        minimum_interval_seconds: the least time between two ticks.
        default_status: whether the sensor runs without being turned on in the UI.
        message_fn: builds the alert message from the finding (default: the built-in line).
        slack: a dagster-slack ``SlackResource`` to post through.

    Returns:
        The sensor. It needs the ``sync_tracker`` and ``sync_alerting`` resources.

    Examples:
        .. code-block:: python

            defs = dg.Definitions(
                sensors=[make_schema_changes_sensor(schemas=["analytics", "staging"])],
                resources={"sync_tracker": SyncTracker(), "sync_alerting": SyncAlerting()},
            )
    """
    schemas = _check_names("schemas", schemas)
    object_types = _check_names("object_types", object_types)
    if not isinstance(open_for, dt.timedelta) or open_for <= dt.timedelta(0):
        raise InvalidInputError("open_for", open_for, "must be a positive datetime.timedelta")

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Alerts when a DROP or ALTER touches a table in {', '.join(schemas)}.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        sync_tracker: SyncTracker,
        sync_alerting: SyncAlerting,
    ) -> dg.SkipReason:
        from sync_observability.storage.alert_store import AlertStore
        from sync_observability.storage.reporting.ddl import alerted_fingerprints, changes_since

        now = utcnow()
        sinks = sync_alerting.sinks(
            context.log, slack_client=slack.get_client() if slack is not None else None
        )
        store = sync_tracker.store
        after = int(context.cursor) if context.cursor else None
        with store.db.deadline(TICK_STORAGE_SECONDS):
            events, horizon = changes_since(
                store, after=after, schemas=schemas, object_types=object_types, limit=_MAX_EVENTS
            )
            findings = [schema_change_finding(e) for e in events]
            if findings:  # an event read again: its alert is kept open by `young`, or is done
                done = alerted_fingerprints(
                    store,
                    [f.fingerprint for f in findings],
                    opened_since=min(e["event_time"] for e in events),
                )
                findings = [f for f in findings if f.fingerprint not in done]
            if message_fn is not None:
                findings = [dataclasses.replace(f, message=message_fn(f)) for f in findings]
            alerts = AlertStore(store)
            young = [
                _still_open(a)
                for a in alerts.list_alerts(status="open", rule=SCHEMA_CHANGE, limit=None)
                if a.opened_at > now - open_for
            ]
            tick = record_findings(alerts, SCHEMA_CHANGE, [*young, *findings], now=now)
            report = deliver_pending(
                alerts, sinks, now=now, renotify_after=None, rules=[SCHEMA_CHANGE]
            )
        # After the alerts are recorded: a tick that failed before reads the same events again.
        context.update_cursor(str(horizon))
        for notification, error in report.failed:
            context.log.warning(
                f"sync_observability: {notification.kind} notification of alert "
                f"{notification.alert.fingerprint} not delivered, retrying next tick: {error}"
            )
        # Events of transactions above the horizon are read again; only new alerts are news.
        changed = [f"{a.resource} ({a.details.get('command_tag')})" for a in tick.opened]
        summary = (
            f"{len(tick.opened)} new schema change(s) in {', '.join(schemas)}"
            + (f": {', '.join(changed[:5])}" if changed else "")
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            + f"; {len(tick.resolved)} resolved, {len(report.delivered)} notification(s) sent"
            + (f", {len(report.failed)} failed (retried next tick)" if report.failed else "")
        )
        if tick.opened or tick.resolved or report.delivered or report.failed:
            context.log.info(f"sync_observability: {summary}")
        return dg.SkipReason(summary)

    return _sensor


__all__ = ["DEFAULT_OBJECT_TYPES", "SchemaChangeFinding", "make_schema_changes_sensor"]
