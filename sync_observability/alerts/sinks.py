"""Where notifications go: a log (always), a generic JSON webhook, and Slack.

A sink's ``send`` returns when the notification was accepted and raises :class:`SinkError`
otherwise; :func:`~sync_observability.alerts.lifecycle.deliver_pending` then keeps it due and
retries it on the next tick.

Webhook URLs and tokens are secrets: they never appear in a log line, a ``repr`` or an error
message. A failure names the sink and the HTTP status or the exception type only, and the
underlying exception (which may carry the URL) is not chained.

Examples:
    .. code-block:: python

        sinks = [
            LogSink(context.log),
            WebhookSink(os.environ["ALERT_WEBHOOK_URL"], dagster_ui_url="https://dagster.example"),
            SlackSink(os.environ["SLACK_WEBHOOK_URL"]),
        ]
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sync_observability.errors import ConfigurationError, SyncObservabilityError

if TYPE_CHECKING:
    from sync_observability.alerts.lifecycle import Notification
    from sync_observability.storage.alert_store import Alert
    from sync_observability.storage.records import SyncState

_LAST_ERROR_LIMIT = 500
_RESPONSE_LIMIT = 64 * 1024
_USER_AGENT = "sync-observability"


class SinkError(SyncObservabilityError):
    """A sink did not accept a notification; it stays due and is retried on the next tick."""


class Sink(Protocol):
    """Anything with a unique ``name`` and a ``send`` that raises :class:`SinkError` on failure."""

    name: str

    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; return only once the destination accepted it."""
        ...


class _Logger(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


class _SlackClient(Protocol):
    def chat_postMessage(self, *, channel: str, text: str) -> Any: ...


def run_url(alert: Alert, dagster_ui_url: str | None) -> str | None:
    """The Dagster UI page of the alert's run, when both the UI URL and the run are known."""
    return _run_page(alert.dagster_run_id, dagster_ui_url)


def resolved_state(state: SyncState | None) -> dict[str, Any]:
    """What a resolution reports in place of the open alert's details: the resource's state.

    Keys: ``last_sync_status``, ``last_sync_time``, ``last_success_at``, ``started_at``,
    ``completed_at``, ``consecutive_failures``, ``records_synced``, ``sync_id``,
    ``dagster_run_id``; empty when the resource has no ``sync_state`` row any more.
    """
    if state is None:
        return {}
    return {
        "last_sync_status": state.last_sync_status,
        "last_sync_time": _iso(state.last_sync_time),
        "last_success_at": _iso(state.last_success_at),
        "started_at": _iso(state.started_at),
        "completed_at": _iso(state.completed_at),
        "consecutive_failures": state.consecutive_failures,
        "records_synced": state.records_synced,
        "sync_id": state.current_sync_id,
        "dagster_run_id": state.dagster_run_id,
    }


def _link(notification: Notification, dagster_ui_url: str | None) -> str | None:
    """The run a notification points to: the alert's, or for a resolution the resolving one."""
    if notification.kind == "resolved":
        state = notification.state
        return _run_page(None if state is None else state.dagster_run_id, dagster_ui_url)
    return run_url(notification.alert, dagster_ui_url)


def _run_page(run_id: str | None, dagster_ui_url: str | None) -> str | None:
    if not dagster_ui_url or not run_id:
        return None
    return f"{dagster_ui_url.rstrip('/')}/runs/{urllib.parse.quote(run_id, safe='')}"


def format_message(notification: Notification, *, dagster_ui_url: str | None = None) -> str:
    """A readable, multi-line text: what, where, since when, the last error and the run link.

    A resolution says instead what resolved it (the resource's last sync) and links to that
    sync's run.

    Examples:
        .. code-block:: text

            [CRITICAL] consecutive_failures on accounts
            accounts failed 3 times in a row, the last at 2026-11-23T12:00:00+00:00; ...
            resource: accounts
            rule: consecutive_failures
            since: 2026-11-23 12:00:00 UTC
            last error: HTTPError: 503 from the CRM
            run: https://dagster.example/runs/1c2d...
    """
    alert = notification.alert
    kind = notification.kind
    severity = alert.severity.upper()
    head = {
        "opened": f"[{severity}]",
        "reminder": f"[{severity}, still open]",
        "resolved": "[RESOLVED]",
    }.get(kind, f"[{kind}]")
    resolved = kind == "resolved"
    lines = [
        f"{head} {alert.rule} on {alert.resource}",
        (alert.resolution_message or alert.message) if resolved else alert.message,
        f"resource: {alert.resource}",
        f"rule: {alert.rule}",
        f"since: {_when(alert.since or alert.opened_at)}",
    ]
    if kind == "reminder":
        lines.append(f"alert open since {_when(alert.opened_at)}")
    if resolved and alert.resolved_at is not None:
        lines.append(f"alert open from {_when(alert.opened_at)} to {_when(alert.resolved_at)}")
    if resolved and notification.state is not None:
        lines.append(f"last sync: {_last_sync(notification.state)}")
    if alert.last_error and not resolved:
        lines.append(f"last error: {_shorten(alert.last_error)}")
    link = _link(notification, dagster_ui_url)
    if link:
        lines.append(f"run: {link}")
    return "\n".join(lines)


class LogSink:
    """Writes each notification to a logger: ``logging.Logger`` or Dagster's ``context.log``.

    Critical alerts log at ERROR, warnings at WARNING, resolutions at INFO.
    """

    def __init__(
        self, logger: _Logger, *, dagster_ui_url: str | None = None, name: str = "log"
    ) -> None:
        self.name = name
        self._logger = logger
        self._dagster_ui_url = dagster_ui_url

    def send(self, notification: Notification) -> None:
        """Log ``notification``."""
        text = format_message(notification, dagster_ui_url=self._dagster_ui_url)
        if notification.kind == "resolved":
            self._logger.info(text)
        elif notification.alert.severity == "critical":
            self._logger.error(text)
        else:
            self._logger.warning(text)

    def __repr__(self) -> str:
        return f"LogSink(name={self.name!r})"


class WebhookSink:
    """POSTs each notification as JSON to a URL; any 2xx response means accepted.

    The body: ``event`` (opened, reminder, resolved), ``rule``, ``resource``, ``severity``,
    ``message``, ``since``, ``last_error``, ``details``, ``alert_id``, ``run_url``, plus
    ``fingerprint``, ``status``, ``opened_at``, ``resolved_at`` and ``text`` (the readable
    message). A resolution carries the state that resolved it: ``message`` is the resolution
    message, ``details`` the resource's state (:func:`resolved_state`), ``run_url`` that
    state's run, and ``last_error`` is null. Redirects are not followed.

    Args:
        url: the webhook URL (a secret: never logged).
        timeout: seconds to wait for the receiver.
        dagster_ui_url: the Dagster UI's base URL, for ``run_url``.
        name: the sink's name in delivery bookkeeping and error messages.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        dagster_ui_url: str | None = None,
        name: str = "webhook",
    ) -> None:
        self.name = name
        self._url = _checked_url(url, name)
        self._timeout = timeout
        self._dagster_ui_url = dagster_ui_url

    def payload(self, notification: Notification) -> dict[str, Any]:
        """The JSON object sent for ``notification``."""
        alert = notification.alert
        resolved = notification.kind == "resolved"
        return {
            "event": notification.kind,
            "rule": alert.rule,
            "resource": alert.resource,
            "severity": alert.severity,
            "message": (alert.resolution_message or alert.message) if resolved else alert.message,
            "since": _iso(alert.since),
            "last_error": None if resolved else alert.last_error,
            "details": resolved_state(notification.state) if resolved else alert.details,
            "alert_id": alert.alert_id,
            "run_url": _link(notification, self._dagster_ui_url),
            "fingerprint": alert.fingerprint,
            "status": alert.status,
            "opened_at": _iso(alert.opened_at),
            "resolved_at": _iso(alert.resolved_at),
            "text": format_message(notification, dagster_ui_url=self._dagster_ui_url),
        }

    def send(self, notification: Notification) -> None:
        """POST the payload; raises :class:`SinkError` unless the receiver answered 2xx."""
        body = json.dumps(self.payload(notification), default=str).encode()
        _post(self._url, body, self._timeout, self.name)

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r})"


class SlackSink:
    """Posts each notification to Slack: an incoming webhook, or a Web API client.

    Give either ``webhook_url`` (an incoming webhook; the body is ``{"text": ...}``) or
    ``client`` and ``channel``: any object with ``chat_postMessage(channel=..., text=...)``,
    such as ``slack_sdk.WebClient`` or dagster-slack's ``SlackResource.get_client()``.

    Args:
        webhook_url: the incoming-webhook URL (a secret: never logged).
        client: a Slack Web API client, instead of a webhook.
        channel: the channel the client posts to.
        dagster_ui_url: the Dagster UI's base URL, for the run link.
        name: the sink's name in delivery bookkeeping and error messages.
        timeout: seconds to wait for the incoming webhook.

    Raises:
        ConfigurationError: neither or both of ``webhook_url`` and ``client``, or a client
            without a channel.
    """

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        client: _SlackClient | None = None,
        channel: str | None = None,
        dagster_ui_url: str | None = None,
        name: str = "slack",
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        if (webhook_url is None) == (client is None):
            raise ConfigurationError(
                f"sink {name!r}: give a Slack webhook_url or a client, exactly one of them"
            )
        if client is not None and not channel:
            raise ConfigurationError(f"sink {name!r}: a Slack client needs a channel")
        if client is not None and not callable(getattr(client, "chat_postMessage", None)):
            raise ConfigurationError(f"sink {name!r}: the client has no chat_postMessage method")
        self._url = None if webhook_url is None else _checked_url(webhook_url, name)
        self._client = client
        self._channel = channel
        self._dagster_ui_url = dagster_ui_url
        self._timeout = timeout

    def send(self, notification: Notification) -> None:
        """Post the message; raises :class:`SinkError` when Slack did not accept it."""
        text = _slack_escape(format_message(notification, dagster_ui_url=self._dagster_ui_url))
        if self._url is not None:
            _post(self._url, json.dumps({"text": text}).encode(), self._timeout, self.name)
            return
        assert self._client is not None and self._channel is not None
        failure = None
        try:
            response = self._client.chat_postMessage(channel=self._channel, text=text)
        except Exception as e:  # the client's errors may quote the request, token included
            failure = f"sink {self.name!r}: chat_postMessage raised {type(e).__name__}"
        else:
            getter = getattr(response, "get", None)
            if callable(getter) and getter("ok", True) is False:
                error = getter("error")
                code = error[:100] if isinstance(error, str) else "unknown error"
                failure = f"sink {self.name!r}: Slack answered ok=false ({code})"
        if failure is not None:
            raise SinkError(failure)

    def __repr__(self) -> str:
        mode = "webhook" if self._url is not None else f"client, channel={self._channel!r}"
        return f"SlackSink(name={self.name!r}, {mode})"


def _checked_url(url: Any, name: str) -> str:
    """An http(s) URL with a host; the error does not quote it."""
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"sink {name!r}: the URL must be http:// or https:// with a host")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: following it would turn the POST into a GET elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, timeout: float, name: str) -> None:
    """POST JSON; raises SinkError (status or exception type only) unless answered 2xx."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
    )
    failure = None
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(_RESPONSE_LIMIT)
            if not 200 <= response.status < 300:
                failure = f"sink {name!r}: HTTP {response.status}"
    except urllib.error.HTTPError as e:
        e.close()
        failure = f"sink {name!r}: HTTP {e.code}"
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, BaseException) else e
        failure = f"sink {name!r}: {type(reason).__name__}"
    except (OSError, http.client.HTTPException, ValueError) as e:
        failure = f"sink {name!r}: {type(e).__name__}"
    # Raised outside the except blocks so the original (which may hold the URL) is not chained.
    if failure is not None:
        raise SinkError(failure)


def _slack_escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _last_sync(state: SyncState) -> str:
    """``success, ended 2025-06-01 13:58:00 UTC``; a running sync says when it started."""
    if state.last_sync_status == "running" and state.started_at is not None:
        return f"running, started {_when(state.started_at)}"
    if state.completed_at is not None:
        return f"{state.last_sync_status}, ended {_when(state.completed_at)}"
    return state.last_sync_status


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _LAST_ERROR_LIMIT else text[: _LAST_ERROR_LIMIT - 3] + "..."


__all__: Sequence[str] = (
    "LogSink",
    "Sink",
    "SinkError",
    "SlackSink",
    "WebhookSink",
    "format_message",
    "resolved_state",
    "run_url",
)
