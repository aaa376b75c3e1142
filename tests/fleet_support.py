"""Worker processes for the jobs engine's multi-process tests.

Import them from any test module (``tests/`` is on ``sys.path``)::

    from fleet_support import Fleet, assert_exactly_once, enqueuer, status_counts

Workers run ``tests/apps/jobs_worker_app.py worker`` as subprocesses, configured through
the plugin's ``PB_JOBS_*`` environment overrides; their handlers record each invocation
as a row of ``invocations(job_id, pid, at)``. The test process enqueues through an app of
its own with the plugin registered but not started (:func:`enqueuer`), and inspects
``_jobs`` and ``invocations`` directly.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pocketjobs import App
from pocketjobs.core import OperationalError
from pocketjobs.plugins import jobs
from support import REPO_ROOT, AppProcess, start_app

__all__ = [
    "INVOCATIONS_DDL",
    "LEDGER_DDL",
    "READY_LOG",
    "WORKER_APP",
    "WORKER_APPNAME",
    "Fleet",
    "assert_exactly_once",
    "enqueuer",
    "invocations_of",
    "retrying",
    "status_counts",
]

WORKER_APP = REPO_ROOT / "tests" / "apps" / "jobs_worker_app.py"
INVOCATIONS_DDL = "CREATE TABLE IF NOT EXISTS invocations (job_id TEXT, pid INTEGER, at TEXT)"
#: The tables of the worker app's ``ledger`` handler (see its docstring).
LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_running (job_id TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS ledger_seen (job_id TEXT, running INTEGER)",
)
READY_LOG = "Worker started"
#: libpq's application name for the workers' connections, to count them in pg_stat_activity.
WORKER_APPNAME = "pocketjobs-fault-worker"

T = TypeVar("T")


class Fleet:
    """The worker processes of one test.

    Use it as a context manager: on exit every process still running is stopped (SIGTERM,
    SIGKILL after 15 s), and an ``AssertionError`` raised in the block gets the command,
    state and full log of every process appended, so a failure explains itself.
    """

    def __init__(
        self, data_dir: Path, db_url: str | None, env: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.env = dict(env or {})
        self.procs: list[AppProcess] = []

    def start(self, *, ready: bool = True, env: Mapping[str, str] | None = None) -> AppProcess:
        """Start one worker; with ``ready``, wait until it logged ``Worker started``."""
        proc = start_app(
            "worker",
            data_dir=self.data_dir,
            db_url=self.db_url,
            env={"PGAPPNAME": WORKER_APPNAME, **self.env, **(env or {})},
            script=WORKER_APP,
            log_name=f"worker{len(self.procs) + 1}",
        )
        self.procs.append(proc)
        if ready:
            proc.wait_for_log(READY_LOG, timeout=30)
        return proc

    def describe(self) -> str:
        return "\n\n".join(
            f"===== worker {i} (pid {p.pid}) =====\n{p.describe()}"
            for i, p in enumerate(self.procs, 1)
        )

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.procs:  # signal all first: they shut down in parallel
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.stop()
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}\n\n{self.describe()}") from exc


@contextlib.contextmanager
def enqueuer(data_dir: Path, db_url: str | None) -> Iterator[tuple[App, jobs.JobStore]]:
    """An app of the test process: migrated, the workers' tables (``invocations``, the
    ledger's) created before any worker starts, no dispatcher."""
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    try:
        for statement in (INVOCATIONS_DDL, *LEDGER_DDL):
            app.db.execute(statement)
        yield app, store
    finally:
        app.terminate()


def retrying(fn: Callable[[], T], timeout: float = 20.0) -> T:
    """``fn()``, retried while the database reports an outage (killed connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def status_counts(app: App) -> dict[str, int]:
    rows = retrying(lambda: app.db.fetch_tuples("SELECT status, COUNT(*) FROM _jobs GROUP BY 1"))
    return {status: int(count) for status, count in rows}


def invocations_of(app: App, job_id: str) -> list[dict[str, Any]]:
    return retrying(
        lambda: app.db.fetch_all(
            "SELECT job_id, pid, at FROM invocations WHERE job_id = ? ORDER BY at", (job_id,)
        )
    )


def _tuples(app: App, sql: str) -> list[tuple[Any, ...]]:
    return retrying(lambda: app.db.fetch_tuples(sql))


def assert_exactly_once(app: App, total: int) -> set[int]:
    """Every job completed, each invoked exactly once; return the pids that did work."""
    counts = status_counts(app)
    assert counts == {"completed": total}, f"job statuses: {counts}"
    [(rows, distinct)] = _tuples(app, "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM invocations")
    duplicates = _tuples(
        app,
        "SELECT job_id, COUNT(*) FROM invocations GROUP BY job_id HAVING COUNT(*) > 1 LIMIT 10",
    )
    assert (rows, distinct) == (total, total), (
        f"{rows} invocations of {distinct} distinct jobs for {total} jobs; "
        f"duplicated (first 10): {duplicates}"
    )
    [(never_run,)] = _tuples(
        app,
        "SELECT COUNT(*) FROM _jobs j WHERE NOT EXISTS "
        "(SELECT 1 FROM invocations i WHERE i.job_id = j.id)",
    )
    assert never_run == 0, f"{never_run} completed jobs were never invoked"
    [(retried,)] = _tuples(app, "SELECT COUNT(*) FROM _jobs WHERE retries <> 0")
    assert retried == 0, f"{retried} jobs needed a retry"
    return {int(pid) for (pid,) in _tuples(app, "SELECT DISTINCT pid FROM invocations")}
