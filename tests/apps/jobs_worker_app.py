"""A test app for fault-injection tests of the jobs plugin, run as a real subprocess.

Run it like the example app (``tests/support.py`` does)::

    python tests/apps/jobs_worker_app.py worker --dir DATA_DIR [--db URL]

The jobs plugin is configured only through its own ``PB_JOBS_*`` environment overrides
(``PB_JOBS_WORKERS``, ``PB_JOBS_POLL_INTERVAL``, ``PB_JOBS_LOCK_DURATION``,
``PB_JOBS_MAX_RETRIES``, ``PB_JOBS_SHUTDOWN_TIMEOUT``, ...). Every handler first records
its invocation as a row of ``invocations(job_id, pid, at)`` (``at``: the handler's start,
ISO 8601 UTC with microseconds), then:

``record``
    returns.
``slow``
    sleeps ``payload["seconds"]``; on a retry (``job.retries > 0``) returns at once.
``crash``
    kills its own process with ``os._exit(1)`` (like a segfault: no cleanup at all).
``hang_then_record``
    sleeps ``payload["seconds"]`` (default an hour), for kill -9 tests.

The plugin logs ``Jobs plugin initialized`` once bootstrapped and ``worker`` logs
``Worker started``. ``invocations`` is created on bootstrap (``IF NOT EXISTS``); on
PostgreSQL, tests create it before starting several processes at once, because
concurrent ``CREATE TABLE IF NOT EXISTS`` can race there.

Recording an invocation retries on :class:`~pocketjobs.core.OperationalError` (a
connection killed by ``pg_terminate_backend``): an aborted insert wrote nothing, so a
retry never records one invocation twice, and the handler itself does not fail.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from pocketjobs import App
from pocketjobs.core import BootstrapEvent, OperationalError
from pocketjobs.plugins import jobs

INVOCATIONS_DDL = "CREATE TABLE IF NOT EXISTS invocations (job_id TEXT, pid INTEGER, at TEXT)"
_RECORD_ATTEMPTS = 100

app = App()
store = jobs.must_register(app, jobs.Config())


def _create_invocations(event: BootstrapEvent) -> None:
    event.next()  # opens the database; the dispatcher starts only after this returns
    app.db.execute(INVOCATIONS_DDL)


app.on_bootstrap.bind_func(_create_invocations)


def record(job: jobs.Job) -> None:
    """Insert this invocation into ``invocations`` (start time taken before any retry)."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    for attempt in range(_RECORD_ATTEMPTS):
        try:
            app.db.execute(
                "INSERT INTO invocations (job_id, pid, at) VALUES (?, ?, ?)",
                (job.id, os.getpid(), at),
            )
            return
        except OperationalError:
            if attempt == _RECORD_ATTEMPTS - 1:
                raise
            time.sleep(0.05)


def _seconds(job: jobs.Job, default: float) -> float:
    if isinstance(job.payload, dict):
        return float(job.payload.get("seconds", default))
    return default


@store.handler("record")
def handle_record(job: jobs.Job) -> None:
    record(job)


@store.handler("slow")
def handle_slow(job: jobs.Job) -> None:
    record(job)
    if job.retries == 0:
        time.sleep(_seconds(job, 1.0))


@store.handler("crash")
def handle_crash(job: jobs.Job) -> None:
    record(job)
    os._exit(1)


@store.handler("hang_then_record")
def handle_hang_then_record(job: jobs.Job) -> None:
    record(job)
    time.sleep(_seconds(job, 3600.0))


if __name__ == "__main__":
    app.start()
