"""The jobs metrics over HTTP: ``GET /api/jobs/metrics`` on the app's server, behind
``metrics_rule``, and the ``--metrics HOST:PORT`` flag of ``serve`` and ``worker``: a small
server of its own, for a process that serves no HTTP.

::

    python main.py worker --metrics 127.0.0.1:9108   # GET http://127.0.0.1:9108/metrics

That server answers every path with the metrics and asks for no token: it listens where
the operator says, so bind it to an address only Prometheus reaches. Its socket is bound
when the command line is read (a bad or taken address is an error before anything
starts) and it serves from the end of bootstrap until the app terminates. Both answer in
the Prometheus text format, or OpenMetrics when the scraper asks for it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from starlette.requests import Request
from starlette.responses import Response

from pocketjobs.apis import NotFoundError, authorize
from pocketjobs.core import BackgroundOption, BaseApp

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.metrics import JobMetrics
    from pocketjobs.plugins.jobs.plugin import JobsPlugin

__all__ = ["METRICS_PATH", "MetricsServer", "metrics_endpoint", "metrics_option", "parse_address"]

METRICS_PATH = "/api/jobs/metrics"
_METRICS_OFF = "The jobs metrics are off."
_STOP_SECONDS = 5.0


def metrics_endpoint(plugin: JobsPlugin) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``GET /api/jobs/metrics``: 404 when the metrics are off, else
    ``metrics_rule`` (401/403), then the metrics of the plugin's store."""

    async def metrics(request: Request) -> Response:
        job_metrics = plugin.store.metrics
        if job_metrics is None:
            raise NotFoundError(_METRICS_OFF)
        await authorize(request, plugin.metrics_rule)
        # The gauges read the database: off the event loop.
        body, content_type = await asyncio.to_thread(
            job_metrics.render, request.headers.get("accept")
        )
        return Response(body, headers={"Content-Type": content_type})

    return metrics


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) as ``(host, port)``; raises ``ValueError``.
    The host is required: ``0.0.0.0:9108`` listens on every interface."""
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not (port.isascii() and port.isdigit()):
        raise ValueError(f"invalid --metrics address {text!r}: expected HOST:PORT")
    if not 0 < int(port) < 65536:
        raise ValueError(f"invalid --metrics address {text!r}: the port must be 1 to 65535")
    return host, int(port)


class _QuietHandler(WSGIRequestHandler):
    """Logs no request (scrapes come every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """The ``--metrics`` server of one store's metrics: :meth:`bind`, then :meth:`serve`
    (a daemon thread), then :meth:`close`. Without a :meth:`bind` the other two do
    nothing."""

    def __init__(self, metrics: JobMetrics | None, app: BaseApp) -> None:
        self._metrics = metrics
        self._app = app
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def bind(self, text: str) -> None:
        """Listen on ``HOST:PORT`` (``text``). Raises ``ValueError`` for a bad address,
        one that cannot be bound (taken, not this machine's) or metrics that are off."""
        host, port = parse_address(text)
        if self._metrics is None:
            raise ValueError(
                "--metrics: the jobs metrics are off (Config.metrics, PB_JOBS_METRICS)"
            )
        self.close()
        try:
            family, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]

            class _Server(ThreadingWSGIServer):
                address_family = family

            self._server = make_server(
                host, port, make_wsgi_app(self._metrics.registry), _Server,
                handler_class=_QuietHandler,
            )  # fmt: skip
        except OSError as exc:
            raise ValueError(f"--metrics {text}: cannot listen there: {exc}") from None
        self.address = (host, self._server.server_address[1])

    def serve(self) -> None:
        """Answer scrapes from now on (once; a second call does nothing)."""
        if self._server is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pocketjobs-metrics", daemon=True
        )
        self._thread.start()
        host, port = self.address or ("", 0)
        self._app.logger.info(
            "Jobs metrics served at http://%s:%d/metrics", f"[{host}]" if ":" in host else host,
            port,
        )  # fmt: skip

    def close(self) -> None:
        """Stop answering and free the address."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join(_STOP_SECONDS)
        server.server_close()


def metrics_option(server: MetricsServer) -> BackgroundOption:
    """``--metrics HOST:PORT`` for ``serve`` and ``worker``: serve the jobs metrics there
    (``GET /metrics``, no token; see the module's docstring)."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--metrics",
            metavar="HOST:PORT",
            help="serve the jobs metrics for Prometheus at http://HOST:PORT/metrics "
            "(no authentication: bind it where only Prometheus reaches)",
        )

    def apply(app: BaseApp, args: argparse.Namespace) -> None:
        if args.metrics is not None:
            server.bind(args.metrics)

    return BackgroundOption(configure=configure, apply=apply)
