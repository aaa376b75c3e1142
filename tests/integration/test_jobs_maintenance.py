"""Heartbeat and rescue (maintenance.py), driven by a clock the test moves: no sleeping
through lock durations. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

from jobs_support import Harness, ManualClock, Recorder, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture
LOCK = timedelta(minutes=1)


def test_heartbeat_keeps_a_long_job_with_its_worker(harness: Harness) -> None:
    clock = ManualClock()
    rec, rec_b = Recorder(), Recorder()
    gate = harness.gate()

    def slow(job: jobs.Job) -> None:
        rec.record(job)
        gate.wait(30)

    node_a = harness.node(lock_duration=LOCK, clock=clock, handlers={"slow": slow})
    job = node_a.store.enqueue("slow", max_retries=3)
    wait_until(lambda: rec.count(job.id) == 1, what="A to start the job")
    node_b = harness.node(
        lock_duration=LOCK, clock=clock, handlers={"slow": lambda j: rec_b.record(j)}
    )
    # Four lock durations pass, half a lock at a time: each step, A's heartbeat moves the
    # lock past the new now, and B (rescuing every poll interval) finds nothing expired.
    for _ in range(8):
        now = clock.advance(LOCK / 2)
        wait_until(
            lambda now=now: (
                (until := node_a.locked_until(job.id)) is not None and until > now + LOCK / 2
            ),
            what="the heartbeat to extend the lock",
        )
    gate.set()
    done = node_a.wait_status(job.id, "completed")
    assert rec.count(job.id) == 1
    assert rec_b.count(job.id) == 0, "B took over a job whose worker was alive"
    assert done.retries == 0
    assert done.last_error is None
    assert node_b.store.is_running()


def test_an_expired_lock_is_rescued_when_the_clock_says_so(harness: Harness) -> None:
    clock = ManualClock()
    rec = Recorder()
    node = harness.node(
        lock_duration=LOCK, clock=clock, auto_start=False, handlers={"t": rec.record}
    )
    job = node.store.enqueue("t", max_retries=2)
    node.app.db.execute(
        "UPDATE _jobs SET status = 'processing', locked_by = 'dead', locked_until = ? WHERE id = ?",
        (node.db_time(clock() + LOCK), job.id),
    )
    node.store.start()
    # The lock expires a minute from now by the test's clock: only when the clock has
    # moved past it is the job rescued (the real clock would take that minute).
    clock.advance(LOCK + LOCK / 2)
    done = node.wait_status(job.id, "completed")
    assert done.retries == 1
    assert done.last_error is not None
    assert "lock expired" in done.last_error
    assert rec.count(job.id) == 1


def test_the_heartbeat_moves_the_lock_to_now_plus_the_lock_duration(harness: Harness) -> None:
    clock = ManualClock()
    gate = harness.gate()
    started = threading.Event()

    def slow(job: jobs.Job) -> None:
        started.set()
        gate.wait(30)

    node = harness.node(lock_duration=LOCK, clock=clock, handlers={"slow": slow})
    job = node.store.enqueue("slow")
    assert started.wait(10)
    assert node.locked_until(job.id) == clock() + LOCK
    now = clock.advance(LOCK / 3)
    wait_until(lambda: node.locked_until(job.id) == now + LOCK, what="the heartbeat")
    gate.set()
    node.wait_status(job.id, "completed")
