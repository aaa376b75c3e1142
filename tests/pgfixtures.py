"""PostgreSQL fixtures for the pocketjobs test suite (a pytest plugin).

Load it from ``tests/conftest.py``::

    pytest_plugins = ["pgfixtures"]

PostgreSQL tests always run against a **real** server. Each test session (each xdist
worker is its own session) looks for one in this order:

1. ``PB_TEST_POSTGRES_URL``, if set: a ``postgresql://`` URL of a server where the role
   may ``CREATE``/``DROP DATABASE``. The URL is used as the admin connection. If it is
   set but unusable, the tests FAIL (it was asked for explicitly); there is no fallback.
2. The local server ``postgresql://postgres@127.0.0.1:5432/postgres``, if it accepts a
   connection within ~2 s and its role may create databases.
3. A throwaway cluster created with ``initdb`` and started with ``pg_ctl``, if the
   binaries are installed (looked up in ``PATH``, then ``/usr/lib/postgresql/*/bin``,
   newest version first). It lives in a fresh temporary directory, listens on
   ``127.0.0.1`` on a free port (no Unix socket), uses trust auth and ``fsync=off``, and
   is stopped with ``pg_ctl stop -m immediate`` (and its directory removed) at session
   end. ``initdb`` refuses to run as root, so when the effective uid is 0 both tools run
   as the ``postgres`` OS user (``runuser -u postgres --``, else ``su postgres -c``) and
   the temporary directory is chowned to that user.
4. Nothing found: every test that uses the fixtures is SKIPPED with a reason naming
   everything that was tried (also repeated in the terminal summary), unless ``CI`` is
   set, in which case the fixtures FAIL instead: CI must never silently skip them.

Environment variables:

``PB_TEST_POSTGRES_URL``
    Admin URL of the server to use (step 1), e.g.
    ``postgresql://postgres:secret@db.example:5432/postgres``.
``PB_TEST_POSTGRES_FORCE_CLUSTER``
    When ``1``/``true``/``yes``/``on``: skip steps 1 and 2 and always start a throwaway
    cluster (step 3). Useful to check that step 3 works on a machine that has a server.
    If the cluster cannot be started the tests FAIL, as the cluster was asked for.
``CI``
    When ``1``/``true``/``yes``/``on`` (case-insensitive): a missing PostgreSQL makes the
    fixtures fail instead of skip.

Fixtures:

``postgres_server_url`` (session)
    Admin URL of the server (its database can be connected to, to CREATE DATABASE).
``postgres_template_database`` (session)
    Name of an empty database ``pj_template_<pid>_<hex>`` (cloned from ``template0``,
    UTF8), created once per session and dropped at session end.
``postgres_url`` (function)
    URL of a FRESH, empty database ``pj_test_<hex>`` cloned from the template, dropped
    ``WITH (FORCE)`` after the test, so connections the test left behind (for example
    from killed subprocesses) do not block the drop.
``pgbouncer`` (session)
    A real PgBouncer in transaction pooling mode (2 server connections per database) in
    front of the server, started for the session (``pgbouncer_support.py``). Without the
    ``pgbouncer`` binary the tests that use it are SKIPPED, or FAIL when ``CI`` is set.
``pgbouncer_url`` (function)
    The URL of this test's fresh database (``postgres_url``) through that PgBouncer.

All names are random, so concurrent sessions (xdist workers, several developers on one
shared server) never collide and need no shared state.

Plain helpers (usable without pytest fixtures): :func:`postgres_available_reason`,
:func:`probe_postgres`, :func:`acquire_postgres_server`, :func:`start_temp_cluster`,
:func:`find_postgres_bin_dir`, :func:`temporary_database`, :func:`create_database`,
:func:`drop_database`, :func:`database_url`, :func:`is_ci`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pgbouncer_support import PgBouncer, PgBouncerError, find_pgbouncer, start_pgbouncer
from support import free_port

__all__ = [
    "ENV_CI",
    "ENV_FORCE_CLUSTER",
    "ENV_URL",
    "LOCAL_URL",
    "ClusterError",
    "PostgresProbe",
    "PostgresServer",
    "PostgresUnavailable",
    "TempCluster",
    "acquire_postgres_server",
    "create_database",
    "database_url",
    "drop_database",
    "find_postgres_bin_dir",
    "is_ci",
    "new_database_name",
    "pgbouncer",
    "pgbouncer_url",
    "postgres_available_reason",
    "postgres_server_url",
    "postgres_template_database",
    "postgres_url",
    "probe_postgres",
    "redact_url",
    "skip_or_fail_without_postgres",
    "start_temp_cluster",
    "temporary_database",
]

ENV_URL: Final = "PB_TEST_POSTGRES_URL"
ENV_FORCE_CLUSTER: Final = "PB_TEST_POSTGRES_FORCE_CLUSTER"
ENV_CI: Final = "CI"

#: Step 2 of the discovery. A module global so tests can point it elsewhere.
LOCAL_URL: str = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Seconds to wait for a server while probing (libpq's minimum is 2).
PROBE_TIMEOUT_S: Final = 2
#: Seconds to wait for the admin connection once a server has been chosen.
ADMIN_TIMEOUT_S: Final = 10
#: OS user that runs initdb/pg_ctl when we are root.
CLUSTER_OS_USER: Final = "postgres"
#: Where distribution packages (Debian/Ubuntu) install the server binaries.
PG_LIB_GLOB: Final = "/usr/lib/postgresql/*/bin"

TEST_DB_PREFIX: Final = "pj_test_"
TEMPLATE_DB_PREFIX: Final = "pj_template_"

_TRUTHY: Final = frozenset({"1", "true", "yes", "on"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def is_ci() -> bool:
    """True when ``CI`` is ``true``/``1`` (case-insensitive): missing PostgreSQL must fail."""
    return _env_flag(ENV_CI)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# URLs and databases
# --------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for skip/fail messages)."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` (a ``postgresql://`` URL) pointing at database ``dbname`` instead.

    Everything else (user, password, hosts, query parameters such as ``sslmode``) is
    kept; a ``dbname`` query parameter is removed, since it would override the path.
    """
    parts = urlsplit(server_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"expected a postgresql:// URL, got {redact_url(server_url)!r} "
            f"(key=value connection strings are not supported here)"
        )
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dbname"]
    path = "/" + quote(dbname, safe="")
    return urlunsplit(("postgresql", parts.netloc, path, urlencode(query), parts.fragment))


def new_database_name(prefix: str = TEST_DB_PREFIX) -> str:
    """A fresh random database name, e.g. ``pj_test_3f9c0a1b2c3d4e5f``."""
    return f"{prefix}{secrets.token_hex(8)}"


def _admin_connect(admin_url: str, timeout: int = ADMIN_TIMEOUT_S) -> psycopg.Connection:
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=timeout)


def create_database(admin_url: str, name: str, *, template: str = "template0") -> None:
    """``CREATE DATABASE name TEMPLATE template`` through an autocommit admin connection.

    Cloning ``template0`` asks for UTF8 explicitly (falling back to the C locale if the
    server's default locale cannot do UTF8); other templates are cloned as they are.
    """
    ident, tmpl = sql.Identifier(name), sql.Identifier(template)
    with _admin_connect(admin_url) as conn:
        if template != "template0":
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident, tmpl))
            return
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(ident)
            )
        except psycopg.errors.InvalidParameterValue:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' "
                    "LC_COLLATE 'C' LC_CTYPE 'C'"
                ).format(ident)
            )


def drop_database(admin_url: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)``, terminating leftover connections.

    On servers older than PostgreSQL 13 (no ``FORCE``) the other backends are terminated
    with ``pg_terminate_backend`` first.
    """
    ident = sql.Identifier(name)
    with _admin_connect(admin_url) as conn:
        if conn.info.server_version >= 130000:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


@contextlib.contextmanager
def temporary_database(
    admin_url: str, *, template: str = "template0", prefix: str = TEST_DB_PREFIX
) -> Iterator[str]:
    """Create a randomly named database, yield its URL, then drop it ``WITH (FORCE)``."""
    name = new_database_name(prefix)
    create_database(admin_url, name, template=template)
    try:
        yield database_url(admin_url, name)
    finally:
        drop_database(admin_url, name)


# --------------------------------------------------------------------------------------
# Throwaway cluster (discovery step 3)
# --------------------------------------------------------------------------------------


class ClusterError(RuntimeError):
    """A throwaway cluster could not be created, started or checked."""


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def _version_key(directory: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> sort by <version>, newest first.
    try:
        return tuple(int(p) for p in directory.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_postgres_bin_dir() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``.

    Looks at ``initdb`` found in ``PATH`` (symlinks resolved, since ``pg_ctl`` must find
    ``postgres`` next to itself), then ``/usr/lib/postgresql/*/bin``, newest first.
    """
    candidates: list[Path] = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
        candidates.append(Path(found).parent)
    candidates.extend(
        sorted((Path(p) for p in glob.glob(PG_LIB_GLOB)), key=_version_key, reverse=True)
    )
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    return None


def _cluster_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGOPTIONS, ...) must not leak into initdb/pg_ctl.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


def _as_user(argv: Sequence[str], os_user: str | None) -> list[str]:
    """``argv``, wrapped to run as ``os_user`` (``None``: as ourselves)."""
    if os_user is None:
        return list(argv)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", os_user, "--", *argv]
    su = shutil.which("su")
    if su:
        return [su, "-s", "/bin/sh", "-c", shlex.join(argv), os_user]
    raise ClusterError(
        f"running as root, and neither runuser nor su is available to run {argv[0]} "
        f"as the {os_user!r} OS user (initdb refuses to run as root)"
    )


def _run(
    argv: Sequence[str], *, os_user: str | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_user(argv, os_user),
        cwd=cwd,
        env=_cluster_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _process_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (containers may never reap them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class TempCluster:
    """A throwaway PostgreSQL cluster started by :func:`start_temp_cluster`."""

    bin_dir: Path
    base_dir: Path
    port: int
    os_user: str | None
    postmaster_pid: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        """Admin URL (superuser ``postgres``, trust auth, database ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``, then remove the directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            if (self.data_dir / "postmaster.pid").exists():
                result = _run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                    ],
                    os_user=self.os_user,
                    cwd=self.base_dir,
                    timeout=60,
                )
                if result.returncode != 0:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid = self.postmaster_pid
        if pid is None:
            return
        for sig, wait_s in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not _process_alive(pid):
                    return
                time.sleep(0.05)


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_temp_cluster(
    bin_dir: Path | None = None, *, timeout: float = 60.0, port_attempts: int = 5
) -> TempCluster:
    """Create and start a throwaway cluster; the caller must call ``.stop()``.

    ``initdb`` (superuser ``postgres``, trust auth, UTF8, C locale) into a new temporary
    directory, then ``pg_ctl start`` listening only on ``127.0.0.1`` on a free port,
    with ``fsync=off`` and no Unix socket. As root, both run as the ``postgres`` OS user.
    Raises :class:`ClusterError` (with initdb/pg_ctl output or the server log) on failure.
    """
    if bin_dir is None:
        bin_dir = find_postgres_bin_dir()
        if bin_dir is None:
            raise ClusterError(f"initdb/pg_ctl not found in PATH or {PG_LIB_GLOB}")

    os_user: str | None = None
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        os_user = CLUSTER_OS_USER
        try:
            owner = pwd.getpwnam(os_user)
        except KeyError:
            raise ClusterError(
                f"running as root and there is no {os_user!r} OS user to run initdb as "
                f"(initdb refuses to run as root)"
            ) from None

    base_dir = Path(tempfile.mkdtemp(prefix="pj-pgcluster-"))
    cluster = TempCluster(bin_dir=bin_dir, base_dir=base_dir, port=0, os_user=os_user)
    atexit.register(cluster.stop)  # safety net if the session dies before teardown
    try:
        if owner is not None:
            os.chown(base_dir, owner.pw_uid, owner.pw_gid)
        initdb = _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            os_user=os_user,
            cwd=base_dir,
            timeout=max(timeout, 120.0),
        )
        if initdb.returncode != 0:
            raise ClusterError(
                f"initdb failed (exit {initdb.returncode}, as {os_user or 'current user'}):\n"
                f"{initdb.stdout}{initdb.stderr}"
            )
        _start_on_free_port(cluster, timeout=timeout, attempts=port_attempts)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_on_free_port(cluster: TempCluster, *, timeout: float, attempts: int) -> None:
    problem = ""
    for _ in range(attempts):
        cluster.port = free_port()
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={cluster.port}",
            "unix_socket_directories=",  # TCP only: no socket path length/permission issues
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ]
        options = shlex.join(arg for setting in settings for arg in ("-c", setting))
        result = _run(
            [
                str(cluster.bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(cluster.data_dir),
                "-l",
                str(cluster.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                options,
            ],
            os_user=cluster.os_user,
            cwd=cluster.base_dir,
            timeout=timeout + 30,
        )
        log = _tail(cluster.log_file)
        if result.returncode == 0:
            cluster.postmaster_pid = _read_postmaster_pid(cluster.data_dir)
            try:
                with psycopg.connect(cluster.url, connect_timeout=ADMIN_TIMEOUT_S) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise ClusterError(
                    f"cluster started but refused a connection at {cluster.url}: "
                    f"{_one_line(exc)}\nserver log:\n{log}"
                ) from exc
            return
        problem = (
            f"pg_ctl start failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}\nserver log:\n{log}"
        )
        if "could not bind" not in log and "already in use" not in log:
            break  # not a port race: retrying will not help
        cluster.log_file.unlink(missing_ok=True)
    raise ClusterError(problem)


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL; ``str(exc)`` says everything that was tried.

    ``explicit`` is true when the server was asked for explicitly (``PB_TEST_POSTGRES_URL``
    or ``PB_TEST_POSTGRES_FORCE_CLUSTER``): then tests fail even outside CI.
    """

    def __init__(self, message: str, *, explicit: bool = False) -> None:
        super().__init__(message)
        self.explicit = explicit


@dataclass
class PostgresServer:
    """The server chosen by :func:`acquire_postgres_server`; call :meth:`close` when done."""

    url: str
    source: str
    cluster: TempCluster | None = None

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


@dataclass(frozen=True)
class PostgresProbe:
    """Result of :func:`probe_postgres`: whether tests can run, and a one-line reason."""

    available: bool
    reason: str
    explicit: bool = False


def check_server(url: str, *, timeout: int = PROBE_TIMEOUT_S) -> str | None:
    """``None`` if ``url`` accepts a connection whose role may CREATE DATABASE, else why not."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=timeout) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        return f"cannot connect ({_one_line(exc)})"
    if not row or not row[0]:
        return "connected, but the role may not CREATE DATABASE"
    return None


def _hint() -> str:
    return (
        f"Fix: start PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), install "
        f"the server binaries (initdb, pg_ctl), or set {ENV_URL}=postgresql://USER:PASS@HOST"
        f":PORT/postgres."
    )


def _configured_server(tried: list[str]) -> PostgresServer | None:
    """Steps 1 and 2. Appends what was tried; raises if an explicit URL is unusable."""
    if _env_flag(ENV_FORCE_CLUSTER):
        tried.append(f"{ENV_FORCE_CLUSTER} is set, so {ENV_URL} and the local server are skipped")
        return None
    env_url = os.environ.get(ENV_URL, "").strip()
    if env_url:
        shown = redact_url(env_url)
        try:
            database_url(env_url, "probe")
        except ValueError as exc:
            raise PostgresUnavailable(
                f"{ENV_URL} is set but invalid: {exc}", explicit=True
            ) from None
        problem = check_server(env_url)
        if problem is None:
            return PostgresServer(url=env_url, source=f"{ENV_URL} ({shown})")
        raise PostgresUnavailable(
            f"{ENV_URL}={shown} is set but unusable: {problem}. Unset it to let the tests "
            f"look for a local server or start a throwaway cluster.",
            explicit=True,
        )
    tried.append(f"{ENV_URL}: not set")
    problem = check_server(LOCAL_URL)
    if problem is None:
        return PostgresServer(url=LOCAL_URL, source=f"local server {LOCAL_URL}")
    tried.append(f"local server {LOCAL_URL}: {problem}")
    return None


def _unavailable(tried: list[str], explicit: bool) -> PostgresUnavailable:
    steps = "; ".join(f"({i}) {t}" for i, t in enumerate(tried, 1))
    return PostgresUnavailable(
        f"no PostgreSQL server for the tests. Tried: {steps}. {_hint()}", explicit=explicit
    )


def acquire_postgres_server() -> PostgresServer:
    """Run the discovery (see the module docstring); may start a throwaway cluster.

    Raises :class:`PostgresUnavailable` when nothing works.
    """
    tried: list[str] = []
    server = _configured_server(tried)
    if server is not None:
        return server
    forced = _env_flag(ENV_FORCE_CLUSTER)
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        tried.append(f"throwaway cluster: initdb/pg_ctl not found in PATH or {PG_LIB_GLOB}")
        raise _unavailable(tried, explicit=forced)
    try:
        cluster = start_temp_cluster(bin_dir)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        tried.append(f"throwaway cluster with {bin_dir}: {exc}")
        raise _unavailable(tried, explicit=forced) from exc
    return PostgresServer(
        url=cluster.url,
        source=f"throwaway cluster {cluster.url} ({bin_dir}, data in {cluster.base_dir})",
        cluster=cluster,
    )


def probe_postgres() -> PostgresProbe:
    """Like :func:`acquire_postgres_server` but never starts a cluster (cheap, ~2 s max).

    Finding the initdb/pg_ctl binaries counts as available.
    """
    tried: list[str] = []
    try:
        server = _configured_server(tried)
    except PostgresUnavailable as exc:
        return PostgresProbe(available=False, reason=str(exc), explicit=True)
    if server is not None:
        return PostgresProbe(available=True, reason=f"PostgreSQL tests use {server.source}")
    bin_dir = find_postgres_bin_dir()
    if bin_dir is not None:
        return PostgresProbe(
            available=True,
            reason=f"PostgreSQL tests use a throwaway cluster started with {bin_dir}/initdb",
        )
    tried.append(f"throwaway cluster: initdb/pg_ctl not found in PATH or {PG_LIB_GLOB}")
    forced = _env_flag(ENV_FORCE_CLUSTER)
    return PostgresProbe(
        available=False, reason=str(_unavailable(tried, explicit=forced)), explicit=forced
    )


def postgres_available_reason() -> str:
    """One line: which server the PostgreSQL tests would use, or why there is none.

    Does not start a cluster. Handy for messages and ``skipif`` reasons.
    """
    return probe_postgres().reason


def skip_or_fail_without_postgres(reason: str, *, force_fail: bool = False) -> NoReturn:
    """Skip the current test loudly, or fail it when ``CI`` is set (or ``force_fail``)."""
    if force_fail or is_ci():
        why = "CI is set" if is_ci() else "it was requested explicitly"
        pytest.fail(f"PostgreSQL is required ({why}) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests SKIPPED: {reason}")


# --------------------------------------------------------------------------------------
# Fixtures and reporting hooks
# --------------------------------------------------------------------------------------


@dataclass
class _SessionReport:
    source: str | None = None
    unavailable: str | None = None


_REPORT = _SessionReport()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """Admin URL of the test server (see discovery order in the module docstring)."""
    try:
        server: PostgresServer | None = acquire_postgres_server()
    except PostgresUnavailable as exc:
        server, problem = None, exc
    if server is None:
        # Outside the except block, so the report shows no chained traceback.
        _REPORT.unavailable = str(problem)
        skip_or_fail_without_postgres(str(problem), force_fail=problem.explicit)
    _REPORT.source = server.source
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_template_database(postgres_server_url: str) -> Iterator[str]:
    """Name of an empty UTF8 template database, created once per session."""
    name = f"{TEMPLATE_DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    create_database(postgres_server_url, name, template="template0")
    try:
        yield name
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def postgres_url(postgres_server_url: str, postgres_template_database: str) -> Iterator[str]:
    """URL of a fresh, empty database for this test, dropped WITH (FORCE) afterwards."""
    name = new_database_name()
    create_database(postgres_server_url, name, template=postgres_template_database)
    try:
        yield database_url(postgres_server_url, name)
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def pgbouncer(postgres_server_url: str) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling) in front of the test server, for the session."""
    problem = ""
    if find_pgbouncer() is None:
        problem = "pgbouncer is not installed (apt-get install pgbouncer)"
    else:
        try:
            with start_pgbouncer(postgres_server_url) as bouncer:
                yield bouncer
            return
        except PgBouncerError as exc:
            problem = str(exc)
    if is_ci():
        pytest.fail(f"PgBouncer is required (CI is set) but unavailable: {problem}", pytrace=False)
    pytest.skip(f"PgBouncer tests SKIPPED: {problem}")


@pytest.fixture
def pgbouncer_url(pgbouncer: PgBouncer, postgres_url: str) -> str:
    """This test's fresh database (``postgres_url``) through :func:`pgbouncer`."""
    return pgbouncer.url_for(postgres_url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat a PostgreSQL skip loudly at the end of the run (or say which server ran)."""
    if _REPORT.unavailable is not None:
        terminalreporter.write_sep("!", "PostgreSQL tests did not run", red=True, bold=True)
        terminalreporter.write_line(_REPORT.unavailable, red=True)
    elif _REPORT.source is not None:
        terminalreporter.write_line(f"PostgreSQL tests ran against {_REPORT.source}")
