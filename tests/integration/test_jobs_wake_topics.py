"""Wake-ups name their topics: on PostgreSQL an enqueue's notification carries the new
jobs' topics (``wake_payload``), so an idle dispatcher that handles none of them does not
wake for a claim that could find nothing; one that handles them wakes as before.

Two apps on one real PostgreSQL database, each with its own LISTEN connection. (On SQLite a
dispatcher notices every commit by the database's data version, which names nothing.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from jobs_support import Harness, harness_fixture, wait_until
from pocketjobs.core.times import format_time
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import MAX_WAKE_TOPICS, NOTIFY_CHANNEL, NewJob
from pocketjobs.plugins.jobs.job import uuid7

harness = harness_fixture
pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


def test_an_idle_dispatcher_sleeps_through_other_topics_and_wakes_for_its_own(
    harness: Harness,
) -> None:
    ran = threading.Event()

    def mine(job: jobs.Job) -> None:
        ran.set()

    worker = harness.node(handlers={"wake:mine": mine}, poll_interval=60)
    producer = harness.node(auto_start=False)
    worker.wait_idle()
    dispatcher = worker.store._dispatcher
    assert dispatcher is not None
    time.sleep(0.3)  # the rounds of start-up are over
    before = dispatcher.claims

    for n in range(30):  # another process's enqueues, one by one and in one batch
        producer.store.enqueue("wake:other", {"n": n})
    producer.store.enqueue_many("wake:other", [{"n": n} for n in range(30)])

    async def batch() -> None:
        await asyncio.gather(*(producer.store.aenqueue("wake:other", n) for n in range(30)))

    asyncio.run(batch())
    worker.store.enqueue("wake:other", None)  # and its own process's
    time.sleep(0.5)  # notifications are delivered within milliseconds
    assert dispatcher.claims == before, "woken for topics it does not handle"

    started = time.monotonic()
    producer.store.enqueue("wake:mine", None)
    assert ran.wait(5), "not woken for its own topic"
    assert time.monotonic() - started < 1.0  # by the notification, not the 60 s poll
    wait_until(lambda: dispatcher.claims > before, 5, "a claim")


def test_a_statement_of_many_topics_names_none_and_wakes_everyone(harness: Harness) -> None:
    ran = threading.Event()
    worker = harness.node(handlers={"wake:mine": lambda job: ran.set()}, poll_interval=60)
    producer = harness.node(auto_start=False)
    worker.wait_idle()
    listener = producer.app.db.listen(NOTIFY_CHANNEL)
    assert listener is not None
    try:
        now = producer.store.now()
        topics = [f"wake:many:{n}" for n in range(MAX_WAKE_TOPICS)] + ["wake:mine"]
        rows = [NewJob(uuid7(), topic, "null", now, 0, now) for topic in topics]
        producer.store._driver.jobs_insert(producer.app.db, rows, wake_at=now)
        # More topics in one statement than a payload names: it names none ...
        assert listener.wait(5) == [format_time(now)]
    finally:
        listener.close()
    assert ran.wait(5)  # ... so every dispatcher wakes, and this one finds its job
