"""The jobs plugin on PostgreSQL behind a real PgBouncer in transaction pooling mode.

PgBouncer (``pgbouncer_support.py``, started by the ``pgbouncer`` fixture) gives each
database 2 server connections, so consecutive transactions of one client land on
different server connections. Workers are real subprocesses (``tests/apps/
jobs_worker_app.py``) configured with ``PB_JOBS_LISTEN=false``; the test process enqueues
through PgBouncer too, and its app runs the migrations through it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from fleet_support import Fleet, assert_exactly_once, enqueuer, invocations_of, status_counts
from pgbouncer_support import PgBouncer
from pocketjobs import App
from pocketjobs.core import DatabaseError
from pocketjobs.core.postgres import PostgresDatabase, split_prepare_threshold
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.config import ConfigError, apply_env

POLLING = {"PB_JOBS_LISTEN": "false"}
#: Polls at 100 ms (the default claim_poll_interval) and, without them, only once a minute.
SLOW_FALLBACK = {**POLLING, "PB_JOBS_POLL_INTERVAL": "60s"}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- settings


def test_listen_env_parses_like_the_other_booleans() -> None:
    assert apply_env(jobs.Config(), {"PB_JOBS_LISTEN": "false"}).listen is False
    assert apply_env(jobs.Config(listen=False), {"PB_JOBS_LISTEN": " ON "}).listen is True
    config = apply_env(jobs.Config(), {"PB_JOBS_CLAIM_POLL_INTERVAL": "50ms"})
    assert config.claim_poll_interval == timedelta(milliseconds=50)
    with pytest.raises(ConfigError, match="PB_JOBS_LISTEN: invalid boolean 'maybe'"):
        apply_env(jobs.Config(), {"PB_JOBS_LISTEN": "maybe"})
    with pytest.raises(ConfigError, match="claim_poll_interval must be positive"):
        jobs.config.validate(jobs.Config(claim_poll_interval=0))


def test_prepare_threshold_url_parameter() -> None:
    base = "postgresql://app@db:6432/app"
    assert split_prepare_threshold(base) is None
    assert split_prepare_threshold("host=db dbname=app") is None
    assert split_prepare_threshold(f"{base}?prepare_threshold=none") == (base, None)
    assert split_prepare_threshold(f"{base}?prepare_threshold=Auto") == (base, "auto")
    # The other parameters stay as written (libpq decodes them itself).
    assert split_prepare_threshold(f"{base}?sslmode=disable&prepare_threshold=0&a=%20") == (
        f"{base}?sslmode=disable&a=%20",
        0,
    )
    with pytest.raises(ValueError, match="prepare_threshold='sometimes'"):
        split_prepare_threshold(f"{base}?prepare_threshold=sometimes")


# --------------------------------------------------------------------------- the proxy


@pytest.mark.postgres
def test_transactions_hop_between_server_connections(pgbouncer_url: str) -> None:
    """The fixture really pools transactions: three clients stay connected to a pool of
    two server connections and all of them get answers (session pooling would hold the
    third back until another disconnects); a client whose server connection is held by
    another's open transaction runs on the other one."""

    def connect() -> psycopg.Connection[tuple[int]]:
        return psycopg.connect(pgbouncer_url, autocommit=True, prepare_threshold=None)

    def pid(conn: psycopg.Connection[tuple[int]]) -> int:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

    with connect() as first, connect() as second, connect() as third:
        with first.transaction():
            held = pid(first)  # this server connection stays first's until the commit
            elsewhere = {pid(second), pid(third)}  # so these two share the other one
        assert len(elsewhere) == 1, (held, elsewhere)
        assert held not in elsewhere, (held, elsewhere)
        with second.transaction():
            taken = pid(second)
            assert pid(first) != taken  # first now runs wherever second is not
            assert pid(third) != taken


@pytest.mark.postgres
def test_the_kernel_prepares_no_statements_through_a_pooler(
    pgbouncer_url: str, postgres_url: str
) -> None:
    with PostgresDatabase(postgres_url) as direct:
        assert (direct.through_proxy, direct.prepare_threshold) == (False, 5)
    with PostgresDatabase(pgbouncer_url) as pooled:
        assert (pooled.through_proxy, pooled.prepare_threshold) == (True, None)
        hammer(pooled)  # no prepared statement, nothing to lose between transactions
    with PostgresDatabase(f"{postgres_url}?prepare_threshold=none") as direct:
        assert direct.prepare_threshold is None


def hammer(db: PostgresDatabase) -> None:
    """The same statements, many times, from several threads (so over several server
    connections)."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(40):
                db.fetch_value("SELECT ?::int + 1", (i,))
                with db.transaction() as tx:
                    tx.fetch_value("SELECT ?::text", (str(i),))
        except DatabaseError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.mark.postgres
def test_prepared_statements_through_transaction_pooling_fail_with_a_clear_error(
    pgbouncer_url: str,
) -> None:
    """Why the kernel turns them off: forced on, PgBouncer 1.18 loses them."""
    with (
        PostgresDatabase(f"{pgbouncer_url}?prepare_threshold=2", max_size=4) as db,
        pytest.raises(DatabaseError, match=r"prepared statement .*prepare_threshold=none"),
    ):
        hammer(db)


@pytest.mark.postgres
def test_listen_through_transaction_pooling_is_refused(
    pgbouncer_url: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A notification from the pool never reaches the listening connection: ``listen``
    says the database cannot notify (``None``) instead of listening in vain."""
    with PostgresDatabase(postgres_url) as direct:
        listener = direct.listen("pj_probe")
        assert listener is not None
        listener.close()
    with PostgresDatabase(pgbouncer_url) as pooled:
        started = time.monotonic()
        assert pooled.listen("pj_probe") is None
        assert time.monotonic() - started < 10
    assert "receives no notifications" in caplog.text


# --------------------------------------------------------------------------- the queue


@pytest.mark.postgres
def test_many_jobs_run_exactly_once_through_pgbouncer(data_dir: Path, pgbouncer_url: str) -> None:
    total = 1500
    with (
        enqueuer(data_dir, pgbouncer_url) as (app, store),
        Fleet(data_dir, pgbouncer_url, env={**POLLING, "PB_JOBS_WORKERS": "4"}) as fleet,
    ):
        for _ in range(3):
            fleet.start()
        for start in range(0, total, 100):  # batches, and single enqueues in between
            store.enqueue_many("record", [{"n": n} for n in range(start, start + 99)])
            store.enqueue("record", {"n": start + 99})
        wait_until(lambda: status_counts(app).get("completed") == total, 120, "every job")
        pids = assert_exactly_once(app, total)
        assert len(pids) > 1, "one worker did all the work"
        for proc in fleet.procs:
            assert "Traceback" not in proc.log_text(), proc.describe()
            assert "WARNING" not in proc.log_text(), proc.describe()


@pytest.mark.postgres
def test_a_global_limit_holds_through_pgbouncer(data_dir: Path, pgbouncer_url: str) -> None:
    """The limit's advisory locks are a transaction's: they serialise the claims of three
    processes whose transactions share PgBouncer's two server connections."""
    total = 30
    env = {**POLLING, "PB_JOBS_QUEUES": "mail:4", "PB_JOBS_QUEUE_LIMITS": "mail:3"}
    with (
        enqueuer(data_dir, pgbouncer_url) as (app, store),
        Fleet(data_dir, pgbouncer_url, env) as fleet,
    ):
        for _ in range(3):
            fleet.start()
        store.enqueue_many("ledger", [{"n": n, "seconds": 0.2} for n in range(total)], queue="mail")
        wait_until(lambda: status_counts(app).get("completed") == total, 60, "every job")
        assert_exactly_once(app, total)
        counts = [int(n) for (n,) in app.db.fetch_tuples("SELECT running FROM ledger_seen")]
        assert len(counts) == total
        assert max(counts) == 3, f"not at most 3 at once, or never 3: {sorted(counts)}"


@pytest.mark.postgres
def test_a_job_from_another_process_is_claimed_within_the_poll(
    data_dir: Path, pgbouncer_url: str
) -> None:
    """Another process's enqueue wakes no one: the worker's 100 ms poll finds it (its
    ``poll_interval`` is a minute)."""
    with (
        enqueuer(data_dir, pgbouncer_url) as (app, store),
        Fleet(data_dir, pgbouncer_url, env=SLOW_FALLBACK) as fleet,
    ):
        fleet.start()
        time.sleep(0.5)  # idle, asleep
        waits = []
        for _ in range(5):
            enqueued = datetime.now(UTC)
            job = store.enqueue("record")
            wait_until(lambda: invocations_of(app, job.id), 10, "the job's start")  # noqa: B023
            started = datetime.fromisoformat(invocations_of(app, job.id)[0]["at"])
            waits.append((started - enqueued).total_seconds())
            time.sleep(0.137)  # somewhere else in the next poll's cycle
        # A 100 ms poll; without it, a minute. Loose bounds: the machine may be busy.
        assert max(waits) < 2.0, waits
        assert statistics.median(waits) < 0.5, waits


@pytest.mark.postgres
def test_retries_and_delays_through_pgbouncer(data_dir: Path, pgbouncer_url: str) -> None:
    env = {**SLOW_FALLBACK, "PB_JOBS_MAX_BACKOFF": "300ms"}
    with (
        enqueuer(data_dir, pgbouncer_url) as (app, store),
        Fleet(data_dir, pgbouncer_url, env=env) as fleet,
    ):
        fleet.start()
        flaky = store.enqueue("flaky")
        delayed = store.enqueue("record", delay=1.0)
        wait_until(
            lambda: status_counts(app).get("completed") == 2, 20, "the retry and the delayed job"
        )
        retried = store.get(flaky.id)
        assert retried.retries == 1
        assert "flaky failure" in (retried.last_error or "")
        assert len(invocations_of(app, flaky.id)) == 2
        [run] = invocations_of(app, delayed.id)
        started = datetime.fromisoformat(run["at"])
        assert delayed.run_at <= started < delayed.run_at + timedelta(seconds=1), (
            started - delayed.run_at
        )


@pytest.mark.postgres
def test_migrations_run_through_pgbouncer(pgbouncer_url: str, tmp_path: Path) -> None:
    """Several processes' bootstraps at once: the migrations' advisory lock is a
    transaction's, so it holds through transaction pooling."""
    errors: list[BaseException] = []
    apps = [App(data_dir=tmp_path / f"app{i}", database_url=pgbouncer_url) for i in range(3)]
    for app in apps:
        jobs.must_register(app, jobs.Config(auto_start=False))

    def boot(app: App) -> None:
        try:
            app.bootstrap()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        names = apps[0].db.fetch_tuples("SELECT name, COUNT(*) FROM _migrations GROUP BY name")
        assert names
        assert all(count == 1 for _, count in names), names
        assert any(name.startswith("jobs_") for name, _ in names)
    finally:
        for app in apps:
            if app.is_bootstrapped():
                app.terminate()


@pytest.mark.postgres
def test_a_listening_worker_behind_pgbouncer_says_so_and_polls(
    data_dir: Path, pgbouncer_url: str, pgbouncer: PgBouncer
) -> None:
    """``listen`` left on through transaction pooling: the worker's LISTEN check fails,
    it logs what to set, and polls instead of waiting a minute for each job."""
    env = {"PB_JOBS_POLL_INTERVAL": "60s"}
    with (
        enqueuer(data_dir, pgbouncer_url) as (_, store),
        Fleet(data_dir, pgbouncer_url, env=env) as fleet,
    ):
        worker = fleet.start()
        worker.wait_for_log("PB_JOBS_LISTEN=false", timeout=30)
        job = store.enqueue("record")
        wait_until(lambda: store.get(job.id).status == "completed", 5, "the job")
        assert "receives no notifications" in worker.log_text()
    assert pgbouncer.process.poll() is None


# --------------------------------------------------------------------------- without a proxy


def test_listen_off_opens_no_listening_connection_and_polls(
    data_dir: Path, db_url: str | None, clean_jobs_env: None
) -> None:
    """On either database, directly: no listener thread and, on PostgreSQL, no LISTEN;
    another app's enqueue is claimed by the poll, this app's own wakes its dispatcher."""
    worker = App(data_dir=data_dir, database_url=db_url)
    done: dict[str, float] = {}
    store = jobs.must_register(
        worker, jobs.Config(listen=False, poll_interval=60, http_enabled=False, workers=2)
    )
    store.register("mark", lambda job: done.setdefault(job.id, time.monotonic()))
    worker.bootstrap()
    producer = App(data_dir=data_dir, database_url=db_url)
    producer_store = jobs.must_register(producer, jobs.Config(auto_start=False))
    producer.bootstrap()
    try:
        assert not any(t.name == "pocketjobs-listener" for t in threading.enumerate())
        if worker.is_postgres():
            listening = worker.db.fetch_value(
                "SELECT COUNT(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query ILIKE '%LISTEN%'"
                " AND pid <> pg_backend_pid()"
            )
            assert listening == 0
        time.sleep(0.3)
        for enqueue in (producer_store.enqueue, store.enqueue):
            enqueued = time.monotonic()
            job = enqueue("mark")
            wait_until(lambda: job.id in done, 5, "the job")  # noqa: B023
            assert done[job.id] - enqueued < 2.0  # a 100 ms poll, not poll_interval's minute
    finally:
        producer.terminate()
        worker.terminate()
