"""Embedding the jobs plugin in a Starlette or FastAPI app.

::

    from fastapi import FastAPI

    from pocketjobs import App
    from pocketjobs.plugins import jobs

    app = App()
    store = jobs.must_register(app)

    api = FastAPI(lifespan=jobs.lifespan(app))       # or Starlette(lifespan=...)
    api.mount("/jobs", jobs.asgi(store))             # /jobs/api/jobs/..., /jobs/_/jobs

:func:`asgi` is the app ``serve`` would serve (the kernel's routes and error handling, the
routes the ``on_serve`` handlers bind: the jobs API and the dashboard), to be mounted under
any prefix. :func:`lifespan` bootstraps the kernel app when the host app starts (so the
dispatcher starts with it) and terminates it when the host app stops.

Mounted apps see no lifespan events, so :func:`asgi` builds its app (``prepare_serve``: the
``on_serve`` chain runs) once the kernel app is bootstrapped: at the host's startup when
:func:`lifespan` finds it among the host's routes, else on its first request. Until the
kernel app is bootstrapped, and once it has terminated, it answers 503.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

import anyio.to_thread
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from pocketjobs.apis import error_response, prepare_serve
from pocketjobs.core import BaseApp
from pocketjobs.plugins.jobs.store import JobStore

__all__ = ["EmbeddedApp", "asgi", "lifespan"]

HostT = TypeVar("HostT")
StateT = TypeVar("StateT")

_NOT_RUNNING = "The service is not running."


class EmbeddedApp:
    """The ASGI app :func:`asgi` returns: the kernel app's HTTP API, served under the
    prefix it is mounted at (the mount's ``root_path``)."""

    def __init__(self, app: BaseApp) -> None:
        self.app = app
        self._asgi: Starlette | None = None
        self._lock = threading.Lock()
        self._warned = False

    def prepare(self) -> Starlette:
        """Build the kernel's ASGI app and run the ``on_serve`` chain on it, once (later
        calls return the same app). Call it after the kernel app has bootstrapped, as
        ``serve`` does; raises :class:`~pocketjobs.apis.ServeAborted` when a handler stops
        the chain."""
        with self._lock:
            if self._asgi is None:
                # No listen address: the host app's server owns it.
                self._asgi = prepare_serve(self.app, host="", port=0)
            return self._asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # a mount sees no lifespan events: jobs.lifespan() is the host's
        if not self.app.is_bootstrapped():
            if not self._warned:
                self._warned = True
                self.app.logger.warning(
                    "the jobs API got a request while the app is not bootstrapped:"
                    " start the host app with lifespan=jobs.lifespan(app)"
                )
            if scope["type"] == "http":
                await error_response(503, _NOT_RUNNING)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1013})
            return
        await self.prepare()(scope, receive, send)


def asgi(store: JobStore) -> EmbeddedApp:
    """The kernel app of ``store`` (what :func:`register` returned) as an ASGI app to mount
    in a Starlette or FastAPI app under any prefix: ``host.mount("/jobs", jobs.asgi(store))``
    serves ``/jobs/api/health``, the auth routes, ``/jobs/api/jobs/...`` and the dashboard
    at ``/jobs/_/jobs``, with the kernel's error responses. Start the host app with
    :func:`lifespan` so that the kernel app is running."""
    return EmbeddedApp(_kernel_of(store))


@overload
def lifespan(
    app: BaseApp | JobStore,
) -> Callable[[Any], AbstractAsyncContextManager[None]]: ...


@overload
def lifespan(
    app: BaseApp | JobStore,
    inner: Callable[[HostT], AbstractAsyncContextManager[StateT]],
) -> Callable[[HostT], AbstractAsyncContextManager[StateT]]: ...


def lifespan(
    app: BaseApp | JobStore,
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A lifespan for a Starlette or FastAPI app (``FastAPI(lifespan=jobs.lifespan(app))``)
    that runs the kernel app ``app`` (or a store's) while the host app runs.

    On startup: ``app.bootstrap()`` (the database opens, migrations apply, the dispatcher
    starts), then the :func:`asgi` apps mounted on the host for this kernel app run their
    ``on_serve`` chain, then ``inner(host)`` (the host's own lifespan, if any) starts; the
    state it yields is the host's lifespan state. On shutdown, in reverse: ``inner`` ends,
    then ``app.terminate()`` (the dispatcher stops gracefully, waiting up to its
    ``shutdown_timeout`` for running jobs; the database closes). Bootstrap and terminate
    block, so they run on a worker thread, never on the event loop.
    """
    kernel = app if isinstance(app, BaseApp) else _kernel_of(app)

    @asynccontextmanager
    async def run(host: Any) -> AsyncIterator[Any]:
        try:
            await anyio.to_thread.run_sync(kernel.bootstrap)
            for embedded in _embedded_apps(getattr(host, "routes", ())):
                if embedded.app is kernel:
                    embedded.prepare()
            if inner is None:
                yield None
            else:
                async with inner(host) as state:
                    yield state
        finally:
            if kernel.is_bootstrapped():
                await anyio.to_thread.run_sync(kernel.terminate)

    return run


def _kernel_of(store: JobStore) -> BaseApp:
    """The kernel app ``store`` was registered on."""
    return store.app


def _embedded_apps(routes: Iterable[BaseRoute]) -> Iterator[EmbeddedApp]:
    """The :class:`EmbeddedApp` instances mounted among ``routes``, at any depth."""
    for route in routes:
        if isinstance(route, Mount):
            if isinstance(route.app, EmbeddedApp):
                yield route.app
            else:
                yield from _embedded_apps(getattr(route.app, "routes", ()))
