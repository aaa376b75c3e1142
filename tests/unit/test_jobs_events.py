"""The job events' queue and thread (``events.py``): every event reaches its hook, in
order, off the emitting thread; ``flush`` waits for the ones queued before it."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from pocketjobs.plugins.jobs.events import JobDoneEvent, JobEvents, JobStartEvent
from pocketjobs.plugins.jobs.job import Job

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def job(number: int) -> Job:
    return Job(f"job-{number}", "t", number, "processing", NOW, None, 0, 3, None, NOW, NOW)


def test_flush_without_any_event_returns_at_once() -> None:
    assert JobEvents(logging.getLogger("test")).flush(0) is True


def test_every_event_reaches_its_hook_in_order_off_the_emitting_threads() -> None:
    events = JobEvents(logging.getLogger("test"))
    seen: list[tuple[str, int, str]] = []

    @events.on_job_start.handler()
    def started(e: JobStartEvent) -> None:
        seen.append(("start", e.job.payload, threading.current_thread().name))
        e.next()

    @events.on_job_done.handler()
    def done(e: JobDoneEvent) -> None:
        seen.append(("done", e.job.payload, threading.current_thread().name))
        e.next()

    def emit(first: int) -> None:
        for number in range(first, first + 500):
            events.emit(JobStartEvent(job(number), NOW, 0.0))
            events.emit(JobDoneEvent(job(number), "completed", 0.0))

    emitters = [threading.Thread(target=emit, args=(n * 1000,)) for n in range(4)]
    for thread in emitters:
        thread.start()
    for thread in emitters:
        thread.join()
    assert events.flush(10)
    assert len(seen) == 4 * 500 * 2
    assert {name for *_, name in seen} == {"pocketjobs-events"}
    for first in range(0, 4000, 1000):  # each emitter's events in its order
        mine = [(kind, number) for kind, number, _ in seen if first <= number < first + 500]
        assert mine == [
            (kind, number) for number in range(first, first + 500) for kind in ("start", "done")
        ]
    # The thread sleeps once idle, and wakes for the next event.
    events.emit(JobDoneEvent(job(9999), "failed", 0.0))
    assert events.flush(10)
    assert seen[-1][:2] == ("done", 9999)


def test_a_failing_hook_is_logged_and_the_next_events_still_come(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = JobEvents(logging.getLogger("test.events"))
    seen: list[int] = []

    @events.on_job_done.handler()
    def done(e: JobDoneEvent) -> None:
        if e.job.payload == 1:
            raise ValueError("broken hook")
        seen.append(e.job.payload)
        e.next()

    for number in range(3):
        events.emit(JobDoneEvent(job(number), "completed", 0.0))
    assert events.flush(10)
    assert seen == [0, 2]
    assert "a done hook failed for job job-1" in caplog.text
