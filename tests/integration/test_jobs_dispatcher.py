"""The jobs dispatcher in-process (SPEC §4.6), on SQLite and on PostgreSQL.

Every test builds real apps on a real database (the ``db_url``/``data_dir`` fixtures), with
short custom timings, and polls the database with deadlines: deadlines bound how long a test
may wait for something that must happen; they are not claims about speed.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from jobs_support import (
    Handler,
    Harness,
    Node,
    Recorder,
    fast_config,
    harness_fixture,
    wait_until,
)
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import NOTIFY_CHANNEL, driver_for, parse_wake_payload

POSTGRES_ONLY = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


# --------------------------------------------------------------------------- helpers

harness = harness_fixture


@contextmanager
def watch_processing(node: Node) -> Iterator[list[int]]:
    """Sample the number of 'processing' rows in the background; yields the samples."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(node.processing())
            done.wait(0.005)

    thread = threading.Thread(target=sample, name="watch-processing", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join(10)


# --------------------------------------------------------------------------- 1. handler kinds


def test_sync_and_async_handlers_both_run(harness: Harness) -> None:
    rec = Recorder()

    def sync_handler(job: jobs.Job) -> None:
        rec.record(job, "sync")

    async def async_handler(job: jobs.Job) -> None:
        rec.record(job, "async")
        asyncio.get_running_loop()  # raises if not on an event loop
        await asyncio.sleep(0.01)

    node = harness.node(handlers={"sync": sync_handler, "async": async_handler})
    sync_jobs = [node.store.enqueue("sync", {"n": n}) for n in range(3)]
    async_jobs = [node.store.enqueue("async", {"n": n}) for n in range(3)]

    for job in sync_jobs + async_jobs:
        done = node.wait_status(job.id, "completed")
        assert done.retries == 0
        assert done.last_error is None
        assert node.locked_by(job.id) is None
    assert rec.counter() == Counter({job.id: 1 for job in sync_jobs + async_jobs})

    main = threading.current_thread().name
    for job in sync_jobs:
        (call,) = rec.for_job(job.id)
        assert not call.has_loop, "a plain handler must not run on an event loop"
        assert call.thread != main
    for job in async_jobs:
        (call,) = rec.for_job(job.id)
        assert call.has_loop, "an async handler must run on an event loop"
        assert call.thread != main


# --------------------------------------------------------------------------- 2. concurrency


@pytest.mark.parametrize("kind", ["sync", "async", "mixed"])
def test_concurrency_never_exceeds_workers(harness: Harness, kind: str) -> None:
    rec = Recorder()

    def sync_handler(job: jobs.Job) -> None:
        with rec.running(job, "sync"):
            time.sleep(0.2)  # the job's work

    async def async_handler(job: jobs.Job) -> None:
        with rec.running(job, "async"):
            await asyncio.sleep(0.2)

    node = harness.node(
        workers=3,
        lock_duration=5.0,
        handlers={"sync": sync_handler, "async": async_handler},
    )
    topics = {"sync": ["sync"], "async": ["async"], "mixed": ["sync", "async"]}[kind]
    with watch_processing(node) as samples:
        enqueued = [
            node.store.enqueue(topics[n % len(topics)], {"n": n}, max_retries=0) for n in range(20)
        ]
        wait_until(lambda: node.store.stats().completed == 20, 30, "all 20 jobs to complete")
    assert rec.counter() == Counter({job.id: 1 for job in enqueued})
    assert rec.max_active == 3, f"max concurrent handlers {rec.max_active}, workers=3"
    assert samples, "the watcher took no samples"
    # A finished job stays 'processing' until its outcome is written, which may trail the
    # claim that refilled its slot (a few such jobs; these handlers are too long for claims
    # ahead).
    assert max(samples) <= 2 * 3, f"up to {max(samples)} jobs were 'processing'"
    if kind == "mixed":
        assert {c.who for c in rec.calls} == {"sync", "async"}


# --------------------------------------------------------------------------- 3. retries


def test_retries_with_backoff_then_success(harness: Harness) -> None:
    rec = Recorder()
    attempts_seen: list[int] = []
    attempts_lock = threading.Lock()

    def backoff(attempt: int) -> timedelta:
        with attempts_lock:
            attempts_seen.append(attempt)
        return timedelta(milliseconds=300)

    def flaky(job: jobs.Job) -> None:
        rec.record(job)
        failures = rec.count(job.id)
        if failures <= 2:
            raise RuntimeError(f"flaky failure number {failures}")

    node = harness.node(max_retries=3, backoff=backoff, handlers={"flaky": flaky})
    job = node.store.enqueue("flaky", {"x": 1})
    done = node.wait_status(job.id, "completed", timeout=15)

    assert rec.count(job.id) == 3
    assert done.retries == 2
    assert done.max_retries == 3
    assert done.last_error is not None
    assert "Traceback" in done.last_error
    assert "RuntimeError: flaky failure number 2" in done.last_error
    assert "flaky failure number 1" not in done.last_error
    assert attempts_seen == [1, 2]
    starts = [c.started for c in rec.for_job(job.id)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.25 for gap in gaps), f"retries came sooner than the backoff: {gaps}"


@pytest.mark.parametrize(("max_retries", "runs"), [(2, 3), (0, 1)])
def test_always_failing_job_runs_one_plus_max_retries_times(
    harness: Harness, max_retries: int, runs: int
) -> None:
    rec = Recorder()

    def broken(job: jobs.Job) -> None:
        rec.record(job)
        raise ValueError(f"broken attempt {rec.count(job.id)}")

    node = harness.node(handlers={"broken": broken})
    job = node.store.enqueue("broken", max_retries=max_retries)
    failed = node.wait_status(job.id, "failed", timeout=15)

    assert rec.count(job.id) == runs
    assert failed.retries == max_retries
    assert failed.last_error is not None
    assert "Traceback" in failed.last_error
    assert f"ValueError: broken attempt {runs}" in failed.last_error
    assert node.locked_by(job.id) is None
    # A failed job is never claimed again: a later job runs, this one does not.
    later = node.store.enqueue("broken", max_retries=0)
    node.wait_status(later.id, "failed")
    assert rec.count(job.id) == runs


# --------------------------------------------------------------------------- 4. fencing


@pytest.mark.parametrize("a_outcome", ["returns", "raises"])
@pytest.mark.parametrize("a_finishes", ["after_b", "while_b_runs"])
def test_fencing_stale_worker_cannot_overwrite_new_owner(
    harness: Harness, a_outcome: str, a_finishes: str
) -> None:
    rec = Recorder()
    release_a = harness.gate()
    release_b = harness.gate()
    a_done = threading.Event()

    def handler_a(job: jobs.Job) -> None:
        rec.record(job, "A")
        try:
            release_a.wait(30)
            if a_outcome == "raises":
                raise RuntimeError("stale worker A failed")
        finally:
            a_done.set()

    def handler_b(job: jobs.Job) -> None:
        rec.record(job, "B")
        release_b.wait(30)

    # A: one slot (busy with the blocked job, so A cannot take it back itself) and a long
    # lock, so its heartbeat does not renew the lock during the test.
    node_a = harness.node(workers=1, lock_duration=60.0, handlers={"t": handler_a})
    job = node_a.store.enqueue("t", {"k": "v"})
    wait_until(lambda: rec.count(job.id, "A") == 1, what="A to start the job")
    token_a = node_a.locked_by(job.id)
    assert token_a

    if a_finishes == "after_b":
        release_b.set()
    node_b = harness.node(lock_duration=60.0, handlers={"t": handler_b})
    node_a.expire_lock(job.id)  # as if A's heartbeat had stopped
    wait_until(lambda: rec.count(job.id, "B") == 1, what="B to rescue and run the job")

    if a_finishes == "after_b":
        node_b.wait_status(job.id, "completed")
    else:
        token_b = node_b.locked_by(job.id)
        assert token_b
        assert token_b != token_a

    release_a.set()
    assert a_done.wait(10)
    node_a.store.stop()  # returns once A has written (or discarded) its result

    row = node_b.store.get(job.id)
    if a_finishes == "while_b_runs":
        assert row.status == "processing", "A's outcome overwrote B's claim"
        assert node_b.locked_by(job.id) == token_b
        release_b.set()
        row = node_b.wait_status(job.id, "completed")
    assert row.status == "completed"
    assert row.retries == 1  # the rescue counted A's attempt
    assert row.last_error is not None
    assert row.last_error.startswith("lock expired")
    assert "stale worker A failed" not in row.last_error
    assert node_b.locked_by(job.id) is None
    assert rec.count(job.id, "A") == 1
    assert rec.count(job.id, "B") == 1


# --------------------------------------------------------------------------- 5. heartbeat
# tests/integration/test_jobs_maintenance.py drives the heartbeat with a clock.


# --------------------------------------------------------------------------- 6. rescue


def _dead_worker_job(node: Node, max_retries: int) -> str:
    job = node.store.enqueue("rescue", max_retries=max_retries)
    node.app.db.execute(
        "UPDATE _jobs SET status = 'processing', locked_by = 'dead', locked_until = ? WHERE id = ?",
        (node.db_time(now_utc() - timedelta(seconds=30)), job.id),
    )
    return job.id


def test_expired_lock_is_rescued_and_counts_an_attempt(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(auto_start=False, handlers={"rescue": lambda j: rec.record(j)})
    job_id = _dead_worker_job(node, max_retries=3)
    assert node.status(job_id) == "processing"
    node.store.start()

    done = node.wait_status(job_id, "completed")
    assert rec.count(job_id) == 1
    assert done.retries == 1
    assert done.last_error is not None
    assert done.last_error.startswith("lock expired")
    assert node.locked_by(job_id) is None


def test_expired_lock_without_retries_left_fails_without_running(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(auto_start=False, handlers={"rescue": lambda j: rec.record(j)})
    job_id = _dead_worker_job(node, max_retries=0)
    node.store.start()

    failed = node.wait_status(job_id, "failed")
    assert failed.retries == 0
    assert failed.last_error is not None
    assert failed.last_error.startswith("lock expired")
    # The dispatcher is alive and runs other jobs, never the failed one.
    other = node.store.enqueue("rescue")
    node.wait_status(other.id, "completed")
    assert rec.count(job_id) == 0
    assert node.status(job_id) == "failed"


# --------------------------------------------------------------------------- 7. stop


def test_terminate_waits_for_running_jobs(harness: Harness) -> None:
    rec = Recorder()

    def sync_handler(job: jobs.Job) -> None:
        with rec.running(job, "sync"):
            time.sleep(0.5)  # the job's work

    async def async_handler(job: jobs.Job) -> None:
        with rec.running(job, "async"):
            await asyncio.sleep(0.5)

    node = harness.node(
        workers=3,
        shutdown_timeout=10.0,
        lock_duration=60.0,
        handlers={"sync": sync_handler, "async": async_handler},
    )
    enqueued = [
        node.store.enqueue("sync"),
        node.store.enqueue("sync"),
        node.store.enqueue("async"),
    ]
    wait_until(lambda: len(rec.calls) == 3, what="the three jobs to start")
    node.app.terminate()
    assert sorted(rec.finished) == sorted(job.id for job in enqueued)

    reader = harness.node(auto_start=False)
    for job in enqueued:
        assert reader.status(job.id) == "completed"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stop_releases_unfinished_jobs_to_another_worker(harness: Harness, kind: str) -> None:
    rec = Recorder()
    gate = harness.gate()

    def blocking(job: jobs.Job) -> None:
        rec.record(job, "first")
        gate.wait(10)

    async def blocking_async(job: jobs.Job) -> None:
        rec.record(job, "first")
        await asyncio.to_thread(gate.wait, 10)

    first = harness.node(
        shutdown_timeout=0.5,
        lock_duration=60.0,
        handlers={"t": blocking if kind == "sync" else blocking_async},
    )
    job = first.store.enqueue("t", max_retries=3)
    wait_until(lambda: rec.count(job.id) == 1, what="the job to start")
    first.app.terminate()

    second = harness.node(auto_start=False, lock_duration=60.0)
    released = second.store.get(job.id)
    assert released.status == "pending"
    assert released.retries == 0
    assert released.last_error is None
    assert released.locked_until is None
    assert second.locked_by(job.id) is None

    second.store.register("t", lambda j: rec.record(j, "second"))
    second.store.start()
    # At once, not after the 60 s lock would have run out.
    done = second.wait_status(job.id, "completed", timeout=10)
    assert done.retries == 0
    assert rec.count(job.id, "first") == 1
    assert rec.count(job.id, "second") == 1


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_terminate_leaves_no_listener_connection(harness: Harness) -> None:
    node = harness.node(poll_interval=10.0)
    observer = harness.node(auto_start=False)
    count_sql = (
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    wait_until(lambda: observer.app.db.fetch_value(count_sql) == 1, 10, "the LISTEN")
    node.app.terminate()
    assert observer.app.db.fetch_value(count_sql) == 0, "a LISTEN connection outlived terminate"


# --------------------------------------------------------------------------- 8. wake-up


def _median_latency(
    enqueue: Callable[[int], jobs.Job], rec: Recorder, rounds: int = 50
) -> list[float]:
    latencies: list[float] = []
    for n in range(rounds):
        t0 = time.monotonic()
        job = enqueue(n)
        call = wait_until(lambda job=job: rec.for_job(job.id), 5, f"job {n} to start")[0]
        latency = call.started - t0
        assert latency < 2.0, f"job {n} started {latency:.3f}s after its enqueue"
        latencies.append(latency)
    return latencies


def test_enqueue_wakes_an_idle_dispatcher(
    harness: Harness, record_property: Callable[[str, object], None]
) -> None:
    rec = Recorder()
    node = harness.node(poll_interval=10.0, handlers={"wake": lambda j: rec.record(j)})
    node.wait_idle()
    latencies = _median_latency(lambda n: node.store.enqueue("wake", {"n": n}), rec)
    median_ms = statistics.median(latencies) * 1000
    print(f"\nmedian enqueue->start latency ({node.app.db.dialect}): {median_ms:.1f} ms")
    record_property("median_wakeup_ms", round(median_ms, 2))


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_enqueue_from_another_app_wakes_dispatcher_via_notify(
    harness: Harness, record_property: Callable[[str, object], None]
) -> None:
    rec = Recorder()
    worker = harness.node(poll_interval=10.0, handlers={"wake": lambda j: rec.record(j)})
    producer = harness.node(auto_start=False)
    wait_until(
        lambda: producer.app.db.fetch_value(
            "SELECT COUNT(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        ),
        10,
        "the dispatcher to LISTEN",
    )
    worker.wait_idle()
    latencies = _median_latency(lambda n: producer.store.enqueue("wake", {"n": n}), rec)
    median_ms = statistics.median(latencies) * 1000
    print(f"\nmedian enqueue->start latency via NOTIFY: {median_ms:.1f} ms")
    record_property("median_notify_wakeup_ms", round(median_ms, 2))
    # The last outcome is written just after its handler ran (by the completer thread).
    wait_until(lambda: worker.store.stats().completed == len(latencies), 5, "all completed")


# --------------------------------------------------------------------------- 9. delayed


def _in_seconds(seconds: float, sub_ms_us: int = 0) -> datetime:
    """Now + ``seconds``, with the sub-millisecond part of the time set to ``sub_ms_us``."""
    moment = now_utc() + timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000 + sub_ms_us)


def _assert_runs_at_its_time(node: Node, rec: Recorder, job: jobs.Job, label: str) -> None:
    run_at = node.store.get(job.id).run_at  # as stored
    deadline = (run_at - now_utc()).total_seconds() + 1.5
    (call,) = wait_until(lambda: rec.for_job(job.id), deadline, f"the {label} job to start")
    assert call.started_at >= run_at, "the job ran before its run_at"
    assert call.started_at - run_at < timedelta(seconds=1.5)


def test_delayed_job_runs_at_its_time(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(poll_interval=10.0, handlers={"later": lambda j: rec.record(j)})
    node.wait_idle()
    job = node.store.enqueue("later", delay=0.5)
    _assert_runs_at_its_time(node, rec, job, "delayed")
    node.wait_status(job.id, "completed")


def test_delayed_job_with_sub_millisecond_run_at(harness: Harness) -> None:
    # Regression: PostgreSQL's notification carried run_at truncated to the millisecond
    # while the row kept microseconds; the dispatcher woke a fraction of a millisecond
    # early, claimed nothing, forgot the due time and slept for poll_interval. The
    # sub-millisecond part is at its largest, three times in a row, so that a lucky late
    # wake-up does not hide a regression.
    rec = Recorder()
    node = harness.node(poll_interval=10.0, handlers={"later": lambda j: rec.record(j)})
    node.wait_idle()
    for n in range(3):
        job = node.store.enqueue("later", run_at=_in_seconds(0.5, sub_ms_us=999))
        _assert_runs_at_its_time(node, rec, job, f"delayed #{n}")


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_notification_is_not_before_run_at(harness: Harness) -> None:
    """The due time a NOTIFY carries is never earlier than the stored run_at (else the
    dispatcher wakes early, finds nothing and forgets the due time)."""
    node = harness.node(auto_start=False)
    listener = node.app.db.listen(NOTIFY_CHANNEL)
    assert listener is not None
    try:
        job = node.store.enqueue("later", run_at=_in_seconds(60, sub_ms_us=500))
        payloads = wait_until(lambda: listener.wait(0.1), 5, "the notification")
    finally:
        listener.close()
    (payload,) = payloads
    stored = node.store.get(job.id).run_at
    due, topics = parse_wake_payload(payload)
    assert topics == {"later"}
    assert due is not None
    assert due >= stored, f"notified {payload} for run_at {stored}"


@pytest.mark.slow
def test_several_delayed_jobs_each_run_at_their_time(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(poll_interval=10.0, handlers={"later": lambda j: rec.record(j)})
    node.wait_idle()
    first = node.store.enqueue("later", run_at=_in_seconds(0.5))
    second = node.store.enqueue("later", run_at=_in_seconds(1.0))
    _assert_runs_at_its_time(node, rec, first, "first (0.5 s)")
    _assert_runs_at_its_time(node, rec, second, "second (1.0 s)")


# --------------------------------------------------------------------------- 10. topics


def test_handlers_registered_later_and_unhandled_topics(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(poll_interval=10.0, handlers={"a": lambda j: rec.record(j, "a")})
    b = node.store.enqueue("b")
    c = node.store.enqueue("c")
    for _ in range(3):  # several claim rounds happen
        node.wait_status(node.store.enqueue("a").id, "completed")
    for job in (b, c):
        assert node.status(job.id) == "pending"
        assert node.locked_by(job.id) is None

    async def handle_b(job: jobs.Job) -> None:
        rec.record(job, "b")

    node.store.register("b", handle_b)
    (call,) = wait_until(lambda: rec.for_job(b.id), 2, "the new handler to run")
    assert call.has_loop
    node.wait_status(b.id, "completed")
    node.wait_status(node.store.enqueue("a").id, "completed")
    pending = node.store.get(c.id)
    assert pending.status == "pending"
    assert pending.retries == 0
    assert node.locked_by(c.id) is None
    assert rec.count(c.id) == 0


# --------------------------------------------------------------------------- 11. shared DB


def test_several_dispatchers_share_one_database(harness: Harness) -> None:
    rec = Recorder()

    def handler_for(name: str) -> Handler:
        def handle(job: jobs.Job) -> None:
            rec.record(job, name)
            time.sleep(0.005)  # the job's work

        return handle

    nodes = [
        harness.node(poll_interval=0.05, lock_duration=30.0, handlers={"bulk": handler_for(name)})
        for name in ("n0", "n1", "n2")
    ]
    enqueued = nodes[0].store.enqueue_many("bulk", [{"n": n} for n in range(500)])
    wait_until(lambda: nodes[1].store.stats().completed == 500, 90, "all 500 jobs to complete")
    stats = nodes[2].store.stats()
    assert (stats.pending, stats.processing, stats.failed) == (0, 0, 0)
    counts = rec.counter()
    assert set(counts) == {job.id for job in enqueued}
    assert set(counts.values()) == {1}, "some job ran more than once"
    by_node = Counter(c.who for c in rec.calls)
    print(f"\njobs per dispatcher: {dict(by_node)}")
    assert len(by_node) >= 2, f"only one dispatcher took jobs: {dict(by_node)}"


# --------------------------------------------------------------------------- 12. bookkeeping


def test_slow_bookkeeping_holds_back_claims(harness: Harness) -> None:
    """While the outcomes of finished jobs wait to be written (here: every write takes
    50 ms), handlers never exceed ``workers``, claims stop once 4 x ``batch_size`` (the
    larger of it and ``workers``) finished jobs wait, and every job is completed exactly
    once."""
    import logging

    from pocketjobs.plugins.jobs.dispatcher import Dispatcher

    rec = Recorder()

    def handle(job: jobs.Job) -> None:
        with rec.running(job):
            pass

    node = harness.node(workers=3, auto_start=False, lock_duration=5.0)
    real = driver_for(node.app.db)

    class SlowBookkeeping(type(real)):  # type: ignore[misc]
        def jobs_settle(self, *args: Any, **kwargs: Any) -> int:
            time.sleep(0.05)
            return int(super().jobs_settle(*args, **kwargs))

        def jobs_settle_and_claim(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(0.05)
            return super().jobs_settle_and_claim(*args, **kwargs)

    enqueued = node.store.enqueue_many("t", [{"n": n} for n in range(60)])
    dispatcher = Dispatcher(
        node.app.db,
        SlowBookkeeping(),
        fast_config(workers=3, lock_duration=5.0),
        {"t": handle},
        logging.getLogger("test.slow-bookkeeping"),
    )
    with watch_processing(node) as samples:
        dispatcher.start()
        try:
            wait_until(lambda: node.store.stats().completed == 60, 30, "all 60 jobs to complete")
        finally:
            dispatcher.stop()
    assert rec.counter() == Counter({job.id: 1 for job in enqueued})
    assert rec.max_active <= 3
    assert samples, "the watcher took no samples"
    # running + claimed ahead (within a batch) + waiting for their outcome + a claim under
    # way when the limit is reached: 3 + 10 + 4 * 10 + 10
    assert max(samples) <= 63, f"up to {max(samples)} jobs were 'processing'"


def test_error_text_with_nul_characters_is_recorded(harness: Harness) -> None:
    """PostgreSQL text cannot hold NUL: the failure is recorded with it escaped."""

    def handle(job: jobs.Job) -> None:
        raise ValueError("bad\x00byte")

    node = harness.node(handlers={"t": handle})
    job = node.store.enqueue("t", max_retries=0)
    failed = node.wait_status(job.id, "failed")
    assert failed.last_error is not None
    assert "ValueError: bad\\x00byte" in failed.last_error
    assert "\x00" not in failed.last_error


def test_a_deep_backlog_of_short_jobs_is_claimed_in_large_batches(harness: Harness) -> None:
    """Handlers far shorter than a claim round trip: each claim takes up to ``batch_size``
    jobs (what the slots finish in two round trips), not just one per slot, and every job
    still runs once with no more handlers at a time than slots."""
    rec = Recorder()

    def short(job: jobs.Job) -> None:
        with rec.running(job):
            pass

    node = harness.node(workers=2, batch_size=50, handlers={"short": short})
    enqueued = node.store.enqueue_many("short", list(range(1000)))
    wait_until(lambda: node.store.stats().completed == 1000, 60, "the short jobs")
    dispatcher = node.store._dispatcher
    assert dispatcher is not None
    assert rec.counter() == Counter({job.id: 1 for job in enqueued})
    assert rec.max_active <= 2
    # Claims for the free slots and one slot's worth ahead would take at least 250; up to
    # 50 a claim, at least 20.
    assert 20 <= dispatcher.claims <= 125, f"{dispatcher.claims} claims for 1,000 jobs"


def test_short_jobs_are_claimed_ahead_and_long_ones_are_not(harness: Harness) -> None:
    """While handlers take less than about two claim round trips, the dispatcher claims
    the next batch while the current one runs; with long handlers it claims only for free
    slots, so two dispatchers with one slot each share jobs rather than one holding both."""
    rec = Recorder()

    def short(job: jobs.Job) -> None:
        rec.record(job, "short")

    def handler_for(name: str) -> Handler:
        def handle(job: jobs.Job) -> None:
            rec.record(job, name)
            time.sleep(0.3)

        return handle

    node = harness.node(workers=2, handlers={"short": short})
    node.store.enqueue_many("short", list(range(200)))
    wait_until(lambda: node.store.stats().completed == 200, 30, "the short jobs")
    dispatcher = node.store._dispatcher
    assert dispatcher is not None
    assert dispatcher._claims_ahead("default"), "no-op jobs should be claimed ahead"
    node.app.terminate()

    a = harness.node(workers=1, handlers={"long": handler_for("a")})
    b = harness.node(workers=1, handlers={"long": handler_for("b")})
    for round_number in range(3):
        pair = a.store.enqueue_many("long", [round_number, round_number])
        for job in pair:
            a.wait_status(job.id, "completed", timeout=10)
        who = sorted(rec.for_job(job.id)[0].who for job in pair)
        assert who == ["a", "b"], f"round {round_number}: one dispatcher held both: {who}"
    for other in (a, b):
        assert other.store._dispatcher is not None
        assert not other.store._dispatcher._claims_ahead("default")
