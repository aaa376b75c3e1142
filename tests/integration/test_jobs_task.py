"""The typed task API (task.py), on SQLite and PostgreSQL: ``@store.task`` returns an
object that runs the handler and enqueues its jobs; payloads may be dataclasses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from jobs_support import Harness, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture


@dataclass
class Email:
    to: str
    subject: str = "hello"


def test_a_task_enqueues_dataclass_payloads_and_runs_them(harness: Harness) -> None:
    received: list[Email] = []
    node = harness.node(auto_start=False)

    @node.store.task("email:send", priority=2, max_retries=4)
    def send_email(job: jobs.Job) -> None:
        received.append(job.unmarshal_payload(Email))

    assert isinstance(send_email, jobs.Task)
    job = send_email.enqueue(Email("a@example.com"), delay=0)
    assert job.topic == "email:send"
    assert job.payload == {"to": "a@example.com", "subject": "hello"}
    assert (job.priority, job.max_retries) == (2, 4)
    batch = send_email.enqueue_many([Email("b@example.com"), Email("c@example.com", "hi")])
    assert len(batch) == 2
    later = asyncio.run(send_email.aenqueue(Email("d@example.com"), priority=0))
    assert later.priority == 0
    node.store.start()
    wait_until(lambda: len(received) == 4, what="the four emails")
    assert sorted(email.to for email in received) == [
        "a@example.com", "b@example.com", "c@example.com", "d@example.com",
    ]  # fmt: skip
    assert Email("c@example.com", "hi") in received


def test_calling_a_task_calls_its_handler(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    @node.store.task("t")
    def double(job: jobs.Job) -> int:
        return int(job.payload) * 2

    job = node.store.enqueue("t", 21)
    assert double(job) == 42
    assert "t" in node.store.topics()
