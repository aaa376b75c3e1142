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

__all__ = ["ServeAborted", "create_asgi_app", "prepare_serve", "run_http_server"]


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
    asgi: Starlette, host: str, port: int, stop: threading.Event | None = None
) -> None:
    """Serve ``asgi`` with uvicorn until SIGINT/SIGTERM (or ``stop`` is set), then return."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            # A signal that arrived before uvicorn installed its handlers is not lost.
            if stop is not None and stop.is_set():
                self.should_exit = True

    config = uvicorn.Config(
        asgi, host=host, port=port, lifespan="off", access_log=False, log_config=None
    )
    _Server(config).run()
