"""Named queues, on SQLite and PostgreSQL: each queue has its own worker slots in a
process (a slow or stuck queue never takes another's), a global limit caps a queue's
running jobs across all processes, a paused queue is claimed by no process, a topic's
handler gives its jobs a default queue, priorities order the jobs within a queue, and
workers report the pending topics that no running worker handles.

The multi-process tests run ``tests/apps/jobs_worker_app.py worker`` subprocesses
(``fleet_support``), configured through ``PB_JOBS_QUEUES`` / ``PB_JOBS_QUEUE_LIMITS``.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet_support import (
    READY_LOG,
    Fleet,
    assert_exactly_once,
    enqueuer,
    invocations_of,
    status_counts,
)
from jobs_support import Harness, ManualClock, Recorder, harness_fixture, wait_until
from pocketjobs import App
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import driver_for
from pocketjobs.plugins.jobs.drivers.portable import PortableSQLDriver
from pocketjobs.plugins.jobs.job import QueueInfo, uuid7
from pocketjobs.plugins.jobs.limits import MAX_QUEUE_LENGTH

harness = harness_fixture

ORPHAN_WARNING = "have no handler in any running worker"


def completed_ids(store: jobs.JobStore, ids: list[str]) -> bool:
    return all(store.get(job_id).status == "completed" for job_id in ids)


def statuses(store: jobs.JobStore, ids: list[str]) -> list[str]:
    return sorted(store.get(job_id).status for job_id in ids)


# -- one process: slots per queue -----------------------------------------------------------


def test_a_blocked_queue_does_not_hold_up_another(harness: Harness) -> None:
    gate = harness.gate()
    slow, fast = Recorder(), Recorder()

    def block(job: jobs.Job) -> None:
        with slow.running(job):
            gate.wait(30)

    node = harness.node(
        queues={"slow": 2, "fast": 2}, handlers={"block": block, "quick": fast.record}
    )
    stuck = [node.store.enqueue("block", n, queue="slow").id for n in range(4)]
    wait_until(lambda: slow.active == 2, what="both slots of the slow queue to be blocked")
    quick = [job.id for job in node.store.enqueue_many("quick", list(range(20)), queue="fast")]
    wait_until(
        lambda: completed_ids(node.store, quick),
        what="the fast queue's jobs, while slow is blocked",
    )

    assert fast.count() == 20
    assert slow.active == 2
    assert slow.count() == 2  # the other two wait for a slow slot, not for a fast one
    # Blocked handlers are slow ones: none of their queue's jobs is claimed ahead.
    assert statuses(node.store, stuck) == ["pending", "pending", "processing", "processing"]
    gate.set()
    wait_until(lambda: completed_ids(node.store, stuck), what="the slow jobs once released")
    assert slow.max_active == 2


def test_each_queue_runs_at_most_its_slots_and_others_not_at_all(harness: Harness) -> None:
    slots = {"wide": 3, "narrow": 1, "capped": 3}
    limits = {"capped": 2}  # a global limit below the slots binds in one process too
    peak = {"wide": 3, "narrow": 1, "capped": 2}
    recorders = {queue: Recorder() for queue in (*slots, "elsewhere")}

    def handle(job: jobs.Job) -> None:
        rec = recorders[job.queue]
        with rec.running(job):
            if rec.count() <= peak.get(job.queue, 0):
                # The first wave of a queue holds on until it runs as many jobs as it may
                # (5 s at most): a queue given fewer slots than it should have shows it.
                deadline = time.monotonic() + 5
                while rec.active < peak[job.queue] and time.monotonic() < deadline:
                    time.sleep(0.005)
            time.sleep(0.005)

    node = harness.node(queues=slots, queue_limits=limits, auto_start=False, handlers={"t": handle})
    counts = {"wide": 15, "narrow": 5, "capped": 8, "elsewhere": 3}
    enqueued = {
        queue: [job.id for job in node.store.enqueue_many("t", list(range(n)), queue=queue)]
        for queue, n in counts.items()
    }
    node.store.start()
    wait_until(lambda: node.store.stats().completed == 28, what="the jobs of the three queues")
    node.wait_idle()

    assert {queue: rec.max_active for queue, rec in recorders.items()} == {**peak, "elsewhere": 0}
    assert {queue: rec.count() for queue, rec in recorders.items()} == {**counts, "elsewhere": 0}
    assert statuses(node.store, enqueued["elsewhere"]) == ["pending"] * 3
    assert {node.store.get(job_id).queue for job_id in enqueued["narrow"]} == {"narrow"}
    assert node.store.queues() == [
        QueueInfo("capped", False, 0, 0, 3, 2),
        QueueInfo("elsewhere", False, 3, 0, 0, None),
        QueueInfo("narrow", False, 0, 0, 1, None),
        QueueInfo("wide", False, 0, 0, 3, None),
    ]


# -- several processes: global limit, pause ------------------------------------------------


@pytest.mark.slow
def test_a_global_limit_holds_across_three_worker_processes(
    data_dir: Path, db_url: str | None
) -> None:
    total = 30
    env = {
        "PB_JOBS_QUEUES": "mail:4",
        "PB_JOBS_QUEUE_LIMITS": "mail:3",
        "PB_JOBS_POLL_INTERVAL": "0.2s",
    }
    with (
        enqueuer(data_dir, db_url) as (app, store),
        Fleet(data_dir, db_url, env) as fleet,
    ):
        workers = [fleet.start(ready=False) for _ in range(3)]
        for worker in workers:
            worker.wait_for_log(READY_LOG, timeout=30)
        store.enqueue_many("ledger", [{"n": n, "seconds": 0.2} for n in range(total)], queue="mail")
        wait_until(
            lambda: status_counts(app).get("completed", 0) == total, 60, f"{total} completed jobs"
        )

        pids = assert_exactly_once(app, total)
        counts = [int(n) for (n,) in app.db.fetch_tuples("SELECT running FROM ledger_seen")]
        assert len(counts) == total
        # 3 processes with 4 slots each could run 12 at once: the limit alone says 3.
        assert max(counts) <= 3, f"more than 3 mail jobs ran at once: {sorted(counts)}"
        assert max(counts) == 3, f"never 3 at once (the test proves nothing): {sorted(counts)}"
        assert app.db.fetch_value("SELECT COUNT(*) FROM ledger_running") == 0
        print(f"\nmail jobs per worker pid: {_per_pid(app)}")
        assert pids <= {worker.pid for worker in workers}
        for worker in workers:
            worker.stop_cleanly()


def _per_pid(app: App) -> dict[int, int]:
    rows = app.db.fetch_tuples("SELECT pid, COUNT(*) FROM invocations GROUP BY pid")
    return {int(pid): int(count) for pid, count in rows}


@pytest.mark.slow
def test_a_paused_queue_is_claimed_by_no_process_until_resumed(
    data_dir: Path, db_url: str | None
) -> None:
    env = {"PB_JOBS_QUEUES": "default:2,mail:2", "PB_JOBS_POLL_INTERVAL": "0.2s"}
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url, env) as fleet:
        worker = fleet.start()
        running = store.enqueue("slow", {"seconds": 1.0}, queue="mail")
        wait_until(lambda: invocations_of(app, running.id), 20, "the mail job to start")
        store.pause_queue("mail")
        assert {q.name: q.paused for q in store.queues()} == {"default": False, "mail": True}

        held = [job.id for job in store.enqueue_many("record", [1, 2, 3], queue="mail")]
        other = [job.id for job in store.enqueue_many("record", [1, 2, 3])]
        wait_until(lambda: completed_ids(store, other), 20, "the default queue's jobs")
        # This process runs no worker: it knows from the database who handles what.
        assert store.stats().orphaned_topics == {}
        # Bounded on purpose: several poll intervals (0.2 s) and wake-ups pass meanwhile.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert statuses(store, held) == ["pending"] * 3, "a job of a paused queue ran"
            time.sleep(0.05)
        wait_until(lambda: completed_ids(store, [running.id]), 20, "the job running at pause")
        assert statuses(store, held) == ["pending"] * 3
        assert not any(invocations_of(app, job_id) for job_id in held)

        store.resume_queue("mail")
        wait_until(lambda: completed_ids(store, held), 20, "the mail jobs after resume")
        assert {q.name: q.paused for q in store.queues()} == {"default": False, "mail": False}
        assert assert_exactly_once(app, 7) == {worker.pid}
        worker.stop_cleanly()


# -- queue options ---------------------------------------------------------------------------


def test_a_topic_s_handler_gives_its_jobs_a_default_queue(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    @node.store.handler("mailer", queue="mail")
    def mailer(job: jobs.Job) -> None:
        pass

    store = node.store
    by_default = store.enqueue("mailer")
    assert by_default.queue == "mail"
    assert store.get(by_default.id).queue == "mail"
    overridden = store.enqueue("mailer", queue="default")
    assert overridden.queue == "default"
    assert store.get(overridden.id).queue == "default"
    batch = store.enqueue_many("mailer", [1, 2])
    assert [store.get(job.id).queue for job in batch] == ["mail", "mail"]
    elsewhere = store.enqueue_many("mailer", [1], queue="bulk")
    assert store.get(elsewhere[0].id).queue == "bulk"
    unhandled = store.enqueue("other")
    assert store.get(unhandled.id).queue == "default"
    assert [(q.name, q.pending) for q in store.queues()] == [
        ("bulk", 1),
        ("default", 2),
        ("mail", 3),
    ]


BAD_QUEUES = [
    "", "x" * (MAX_QUEUE_LENGTH + 1), "mail queue", "mail/x", "a:b", "a,b", "ü", "mail\n", 7,
]  # fmt: skip


@pytest.mark.parametrize("queue", BAD_QUEUES)
def test_a_bad_queue_name_is_refused_and_writes_nothing(harness: Harness, queue: Any) -> None:
    node = harness.node(auto_start=False)
    store = node.store
    attempts = [
        lambda: store.enqueue("t", queue=queue),
        lambda: store.enqueue_many("t", [1, 2], queue=queue),
        lambda: store.register("t", lambda job: None, queue=queue),
        lambda: store.pause_queue(queue),
        lambda: store.resume_queue(queue),
    ]
    for attempt in attempts:
        with pytest.raises(jobs.InvalidJobOptions) as raised:
            attempt()
        assert raised.value.field == "queue"
    assert store.stats().total == 0
    assert store.topics() == []
    assert node.app.db.fetch_value("SELECT COUNT(*) FROM _jobs_queues") == 0
    longest = "x" * MAX_QUEUE_LENGTH
    assert store.enqueue("t", queue=longest).queue == longest


def test_priorities_order_the_jobs_of_a_queue_while_another_queue_runs(
    harness: Harness,
) -> None:
    rec = Recorder()
    node = harness.node(
        queues={"default": 1, "side": 1}, auto_start=False, handlers={"t": rec.record}
    )
    now = now_utc()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    names: dict[str, str] = {}
    # (name, priority, seconds before now it became due); a/d and b/f tie on run_at.
    for name, priority, ago in [
        ("a", 5, 10), ("b", 0, 1), ("c", 0, 5), ("d", 5, 10),
        ("e", 9, 100), ("f", 0, 1), ("g", 5, 20),
    ]:  # fmt: skip
        at = now - timedelta(seconds=ago)
        names[node.store.enqueue("t", name, priority=priority, run_at=at).id] = name
    side = {node.store.enqueue("t", n, queue="side", priority=n % 2).id for n in range(6)}
    node.store.start()
    wait_until(lambda: rec.count() == 13, what="all jobs of both queues")
    order = [names[call.job_id] for call in rec.calls if call.job_id in names]
    assert order == ["c", "b", "f", "g", "a", "d", "e"]
    side_order = [node.store.get(call.job_id).payload for call in rec.calls if call.job_id in side]
    assert side_order == [0, 2, 4, 1, 3, 5]


# -- presence: orphaned topics ---------------------------------------------------------------


def test_pending_topics_no_running_worker_handles_are_reported_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketjobs")
    clock = ManualClock()
    node = harness.node(clock=clock, auto_start=False, handlers={"handled": lambda job: None})
    store = node.store
    store.enqueue("handled", delay=3600)  # pending, not due: it stays
    store.enqueue_many("orphan", [1, 2])
    # No worker runs yet: every pending topic is unhandled.
    assert store.stats().orphaned_topics == {"handled": 1, "orphan": 2}

    def warnings(topic: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if ORPHAN_WARNING in r.getMessage() and f"topic {topic!r}" in r.getMessage()
        ]

    store.start()
    wait_until(lambda: store.stats().orphaned_topics == {"orphan": 2}, what="the worker's presence")
    wait_until(lambda: warnings("orphan"), what="the warning about 'orphan'")
    assert warnings("handled") == []
    assert "2 pending job(s)" in warnings("orphan")[0]

    store.enqueue("orphan2")
    clock.advance(11)  # past the next announcement (every 10 s)
    wait_until(lambda: warnings("orphan2"), what="the next announcement")
    assert len(warnings("orphan")) == 1, "the same orphaned topic was reported twice"
    assert store.stats().orphaned_topics == {"orphan": 2, "orphan2": 1}

    store.stop()  # its row is gone: nobody handles anything any more
    assert node.app.db.fetch_value("SELECT COUNT(*) FROM _jobs_workers") == 0
    assert store.stats().orphaned_topics == {"handled": 1, "orphan": 2, "orphan2": 1}


# -- migration -------------------------------------------------------------------------------


def test_a_database_at_step_5_upgrades_with_its_jobs_in_the_default_queue(
    app: App, harness: Harness
) -> None:
    driver = driver_for(app.db)
    assert isinstance(driver, PortableSQLDriver)
    steps = driver.migrations()
    assert [step.name for step in steps[4:6]] == [
        "jobs_0005_priority_unique_key",
        "jobs_0006_queues",
    ]
    app.apply_migrations(steps[:5])
    now = now_utc()
    rows = {
        "due": ("pending", now - timedelta(seconds=1), 0, None),
        "keyed": ("pending", now - timedelta(seconds=2), 3, "k"),
        "later": ("pending", now + timedelta(hours=1), 0, None),
        "failed": ("failed", now - timedelta(seconds=3), 0, None),
    }
    ids = {name: uuid7() for name in rows}
    for name, (status, run_at, priority, key) in rows.items():
        app.db.execute(
            "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,"
            " created, updated, priority, unique_key) VALUES (?, 'old', ?, ?, ?, 0, 0, ?, ?, ?, ?)",
            (ids[name], f'{{"name": "{name}"}}', status, driver.encode_time(run_at),
             *[driver.encode_time(now)] * 2, priority, key),
        )  # fmt: skip

    rec = Recorder()
    # One slot: the old jobs start in their claim order. Bootstrapping applies step 6.
    node = harness.node(workers=1, auto_start=False, handlers={"old": rec.record})
    store = node.store
    assert (
        app.db.fetch_value("SELECT COUNT(*) FROM _migrations WHERE name = 'jobs_0006_queues'") == 1
    )
    if app.is_postgres():  # the step-5 claim function was replaced, not overloaded
        assert app.db.fetch_value("SELECT COUNT(*) FROM pg_proc WHERE proname = '_jobs_claim'") == 1
    assert {store.get(job_id).queue for job_id in ids.values()} == {"default"}
    assert store.queues() == [QueueInfo("default", False, 3, 0, 1, None)]

    store.start()
    wait_until(lambda: completed_ids(store, [ids["due"], ids["keyed"]]), what="the old jobs")
    store.requeue(ids["failed"])
    wait_until(lambda: completed_ids(store, [ids["failed"]]), what="the requeued old job")
    assert [call.job_id for call in rec.calls] == [ids["due"], ids["keyed"], ids["failed"]]
    assert store.get(ids["later"]).status == "pending"
    assert store.get(ids["keyed"]).unique_key == "k"
    assert store.enqueue("old", unique_key="k").duplicate is False  # its key is free again
    mail = store.enqueue("old", queue="mail")
    assert store.get(mail.id).queue == "mail"
