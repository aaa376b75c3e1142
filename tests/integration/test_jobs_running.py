"""Worker slots are tracked per claim (running.py), on SQLite and PostgreSQL.

A worker paused past its lock (SIGSTOP, a long GC pause) has its job rescued by a
dispatcher and may then claim that same job again while its first, stale run is still
going. Both runs must give their slot back when they end; a slot tracked per job id is
lost for good (the dispatcher then runs one job at a time, and an idle stop waits out the
whole shutdown timeout).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from jobs_support import Harness, ManualClock, Recorder, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture
SHUTDOWN_TIMEOUT = 30.0


def test_a_stale_run_of_a_reclaimed_job_gives_its_slot_back(harness: Harness) -> None:
    clock = ManualClock()
    rec = Recorder()
    gates: dict[int, threading.Event] = {}
    calls = 0
    lock = threading.Lock()

    def blocking(job: jobs.Job) -> None:
        nonlocal calls
        with lock:
            calls += 1
            gate = gates.setdefault(calls, harness.gate())
        with rec.running(job):
            gate.wait(30)

    node = harness.node(
        workers=2,
        lock_duration=timedelta(minutes=1),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        clock=clock,
        handlers={"t": blocking},
    )
    job = node.store.enqueue("t", max_retries=3)
    wait_until(lambda: rec.count(job.id) == 1, what="the first run")
    first_token = node.locked_by(job.id)

    # The worker "sleeps" past its lock: the lock expires by the clock before any
    # heartbeat (due every 20 s of that clock), the job is rescued and, a slot being
    # free, claimed again by the same dispatcher under a new token.
    node.expire_lock(job.id, now=clock())
    clock.advance(1)
    wait_until(lambda: rec.count(job.id) == 2, what="the same job to be claimed again")
    assert node.locked_by(job.id) not in (None, first_token)
    assert rec.active == 2

    gates[1].set()  # the stale run ends: its outcome is fenced out, its slot comes back
    wait_until(lambda: rec.active == 1, what="the stale run to end")
    gates[2].set()
    done = node.wait_status(job.id, "completed")
    assert done.retries == 1
    dispatcher = node.store._dispatcher
    assert dispatcher is not None
    wait_until(lambda: dispatcher.running_jobs() == 0, what="every slot to be free")

    # Both slots work: two new blocking jobs run at the same time.
    gates[3], gates[4] = harness.gate(), harness.gate()
    calls_before = rec.count()
    node.store.enqueue_many("t", [1, 2])
    wait_until(lambda: rec.count() == calls_before + 2, what="two jobs at once")
    assert rec.active == 2
    gates[3].set()
    gates[4].set()
    wait_until(lambda: node.store.stats().completed == 3, what="all completed")

    # Idle: stopping does not wait for a slot that is never given back.
    started = time.monotonic()
    node.store.stop()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT / 3
    assert not node.store.is_running()
