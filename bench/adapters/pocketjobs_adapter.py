"""pocketjobs: ``store.enqueue`` / ``store.enqueue_many`` in the benchmark process, and a
worker process that runs the dispatcher with ``Config(workers=10)`` (the default
``batch_size``, 100) and a plain (thread-pool) no-op handler -- what ``python main.py
worker`` does. A "batch 10" row runs the burn-down with ``batch_size=10``, the claim size
of pgqueuer's tuned row.

Its metrics are on (the default: every attempt counted as it ends); the "metrics off" rows
(``Config(metrics=False)``: nothing counted) run the same enqueue and burn-down beside
them, so the table shows what the metrics cost.

Also the pocketjobs-only helpers of the backlog workload (bulk-inserting finished rows,
capturing the claim query's plan).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from bench.adapters.base import BURNDOWN, ENQUEUE, STEADY, WAKEUP, Adapter, WorkerHandle
from bench.common import POSTGRES, SQLITE, Scenario, record, set_record_path, worker_ready_and_wait

TOPIC = "noop"
WORKERS = 10
#: The worker's ``Config.batch_size`` (``None``: the default).
BATCH_SIZE: int | None = None


def make_app(db: str, tmp: str | Path, pg_url: str | None) -> Any:
    """An App on the scenario's database (SQLite: ``<tmp>/pb_data/data.db``)."""
    from pocketjobs import App

    return App(data_dir=Path(tmp) / "pb_data", database_url=pg_url if db == POSTGRES else None)


def config_batch(batch_size: int | None) -> dict[str, int]:
    """The ``Config`` keyword for ``batch_size`` (none for ``None``: the default)."""
    return {} if batch_size is None else {"batch_size": batch_size}


def _noop(job: Any) -> None:
    record(job.payload)


class _PocketjobsBase(Adapter):
    library = "pocketjobs"
    #: ``Config.metrics`` of the producer and the worker process.
    metrics: ClassVar[bool] = True
    #: ``Config.batch_size`` of the worker process.
    batch_size: ClassVar[int | None] = BATCH_SIZE
    notes = (
        "pocketjobs: worker process = App + jobs.Config(workers=10), the default batch_size "
        "(100: a claim takes the free slots plus, while handlers are short, what the slots "
        "finish in two claim round trips, at most 100 jobs), a plain (thread-pool) no-op "
        "handler; producer = store.enqueue / store.enqueue_many (chunks of 1,000) in the "
        "benchmark process. SQLite: WAL, synchronous=NORMAL (its default).",
    )

    def setup(self) -> None:
        from pocketjobs.plugins import jobs

        self.app = make_app(self.ctx.db, self.ctx.tmp, self.ctx.pg_url)
        self.store = jobs.must_register(
            self.app,
            jobs.Config(
                workers=WORKERS, auto_start=False, metrics=self.metrics, **config_batch(None)
            ),
        )
        self.app.bootstrap()

    def teardown(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            app.terminate()

    def enqueue_one(self, number: int) -> None:
        self.store.enqueue(TOPIC, number)

    def enqueue_chunk(self, numbers: Sequence[int]) -> None:
        self.store.enqueue_many(TOPIC, list(numbers))

    def remaining(self) -> int:
        return int(
            self.app.db.fetch_value(
                "SELECT COUNT(*) FROM _jobs WHERE status IN ('pending', 'processing')"
            )
        )

    @classmethod
    def worker_main(cls, spec: dict[str, Any]) -> None:
        from pocketjobs.plugins import jobs

        app = make_app(spec["db"], spec["tmp"], spec["pg_url"])
        store = jobs.must_register(
            app,
            jobs.Config(
                workers=spec["concurrency"], auto_start=False, metrics=cls.metrics,
                **config_batch(cls.batch_size),
            ),
        )  # fmt: skip
        store.register(TOPIC, _noop)
        app.bootstrap()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        worker_ready_and_wait(spec)
        store.start()
        while not stop.wait(0.2):
            pass
        store.stop(timeout=2)
        app.terminate()


class PocketjobsPostgres(_PocketjobsBase):
    key = "pocketjobs-pg"
    label = "pocketjobs"
    db = POSTGRES


class PocketjobsSQLite(_PocketjobsBase):
    key = "pocketjobs-sqlite"
    label = "pocketjobs"
    db = SQLITE
    # Wake-up is measured in-process (the embedded default); a worker process on SQLite
    # notices other processes' commits through PRAGMA data_version.
    workloads = (ENQUEUE, BURNDOWN, STEADY)
    notes = (
        "pocketjobs on SQLite: wake-up is measured with the dispatcher in the enqueuing "
        "process (the embedded default: enqueue wakes it at once). A separate worker "
        "process notices other processes' commits by watching PRAGMA data_version every "
        "5 ms (3 ms median in tests/integration/test_jobs_faults.py).",
    )


class _PocketjobsNoMetrics:
    """The same configuration with ``Config(metrics=False)``: enqueue and burn-down only."""

    label = "pocketjobs (metrics off)"
    metrics = False
    workloads = (ENQUEUE, BURNDOWN)
    notes = (
        "pocketjobs (metrics off): the same producer and worker with Config(metrics=False) "
        "(PB_JOBS_METRICS=0): no attempt counted; the pocketjobs rows have the metrics on, "
        "the default.",
    )


class PocketjobsNoMetricsPostgres(_PocketjobsNoMetrics, PocketjobsPostgres):
    key = "pocketjobs-nometrics-pg"


class PocketjobsNoMetricsSQLite(_PocketjobsNoMetrics, PocketjobsSQLite):
    key = "pocketjobs-nometrics-sqlite"


class PocketjobsBatch10Postgres(PocketjobsPostgres):
    """Burn-down with ``batch_size=10``: claims as large as pgqueuer's tuned row's."""

    key = "pocketjobs-batch10-pg"
    label = "pocketjobs (batch 10)"
    batch_size = 10
    workloads = (BURNDOWN,)
    notes = (
        "pocketjobs (batch 10): the same worker with Config(batch_size=10), so that each "
        "claim takes at most 10 jobs, as each dequeue of pgqueuer's batch-10 rows does.",
    )


class _InProcessHandle(WorkerHandle):
    def __init__(self, store: Any) -> None:
        self.store = store

    def go(self) -> None:
        self.store.start()

    def stop(self) -> None:
        self.store.stop(timeout=2)


class _PocketjobsInProcess(_PocketjobsBase):
    """The dispatcher in the enqueuing process (the embedded default: an app that serves
    and works); steady state and wake-up."""

    workloads = (STEADY, WAKEUP)
    notes = ()

    def setup(self) -> None:
        super().setup()
        set_record_path(self.ctx.records)
        self.store.register(TOPIC, _noop)

    def start_workers(self) -> WorkerHandle:
        return _InProcessHandle(self.store)


class PocketjobsInProcessPostgres(_PocketjobsInProcess):
    key = "pocketjobs-inproc-pg"
    label = "pocketjobs (in-process)"
    db = POSTGRES


class PocketjobsInProcessSQLite(_PocketjobsInProcess):
    key = "pocketjobs-inproc-sqlite"
    label = "pocketjobs (in-process)"
    db = SQLITE


ADAPTERS: list[type[Adapter]] = [
    PocketjobsPostgres,
    PocketjobsNoMetricsPostgres,
    PocketjobsBatch10Postgres,
    PocketjobsInProcessPostgres,
    PocketjobsSQLite,
    PocketjobsNoMetricsSQLite,
    PocketjobsInProcessSQLite,
]


# -- backlog workload helpers ------------------------------------------------------------


def insert_finished_rows(
    app: Any, count: int, *, analyze: bool = True, age: timedelta = timedelta(hours=1)
) -> None:
    """Bulk-insert ``count`` completed jobs with SQL (ids older than any new job's), then
    ``ANALYZE`` (unless told not to). Their ``created``, ``updated`` and ``finished_at``
    are one millisecond apart, in id order, the newest ``age`` ago; so they are in
    ``idx_jobs_finished`` as real completed jobs are, and due for pruning once ``age``
    exceeds the retention."""
    from pocketjobs.core.times import format_time, now_utc

    if count <= 0:
        if analyze:
            app.db.execute("ANALYZE _jobs" if app.is_postgres() else "ANALYZE")
        return
    first = now_utc().replace(microsecond=0) - age - timedelta(milliseconds=count)
    for low in range(1, count + 1, _INSERT_CHUNK):  # one statement per million rows
        high = min(count, low + _INSERT_CHUNK - 1)
        if app.is_postgres():
            app.db.execute(
                """INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,
                                      created, updated, finished_at)
                SELECT '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'), ?,
                       'null'::json, 'completed', t, 0, 3, t, t, t
                FROM generate_series(?::bigint, ?::bigint) AS g,
                     LATERAL (SELECT ?::timestamptz + g * interval '1 millisecond') AS s(t)""",
                (TOPIC, low, high, first),
            )
            continue
        # julianday arithmetic: a millisecond per row, formatted as format_time does.
        app.db.execute(
            """WITH RECURSIVE s(g) AS (SELECT ? UNION ALL SELECT g + 1 FROM s WHERE g < ?)
            INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,
                               created, updated, finished_at)
            SELECT printf('00000000-0000-7000-8000-%012x', g), ?, 'null', 'completed',
                   t, 0, 3, t, t, t
            FROM (SELECT g, strftime('%Y-%m-%dT%H:%M:%fZ', julianday(?) + g / 86400000.0) AS t
                  FROM s)""",
            (low, high, TOPIC, format_time(first)[:-1]),
        )
    if analyze:
        app.db.execute("ANALYZE _jobs" if app.is_postgres() else "ANALYZE")


_INSERT_CHUNK = 1_000_000


def claim_plan(app: Any, driver: Any) -> tuple[str, str]:
    """``(what, plan)`` of one claim of a 10-job batch, from the driver's ``claim_plan``
    (PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)`` of the generic plan the ``_jobs_claim``
    function runs, rolled back; SQLite: ``EXPLAIN QUERY PLAN`` of the claim statement)."""
    from datetime import timedelta

    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import ClaimParams

    what = (
        "_jobs_claim(topics, now, 10, ...): generic plan of its body"
        if app.is_postgres()
        else "UPDATE _jobs ... RETURNING (the claim statement)"
    )
    now = now_utc()
    params = ClaimParams([TOPIC], 10, now, now + timedelta(minutes=5), "plan")
    return what, driver.claim_plan(app.db, params)


def prepare_scenario_app(ctx: Scenario) -> tuple[Any, Any, Any]:
    """A bootstrapped app (dispatcher off), its store and its jobs driver."""
    from pocketjobs.plugins import jobs
    from pocketjobs.plugins.jobs.drivers import driver_for

    app = make_app(ctx.db, ctx.tmp, ctx.pg_url)
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    return app, store, driver_for(app.db)
