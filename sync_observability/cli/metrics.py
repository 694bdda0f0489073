"""``sync-obs metrics serve``: the Prometheus / OpenMetrics exposition at ``/metrics``.

prometheus_client (the ``prometheus`` extra) is imported when the command runs, never when the
CLI loads.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import socketserver
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from sync_observability.cli.options import DatabaseOption, OneLineErrorsGroup, database_options
from sync_observability.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
METRICS_PATH = "/metrics"


@click.group(
    cls=OneLineErrorsGroup, short_help="Serve Prometheus metrics of sync_state and sync_alerts."
)
def metrics() -> None:
    """Prometheus / OpenMetrics exposition of sync_state and sync_alerts."""


@metrics.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on; 0 picks a free one (the address is printed when serving starts).",
)
@database_options
def serve(host: str, port: int, database: DatabaseOption) -> None:
    """Serve the metrics at http://HOST:PORT/metrics until interrupted (Ctrl-C or SIGTERM).

    Every scrape reads sync_state and sync_alerts through one connection pool, within
    --storage-timeout (or Prometheus' scrape timeout when shorter). A database that fails gives
    sync_observability_up 0 and the error on stderr, never a hung scrape.
    """
    try:
        from sync_observability.prometheus import make_metrics_app
    except ImportError as error:
        raise ConfigurationError(
            f"sync-obs metrics needs prometheus_client ({error}): "
            "pip install 'sync_observability[prometheus]'"
        ) from error

    with database.open(auto_migrate=False, rollups="read") as store:
        app = make_metrics_app(store)
        try:
            server = make_server(
                host,
                port,
                _only_metrics(app),
                server_class=_server_class(host),
                handler_class=_QuietHandler,
            )
        except (OSError, OverflowError) as error:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}"
            ) from error
        with server, _stop_on_sigterm():
            bound_host, bound_port = server.server_address[:2]
            shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
            click.echo(
                f"Serving Prometheus metrics on http://{shown}:{bound_port}{METRICS_PATH} "
                f"(database {store.url})",
                err=True,
            )
            sys.stderr.flush()
            # A scrape at 10,000 resources allocates some 100,000 objects, and every full
            # collection they set off would walk the whole process (SQLAlchemy, click, ...);
            # frozen, what exists now is left out (bench/bench_metrics.py).
            gc.collect()
            gc.freeze()
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever()


def _only_metrics(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in (METRICS_PATH, METRICS_PATH + "/"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"Not found: the metrics are at {METRICS_PATH}\n".encode()]

    return route


def _server_class(host: str) -> type[WSGIServer]:
    class Server(socketserver.ThreadingMixIn, WSGIServer):
        # A slow scrape does not hold up the next; threads never keep the process alive.
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line on stderr per scrape


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
