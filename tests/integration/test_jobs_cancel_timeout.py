"""Cancel and timeouts, and the attempt history they leave, on SQLite and PostgreSQL.

In one process (the harness's nodes) and across processes (a real worker subprocess):
a pending job is cancelled at once; a running one is stopped wherever it runs (an async
handler's task is cancelled, a plain handler sees ``job.cancel_requested``), becomes
``cancelled`` and is never retried. An attempt past its timeout fails ("timed out after
Ns") and is retried per policy; a plain handler that ignores the request keeps its slot
until it returns.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet_support import Fleet, enqueuer, invocations_of
from jobs_support import Harness, Recorder, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture


# --------------------------------------------------------------------------- cancel


def test_cancelling_a_pending_job_cancels_it_at_once(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    job = node.store.enqueue("t", {"n": 1})
    cancelled = node.store.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert node.store.cancel(job.id).status == "cancelled"  # again: nothing changes
    stats = node.store.stats()
    assert (stats.pending, stats.cancelled, stats.total) == (0, 1, 1)
    ran = Recorder()
    node.store.register("t", ran.record)
    node.store.start()
    other = node.store.enqueue("t", {"n": 2})
    node.wait_status(other.id, "completed")
    assert ran.count(job.id) == 0


def test_cancel_refuses_finished_and_unknown_jobs(harness: Harness) -> None:
    node = harness.node(handlers={"t": lambda job: None})
    done = node.store.enqueue("t")
    node.wait_status(done.id, "completed")
    with pytest.raises(jobs.JobCannotCancel, match="completed"):
        node.store.cancel(done.id)
    with pytest.raises(jobs.JobNotFound):
        node.store.cancel("0190a1b2-0000-7000-8000-000000000000")
    with pytest.raises(jobs.JobNotFound):
        node.store.cancel("not an id")


def test_a_cancelled_job_can_be_requeued_and_deleted(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    job = node.store.enqueue("t")
    node.store.cancel(job.id)
    again = node.store.requeue(job.id)
    assert (again.status, again.finished_at) == ("pending", None)
    node.store.cancel(job.id)
    node.store.delete(job.id)
    with pytest.raises(jobs.JobNotFound):
        node.store.get(job.id)


def test_cancelling_a_running_plain_handler_stops_it(harness: Harness) -> None:
    started = threading.Event()
    saw: dict[str, Any] = {}

    def work(job: jobs.Job) -> None:
        started.set()
        saw["stopped"] = job.cancel_requested.wait(20)
        try:
            job.raise_if_cancelled()
        except jobs.JobCancelled:
            saw["raised"] = True
            raise

    node = harness.node(handlers={"t": work}, max_retries=3)
    job = node.store.enqueue("t")
    assert started.wait(10)
    asked = node.store.cancel(job.id)
    assert asked.status == "processing"
    assert asked.cancel_requested_at is not None
    done = node.wait_status(job.id, "cancelled")
    wait_until(lambda: "raised" in saw, what="the handler to see the cancel")
    assert saw == {"stopped": True, "raised": True}
    assert (done.retries, done.locked_until) == (0, None)
    assert done.finished_at is not None
    node.wait_idle()
    assert node.store.get(job.id).status == "cancelled"  # never retried


def test_cancelling_a_running_async_handler_cancels_its_task(harness: Harness) -> None:
    started = threading.Event()
    outcome: dict[str, str] = {}

    async def work(job: jobs.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome["seen"] = "cancelled"
            raise
        outcome["seen"] = "finished"

    node = harness.node(handlers={"t": work})
    job = node.store.enqueue("t")
    assert started.wait(10)
    node.store.cancel(job.id)
    node.wait_status(job.id, "cancelled")
    wait_until(lambda: outcome.get("seen") == "cancelled", what="the task to be cancelled")
    node.wait_idle()  # its slot is free again


def test_another_node_cancels_a_job_this_one_runs(harness: Harness) -> None:
    """Two apps on one database: the one that does not run the job cancels it; the one
    that does learns it (PostgreSQL: a notification; SQLite: it watches the database)."""
    started = threading.Event()

    def work(job: jobs.Job) -> None:
        started.set()
        job.cancel_requested.wait(20)

    runner = harness.node(handlers={"t": work})
    other = harness.node(auto_start=False)
    job = other.store.enqueue("t")
    assert started.wait(10)
    other.store.cancel(job.id)
    runner.wait_status(job.id, "cancelled", timeout=10)


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_cancel_requested_while_the_job_waits_for_its_worker_is_kept(
    harness: Harness, kind: str
) -> None:
    """A processing job whose worker died: the cancel waits in the database and the
    rescue makes it cancelled instead of retrying it."""
    node = harness.node(auto_start=False)
    job = node.store.enqueue("t")
    node.app.db.execute(
        "UPDATE _jobs SET status = 'processing', locked_by = 'dead', locked_until = ? WHERE id = ?",
        (node.db_time(node.store.now() + timedelta(minutes=5)), job.id),
    )
    assert node.store.cancel(job.id).cancel_requested_at is not None
    node.expire_lock(job.id)
    node.store.register("t", (lambda job: None) if kind == "plain" else _async_noop)
    node.store.start()
    done = node.wait_status(job.id, "cancelled")
    assert done.retries == 0
    assert "lock expired" in (done.last_error or "")


async def _async_noop(job: jobs.Job) -> None:
    return None


# --------------------------------------------------------------------------- timeouts


def test_a_plain_handler_past_its_timeout_fails_is_retried_and_keeps_its_slot(
    harness: Harness,
) -> None:
    """workers=1: the stuck thread keeps the slot, so the next job starts only once it
    returns; each timed-out attempt is a failure, retried per policy, then final."""
    returned: list[float] = []
    started: list[tuple[str, float]] = []

    def stuck(job: jobs.Job) -> None:
        started.append(("stuck", time.monotonic()))
        time.sleep(0.6)  # ignores the request to stop
        returned.append(time.monotonic())

    def quick(job: jobs.Job) -> None:
        started.append(("quick", time.monotonic()))

    node = harness.node(workers=1, auto_start=False)
    node.store.register("stuck", stuck, timeout=0.2)
    node.store.register("quick", quick)
    job = node.store.enqueue("stuck", max_retries=1)
    follower = node.store.enqueue("quick", delay=0.05)
    node.store.start()
    failed = node.wait_status(job.id, "failed", timeout=20)
    node.wait_status(follower.id, "completed", timeout=20)
    assert failed.retries == 1
    assert [entry["attempt"] for entry in failed.errors] == [1, 2]
    assert all("timed out after 0.2s" in entry["error"] for entry in failed.errors)
    assert "timed out after 0.2s" in (failed.last_error or "")
    # Nothing else ran while a stuck thread held the only slot.
    quick_at = next(at for name, at in started if name == "quick")
    assert quick_at >= returned[0]


def test_an_async_handler_past_its_timeout_is_cancelled_and_failed(harness: Harness) -> None:
    cancelled = threading.Event()

    async def hang(job: jobs.Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    node = harness.node(handlers={"hang": hang}, max_retries=0)
    job = node.store.enqueue("hang", timeout=timedelta(milliseconds=200))
    failed = node.wait_status(job.id, "failed", timeout=10)
    assert cancelled.wait(5)
    assert failed.timeout == timedelta(milliseconds=200)
    assert len(failed.errors) == 1
    assert "timed out after 0.2s" in failed.errors[0]["error"]
    node.wait_idle()


def test_timeouts_come_from_the_job_then_the_handler_then_the_config(harness: Harness) -> None:
    seen: dict[str, bool] = {}

    def make(name: str) -> Any:
        def handler(job: jobs.Job) -> None:
            seen[name] = job.cancel_requested.wait(5)

        return handler

    node = harness.node(default_timeout=0.3, max_retries=0, auto_start=False)
    node.store.register("config", make("config"))
    node.store.register("handler", make("handler"), timeout=0.2)
    node.store.register("own", make("own"), timeout=30)
    jobs_by_topic = {
        "config": node.store.enqueue("config"),
        "handler": node.store.enqueue("handler"),
        "own": node.store.enqueue("own", timeout=0.1),
    }
    node.store.start()
    for topic, limit in (("config", "0.3"), ("handler", "0.2"), ("own", "0.1")):
        failed = node.wait_status(jobs_by_topic[topic].id, "failed", timeout=10)
        assert f"timed out after {limit}s" in (failed.last_error or ""), topic
    wait_until(lambda: len(seen) == 3, what="every handler to see its stop")
    assert seen == {"config": True, "handler": True, "own": True}


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "1", True, timedelta(days=8)])
def test_a_bad_timeout_is_refused(harness: Harness, timeout: Any) -> None:
    node = harness.node(auto_start=False)
    with pytest.raises(jobs.InvalidJobOptions) as raised:
        node.store.enqueue("t", timeout=timeout)
    assert raised.value.field == "timeout"
    with pytest.raises(jobs.InvalidJobOptions):
        node.store.register("t", lambda job: None, timeout=timeout)
    assert node.store.stats().total == 0


# --------------------------------------------------------------------------- history


def test_attempts_are_recorded(harness: Harness) -> None:
    attempts: list[int] = []

    def flaky(job: jobs.Job) -> None:
        attempts.append(job.retries)
        if job.retries < 2:
            raise RuntimeError(f"boom {job.retries}")

    node = harness.node(handlers={"t": flaky})
    job = node.store.enqueue("t", max_retries=5)
    done = node.wait_status(job.id, "completed")
    assert attempts == [0, 1, 2]
    assert [entry["attempt"] for entry in done.errors] == [1, 2]
    assert ["boom 0" in done.errors[0]["error"], "boom 1" in done.errors[1]["error"]] == [
        True,
        True,
    ]
    assert done.first_attempted_at is not None
    assert done.attempted_at is not None
    assert done.finished_at is not None
    assert done.first_attempted_at < done.attempted_at <= done.finished_at
    host, pid, node_id = (done.attempted_by or "").split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert node_id
    json = done.to_json()
    assert json["errors"] == done.errors
    assert json["attempted_by"] == done.attempted_by


# --------------------------------------------------------------------------- processes


def test_cancelling_a_job_that_another_process_runs(data_dir: Path, db_url: str | None) -> None:
    """A real worker process runs a plain handler that ignores the request; the cancel
    from this process is carried out there at once: the job is cancelled, not retried,
    and its one invocation is all there is."""
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url) as fleet:
        fleet.start()
        job = store.enqueue("hang_then_record", {"seconds": 3}, max_retries=3)
        wait_until(lambda: store.get(job.id).status == "processing", 20, "the job to start")
        store.cancel(job.id)
        wait_until(
            lambda: store.get(job.id).status == "cancelled",
            10,
            "the cancel",
        )
        time.sleep(3.5)  # the handler returns meanwhile: its result is discarded
        final = store.get(job.id)
        assert (final.status, final.retries) == ("cancelled", 0)
        assert len(invocations_of(app, job.id)) == 1


# --------------------------------------------------------------------------- events


def test_job_events_report_every_outcome_in_order_and_off_the_hot_path(
    harness: Harness,
) -> None:
    """Start and done hooks, with ids and priorities like every hook; a slow hook delays
    nothing but hooks; an exception in one is logged and the next events still come."""
    seen: list[tuple[str, str, str]] = []
    order: list[str] = []
    release = harness.gate()

    snoozed: set[str] = set()

    def work(job: jobs.Job) -> None:
        kind = job.payload["kind"]
        if kind == "fail":
            raise RuntimeError("boom")
        if kind == "snooze" and job.id not in snoozed:
            snoozed.add(job.id)
            raise jobs.Snooze(0.05)

    node = harness.node(auto_start=False, max_retries=1)
    node.store.register("t", work)

    @node.store.on_job_done.handler(id="second", priority=10)
    def second(e: jobs.JobDoneEvent) -> None:
        order.append("second")
        e.next()

    @node.store.on_job_done.handler(id="first", priority=-10)
    def first(e: jobs.JobDoneEvent) -> None:
        release.wait(10)  # a slow hook: jobs run on meanwhile
        seen.append((e.job.payload["kind"], e.outcome, type(e.error).__name__))
        order.append("first")
        e.next()

    @node.store.on_job_start.handler()
    def broken(e: jobs.JobStartEvent) -> None:
        assert e.waited >= 0
        raise ValueError("a broken start hook")

    created = [node.store.enqueue("t", {"kind": kind}) for kind in ("ok", "fail", "snooze")]
    node.store.start()
    for job in created:
        wait_until(
            lambda job=job: node.store.get(job.id).status in ("completed", "failed"),
            10,
            f"job {job.payload['kind']} to finish",
        )
    assert seen == []  # every job finished while the first done hook still waited
    release.set()
    wait_until(lambda: len(seen) >= 5, 10, "the done events")
    assert sorted(seen) == sorted(
        [
            ("ok", "completed", "NoneType"),
            ("fail", "retrying", "RuntimeError"),
            ("fail", "failed", "RuntimeError"),
            ("snooze", "snoozed", "Snooze"),
            ("snooze", "completed", "NoneType"),
        ]
    )
    assert order[:2] == ["first", "second"]
    node.store.on_job_done.unbind("first", "second")
