"""The command line behind :meth:`pocketjobs.App.start`; it runs any kernel app
(:class:`~pocketjobs.core.BaseApp`).

::

    python main.py serve [--http 127.0.0.1:8090]   HTTP server + background work (jobs)
        [--origins https://a.example,https://b.example]   CORS allowed origins (default *)
        [--trusted-proxy 10.0.0.0/8 ...]   proxies whose X-Forwarded-For names the client
        [--no-access-log]                  no access log lines (on by default)
    python main.py worker                          background work only (extra job workers)
    python main.py superuser upsert EMAIL PASSWORD
    python main.py superuser delete EMAIL
    python main.py <plugin command> ...            commands added with app.add_command()

Global flags, accepted anywhere on the line: ``--dir DIR`` (data directory) and
``--db URL`` (database URL; overrides ``PB_DATABASE_URL``). ``serve`` and ``worker`` run
until SIGINT or SIGTERM, then terminate the app (plugins stop gracefully) and exit 0.
One-shot commands bootstrap with background work off, so they never start a dispatcher.

Logs go to stderr as ``PB_LOG_FORMAT`` (``text`` or ``json``) and ``PB_LOG_LEVEL`` say
(:func:`pocketjobs.core.configure_logging`), unless the app configured logging itself.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pocketjobs.core.auth import SUPERUSERS, ValidationError
from pocketjobs.core.db import DatabaseError
from pocketjobs.core.logs import configure_logging

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = ["parse_http_address", "run_cli"]

DEFAULT_HTTP = "127.0.0.1:8090"
_GLOBAL_FLAGS = ("--dir", "--db")


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) → ``(host, port)``; raises ``ValueError``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid --http address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port_text)


def _extract_global_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    rest: list[str] = []
    found: dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        name, eq, value = arg.partition("=")
        if name in _GLOBAL_FLAGS:
            if not eq:
                if i + 1 >= len(items):
                    raise ValueError(f"{name} needs a value")
                value = items[i + 1]
                i += 1
            found[name] = value
        else:
            rest.append(arg)
        i += 1
    return rest, found


def _build_parser(app: BaseApp) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=sys.argv[0] if sys.argv and sys.argv[0] else "app",
        description="pocketjobs app. Global flags: --dir DIR (data directory), --db URL "
        "(database URL, overrides PB_DATABASE_URL).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="serve HTTP and run background work")
    serve.add_argument(
        "--http", default=DEFAULT_HTTP, help=f"listen address (default {DEFAULT_HTTP})"
    )
    serve.add_argument(
        "--origins",
        metavar="ORIGINS",
        help="CORS allowed origins, comma separated (scheme://host[:port]; default *)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP|CIDR",
        help="a reverse proxy whose X-Forwarded-For / X-Real-IP names the client "
        "(repeatable or comma separated; default none: those headers are ignored)",
    )
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log each request (the access log is on by default)",
    )
    worker = commands.add_parser("worker", help="run background work (job workers) without HTTP")
    for option in app.background_options:
        option.configure(serve)
        option.configure(worker)
    superuser = commands.add_parser("superuser", help="manage superusers")
    actions = superuser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upsert = actions.add_parser("upsert", help="create a superuser or set its password")
    upsert.add_argument("email")
    upsert.add_argument("password")
    delete = actions.add_parser("delete", help="delete a superuser")
    delete.add_argument("email")
    for command in app.commands.values():
        command.configure(commands.add_parser(command.name, help=command.help))
    return parser


class _StopSignal:
    """SIGINT/SIGTERM handlers that set an event instead of killing the process."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> _StopSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def _apply_serve_flags(app: BaseApp, args: argparse.Namespace) -> None:
    """Put ``serve``'s HTTP flags on ``app`` and validate all its HTTP settings (before the
    app bootstraps); raises ``ValueError`` naming the bad flag or setting."""
    from pocketjobs.apis.clientip import TrustedProxies
    from pocketjobs.apis.server import http_settings, parse_origins

    if args.origins is not None:
        try:
            app.cors_origins = parse_origins(args.origins)
        except ValueError as exc:
            raise ValueError(f"--origins: {exc}") from None
    if args.trusted_proxy:
        proxies = [item.strip() for value in args.trusted_proxy for item in value.split(",")]
        try:
            if not all(proxies):
                raise ValueError("empty value: expected IP addresses or CIDR networks")
            TrustedProxies(proxies)
        except ValueError as exc:
            raise ValueError(f"--trusted-proxy: {exc}") from None
        app.trusted_proxies = proxies
    if args.no_access_log:
        app.access_log = False
    http_settings(app)  # the settings the app made itself, and PB_RATE_LIMITS


def _serve(app: BaseApp, http: str) -> int:
    from pocketjobs.apis.server import prepare_serve, run_http_server

    host, port = parse_http_address(http)
    # uvicorn handles SIGINT/SIGTERM itself and re-raises the signal once it has shut down;
    # our handlers then receive it, so the process exits 0 after terminating the app.
    with _StopSignal() as stop:
        app.bootstrap()
        try:
            asgi = prepare_serve(app, host, port)
            if not stop.event.is_set():  # a signal during bootstrap means: do not serve
                app.logger.info("Server started at http://%s:%d", host, port)
                run_http_server(asgi, host, port, stop.event)
        finally:
            app.terminate()
    return 0


def _worker(app: BaseApp) -> int:
    with _StopSignal() as stop:
        app.bootstrap()
        app.logger.info("Worker started; stop it with SIGINT or SIGTERM")
        try:
            while not stop.event.wait(1.0):
                pass
        finally:
            app.terminate()
    return 0


def _one_shot(app: BaseApp, args: argparse.Namespace) -> int:
    app.background_enabled = False
    app.bootstrap()
    try:
        if args.command == "superuser":
            if args.action == "upsert":
                record, created = app.auth.upsert_superuser(args.email, args.password)
                print(
                    f"{'Created' if created else 'Updated'} superuser {record.email} ({record.id})"
                )
                return 0
            if app.auth.delete(SUPERUSERS, args.email):
                print(f"Deleted superuser {args.email}")
                return 0
            print(f"No superuser with email {args.email}", file=sys.stderr)
            return 1
        return app.commands[args.command].run(app, args)
    finally:
        app.terminate()


def run_cli(app: BaseApp, argv: Sequence[str]) -> int:
    """Parse ``argv`` (without the program name), run the command, return the exit code."""
    try:
        rest, flags = _extract_global_flags(argv)
        args = _build_parser(app).parse_args(rest)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    if "--dir" in flags:
        app.data_dir = Path(flags["--dir"])
    if "--db" in flags:
        app.database_url = flags["--db"]
    try:
        # PB_LOG_FORMAT / PB_LOG_LEVEL; logging the app configured itself is kept.
        configure_logging()
        if args.command in ("serve", "worker"):
            for option in app.background_options:
                option.apply(app, args)
        if args.command == "serve":
            _apply_serve_flags(app, args)
            return _serve(app, args.http)
        if args.command == "worker":
            return _worker(app)
        return _one_shot(app, args)
    except ValidationError as exc:
        for field, (_, message) in exc.errors.items():
            print(f"error: {field}: {message}", file=sys.stderr)
        return 1
    except (DatabaseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a data dir that cannot be created
        print(f"error: {exc}", file=sys.stderr)
        return 1
