"""The ASGI application and the HTTP server behind ``serve``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pocketjobs.apis.auth import auth_routes
from pocketjobs.apis.errors import CatchAllMiddleware, exception_handlers
from pocketjobs.core.events import ServeEvent

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = [
    "KEEP_ALIVE_TIMEOUT",
    "ServeAborted",
    "create_asgi_app",
    "prepare_serve",
    "run_http_server",
]

#: Seconds an idle keep-alive connection stays open (PocketBase's, which is Go's
#: ``IdleTimeout`` falling back to its 5-minute ``ReadTimeout``). It must exceed the
#: idle expiry of the clients: one that reuses a connection at the very moment the
#: server closes it gets a reset or an EOF and no response, and a POST is not retried.
#: uvicorn's default of 5 s equals httpx's ``keepalive_expiry``, so a client idle for
#: just under 5 s lost its request that way. A client whose expiry is shorter than this
#: (httpx 5 s, Go 90 s, curl 118 s) closes first, so it never meets the race.
KEEP_ALIVE_TIMEOUT = 300


class ServeAborted(RuntimeError):
    """An ``on_serve`` handler stopped the chain, so the server must not start."""


async def health(request: Request) -> JSONResponse:
    """``GET /api/health``: 200 while the app is up."""
    return JSONResponse({"message": "API is healthy.", "code": 200, "data": {}})


def create_asgi_app(app: BaseApp) -> Starlette:
    """A Starlette app with the kernel's routes and error handling for ``app``."""
    asgi = Starlette(
        routes=[Route("/api/health", health, methods=["GET", "HEAD"]), *auth_routes()],
        middleware=[
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
            ),
            Middleware(CatchAllMiddleware),
        ],
        exception_handlers=exception_handlers(),
    )
    asgi.state.pb_app = app
    return asgi


def prepare_serve(app: BaseApp, host: str = "127.0.0.1", port: int = 8090) -> Starlette:
    """Build the ASGI app and run ``on_serve`` so handlers bind their routes on it.

    Raises :class:`ServeAborted` when a handler does not call ``e.next()``.
    """
    asgi = create_asgi_app(app)
    completed = False

    def default(event: ServeEvent) -> None:
        nonlocal completed
        completed = True
        event.next()

    app.on_serve.trigger(
        ServeEvent(app=app, asgi=asgi, router=asgi.router, host=host, port=port), default
    )
    if not completed:
        raise ServeAborted("an on_serve handler stopped the chain; not serving")
    return asgi


def run_http_server(
    asgi: Starlette,
    host: str,
    port: int,
    stop: threading.Event | None = None,
    *,
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT,
) -> None:
    """Serve ``asgi`` with uvicorn until SIGINT/SIGTERM (or ``stop`` is set), then return.

    Idle keep-alive connections are closed after ``keep_alive_timeout`` seconds (see
    :data:`KEEP_ALIVE_TIMEOUT`); shutting down closes them at once.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            # A signal that arrived before uvicorn installed its handlers is not lost.
            if stop is not None and stop.is_set():
                self.should_exit = True

    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_keep_alive=keep_alive_timeout,
    )
    _Server(config).run()
