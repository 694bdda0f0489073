"""Prometheus / OpenMetrics exposition of the sync tables: ``sync-obs metrics serve``, or a WSGI
app to mount in your own server.

A custom collector reads ``sync_state`` and ``sync_alerts`` at scrape time
(:mod:`sync_observability.storage.monitoring`) into its own registry (nothing is added to
prometheus_client's global one), through one store and its connection pool for the app's life.
The text format is Prometheus' 0.0.4, or OpenMetrics 1.0 when the scraper asks for it (as
Prometheus does), negotiated by prometheus_client; gzip when the scraper accepts it.

A scrape never hangs on the database: it is bounded by the store's time budget
(``storage_timeout_seconds``), and by the scrape timeout Prometheus announces in its
``X-Prometheus-Scrape-Timeout-Seconds`` header (less :data:`SCRAPE_TIMEOUT_MARGIN_SECONDS`) when
that is shorter. A database that fails or does not answer in time gives ``sync_observability_up
0`` and the error in the log, not an error page.

Metrics (every one a gauge; ``resource`` is ``sync_state.resource``):

========================================================  ======================================
``sync_observability_up``                                 1 when the scrape read the tables
``sync_observability_last_sync_status{resource,status}``  1, one series per resource: its
                                                          status (never_run, running,
                                                          success, failed) as the label
``sync_observability_seconds_since_last_success``         absent until a first success
``sync_observability_consecutive_failures``
``sync_observability_last_duration_seconds``              absent while a sync runs
``sync_observability_last_records_processed``             of the last finished sync
``sync_observability_open_alerts{rule,severity}``         pairs with open alerts only
``sync_observability_table_rows{table}``                  estimates (storage/monitoring.py)
``sync_observability_oldest_running_sync_age_seconds``    0 when nothing runs
``sync_observability_scrape_duration_seconds``            this scrape's read and build time
========================================================  ======================================

Examples:
    .. code-block:: python

        from wsgiref.simple_server import make_server
        from sync_observability.prometheus import make_metrics_app

        app = make_metrics_app(database_url="postgresql://reader@db/syncs")
        make_server("127.0.0.1", 9464, app).serve_forever()
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric, Sample
from prometheus_client.exposition import gzip_accepted

from sync_observability.clock import utcnow
from sync_observability.errors import SyncObservabilityError
from sync_observability.storage.engine import (
    DEFAULT_SCHEMA,
    DEFAULT_TIMEOUT,
    default_database_url,
)
from sync_observability.storage.monitoring import read_monitoring_snapshot
from sync_observability.storage.store import SyncStore

log = logging.getLogger(__name__)

PREFIX = "sync_observability_"
SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5
"""Left of Prometheus' scrape timeout for building and sending the answer."""
MIN_SCRAPE_BUDGET_SECONDS = 0.25
GZIP_LEVEL = 1

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels))


class SyncMetricsCollector:
    """A prometheus_client collector that reads the sync tables on every scrape.

    Args:
        store: the store to read (its pool is reused by every scrape; the caller disposes it).
        now: the clock ages are measured against (tests inject one).

    Examples:
        .. code-block:: python

            registry = CollectorRegistry()
            registry.register(SyncMetricsCollector(store))
            print(generate_latest(registry).decode())
    """

    def __init__(self, store: SyncStore, *, now: Callable[[], dt.datetime] = utcnow) -> None:
        self.store = store
        self._now = now

    def collect(self) -> Iterator[Metric]:
        """The metrics of one scrape (``sync_observability_up 0`` alone when the read fails)."""
        started = time.perf_counter()
        up = _gauge("up", "1 when the scrape read the sync tables, 0 when the database failed.")
        try:
            snapshot = read_monitoring_snapshot(self.store)
        except SyncObservabilityError as error:
            log.error("sync_observability metrics: scrape failed: %s", error)
            up.add_metric([], 0)
            yield up
            yield self._duration(started)
            return
        up.add_metric([], 1)
        yield up
        now = self._now().timestamp()
        rows = snapshot.resources
        # Samples built directly (add_metric costs a call and a dict(zip()) each): at 10,000
        # resources these lists are most of a scrape's Python time.
        status = _gauge(
            "last_sync_status",
            "1 with the resource's last_sync_status in sync_state as the status label.",
            ["resource", "status"],
        )
        status.samples = [
            Sample(status.name, {"resource": r.resource, "status": r.last_sync_status}, 1)
            for r in rows
        ]
        since_success = _gauge(
            "seconds_since_last_success",
            "Seconds since the resource's last successful sync ended.",
            ["resource"],
        )
        since_success.samples = [
            Sample(
                since_success.name, {"resource": r.resource}, max(0.0, now - r.last_success_epoch)
            )
            for r in rows
            if r.last_success_epoch is not None
        ]
        failures = _gauge(
            "consecutive_failures",
            "Failed syncs of the resource since its last success.",
            ["resource"],
        )
        failures.samples = [
            Sample(failures.name, {"resource": r.resource}, r.consecutive_failures) for r in rows
        ]
        duration = _gauge(
            "last_duration_seconds",
            "Duration of the resource's last finished sync (absent while one runs).",
            ["resource"],
        )
        duration.samples = [
            Sample(duration.name, {"resource": r.resource}, r.duration_ms / 1000)
            for r in rows
            if r.duration_ms is not None
        ]
        records = _gauge(
            "last_records_processed",
            "Records processed by the resource's last finished sync.",
            ["resource"],
        )
        records.samples = [
            Sample(records.name, {"resource": r.resource}, r.records_synced) for r in rows
        ]
        yield from (status, since_success, failures, duration, records)

        alerts = _gauge(
            "open_alerts", "Open alerts in sync_alerts, by rule and severity.", ["rule", "severity"]
        )
        for (rule, severity), count in sorted(snapshot.open_alerts.items()):
            alerts.add_metric([rule, severity], count)
        yield alerts

        table_rows = _gauge(
            "table_rows",
            "Estimated rows of the table: planner statistics (pg_class.reltuples) on "
            "PostgreSQL, the rowid span on SQLite.",
            ["table"],
        )
        for table, count in snapshot.table_rows.items():
            if count is not None:  # PostgreSQL has not analyzed the table yet: no estimate
                table_rows.add_metric([table], count)
        yield table_rows

        oldest = _gauge(
            "oldest_running_sync_age_seconds",
            "Seconds since the oldest running sync started (0 when none runs).",
        )
        running = [r.started_epoch for r in rows if r.last_sync_status == "running"]
        oldest_start = min((t for t in running if t is not None), default=None)
        oldest.add_metric([], 0.0 if oldest_start is None else max(0.0, now - oldest_start))
        yield oldest
        yield self._duration(started)

    @staticmethod
    def _duration(started: float) -> GaugeMetricFamily:
        gauge = _gauge("scrape_duration_seconds", "Time this scrape took to read the tables.")
        gauge.add_metric([], time.perf_counter() - started)
        return gauge


class MetricsApp:
    """The WSGI app serving the exposition (any path: mount it where you like).

    Made by :func:`make_metrics_app`; :meth:`close` disposes of a store the app created.
    """

    def __init__(
        self,
        store: SyncStore,
        *,
        owns_store: bool = False,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SyncMetricsCollector(store, now=now))
        # Compressed here, faster: prometheus_client's gzip is level 9, about 50 ms on the 4 MB
        # of 10,000 resources for 7% less than level 1 sends.
        self._app = make_wsgi_app(self.registry, disable_compression=True)
        self._owns_store = owns_store

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        accept = environ.get("HTTP_ACCEPT")
        if accept:
            environ = {**environ, "HTTP_ACCEPT": without_name_escaping(accept)}
        answered: list[tuple[str, list[tuple[str, str]]]] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answered.append((status, headers))

        # prometheus_client builds the whole answer inside this call, so the deadline covers it.
        with self.store.db.deadline(scrape_budget(environ, self.store.db.timeout_seconds)):
            body = b"".join(self._app(environ, keep))
        [(status, headers)] = answered
        if status.startswith("200") and body and gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers = [*headers, ("Content-Encoding", "gzip")]
        start_response(status, headers)
        return [body]

    def close(self) -> None:
        """Dispose of the store when the app created it."""
        if self._owns_store:
            self.store.dispose()


def without_name_escaping(accept: str) -> str:
    """``accept`` with ``escaping=allow-utf-8`` on its OpenMetrics types that name no escaping.

    Every name here is a legacy Prometheus name, which no escaping scheme changes, so the
    answer is the same bytes. But prometheus_client (0.26) applies its default scheme,
    ``underscores``, to each sample's name character by character: two thirds of an
    OpenMetrics scrape at 10,000 resources (bench/bench_metrics.py). Prometheus 3 names a
    scheme itself and is left alone.
    """
    types = []
    for accepted in accept.split(","):
        fields = accepted.split(";")
        if fields[0].strip() == "application/openmetrics-text" and not any(
            field.strip().startswith("escaping=") for field in fields[1:]
        ):
            accepted += ";escaping=allow-utf-8"
        types.append(accepted)
    return ",".join(types)


def scrape_budget(environ: dict[str, Any], storage_timeout: float) -> float:
    """Seconds a scrape may spend on the database: the storage timeout, or less when Prometheus
    announces a shorter scrape timeout (its header, less a margin to answer in)."""
    try:
        announced = float(environ.get(SCRAPE_TIMEOUT_HEADER, "nan"))
    except ValueError:
        return storage_timeout
    if not math.isfinite(announced) or announced <= 0:
        return storage_timeout
    return min(
        storage_timeout,
        max(announced - SCRAPE_TIMEOUT_MARGIN_SECONDS, MIN_SCRAPE_BUDGET_SECONDS),
    )


def make_metrics_app(
    store: SyncStore | None = None,
    *,
    database_url: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    storage_timeout_seconds: float = DEFAULT_TIMEOUT,
    now: Callable[[], dt.datetime] = utcnow,
) -> MetricsApp:
    """The WSGI app of the exposition, on ``store`` or on a store of its own for ``database_url``.

    A store made here never migrates (a read-only database user can serve the metrics) and is
    disposed of by the app's ``close()``.

    Args:
        store: an existing store to read (you dispose of it), or None.
        database_url: ``sqlite:///...`` or ``postgresql://...`` when ``store`` is None
            (default: ``SYNC_OBS_DATABASE_URL``, else the default SQLite file).
        schema: the PostgreSQL schema of the tables.
        storage_timeout_seconds: the longest a scrape waits on the database.
        now: the clock ages are measured against.

    Examples:
        .. code-block:: python

            app = make_metrics_app(database_url="postgresql://reader@db/syncs")
            # e.g. werkzeug's DispatcherMiddleware(main_app, {"/metrics": app})
    """
    if store is not None:
        return MetricsApp(store, now=now)
    own = SyncStore.from_url(
        database_url or default_database_url(),
        schema=schema,
        auto_migrate=False,
        rollups="read",
        storage_timeout_seconds=storage_timeout_seconds,
    )
    return MetricsApp(own, owns_store=True, now=now)
