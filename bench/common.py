"""Shared machinery of the benchmark: timing, statistics, scenarios (fresh databases),
the job-start recorder used by every no-op handler, worker subprocesses, machine facts.

Every library's no-op handler does the same one thing: it appends a 16-byte record
``(job number, time.monotonic_ns())`` to a file with ``O_APPEND`` (atomic across threads
and processes). The benchmark counts finished handlers by the file size and measures
wake-up latency from the recorded start times. ``time.monotonic_ns()`` is
``CLOCK_MONOTONIC``, which is system-wide on Linux, so stamps from different processes
compare directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

POSTGRES = "postgres"
SQLITE = "sqlite"
DB_LABELS = {POSTGRES: "PostgreSQL", SQLITE: "SQLite"}


class Unsupported(Exception):
    """The library's API has no way to do this workload (recorded as a note, not an error)."""


class BenchError(RuntimeError):
    """A workload could not be measured (recorded as an error in the results)."""


# -- the job-start recorder ------------------------------------------------------------

RECORD = struct.Struct("<qq")  # job number, monotonic_ns at handler start
_record_path: str | None = None
_record_fd: int | None = None
_record_pid: int | None = None


def set_record_path(path: str | os.PathLike[str]) -> None:
    """Where :func:`record` appends (set once per worker process, before handlers run)."""
    global _record_path, _record_fd, _record_pid
    _record_path = os.fspath(path)
    _record_fd = None
    _record_pid = None


def record(number: int) -> None:
    """The body of every no-op handler: stamp the start time of job ``number``."""
    stamp = time.monotonic_ns()
    global _record_fd, _record_pid
    pid = os.getpid()
    if _record_pid != pid:  # first call in this process (or after a fork)
        assert _record_path is not None, "set_record_path() was not called"
        _record_fd = os.open(_record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _record_pid = pid
    os.write(_record_fd, RECORD.pack(number, stamp))  # type: ignore[arg-type]


def count_records(path: Path) -> int:
    """How many handlers have started (and, for the no-op handler, finished)."""
    try:
        return path.stat().st_size // RECORD.size
    except FileNotFoundError:
        return 0


def read_records(path: Path) -> dict[int, int]:
    """``job number -> first handler start (monotonic ns)``."""
    starts: dict[int, int] = {}
    data = path.read_bytes() if path.exists() else b""
    usable = len(data) - len(data) % RECORD.size
    for number, stamp in RECORD.iter_unpack(data[:usable]):
        starts.setdefault(number, stamp)
    return starts


def wait_for_records(
    path: Path,
    target: int,
    timeout: float,
    *,
    poll: float = 0.002,
    what: str = "jobs",
    check: Callable[[], None] | None = None,
) -> float:
    """Block until ``target`` records exist; return the monotonic time it happened.
    ``check()`` (e.g. "is the worker alive") runs about every half second."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 0.5
    while True:
        done = count_records(path)
        now = time.monotonic()
        if done >= target:
            return now
        if now > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s: {done}/{target} {what} done")
        if check is not None and now >= next_check:
            check()
            next_check = now + 0.5
        time.sleep(poll)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.005
) -> float:
    """Block until ``predicate()``; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# -- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and range of per-run figures."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


# -- scenarios: a fresh database and a temp dir per measurement ------------------------


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def pg_admin_execute(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pg_available(admin_url: str) -> str | None:
    """``None`` if PostgreSQL answers at ``admin_url``, else the reason."""
    try:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Scenario:
    """One measurement's private world: a fresh database and a temp directory."""

    db: str  # POSTGRES or SQLITE
    tmp: Path
    pg_url: str | None = None  # the fresh database (PostgreSQL)
    records: Path = field(init=False)
    _pg_conn: Any = field(default=None, init=False, repr=False)
    _sqlite_conns: dict[str, sqlite3.Connection] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.records = self.tmp / "records.bin"

    def path(self, name: str) -> Path:
        return self.tmp / name

    def count_sql(self, sql: str, sqlite_file: Path | None = None) -> int:
        """Run a ``SELECT count(*)`` on the scenario's database (PostgreSQL, or
        ``sqlite_file``) through a connection kept for the scenario."""
        if self.db == POSTGRES:
            if self._pg_conn is None:
                import psycopg

                self._pg_conn = psycopg.connect(self.pg_url, autocommit=True)
            row = self._pg_conn.execute(sql).fetchone()
            return int(row[0]) if row else 0
        assert sqlite_file is not None
        key = os.fspath(sqlite_file)
        conn = self._sqlite_conns.get(key)
        if conn is None:
            conn = sqlite3.connect(key, timeout=30, isolation_level=None)
            self._sqlite_conns[key] = conn
        return int(conn.execute(sql).fetchone()[0])

    def close(self) -> None:
        if self._pg_conn is not None:
            with contextlib.suppress(Exception):
                self._pg_conn.close()
            self._pg_conn = None
        for conn in self._sqlite_conns.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._sqlite_conns.clear()


@contextlib.contextmanager
def scenario(db: str, admin_url: str) -> Iterator[Scenario]:
    """A fresh ``bench_<random>`` database (PostgreSQL) or nothing (SQLite: the libraries
    create their files in the temp dir), plus a temp dir; both removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="pj-bench-"))
    dbname = None
    try:
        if db == POSTGRES:
            dbname = f"bench_{secrets.token_hex(6)}"
            pg_admin_execute(admin_url, f'CREATE DATABASE "{dbname}"')
            ctx = Scenario(db, tmp, with_database(admin_url, dbname))
        else:
            ctx = Scenario(db, tmp)
        try:
            yield ctx
        finally:
            ctx.close()
    finally:
        if dbname is not None:
            with contextlib.suppress(Exception):
                pg_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


# -- worker subprocesses ----------------------------------------------------------------


class WorkerProcess:
    """A library's worker running in its own process (``python -m bench.worker``).

    The process imports and connects, then creates its ready file and waits for a line on
    stdin: :meth:`go` releases it, so start-up cost stays out of the measurement.
    """

    def __init__(self, adapter_key: str, spec: dict[str, Any], tmp: Path) -> None:
        self.log_path = tmp / f"worker-{adapter_key}-{secrets.token_hex(3)}.log"
        self.ready_path = tmp / f"ready-{secrets.token_hex(4)}"
        spec = {**spec, "ready_path": os.fspath(self.ready_path)}
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PB_DATABASE_URL", None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.fspath(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "bench.worker", adapter_key, json.dumps(spec)]
        profile_dir = os.environ.get("BENCH_PROFILE_DIR")
        py_spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if profile_dir and py_spy:
            # Sample the worker (and its forks) with py-spy: collapsed stacks, one file per
            # worker process run; summarised by `python -m bench.profile DIR`. Only the
            # thread holding the GIL is sampled (--gil): threads blocked in C calls (queue
            # waits, socket reads) would otherwise count as running.
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            out = Path(profile_dir) / f"{adapter_key}-{secrets.token_hex(3)}.txt"
            argv = [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--subprocesses",
                "--gil",
                "--nonblocking",
                "-o",
                str(out),
                "--",
                *argv,
            ]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: forked children stop with it
        )

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            if self.proc.poll() is not None:
                raise BenchError(
                    f"worker exited with {self.proc.returncode} before ready:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.01)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT the worker's process group (every worker stops on it, and py-spy then
        writes its profile); SIGKILL the group if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGINT)  # the group we created
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created (huey's forks)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._log.close()


def worker_ready_and_wait(spec: dict[str, Any]) -> None:
    """In a worker process: announce readiness, then block until the bench says go."""
    Path(spec["ready_path"]).touch()
    line = sys.stdin.readline()
    if not line:  # the bench went away
        sys.exit(0)


# -- the machine -----------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info(admin_url: str | None) -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, SQLite, PostgreSQL and library versions."""
    from importlib import metadata

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": None,
        "postgres_settings": {},
        "libraries": {},
        "loadavg": _read("/proc/loadavg").split()[:3],
    }
    for name in ("pocketjobs", "pgqueuer", "procrastinate", "huey", "asyncpg", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["libraries"][name] = metadata.version(name)
    if admin_url:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
                info["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
                    info["postgres_settings"][name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
    return info


def fmt_num(value: float) -> str:
    """Human formatting: thousands separators for big numbers, 2-3 significant digits
    for small ones."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
