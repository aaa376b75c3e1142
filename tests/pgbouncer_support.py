"""A real PgBouncer in front of the test PostgreSQL server, started by the tests.

:func:`start_pgbouncer` runs ``pgbouncer`` (Debian installs it as ``/usr/sbin/pgbouncer``)
as a subprocess in **transaction pooling** mode on a free port of ``127.0.0.1``, in front
of the server of an admin URL (``postgres_server_url``): every database name is forwarded
to that server (a ``*`` fallback entry), clients log in with ``auth_type = trust`` (the
server's own credentials, if its URL has any, are given to PgBouncer in its
``[databases]`` entry), and each database and user gets ``pool_size`` server connections
(2 by default), so that consecutive transactions of one client really land on different
server connections. PgBouncer refuses to run as root: then it runs with ``-u postgres``
(the OS user that owns its temporary directory).

The fixtures in ``pgfixtures.py`` use it (``pgbouncer``, ``pgbouncer_url``). Without the
binary they skip, or fail when ``CI`` is set, like the PostgreSQL fixtures.

Also usable outside pytest (``bench/pgbouncer.py`` does)::

    with start_pgbouncer("postgresql://postgres@127.0.0.1:5432/postgres") as bouncer:
        url = bouncer.url_for("postgresql://postgres@127.0.0.1:5432/mydb")
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from support import free_port

__all__ = [
    "PGBOUNCER_OS_USER",
    "PgBouncer",
    "PgBouncerError",
    "find_pgbouncer",
    "start_pgbouncer",
]

#: Where Debian's package installs it (``/usr/sbin`` is not on every user's PATH).
_KNOWN_PATHS: Final = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/bin/pgbouncer")
#: The OS user PgBouncer runs as when we are root (it refuses to run as root).
PGBOUNCER_OS_USER: Final = "postgres"
_START_TIMEOUT: Final = 15.0


class PgBouncerError(RuntimeError):
    """PgBouncer could not be found, started or reached."""


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` executable: from ``PATH``, else Debian's ``/usr/sbin``."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for path in _KNOWN_PATHS:
        if os.access(path, os.X_OK):
            return path
    return None


def _quoted(value: str) -> str:
    """A value for a ``[databases]`` connection string (single quotes, escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class PgBouncer:
    """A running PgBouncer (see :func:`start_pgbouncer`)."""

    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    user: str
    pool_size: int

    @property
    def log_file(self) -> Path:
        return self.directory / "pgbouncer.log"

    def url_for(self, server_url: str) -> str:
        """``server_url`` (a database on the server behind it) through this PgBouncer:
        the same user and database, PgBouncer's address, no password (trust)."""
        parts = urlsplit(server_url)
        netloc = f"{parts.username or self.user}@127.0.0.1:{self.port}"
        return urlunsplit(("postgresql", netloc, parts.path, parts.query, ""))

    def admin_url(self) -> str:
        """The admin console (``SHOW POOLS``, ``SHOW STATS``, ...)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer"

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW what`` on the admin console, as dicts."""
        with psycopg.connect(self.admin_url(), autocommit=True, prepare_threshold=None) as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop it (SIGINT, then SIGKILL after 10 s) and remove its directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # quits once its clients are gone
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGTERM)  # immediate shutdown
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_config(
    directory: Path, server_url: str, port: int, *, pool_size: int, pool_mode: str
) -> str:
    """Write ``pgbouncer.ini`` and the auth file; return the user clients log in as."""
    parts = urlsplit(server_url)
    user = unquote(parts.username or "postgres")
    server = [f"host={parts.hostname or '127.0.0.1'}", f"port={parts.port or 5432}"]
    if parts.password is not None:  # PgBouncer logs in to the server with these
        server += [f"user={_quoted(user)}", f"password={_quoted(unquote(parts.password))}"]
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = {" ".join(server)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
admin_users = {user}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
logfile = {directory / "pgbouncer.log"}
pidfile =
log_connections = 0
log_disconnections = 0
"""
    )
    return user


def _wait_until_ready(bouncer: PgBouncer, server_url: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    problem = ""
    while time.monotonic() < deadline:
        if bouncer.process.poll() is not None:
            raise PgBouncerError(
                f"pgbouncer exited with {bouncer.process.returncode}:\n{bouncer.log_text()}"
            )
        try:
            url = bouncer.url_for(server_url)
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error as exc:
            problem = str(exc).strip()
            time.sleep(0.05)
    raise PgBouncerError(f"pgbouncer did not answer within {_START_TIMEOUT:g}s: {problem}")


@contextmanager
def start_pgbouncer(
    server_url: str, *, pool_size: int = 2, pool_mode: str = "transaction"
) -> Iterator[PgBouncer]:
    """Run PgBouncer in front of the server of ``server_url`` for the ``with`` block (see
    the module docstring). Raises :class:`PgBouncerError` when it cannot be started."""
    binary = find_pgbouncer()
    if binary is None:
        raise PgBouncerError(f"pgbouncer not found in PATH or {', '.join(_KNOWN_PATHS)}")
    directory = Path(tempfile.mkdtemp(prefix="pj-pgbouncer-"))
    argv = [binary]
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(PGBOUNCER_OS_USER)
        except KeyError:
            shutil.rmtree(directory, ignore_errors=True)
            raise PgBouncerError(
                f"running as root and there is no {PGBOUNCER_OS_USER!r} OS user to run "
                f"pgbouncer as (it refuses to run as root)"
            ) from None
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        argv += ["-u", PGBOUNCER_OS_USER]
    bouncer: PgBouncer | None = None
    try:
        for _ in range(5):  # another process may take the free port first
            port = free_port()
            user = _write_config(
                directory, server_url, port, pool_size=pool_size, pool_mode=pool_mode
            )
            if os.geteuid() == 0:
                for name in ("pgbouncer.ini", "userlist.txt"):
                    os.chown(directory / name, owner.pw_uid, owner.pw_gid)
            process = subprocess.Popen(
                [*argv, str(directory / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            bouncer = PgBouncer(process, directory, port, user, pool_size)
            try:
                _wait_until_ready(bouncer, server_url)
                break
            except PgBouncerError:
                log = bouncer.log_text()
                bouncer.process.kill()
                bouncer.process.wait(10)
                if "Address already in use" not in log:
                    raise
                bouncer.log_file.unlink(missing_ok=True)
        else:
            raise PgBouncerError("pgbouncer found no free port in 5 attempts")
        yield bouncer
    finally:
        if bouncer is not None:
            bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)
