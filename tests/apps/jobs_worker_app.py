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
``flaky``
    fails its first attempt (``ValueError: flaky failure``, never showing its payload);
    on a retry returns.
``ledger``
    measures how many ``ledger`` jobs run at once across all processes: in one
    transaction that excludes every other ledger writer (SQLite: ``BEGIN IMMEDIATE``;
    PostgreSQL: a self-conflicting table lock), inserts its row into ``ledger_running``,
    counts that table's rows and stores the count in ``ledger_seen(job_id, running)``;
    then sleeps ``payload["seconds"]`` (default 0.2) and deletes its row. Every count is
    the exact number of rows at that point of a serial order, and a row exists only while
    its handler runs, so ``MAX(running)`` never exceeds the jobs running at once.

Periodic jobs: with ``PB_TEST_CRON`` set, the app registers that schedule for ``record``
jobs (payload ``{"scheduled": true}``). With ``PB_TEST_CLOCK_START`` (ISO 8601) the
plugin's clock runs ``PB_TEST_CLOCK_SPEED`` times faster than the wall's from that time,
which it is at the wall time ``PB_TEST_CLOCK_WALL`` (seconds since the epoch): processes
given the same three values share one simulated clock.

The plugin logs ``Jobs plugin initialized`` once bootstrapped and ``worker`` logs
``Worker started``. ``invocations`` is created on bootstrap (``IF NOT EXISTS``); on
PostgreSQL, tests create it before starting several processes at once, because
concurrent ``CREATE TABLE IF NOT EXISTS`` can race there. The ledger tables are not
created here at all (that would race in every multi-process test): the test process
creates them (``tests/fleet_support.py``, :func:`enqueuer`).

Recording an invocation retries on :class:`~pocketjobs.core.OperationalError` (a
connection killed by ``pg_terminate_backend``): an aborted insert wrote nothing, so a
retry never records one invocation twice, and the handler itself does not fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pocketjobs import App
from pocketjobs.core import BootstrapEvent, OperationalError
from pocketjobs.plugins import jobs

INVOCATIONS_DDL = "CREATE TABLE IF NOT EXISTS invocations (job_id TEXT, pid INTEGER, at TEXT)"
_RECORD_ATTEMPTS = 100


def _fast_clock() -> Callable[[], datetime] | None:
    start = os.environ.get("PB_TEST_CLOCK_START")
    if not start:
        return None
    origin = datetime.fromisoformat(start)
    wall = float(os.environ["PB_TEST_CLOCK_WALL"])
    speed = float(os.environ.get("PB_TEST_CLOCK_SPEED", "1"))
    return lambda: origin + timedelta(seconds=(time.time() - wall) * speed)


app = App()
_clock = _fast_clock()
store = jobs.must_register(app, jobs.Config(clock=_clock) if _clock else jobs.Config())
if os.environ.get("PB_TEST_CRON"):
    store.periodic(os.environ["PB_TEST_CRON"], "record", {"scheduled": True})


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


@store.handler("flaky")
def handle_flaky(job: jobs.Job) -> None:
    record(job)
    if job.retries == 0:
        raise ValueError("flaky failure\nsecond line")


@store.handler("ledger")
def handle_ledger(job: jobs.Job) -> None:
    record(job)
    with app.db.transaction() as tx:
        if app.is_postgres():  # SQLite's BEGIN IMMEDIATE already excludes other writers
            tx.execute("LOCK TABLE ledger_running IN SHARE ROW EXCLUSIVE MODE")
        tx.execute("INSERT INTO ledger_running (job_id) VALUES (?)", (job.id,))
        running = tx.fetch_value("SELECT COUNT(*) FROM ledger_running")
        tx.execute("INSERT INTO ledger_seen (job_id, running) VALUES (?, ?)", (job.id, running))
    time.sleep(_seconds(job, 0.2))
    app.db.execute("DELETE FROM ledger_running WHERE job_id = ?", (job.id,))


if __name__ == "__main__":
    app.start()
