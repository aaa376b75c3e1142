"""The application kernel: lifecycle hooks, the database, migrations and auth records.

:class:`BaseApp` is the kernel alone: it never imports :mod:`pocketjobs.cli` or
:mod:`pocketjobs.apis`. The user-facing :class:`pocketjobs.App` subclasses it and adds the
command line (``start()``), as PocketBase's ``pocketbase.go`` wraps ``core.BaseApp``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pocketjobs.core.auth import AuthRecords, create_auth_tables
from pocketjobs.core.db import Database, Tx
from pocketjobs.core.events import BootstrapEvent, ServeEvent, TerminateEvent
from pocketjobs.core.migrations import Migration, apply_migrations
from pocketjobs.tools.hook import Hook

if TYPE_CHECKING:
    import argparse

__all__ = ["BaseApp", "Command", "open_database"]

T = TypeVar("T")

KERNEL_MIGRATIONS: tuple[Migration, ...] = (Migration("0001_kernel_auth", create_auth_tables),)

#: A rate limit rule as the kernel keeps it: ``(label, max_requests, duration in
#: seconds)``; :class:`pocketjobs.apis.RateLimitRule` is the validated, named form.
RateLimitSpec = tuple[str, int, float]

#: ``app.rate_limits`` to begin with, per client IP (PocketBase's tags; see
#: :mod:`pocketjobs.apis.ratelimit`). ``*:auth``, the password logins of every collection
#: together: 10 a minute, enough for a person who mistypes, while a password guesser gets at
#: most 20 tries in any minute (two fixed windows), about 14,000 a day, instead of as many
#: as the server can hash (hundreds a minute per core). ``*:authRefresh``: 30 a minute
#: (a valid token is needed; it bounds the signing work). ``*:create``, sign-ups: 20 a
#: minute, against scripted account creation.
DEFAULT_RATE_LIMITS: tuple[RateLimitSpec, ...] = (
    ("*:auth", 10, 60),
    ("*:authRefresh", 30, 60),
    ("*:create", 20, 60),
)


@dataclass(frozen=True)
class Command:
    """A CLI command a plugin adds to :meth:`pocketjobs.App.start` (e.g. ``jobs stats``).

    ``configure(parser)`` declares its arguments; ``run(app, args)`` runs it after the app
    has bootstrapped (with background work off) and returns an exit code.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[BaseApp, argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class BackgroundOption:
    """CLI flags a plugin adds to the commands that run background work (``serve`` and
    ``worker``), e.g. the jobs plugin's ``--queues``.

    ``configure(parser)`` declares them on each of the two commands; ``apply(app, args)``
    runs before the app bootstraps (so before background work starts) and may raise
    ``ValueError`` for a bad value (the CLI prints it and exits 1).
    """

    configure: Callable[[argparse.ArgumentParser], None]
    apply: Callable[[BaseApp, argparse.Namespace], None]


def open_database(url: str | None, data_dir: Path, *, pool_size: int = 20) -> Database:
    """Open the database ``url`` names: none → ``<data_dir>/data.db`` (SQLite),
    ``sqlite:///PATH``, or ``postgres://`` / ``postgresql://``."""
    if not url:
        from pocketjobs.core.sqlite import SQLiteDatabase

        return SQLiteDatabase(data_dir / "data.db")
    if url.startswith("sqlite:///"):
        from pocketjobs.core.sqlite import SQLiteDatabase

        return SQLiteDatabase(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from pocketjobs.core.postgres import PostgresDatabase

        return PostgresDatabase(url, max_size=pool_size)
    raise ValueError(
        f"unsupported database URL {url.split('://')[0]!r}: use postgresql://... or sqlite:///PATH"
    )


class BaseApp:
    """The PocketBase-style application kernel: hooks around bootstrap, serve and terminate.

    It has no command line: :class:`pocketjobs.App` adds ``start()``. The CLI and the HTTP
    layer take any ``BaseApp``.

    ``database_url`` selects the database; the ``PB_DATABASE_URL`` environment variable
    overrides it, and the CLI's ``--db`` overrides both. Without one, the app uses the
    SQLite file ``<data_dir>/data.db``. Settings may be changed until :meth:`bootstrap`;
    the HTTP settings (``rate_limits``, ``cors_origins``, ``access_log``,
    ``trusted_proxies``) until the server is built on ``serve``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "pb_data",
        database_url: str | None = None,
        *,
        logger: logging.Logger | None = None,
        db_pool_size: int = 20,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database_url: str | None = os.environ.get("PB_DATABASE_URL") or database_url
        self.db_pool_size = db_pool_size
        self.logger = logger or logging.getLogger("pocketjobs")
        self.on_bootstrap: Hook[BootstrapEvent] = Hook()
        self.on_serve: Hook[ServeEvent] = Hook()
        self.on_terminate: Hook[TerminateEvent] = Hook()
        #: Whether plugins start background work (e.g. the job dispatcher) on bootstrap.
        #: The CLI turns it off for one-shot commands such as ``superuser upsert``.
        self.background_enabled = True
        self.commands: dict[str, Command] = {}
        self.background_options: list[BackgroundOption] = []
        #: HTTP rate limit rules, per client IP (:mod:`pocketjobs.apis.ratelimit`);
        #: ``None`` or empty: none. ``PB_RATE_LIMITS`` replaces them when set.
        self.rate_limits: Sequence[RateLimitSpec] | None = DEFAULT_RATE_LIMITS
        #: The CORS allowed origins (``https://example.com``), or ``*`` for any
        #: (``serve --origins``).
        self.cors_origins: Sequence[str] = ("*",)
        #: Whether ``serve`` logs every request to the ``pocketjobs.access`` logger
        #: (``serve --no-access-log`` turns it off).
        self.access_log = True
        #: Reverse proxies (IP addresses or CIDR networks) whose ``X-Forwarded-For`` /
        #: ``X-Real-IP`` name the client (``serve --trusted-proxy``); none: headers ignored.
        self.trusted_proxies: Sequence[str] = ()
        self._db: Database | None = None
        self._auth: AuthRecords | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Open the database, apply the kernel migrations, then run ``on_bootstrap``.

        The kernel's work is the chain's default action: handlers that need the database
        do their work after ``e.next()``. Bootstrapping again first closes the database.
        """
        self.on_bootstrap.trigger(BootstrapEvent(app=self), self._bootstrap_default)

    def _bootstrap_default(self, event: BootstrapEvent) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(self.database_url, self.data_dir, pool_size=self.db_pool_size)
        try:
            apply_migrations(db, KERNEL_MIGRATIONS)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._auth = AuthRecords(db)
        event.next()

    def is_bootstrapped(self) -> bool:
        """Whether the database is open (between :meth:`bootstrap` and :meth:`terminate`)."""
        return self._db is not None

    def terminate(self, *, is_restart: bool = False) -> None:
        """Run ``on_terminate``; its default action closes the database."""
        self.on_terminate.trigger(
            TerminateEvent(app=self, is_restart=is_restart), self._terminate_default
        )

    def _terminate_default(self, event: TerminateEvent) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
        self._auth = None
        event.next()

    # -- database ------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        """The open database. Raises ``RuntimeError`` before :meth:`bootstrap`."""
        if self._db is None:
            raise RuntimeError("the app is not bootstrapped: call app.bootstrap() first")
        return self._db

    @property
    def auth(self) -> AuthRecords:
        """The auth records (``_superusers`` and ``users``) of this app's database."""
        if self._auth is None:
            raise RuntimeError("the app is not bootstrapped: call app.bootstrap() first")
        return self._auth

    def is_postgres(self) -> bool:
        """Whether the app runs on PostgreSQL (else SQLite)."""
        return self.db.is_postgres()

    def run_in_transaction(self, fn: Callable[[Tx], T]) -> T:
        """Call ``fn(tx)`` in one database transaction and return its result."""
        return self.db.run_in_transaction(fn)

    def apply_migrations(self, migrations: Sequence[Migration]) -> list[str]:
        """Apply the not yet applied ``migrations`` (see :mod:`pocketjobs.core.migrations`)."""
        return apply_migrations(self.db, migrations)

    # -- CLI -----------------------------------------------------------------------------

    def add_command(self, command: Command) -> None:
        """Add a CLI command; raises ``ValueError`` if the name is taken."""
        if command.name in self.commands or command.name in ("serve", "worker", "superuser"):
            raise ValueError(f"command {command.name!r} already exists")
        self.commands[command.name] = command

    def add_background_option(self, option: BackgroundOption) -> None:
        """Add CLI flags to ``serve`` and ``worker`` (see :class:`BackgroundOption`)."""
        self.background_options.append(option)

    def __repr__(self) -> str:
        state = "bootstrapped" if self.is_bootstrapped() else "not bootstrapped"
        return f"<{type(self).__name__} data_dir={str(self.data_dir)!r} {state}>"
