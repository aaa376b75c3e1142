"""Fault injection for the jobs plugin with real worker processes (SPEC §4.6).

Workers run ``tests/apps/jobs_worker_app.py worker`` as subprocesses (``fleet_support``),
configured through the plugin's ``PB_JOBS_*`` environment overrides; their handlers record
each invocation as a row of ``invocations(job_id, pid, at)``. The test process enqueues
through an app of its own with the plugin registered but not started (``auto_start=False``),
and inspects ``_jobs`` and ``invocations`` directly.

Faults: several processes racing for the same jobs, ``kill -9`` of a worker mid-job, a
handler that kills its own process on every attempt, PostgreSQL backends terminated
(``pg_terminate_backend``) while jobs run, and cross-process wake-up by ``LISTEN/NOTIFY``.
On an assertion failure the log of every worker process is appended to the message.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fleet_support import (
    READY_LOG,
    WORKER_APPNAME,
    Fleet,
    assert_exactly_once,
    enqueuer,
    invocations_of,
    retrying,
    status_counts,
)
from pocketjobs import App
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from support import AppProcess

pytestmark = pytest.mark.slow

#: Short locks and polls for the crash tests: a dead worker's job is rescued within ~2 s.
CRASH_ENV = {"PB_JOBS_LOCK_DURATION": "2s", "PB_JOBS_POLL_INTERVAL": "0.2s"}


# -- helpers --------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took. AssertionError on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def job_row(app: App, job_id: str) -> dict[str, Any]:
    row = retrying(
        lambda: app.db.fetch_one(
            "SELECT status, retries, max_retries, last_error, locked_by FROM _jobs WHERE id = ?",
            (job_id,),
        )
    )
    assert row is not None, f"job {job_id} vanished"
    return row


def _db_name(db_url: str | None) -> str:
    return "sqlite" if db_url is None else "postgres"


@pytest.fixture(autouse=True)
def _no_inherited_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test's own app must use the database the test chose, not one from the shell.
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)


# -- a. exactly-once under concurrency ------------------------------------------------------


@pytest.mark.timeout(300)
def test_three_worker_processes_run_5000_jobs_exactly_once(
    data_dir: Path, db_url: str | None, record_property: Callable[[str, object], None]
) -> None:
    total = 5000
    with (
        enqueuer(data_dir, db_url) as (app, store),
        Fleet(data_dir, db_url, {"PB_JOBS_POLL_INTERVAL": "0.2s"}) as fleet,
    ):
        workers = [fleet.start(ready=False) for _ in range(3)]
        for worker in workers:
            worker.wait_for_log(READY_LOG, timeout=30)

        started = time.monotonic()
        created = store.enqueue_many("record", [{"n": n} for n in range(total)])
        assert len(created) == total
        wait_until(
            lambda: status_counts(app).get("completed", 0) == total,
            120,
            f"{total} completed jobs",
        )
        wall = time.monotonic() - started
        name = _db_name(db_url)
        print(f"\n[{name}] {total} jobs, 3 worker processes: {wall:.2f} s enqueue -> completed")
        record_property(f"wall_time_5000_jobs_{name}_s", round(wall, 3))

        pids = assert_exactly_once(app, total)
        assert pids <= {w.pid for w in workers}, f"unknown pids did work: {pids}"
        assert len(pids) >= 2, f"only pid(s) {pids} did any work"
        for worker in workers:
            worker.stop_cleanly(signal.SIGTERM)


# -- b. kill -9 mid-job: the job is taken over once its lock expires ------------------------


def test_killed_worker_job_is_taken_over_after_lock_expiry(
    data_dir: Path, db_url: str | None
) -> None:
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url, CRASH_ENV) as fleet:
        worker_a = fleet.start()
        job = store.enqueue("slow", {"seconds": 30})
        wait_until(lambda: len(invocations_of(app, job.id)) == 1, 20, "worker A to start the job")
        assert job_row(app, job.id)["status"] == "processing"

        assert worker_a.stop(signal.SIGKILL) == -signal.SIGKILL
        assert job_row(app, job.id)["status"] == "processing"  # nobody rescued it yet

        worker_b = fleet.start()
        wait_until(
            lambda: job_row(app, job.id)["status"] == "completed",
            30,
            "worker B to recover and complete the job",
        )
        row = job_row(app, job.id)
        assert row["retries"] == 1, row
        assert row["last_error"].startswith("lock expired"), row
        assert row["locked_by"] is None, row
        attempts = invocations_of(app, job.id)
        assert [a["pid"] for a in attempts] == [worker_a.pid, worker_b.pid], attempts
        assert "recovered 1 job(s) with expired locks" in worker_b.log_text()
        # The attempt history across the takeover: two attempts, on two nodes; the lost
        # one is in the errors.
        done = store.get(job.id)
        assert [entry["attempt"] for entry in done.errors] == [1], done.errors
        assert done.errors[0]["error"].startswith("lock expired"), done.errors
        assert done.first_attempted_at is not None
        assert done.attempted_at is not None
        assert done.finished_at is not None
        assert done.first_attempted_at < done.attempted_at <= done.finished_at
        assert done.attempted_by is not None
        assert done.attempted_by.split(":")[1] == str(worker_b.pid)
        worker_b.stop_cleanly(signal.SIGTERM)


# -- c. a job that kills its worker on every attempt ends failed ----------------------------


def test_job_crashing_its_worker_every_time_ends_failed_after_three_attempts(
    data_dir: Path, db_url: str | None
) -> None:
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url, CRASH_ENV) as fleet:
        job = store.enqueue("crash", max_retries=2)
        crashed: list[AppProcess] = []
        deadline = time.monotonic() + 90
        last: AppProcess | None = None
        while job_row(app, job.id)["status"] != "failed":
            assert time.monotonic() < deadline, f"job not failed in time: {job_row(app, job.id)}"
            assert len(crashed) <= 3, "more than 3 attempts"
            # Not waiting for the ready log: a worker may claim the job and die before it.
            last = fleet.start(ready=False)
            while last.returncode is None and job_row(app, job.id)["status"] != "failed":
                time.sleep(0.05)
            if last.returncode is not None:
                assert last.returncode == 1, f"worker exited with {last.returncode}"
                crashed.append(last)

        row = job_row(app, job.id)
        assert row["retries"] == 2, row
        assert row["last_error"].startswith("lock expired"), row
        assert len(crashed) == 3, f"{len(crashed)} workers crashed"
        attempts = invocations_of(app, job.id)
        assert [a["pid"] for a in attempts] == [p.pid for p in crashed], attempts
        # The worker that recorded the failure is alive and stops cleanly.
        assert last is not None
        assert last not in crashed
        last.stop_cleanly(signal.SIGTERM)


# -- d. PostgreSQL backends terminated while jobs run ---------------------------------------


class RecoveryTooSlow(Exception):
    """The workers did not finish the queue promptly after a database outage ended.

    Distinct from an ``AssertionError`` (a lost or duplicated job), to tell the two apart.
    """


def _terminate_backends(url: str) -> int:
    """``pg_terminate_backend`` every other connection to the test database (the workers'
    pools and listeners, and this process's own app); return how many were terminated."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def _run_with_outages(
    app: App, store: jobs.JobStore, fleet: Fleet, url: str, total: int
) -> list[AppProcess]:
    """Start 2 workers, enqueue ``total`` short jobs, and terminate every backend of the
    database three times, 0.5 s apart, while the jobs run."""
    workers = [fleet.start() for _ in range(2)]
    store.enqueue_many("slow", [{"seconds": 0.002, "n": n} for n in range(total)])
    wait_until(lambda: status_counts(app).get("completed", 0) >= 50, 30, "the first completions")
    outages: list[tuple[int, int]] = []  # (completed before, backends terminated)
    for _ in range(3):
        done = status_counts(app).get("completed", 0)
        outages.append((done, _terminate_backends(url)))
        time.sleep(0.5)
    print(f"\n[postgres] outages (jobs completed before, backends terminated): {outages}")
    assert outages[0][0] < total, "all jobs completed before the first outage"
    assert all(killed > 0 for _, killed in outages), outages
    return workers


def _assert_survived(app: App, workers: list[AppProcess], total: int) -> None:
    for worker in workers:
        assert worker.returncode is None, "a worker died during the outages"
    # Exactly-once of completion is the guarantee; a handler may run twice only if its
    # lock expired during the outage, which cannot happen with the 5 min default lock.
    assert_exactly_once(app, total)
    for worker in workers:
        assert "jobs listener: connection lost, reconnecting" in worker.log_text()
        worker.stop_cleanly(signal.SIGTERM)


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_workers_resume_after_postgres_backends_are_terminated(
    data_dir: Path, postgres_url: str
) -> None:
    total = 3000
    env = {"PB_JOBS_POLL_INTERVAL": "0.5s"}  # 10 handler threads (the default)
    with (
        enqueuer(data_dir, postgres_url) as (app, store),
        Fleet(data_dir, postgres_url, env) as fleet,
    ):
        workers = _run_with_outages(app, store, fleet, postgres_url, total)
        wait_until(
            lambda: status_counts(app).get("completed", 0) == total,
            150,
            f"{total} completed jobs after the outages",
        )
        _assert_survived(app, workers, total)


@pytest.mark.postgres
def test_idle_worker_gets_back_to_work_promptly_after_postgres_backends_are_terminated(
    data_dir: Path, postgres_url: str
) -> None:
    env = {"PB_JOBS_POLL_INTERVAL": "0.5s"}  # 10 handler threads (the default)
    with (
        enqueuer(data_dir, postgres_url) as (app, store),
        Fleet(data_dir, postgres_url, env) as fleet,
    ):
        fleet.start()
        # A burst that keeps all 10 handler threads inserting grows the worker's pool.
        store.enqueue_many("record", [{"n": n} for n in range(1000)])
        wait_until(lambda: status_counts(app) == {"completed": 1000}, 60, "the burst")
        worker_conns = app.db.fetch_value(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = ?", (WORKER_APPNAME,)
        )
        # 7 dead pooled connections already cost 0.1 + 0.2 + ... + 6.4 = 12.7 s of backoff.
        assert worker_conns >= 8, f"the worker's pool did not grow: {worker_conns} connections"
        killed = _terminate_backends(postgres_url)

        # The database is reachable again at once: new work should start within a poll tick.
        retrying(lambda: store.enqueue_many("record", [{"n": n} for n in range(100)]))
        try:
            took = wait_until(lambda: status_counts(app) == {"completed": 1100}, 10, "completion")
        except AssertionError:
            raise RecoveryTooSlow(
                f"100 new jobs not done 10 s after an outage of a few milliseconds ({killed} "
                f"backends terminated, {worker_conns} of the worker): {status_counts(app)}"
                f"\n\n{fleet.describe()}"
            ) from None
        print(f"\n[postgres] idle worker back to work {took:.1f} s after the outage")
        assert_exactly_once(app, 1100)


# -- e. wake-up across processes ------------------------------------------------------------


def test_sqlite_enqueue_wakes_an_idle_worker_process(data_dir: Path) -> None:
    """SQLite has no notifications; a worker notices other processes' commits by watching
    the file's data version, long before its 10 s poll tick."""
    with (
        enqueuer(data_dir, None) as (app, store),
        Fleet(data_dir, None, {"PB_JOBS_POLL_INTERVAL": "10s"}) as fleet,
    ):
        fleet.start()
        warm = store.enqueue("record")
        wait_until(lambda: job_row(app, warm.id)["status"] == "completed", 15, "the warm-up job")
        latencies = []
        for n in range(20):
            enqueued_at = now_utc()
            job = store.enqueue("record", {"n": n})
            wait_until(lambda job=job: invocations_of(app, job.id), 5, f"job {n} to start")
            (attempt,) = invocations_of(app, job.id)
            latencies.append((datetime.fromisoformat(attempt["at"]) - enqueued_at).total_seconds())
        print(
            f"\n[sqlite] cross-process wake-up, 20 jobs: median "
            f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 2.0, sorted(latencies)


@pytest.mark.postgres
def test_enqueue_wakes_an_idle_worker_process(
    data_dir: Path, postgres_url: str, record_property: Callable[[str, object], None]
) -> None:
    db_url = postgres_url
    with (
        enqueuer(data_dir, db_url) as (app, store),
        Fleet(data_dir, db_url, {"PB_JOBS_POLL_INTERVAL": "10s"}) as fleet,
    ):
        fleet.start()
        # Warm up: the listener may connect just after the ready log (it then wakes the
        # dispatcher itself, so this job runs either way).
        warm = store.enqueue("record")
        wait_until(lambda: job_row(app, warm.id)["status"] == "completed", 15, "the warm-up job")

        ids: list[str] = []
        for n in range(50):
            enqueued_at = now_utc()
            ids.append(store.enqueue("record", {"n": n, "enqueued_at": enqueued_at.isoformat()}).id)
            time.sleep(0.05)
        wait_until(
            lambda: status_counts(app).get("completed", 0) == len(ids) + 1,
            30,
            "the 50 jobs to complete",
        )
        latencies = []
        for job_id in ids:
            (attempt,) = invocations_of(app, job_id)
            enqueued = datetime.fromisoformat(store.get(job_id).payload["enqueued_at"])
            latencies.append((datetime.fromisoformat(attempt["at"]) - enqueued).total_seconds())
        median = statistics.median(latencies)
        print(
            f"\n[postgres] cross-process wake-up, 50 jobs: median {median * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms (poll_interval 10 s)"
        )
        record_property("wakeup_median_ms", round(median * 1000, 2))
        record_property("wakeup_max_ms", round(max(latencies) * 1000, 2))
        assert min(latencies) >= 0, latencies
        assert max(latencies) < 2.0, sorted(latencies)
