"""The Prometheus exposition, read over HTTP from the WSGI app on a real server on 127.0.0.1.

A known history (known_history.py) on SQLite, PostgreSQL and PostgreSQL with a partitioned
sync_history, scraped in both formats; a database that fails answers ``up 0`` within the
budget; the app adds nothing to prometheus_client's global registry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sync_observability.cli import main
from sync_observability.clock import utcnow
from sync_observability.prometheus import (
    MIN_SCRAPE_BUDGET_SECONDS,
    Gauge,
    MetricsApp,
    fast_format,
    make_metrics_app,
    render_exposition,
    scrape_budget,
)
from sync_observability.storage.records import SyncOutcome
from sync_observability_tests import known_history as known
from sync_observability_tests.conftest import WITH_PARTITIONED, Backend, make_backend

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture(params=WITH_PARTITIONED)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    yield from make_backend(request, tmp_path)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(app: MetricsApp) -> Iterator[str]:
    """``app`` on a real HTTP server on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def scrape(
    base: str, accept: str | None = None, gzipped: bool = False, **headers: str
) -> tuple[str, str]:
    """GET /metrics: (content type, body); ``gzipped``: ask for gzip, and check it came so."""
    request = urllib.request.Request(f"{base}/metrics", headers=headers)
    if accept:
        request.add_header("Accept", accept)
    if gzipped:
        request.add_header("Accept-Encoding", "gzip")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
        body = response.read()
        return response.headers["Content-Type"], (
            gzip.decompress(body) if gzipped else body
        ).decode()


def samples(text: str, openmetrics: bool = False) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of an exposition."""
    parse = parse_openmetrics if openmetrics else parse_text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parse(text)
        for s in family.samples
    }


def series(values: dict[tuple[str, frozenset], float], name: str) -> dict[Any, float]:
    """One metric's samples, keyed by its one label's value (or a tuple of several)."""
    found: dict[Any, float] = {}
    for (sample, labels), value in values.items():
        if sample != "sync_observability_" + name:
            continue
        ordered = tuple(v for _, v in sorted(labels))
        found[ordered[0] if len(ordered) == 1 else ordered] = value
    return found


def test_the_exposition_of_a_known_history(backend: Backend) -> None:
    now = utcnow().replace(microsecond=0)
    store = backend.store()
    try:
        known.write_known_history(store, now)
        app = make_metrics_app(store, now=lambda: now)
        with serving(app) as base:
            text_type, text = scrape(base)
            om_type, om = scrape(base, accept=OPENMETRICS)
    finally:
        store.dispose()

    assert text_type.startswith("text/plain; version=0.0.4")
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n")
    values = samples(text)
    # OpenMetrics says the same thing (but for the time each scrape took).
    timing = ("sync_observability_scrape_duration_seconds", frozenset())
    assert samples(om, openmetrics=True).keys() == values.keys()
    assert {k: v for k, v in samples(om, openmetrics=True).items() if k != timing} == {
        k: v for k, v in values.items() if k != timing
    }

    assert series(values, "up") == {(): 1.0}
    status = series(values, "last_sync_status")
    assert status == {(r, s): 1.0 for r, s in known.STATUS.items()}
    approx = pytest.approx
    assert series(values, "seconds_since_last_success") == approx(
        known.SECONDS_SINCE_SUCCESS, abs=1e-3
    )
    assert series(values, "consecutive_failures") == known.CONSECUTIVE_FAILURES
    assert series(values, "last_duration_seconds") == approx(known.LAST_DURATION_SECONDS)
    assert series(values, "last_records_processed") == known.LAST_RECORDS
    assert series(values, "open_alerts") == known.OPEN_ALERTS
    assert series(values, "table_rows") == {
        "sync_history": known.HISTORY_ROWS,
        "sync_history_archive": known.ARCHIVE_ROWS,
    }
    assert series(values, "oldest_running_sync_age_seconds") == {
        (): approx(known.OLDEST_RUNNING_SECONDS, abs=1e-3)
    }
    [duration] = series(values, "scrape_duration_seconds").values()
    assert duration > 0
    # Every metric is documented and typed, as Prometheus shows it.
    assert "# TYPE sync_observability_consecutive_failures gauge" in text
    assert "# HELP sync_observability_table_rows Estimated rows" in text


def test_an_empty_database(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    app = make_metrics_app(database_url=url)
    try:
        with serving(app) as base:
            values = samples(scrape(base)[1])
    finally:
        app.close()
    assert series(values, "up") == {(): 1.0}
    for name in ("last_sync_status", "consecutive_failures", "open_alerts"):
        assert series(values, name) == {}
    assert series(values, "table_rows") == {"sync_history": 0, "sync_history_archive": 0}
    assert series(values, "oldest_running_sync_age_seconds") == {(): 0.0}


@pytest.mark.postgres
def test_a_table_postgresql_never_analyzed_has_no_row_estimate(postgres_database_url: str) -> None:
    # reltuples is -1 until the first ANALYZE: no series, not a 0 that says "empty".
    store = Backend("postgresql", postgres_database_url, "never_analyzed").store()
    try:
        store.migrate()
        app = make_metrics_app(store)
        with serving(app) as base:
            before = series(samples(scrape(base)[1]), "table_rows")
            with store.engine.begin() as conn:
                conn.execute(sa.text('ANALYZE "never_analyzed".sync_history'))
            after = series(samples(scrape(base)[1]), "table_rows")
    finally:
        with store.engine.begin() as conn:
            conn.execute(sa.text('DROP SCHEMA "never_analyzed" CASCADE'))
        store.dispose()
    assert before == {}
    assert after == {"sync_history": 0}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize(
    ("storage_timeout", "headers"),
    [
        (1.0, {}),
        # The storage budget alone would wait 60 s: Prometheus' announced timeout bounds it.
        (60.0, {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}),
    ],
)
def test_a_database_that_does_not_answer_gives_up_0_within_the_budget(
    storage_timeout: float, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://sync:s3cret-pw@127.0.0.1:{_closed_port()}/nowhere"
    app = make_metrics_app(database_url=url, storage_timeout_seconds=storage_timeout)
    try:
        with serving(app) as base, caplog.at_level(logging.ERROR, "sync_observability"):
            started = time.monotonic()
            _, text = scrape(base, **headers)
            elapsed = time.monotonic() - started
    finally:
        app.close()
    values = samples(text)
    assert series(values, "up") == {(): 0.0}
    assert series(values, "last_sync_status") == {}
    assert elapsed < 15  # the budget is 1 s: far from the 60 s of an unbounded wait
    [record] = [r for r in caplog.records if "scrape failed" in r.getMessage()]
    assert "unavailable" in record.getMessage()
    assert "s3cret-pw" not in caplog.text


@pytest.mark.parametrize(
    ("header", "budget"),
    [
        (None, 30.0),
        ("10", 9.5),
        ("60", 30.0),  # never more than the storage timeout
        ("0.3", MIN_SCRAPE_BUDGET_SECONDS),
        ("0", 30.0),
        ("nan", 30.0),
        ("soon", 30.0),
    ],
)
def test_the_scrape_budget(header: str | None, budget: float) -> None:
    environ = {} if header is None else {"HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS": header}
    assert scrape_budget(environ, 30.0) == budget


def test_the_app_uses_its_own_registry_and_one_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    app = make_metrics_app(database_url=url)
    try:
        store = app.store
        with serving(app) as base:
            for _ in range(3):
                assert series(samples(scrape(base)[1]), "up") == {(): 1.0}
        assert app.store is store
        assert "sync_observability_up" not in prometheus_client.generate_latest().decode()
        assert set(prometheus_client.REGISTRY._names_to_collectors) == before
    finally:
        app.close()


def test_serve_refuses_bad_input_in_one_line(tmp_path: Any) -> None:
    runner = CliRunner()
    bad_port = runner.invoke(main, ["metrics", "serve", "--port", "70000"])
    assert bad_port.exit_code == 2
    assert "'--port'" in bad_port.stderr and "70000" in bad_port.stderr
    missing = runner.invoke(
        main, ["metrics", "serve", "--database-url", f"sqlite:///{tmp_path / 'none.db'}"]
    )
    assert missing.exit_code == 1
    [line] = missing.stderr.splitlines()
    assert line.startswith("Error: no SQLite database at")
    assert not (tmp_path / "none.db").exists()


def test_now_is_the_clock_of_the_ages(tmp_path: Any) -> None:
    # The same history scraped an hour later: every age an hour more, nothing else changed.
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    now = utcnow().replace(microsecond=0)
    later = now + dt.timedelta(hours=1)
    app = make_metrics_app(database_url=url, now=lambda: later)
    try:
        known.write_known_history(app.store, now)
        with serving(app) as base:
            values = samples(scrape(base)[1])
    finally:
        app.close()
    assert series(values, "seconds_since_last_success") == pytest.approx(
        {r: s + 3600 for r, s in known.SECONDS_SINCE_SUCCESS.items()}, abs=1e-3
    )
    assert series(values, "oldest_running_sync_age_seconds") == {
        (): pytest.approx(known.OLDEST_RUNNING_SECONDS + 3600, abs=1e-3)
    }


def test_the_cli_loads_prometheus_client_only_to_serve() -> None:
    probe = "import sys, sync_observability.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


PROMETHEUS_2_ACCEPT = (  # what Prometheus 2.42 sends (scrape.go, acceptHeader)
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# Resource names that need escaping in a label value, or that a careless writer would break.
AWKWARD_NAMES = ['quote"d', "back\\slash", "new\nline", "ünï/表", 'a,b="c"}', " spaced "]


@pytest.mark.parametrize(
    ("accept", "written_here"),
    [
        (None, True),
        (OPENMETRICS, True),
        (PROMETHEUS_2_ACCEPT, True),
        ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8", True),
        ("text/plain;version=1.0.0;escaping=underscores", True),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", True),
        # prometheus_client's own path: a format, or schemes that rewrite names.
        ("application/openmetrics-text;version=2.0.0", False),
        ("application/openmetrics-text;version=1.0.0;escaping=dots", False),
        ("application/openmetrics-text;version=1.0.0;escaping=values", False),
    ],
)
def test_every_format_is_prometheus_clients_byte_for_byte(
    tmp_path: Any, accept: str | None, written_here: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    now = utcnow().replace(microsecond=0)
    app = make_metrics_app(database_url=url, now=lambda: now)
    try:
        known.write_known_history(app.store, now)
        for records, name in enumerate(AWKWARD_NAMES):
            sync_id = f"awkward-{records}"
            started = now - dt.timedelta(minutes=records + 1)
            app.store.start_sync(sync_id=sync_id, resource=name, started_at=started)
            app.store.finish_sync(
                sync_id=sync_id,
                resource=name,
                started_at=started,
                outcome=SyncOutcome(status="success", ended_at=now, records_processed=records),
            )
        with serving(app) as base:
            content_type, served = scrape(base, accept=accept, gzipped=True)
        encoder, expected_type = choose_encoder(accept)  # type: ignore[arg-type]
        reference = encoder(app.registry).decode()
    finally:
        app.close()
    assert content_type == expected_type
    assert (fast_format(content_type) is not None) is written_here

    def timeless(text: str) -> list[str]:
        return [line for line in text.splitlines() if not SCRAPE_DURATION.match(line)]

    assert timeless(served) == timeless(reference)
    assert len(timeless(served)) >= 60
    if written_here:
        openmetrics = content_type.startswith("application/openmetrics-text")
        records = series(samples(served, openmetrics), "last_records_processed")
        assert {name: records[name] for name in AWKWARD_NAMES} == {
            name: float(n) for n, name in enumerate(AWKWARD_NAMES)
        }
        assert all(legacy.match(f.name) for f in parse_text(served) if not openmetrics)


SCRAPE_DURATION = re.compile(r"^\S*scrape_+duration_+seconds\S* ")
legacy = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@pytest.mark.parametrize(
    "query",
    [
        "name[]=sync_observability_up&name[]=sync_observability_table_rows",
        # As Prometheus sends a scrape config's `params:` (Go's url.Values.Encode).
        "name%5B%5D=sync_observability_table_rows&name%5B%5D=sync_observability_up",
    ],
)
def test_a_name_filter_is_prometheus_clients(tmp_path: Any, query: str) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    app = make_metrics_app(database_url=url)
    try:
        with serving(app) as base:
            request = urllib.request.Request(f"{base}/metrics?{query}")
            with urllib.request.urlopen(request, timeout=60) as response:
                values = samples(response.read().decode())
    finally:
        app.close()
    assert {name for name, _ in values} == {
        "sync_observability_up",
        "sync_observability_table_rows",
    }


def test_an_accept_version_prometheus_client_cannot_read_gets_the_text_format(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert CliRunner().invoke(main, ["migrate", "--database-url", url]).exit_code == 0
    app = make_metrics_app(database_url=url)
    try:
        with serving(app) as base:
            content_type, text = scrape(base, accept='application/openmetrics-text; version="1"')
    finally:
        app.close()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert series(samples(text), "up") == {(): 1.0}


def test_labels_out_of_order_are_refused() -> None:
    gauge = Gauge("x", "doc", ("status", "resource"), [(("ok", "r"), 1.0)])
    with pytest.raises(ValueError, match=r"x: labels .* not in sorted order"):
        render_exposition([gauge], openmetrics=False)
