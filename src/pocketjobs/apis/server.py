"""The ASGI application and the HTTP server behind ``serve``."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pocketjobs.apis.accesslog import AccessLogMiddleware
from pocketjobs.apis.auth import auth_routes
from pocketjobs.apis.clientip import STATE_KEY, TrustedProxies
from pocketjobs.apis.errors import CatchAllMiddleware, exception_handlers
from pocketjobs.apis.ratelimit import RateLimiter, RateLimitMiddleware, rate_limit_rules
from pocketjobs.core.events import ServeEvent

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "KEEP_ALIVE_TIMEOUT",
    "HttpSettings",
    "ServeAborted",
    "create_asgi_app",
    "http_settings",
    "parse_origins",
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


#: The cyclic collector's youngest-generation threshold while serving (see
#: :func:`run_http_server`).
GC_YOUNG_THRESHOLD = 50_000


class ServeAborted(RuntimeError):
    """An ``on_serve`` handler stopped the chain, so the server must not start."""


async def health(request: Request) -> JSONResponse:
    """``GET /api/health``: 200 while the app is up."""
    return JSONResponse({"message": "API is healthy.", "code": 200, "data": {}})


def parse_origins(origins: Sequence[str] | str) -> tuple[str, ...]:
    """CORS allowed origins (a list, or one comma-separated string) → a tuple: ``*`` (any
    origin) or origins as browsers send them, ``scheme://host[:port]``. Raises
    ``ValueError`` for anything else (``example.com`` or ``https://example.com/`` would
    never match) and for an empty list."""
    items = origins.split(",") if isinstance(origins, str) else list(origins)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"invalid CORS origin {item!r}: expected a string")
        origin = item.strip()
        if not origin:
            continue
        scheme, sep, host = origin.partition("://")
        valid = origin == "*" or (
            sep and scheme.isalpha() and host and not any(c in host for c in "/ ?#*")
        )
        if not valid:
            raise ValueError(
                f"invalid CORS origin {origin!r}: expected * or scheme://host[:port], "
                "e.g. https://example.com"
            )
        result.append(origin)
    if not result:
        raise ValueError("no CORS origin given: expected * or scheme://host[:port], ...")
    return tuple(result)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP settings of an app, validated (:func:`http_settings`)."""

    rate_limiter: RateLimiter
    cors_origins: tuple[str, ...]
    access_log: bool
    trusted_proxies: TrustedProxies


def http_settings(app: BaseApp) -> HttpSettings:
    """``app``'s HTTP settings (``rate_limits`` or ``PB_RATE_LIMITS``, ``cors_origins``,
    ``access_log``, ``trusted_proxies``), validated; raises ``ValueError`` naming the bad
    one."""
    try:
        configured = app.trusted_proxies
        proxies = TrustedProxies(
            configured.split(",") if isinstance(configured, str) else configured
        )
    except ValueError as exc:
        raise ValueError(f"trusted_proxies: {exc}") from None
    try:
        origins = parse_origins(app.cors_origins)
    except ValueError as exc:
        raise ValueError(f"cors_origins: {exc}") from None
    return HttpSettings(
        rate_limiter=RateLimiter(rate_limit_rules(app)),
        cors_origins=origins,
        access_log=bool(app.access_log),
        trusted_proxies=proxies,
    )


def create_asgi_app(app: BaseApp) -> Starlette:
    """A Starlette app with the kernel's routes, error handling and HTTP settings for
    ``app`` (see :func:`http_settings`; raises ``ValueError`` for a bad one).

    The middleware, outermost first: the access log (it sees every answer, a 429 too),
    CORS (a preflight is answered before it is counted), the rate limiter, then the
    catch-all that turns an unexpected exception into a 500.
    """
    settings = http_settings(app)
    proxies = settings.trusted_proxies
    middleware: list[Middleware] = []
    if settings.access_log:
        middleware.append(Middleware(AccessLogMiddleware, proxies=proxies))
    middleware.append(
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    )
    if settings.rate_limiter:
        middleware.append(
            Middleware(RateLimitMiddleware, limiter=settings.rate_limiter, proxies=proxies)
        )
    middleware.append(Middleware(CatchAllMiddleware))
    asgi = Starlette(
        routes=[Route("/api/health", health, methods=["GET", "HEAD"]), *auth_routes()],
        middleware=middleware,
        exception_handlers=exception_handlers(),
    )
    asgi.state.pb_app = app
    setattr(asgi.state, STATE_KEY, proxies)
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

    Before serving, what start-up made (modules, routes, the app) is frozen out of the
    cyclic garbage collector and its youngest generation is collected every
    :data:`GC_YOUNG_THRESHOLD` allocations rather than 700: under load the collector's
    passes over long-lived objects were pauses every request in flight waited for.
    """
    import uvicorn

    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)

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
        # The kernel's access log and trusted proxies (apis.clientip) replace uvicorn's:
        # its proxy headers would believe X-Forwarded-For from 127.0.0.1 by default.
        access_log=False,
        proxy_headers=False,
        log_config=None,
        timeout_keep_alive=keep_alive_timeout,
    )
    _Server(config).run()
