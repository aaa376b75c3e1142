"""Priorities (0 first, 9 last), on SQLite and PostgreSQL: due jobs are claimed in
(priority, run_at, id) order, strictly, also when retried."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from jobs_support import Harness, Recorder, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture


def test_due_jobs_run_in_priority_order(harness: Harness) -> None:
    rec = Recorder()
    node = harness.node(workers=1, auto_start=False, handlers={"t": rec.record})
    names: dict[str, str] = {}
    for name, priority in [("a", 9), ("b", 5), ("c", 0), ("d", 0), ("e", 5), ("f", None)]:
        names[node.store.enqueue("t", name, priority=priority).id] = name
    node.store.start()
    wait_until(lambda: rec.count() == 6, what="all six jobs")
    assert [names[call.job_id] for call in rec.calls] == ["c", "d", "f", "b", "e", "a"]
    assert node.store.get(next(i for i, n in names.items() if n == "a")).priority == 9


def test_a_stream_of_priority_0_jobs_is_served_while_a_priority_9_job_waits(
    harness: Harness,
) -> None:
    # The contract (documented): priorities are strict. A low-priority job waits as long
    # as higher-priority jobs are due, even ones enqueued after it.
    order: list[Any] = []
    lock = threading.Lock()

    def handle(job: jobs.Job) -> None:
        with lock:
            order.append(job.payload)
        if isinstance(job.payload, int) and job.payload < 5:
            node.store.enqueue("t", job.payload + 1, priority=0)
        time.sleep(0.02)  # longer than a claim: no job is claimed ahead of its turn

    node = harness.node(workers=1, auto_start=False, handlers={"t": handle})
    node.store.enqueue("t", "low", priority=9)
    node.store.enqueue("t", 0, priority=0)
    node.store.start()
    wait_until(lambda: len(order) == 7, what="the stream and the low-priority job")
    assert order == [0, 1, 2, 3, 4, 5, "low"]


def test_a_retried_job_keeps_its_priority(harness: Harness) -> None:
    attempts: list[int] = []

    def flaky(job: jobs.Job) -> None:
        attempts.append(job.priority)
        if job.retries == 0:
            raise RuntimeError("first attempt fails")

    node = harness.node(handlers={"t": flaky})
    job = node.store.enqueue("t", priority=3, max_retries=2)
    done = node.wait_status(job.id, "completed")
    assert done.retries == 1
    assert done.priority == 3
    assert attempts == [3, 3]


@pytest.mark.parametrize("priority", [-1, 10, True, "1", 1.5])
def test_an_invalid_priority_is_refused(harness: Harness, priority: Any) -> None:
    node = harness.node(auto_start=False)
    with pytest.raises(jobs.InvalidJobOptions) as raised:
        node.store.enqueue("t", priority=priority)
    assert raised.value.field == "priority"
    with pytest.raises(jobs.InvalidJobOptions):
        node.store.enqueue_many("t", [1, 2], priority=priority)
    assert node.store.stats().total == 0
