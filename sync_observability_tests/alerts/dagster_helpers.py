"""Helpers for the Dagster glue tests: a real webhook receiver on 127.0.0.1 and sensor ticks."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg

from sync_observability import SyncOutcome, SyncStore, SyncTracker
from sync_observability.alerts.resources import SyncAlerting

SECRET = "s3cret-token"


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[dict[str, Any]] = []  # {"status": answered, "body": parsed JSON}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    status = receiver.status
                    receiver.requests.append({"status": status, "body": body, "path": self.path})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The hook's URL, with a token in it as real webhook URLs have."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook?token={SECRET}"

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Bodies of the POSTs answered 2xx."""
        with self._lock:
            return [r["body"] for r in self.requests if 200 <= r["status"] < 300]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A started :class:`WebhookReceiver`, stopped afterwards."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    tracker: SyncTracker,
    alerting: SyncAlerting,
) -> str:
    """Evaluate ``sensor`` once, as the daemon would, and return its skip message."""
    with dg.build_sensor_context(
        instance=instance,
        resources={"sync_tracker": tracker, "sync_alerting": alerting},
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason), result
    assert result.skip_message is not None
    return result.skip_message


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def fail(tracker: SyncTracker, resource: str, times: int = 1) -> None:
    """Record ``times`` failed syncs of ``resource`` through the tracker."""
    for _ in range(times):
        try:
            with tracker.track(resource=resource, source_system="crm"):
                raise ConnectionError("CRM answered 503")
        except ConnectionError:
            pass


def succeed(tracker: SyncTracker, resource: str, processed: int = 0) -> None:
    """Record one successful sync of ``resource`` through the tracker."""
    with tracker.track(resource=resource, source_system="crm") as sync:
        sync.record(processed=processed)


def past_sync(
    store: SyncStore,
    resource: str,
    *,
    started_at: dt.datetime,
    duration: dt.timedelta = dt.timedelta(seconds=1),
    status: str = "success",
    processed: int = 0,
    watermark_after: dt.datetime | None = None,
    error_message: str = "failed",
    dagster_run_id: str | None = None,
) -> str:
    """Write one finished sync that happened at ``started_at`` (for age-based rules)."""
    sync_id = str(uuid.uuid4())
    store.start_sync(
        sync_id=sync_id, resource=resource, started_at=started_at, dagster_run_id=dagster_run_id
    )
    store.finish_sync(
        sync_id=sync_id,
        resource=resource,
        started_at=started_at,
        outcome=SyncOutcome(
            status=status,
            ended_at=started_at + duration,
            records_processed=processed,
            watermark_after=(watermark_after or started_at) if status == "success" else None,
            error_message=None if status == "success" else error_message,
        ),
    )
    return sync_id
