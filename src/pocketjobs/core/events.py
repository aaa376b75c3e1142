"""The kernel's lifecycle events, each triggered through a :class:`~pocketjobs.tools.hook.Hook`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pocketjobs.tools.hook import Event

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import Router

    from pocketjobs.core.app import BaseApp

__all__ = ["BootstrapEvent", "ServeEvent", "TerminateEvent"]


@dataclass
class BootstrapEvent(Event):
    """Triggered by :meth:`BaseApp.bootstrap`. The database is open after ``e.next()``."""

    app: BaseApp


@dataclass
class ServeEvent(Event):
    """Triggered by ``serve`` before the HTTP server starts.

    Bind routes on ``router`` (``e.router.add_route(path, endpoint, methods=[...])``);
    they are served once the chain completes. ``host``/``port`` are the listen address.
    """

    app: BaseApp
    asgi: Starlette
    router: Router
    host: str
    port: int


@dataclass
class TerminateEvent(Event):
    """Triggered by :meth:`BaseApp.terminate`. The database is closed after ``e.next()``."""

    app: BaseApp
    is_restart: bool = False
