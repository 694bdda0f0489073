"""Prometheus / OpenMetrics exposition of the sync tables: ``sync-obs metrics serve``, or a WSGI
app to mount in your own server.

A custom collector reads ``sync_state`` and ``sync_alerts`` at scrape time
(:mod:`sync_observability.storage.monitoring`) into its own registry (nothing is added to
prometheus_client's global one), through one store and its connection pool for the app's life.
The text format is Prometheus' 0.0.4 (or 1.0.0), or OpenMetrics 1.0 when the scraper asks for
it (as Prometheus does), negotiated by prometheus_client and written by
:func:`render_exposition` (byte for byte what prometheus_client writes, in about a quarter of
its time); gzip when the scraper accepts it.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric, Sample
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.utils import floatToGoString

from sync_observability.clock import utcnow
from sync_observability.errors import SyncObservabilityError
from sync_observability.storage.engine import (
    DEFAULT_SCHEMA,
    DEFAULT_TIMEOUT,
    default_database_url,
)
from sync_observability.storage.monitoring import MonitoringSnapshot, read_monitoring_snapshot
from sync_observability.storage.store import SyncStore

log = logging.getLogger(__name__)

PREFIX = "sync_observability_"
SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5
"""Left of Prometheus' scrape timeout for building and sending the answer."""
MIN_SCRAPE_BUDGET_SECONDS = 0.25
GZIP_LEVEL = 1

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Gauge(NamedTuple):
    """One gauge family of a scrape: what :class:`SyncMetricsCollector` gives prometheus_client,
    and what :func:`render_exposition` writes directly.

    ``labels`` are in sorted order (the order both exposition formats write them in) and each
    sample is ``(label values in that order, value)``.
    """

    name: str
    documentation: str
    labels: tuple[str, ...]
    samples: Sequence[tuple[tuple[str, ...], float]]

    def metric(self) -> GaugeMetricFamily:
        """The family as prometheus_client's ``GaugeMetricFamily``."""
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))
        family.samples = [
            Sample(self.name, dict(zip(self.labels, values, strict=True)), value)
            for values, value in self.samples
        ]
        return family


def _gauge(
    name: str,
    documentation: str,
    samples: Sequence[tuple[tuple[str, ...], float]],
    labels: tuple[str, ...] = (),
) -> Gauge:
    return Gauge(PREFIX + name, documentation, labels, samples)


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
        for gauge in self.gauges():
            yield gauge.metric()

    def describe(self) -> list[Metric]:
        """Every family, without samples and without reading: what a ``name[]`` filter needs."""
        empty = MonitoringSnapshot(resources=[], open_alerts={}, table_rows={})
        gauges = [*_snapshot_gauges(empty, 0.0), _duration(0.0)]
        return [gauge._replace(samples=[]).metric() for gauge in gauges]

    def gauges(self) -> list[Gauge]:
        """The families of one scrape, read now, in exposition order."""
        started = time.perf_counter()
        try:
            snapshot = read_monitoring_snapshot(self.store)
        except SyncObservabilityError as error:
            log.error("sync_observability metrics: scrape failed: %s", error)
            return [_up(0), _duration(started)]
        return [*_snapshot_gauges(snapshot, self._now().timestamp()), _duration(started)]


def _snapshot_gauges(snapshot: MonitoringSnapshot, now: float) -> list[Gauge]:
    rows = snapshot.resources
    # One label-values tuple per resource, shared by its series.
    keys = [(r.resource,) for r in rows]
    running = [r.started_epoch for r in rows if r.last_sync_status == "running"]
    oldest_start = min((t for t in running if t is not None), default=None)
    return [
        _up(1),
        _gauge(
            "last_sync_status",
            "1 with the resource's last_sync_status in sync_state as the status label.",
            [((r.resource, r.last_sync_status), 1) for r in rows],
            ("resource", "status"),
        ),
        _gauge(
            "seconds_since_last_success",
            "Seconds since the resource's last successful sync ended.",
            [
                (key, max(0.0, now - r.last_success_epoch))
                for key, r in zip(keys, rows, strict=True)
                if r.last_success_epoch is not None
            ],
            ("resource",),
        ),
        _gauge(
            "consecutive_failures",
            "Failed syncs of the resource since its last success.",
            [(key, r.consecutive_failures) for key, r in zip(keys, rows, strict=True)],
            ("resource",),
        ),
        _gauge(
            "last_duration_seconds",
            "Duration of the resource's last finished sync (absent while one runs).",
            [
                (key, r.duration_ms / 1000)
                for key, r in zip(keys, rows, strict=True)
                if r.duration_ms is not None
            ],
            ("resource",),
        ),
        _gauge(
            "last_records_processed",
            "Records processed by the resource's last finished sync.",
            [(key, r.records_synced) for key, r in zip(keys, rows, strict=True)],
            ("resource",),
        ),
        _gauge(
            "open_alerts",
            "Open alerts in sync_alerts, by rule and severity.",
            sorted(snapshot.open_alerts.items()),
            ("rule", "severity"),
        ),
        _gauge(
            "table_rows",
            "Estimated rows of the table: planner statistics (pg_class.reltuples) on "
            "PostgreSQL, the rowid span on SQLite.",
            # A table PostgreSQL has not analyzed yet has no estimate, and no series.
            [((table,), n) for table, n in snapshot.table_rows.items() if n is not None],
            ("table",),
        ),
        _gauge(
            "oldest_running_sync_age_seconds",
            "Seconds since the oldest running sync started (0 when none runs).",
            [((), 0.0 if oldest_start is None else max(0.0, now - oldest_start))],
        ),
    ]


def _up(value: float) -> Gauge:
    return _gauge(
        "up", "1 when the scrape read the sync tables, 0 when the database failed.", [((), value)]
    )


def _duration(started: float) -> Gauge:
    return _gauge(
        "scrape_duration_seconds",
        "Time this scrape took to read the tables.",
        [((), time.perf_counter() - started)],
    )


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_exposition(gauges: Iterable[Gauge], *, openmetrics: bool) -> bytes:
    """The exposition of ``gauges``: the same bytes as prometheus_client's ``generate_latest``
    (text 0.0.4) or OpenMetrics 1.0 ``generate_latest`` give for their :meth:`Gauge.metric`.

    prometheus_client spends 3 to 4 us on each sample (it checks and escapes every name, label
    name and value again), 160 to 215 ms at 10,000 resources, most of a scrape
    (bench/bench_metrics.py; this takes about a quarter of that). Here the names are the
    package's own legacy Prometheus names (no escaping scheme changes them), each label set is
    escaped once a scrape and shared by its series, and values go through prometheus_client's
    own ``floatToGoString``. ``labels`` must be in sorted order (``ValueError`` otherwise).
    test_prometheus.py holds both formats to prometheus_client's output byte for byte.
    """
    lines: list[str] = []
    label_text: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
    for name, documentation, labels, samples in gauges:
        if list(labels) != sorted(labels):
            raise ValueError(f"{name}: labels {labels} are not in sorted order")
        if openmetrics:
            help_text = _escape_label_value(documentation)
        else:
            help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        if not labels:
            lines += [f"{name} {floatToGoString(value)}\n" for _, value in samples]
            continue
        texts = label_text.setdefault(labels, {})
        for values, _ in samples:
            if values not in texts:
                texts[values] = ",".join(
                    [
                        f'{label}="{_escape_label_value(v)}"'
                        for label, v in zip(labels, values, strict=True)
                    ]
                )
        lines += [
            f"{name}{{{texts[values]}}} {floatToGoString(value)}\n" for values, value in samples
        ]
    if openmetrics:
        lines.append("# EOF\n")
    return "".join(lines).encode()


def fast_format(content_type: str) -> bool | None:
    """For the content type prometheus_client negotiated: whether :func:`render_exposition`
    writes it as OpenMetrics (True) or text (False), or None when only prometheus_client does
    (OpenMetrics 2.0; the ``dots`` and ``values`` escaping schemes, which rewrite legacy
    names)."""
    media, *params = (part.strip() for part in content_type.split(";"))
    options = dict(param.partition("=")[::2] for param in params)
    if options.get("escaping", "underscores") not in ("underscores", "allow-utf-8"):
        return None
    if media == "text/plain" and options.get("version") in ("0.0.4", "1.0.0"):
        return False
    if media == "application/openmetrics-text" and options.get("version") == "1.0.0":
        return True
    return None


class MetricsApp:
    """The WSGI app serving the exposition (any path: mount it where you like).

    Made by :func:`make_metrics_app`; :meth:`close` disposes of a store the app created. The
    format is negotiated by prometheus_client and a scrape written by
    :func:`render_exposition`; what that does not write (OpenMetrics 2.0, ``name[]``
    filters, methods other than GET) is prometheus_client's own WSGI app on :attr:`registry`.
    """

    def __init__(
        self,
        store: SyncStore,
        *,
        owns_store: bool = False,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.collector = SyncMetricsCollector(store, now=now)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        # Compressed here, faster: prometheus_client's gzip is level 9, about 50 ms on the 4 MB
        # of 10,000 resources for 7% less than level 1 sends.
        self._app = make_wsgi_app(self.registry, disable_compression=True)
        self._owns_store = owns_store

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        budget = scrape_budget(environ, self.store.db.timeout_seconds)
        try:
            _, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        except (TypeError, ValueError):  # a version prometheus_client cannot compare ("1.0.0")
            environ = {**environ, "HTTP_ACCEPT": ""}
            _, content_type = choose_encoder("")
        openmetrics = fast_format(content_type)
        if (
            environ.get("REQUEST_METHOD") == "GET"
            and environ.get("PATH_INFO") != "/favicon.ico"
            and "name[]" not in parse_qs(environ.get("QUERY_STRING", ""))
            and openmetrics is not None
        ):
            with self.store.db.deadline(budget):
                body = render_exposition(self.collector.gauges(), openmetrics=openmetrics)
            status, headers = "200 OK", [("Content-Type", content_type)]
        else:
            answered: list[tuple[str, list[tuple[str, str]]]] = []

            def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                answered.append((status, headers))

            # prometheus_client builds the whole answer in this call: the deadline covers it.
            with self.store.db.deadline(budget):
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
