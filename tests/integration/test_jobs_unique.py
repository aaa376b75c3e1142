"""Unique jobs, on SQLite and PostgreSQL: while a job of a topic with a unique key is
pending or processing, enqueueing that topic and key returns it (``duplicate=True``)
instead of inserting another. The database's partial unique index decides, so it holds
under concurrency (threads, processes) and with transactions."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobs_support import Harness, harness_fixture, wait_until
from pocketjobs.plugins import jobs
from support import REPO_ROOT, child_env

harness = harness_fixture
ENQUEUER = REPO_ROOT / "tests" / "apps" / "unique_enqueuer.py"


def rows(node: object, key: str) -> int:
    return int(
        node.app.db.fetch_value(  # type: ignore[attr-defined]
            "SELECT COUNT(*) FROM _jobs WHERE unique_key = ?", (key,)
        )
    )


def test_a_taken_key_returns_the_job_that_holds_it(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    first = node.store.enqueue("report", {"n": 1}, unique_key="report:42")
    assert not first.duplicate
    assert first.unique_key == "report:42"
    again = node.store.enqueue("report", {"n": 2}, unique_key="report:42")
    assert again.duplicate
    assert again.id == first.id
    assert again.payload == {"n": 1}  # the job that exists, not the one asked for
    assert rows(node, "report:42") == 1
    other_topic = node.store.enqueue("invoice", unique_key="report:42")
    assert not other_topic.duplicate
    assert node.store.stats().total == 2


def test_a_key_is_free_again_once_its_job_finished(harness: Harness) -> None:
    node = harness.node(handlers={"report": lambda job: None})
    first = node.store.enqueue("report", unique_key="k")
    node.wait_status(first.id, "completed")
    second = node.store.enqueue("report", unique_key="k")
    assert not second.duplicate
    assert second.id != first.id


def test_a_failed_job_cannot_be_requeued_while_its_key_is_taken(harness: Harness) -> None:
    def fail(job: jobs.Job) -> None:
        raise RuntimeError("no")

    node = harness.node(handlers={"report": fail})
    failed = node.store.enqueue("report", unique_key="k", max_retries=0)
    node.wait_status(failed.id, "failed")
    node.store.stop()
    holder = node.store.enqueue("report", unique_key="k")
    assert not holder.duplicate
    with pytest.raises(jobs.JobCannotRequeue, match="unique key"):
        node.store.requeue(failed.id)
    assert node.store.get(failed.id).status == "failed"


def test_twenty_threads_enqueueing_one_key_create_one_job(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    barrier = threading.Barrier(20)

    def enqueue(n: int) -> str:
        barrier.wait(10)
        return node.store.enqueue("report", {"n": n}, unique_key="once").id

    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(enqueue, range(20)))
    assert len(ids) == 1
    assert rows(node, "once") == 1


def test_three_processes_enqueueing_one_key_create_one_job(
    harness: Harness, data_dir: Path, db_url: str | None
) -> None:
    node = harness.node(auto_start=False)  # the schema exists before the processes start
    start_at = time.time() + 3
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ENQUEUER),
                str(data_dir),
                db_url or "-",
                "shared",
                "20",
                str(start_at),
            ],
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    ids = {line for out, _ in outputs for line in out.split()}
    assert len(ids) == 1, ids
    assert rows(node, "shared") == 1


def test_a_rolled_back_transaction_leaves_the_key_free(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    enqueued: list[jobs.Job] = []

    class Rollback(Exception):
        pass

    def enqueue_then_roll_back() -> None:
        with node.app.db.transaction() as tx:
            enqueued.append(node.store.enqueue("report", unique_key="tx", tx=tx))
            raise Rollback

    with pytest.raises(Rollback):
        enqueue_then_roll_back()
    inside = enqueued[0]
    assert not inside.duplicate
    after = node.store.enqueue("report", unique_key="tx")
    assert not after.duplicate
    assert after.id != inside.id
    assert rows(node, "tx") == 1


def test_an_enqueue_waits_for_a_transaction_holding_the_key(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    held = threading.Event()
    release = harness.gate()
    holder_ids: list[str] = []

    def hold() -> None:
        with node.app.db.transaction() as tx:
            holder_ids.append(node.store.enqueue("report", unique_key="held", tx=tx).id)
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(node.store.enqueue, "report", unique_key="held")
        time.sleep(0.2)  # not an assertion: give the second enqueue time to block
        assert not waiting.done(), "the second enqueue did not wait for the first"
        release.set()
        result = waiting.result(timeout=10)
    thread.join(10)
    assert result.duplicate
    assert result.id == holder_ids[0]
    assert rows(node, "held") == 1


def test_enqueue_many_honours_keys(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    existing = node.store.enqueue("report", "old", unique_key="b")
    batch = node.store.enqueue_many(
        "report", ["a1", "b1", "a2", "none"], unique_keys=["a", "b", "a", None]
    )
    assert [job.duplicate for job in batch] == [False, True, True, False]
    assert batch[1].id == existing.id
    assert batch[2].id == batch[0].id
    assert node.store.stats().total == 3
    with pytest.raises(jobs.InvalidJobOptions) as raised:
        node.store.enqueue_many("report", [1, 2], unique_keys=["x"])
    assert raised.value.field == "unique_key"


@pytest.mark.parametrize("key", ["", "x" * 256, "\ud800", 7, "a\x00b"])
def test_an_invalid_key_is_refused(harness: Harness, key: object) -> None:
    node = harness.node(auto_start=False)
    with pytest.raises(jobs.InvalidJobOptions) as raised:
        node.store.enqueue("report", unique_key=key)  # type: ignore[arg-type]
    assert raised.value.field == "unique_key"
    assert node.store.stats().total == 0


def test_a_duplicate_does_not_wake_or_run_anything_twice(harness: Harness) -> None:
    calls: list[str] = []
    gate = harness.gate()

    def handle(job: jobs.Job) -> None:
        calls.append(job.id)
        gate.wait(10)

    node = harness.node(handlers={"report": handle})
    first = node.store.enqueue("report", unique_key="run")
    wait_until(lambda: calls, what="the job to start")
    assert node.store.enqueue("report", unique_key="run").duplicate  # processing holds it
    gate.set()
    node.wait_status(first.id, "completed")
    assert calls == [first.id]
