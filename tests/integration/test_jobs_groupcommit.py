"""Group commit, on SQLite and PostgreSQL: awaitable enqueues in flight together are
written in one statement and one commit (``groupcommit.py``), and each caller still gets
its own answer only once its row is committed.

Observed through the real database and the store's ``GroupCommit`` counters (batches
written, rows in them); nothing is replaced by a stand-in.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobs_support import Harness, harness_fixture
from pocketjobs.core import DatabaseError
from pocketjobs.plugins.jobs import InvalidTopic, Job

harness = harness_fixture
CALLERS = 300


def _count(node: object, where: str = "1 = 1", params: tuple[object, ...] = ()) -> int:
    sql = f"SELECT COUNT(*) FROM _jobs WHERE {where}"
    return int(node.app.db.fetch_value(sql, params))  # type: ignore[attr-defined]


def test_concurrent_enqueues_share_commits_and_each_is_stored_once(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    group = node.store._group_commit

    async def main() -> list[Job]:
        return await asyncio.gather(
            *(node.store.aenqueue("gc:many", {"n": n}, priority=n % 10) for n in range(CALLERS))
        )

    batches_before = group.batches
    jobs_returned = asyncio.run(main())
    batches = group.batches - batches_before
    assert 1 <= batches < CALLERS // 2, f"{CALLERS} enqueues took {batches} commits"
    assert [job.payload["n"] for job in jobs_returned] == list(range(CALLERS))
    assert len({job.id for job in jobs_returned}) == CALLERS
    assert _count(node, "topic = 'gc:many'") == CALLERS
    for job in jobs_returned[::37]:  # what each caller got is what was stored
        stored = node.store.get(job.id)
        assert (stored.payload, stored.priority, stored.status) == (
            job.payload, job.priority, "pending"
        )  # fmt: skip


def test_a_lone_enqueue_is_written_at_once(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    job = asyncio.run(node.store.aenqueue("gc:one", {"n": 1}))
    assert node.store.get(job.id).status == "pending"  # durable when aenqueue returned


def test_one_key_in_one_batch_gives_one_job(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    async def main() -> list[Job]:
        plain = [node.store.aenqueue("gc:key", {"plain": n}) for n in range(20)]
        keyed = [node.store.aenqueue("gc:key", {"n": n}, unique_key="k") for n in range(50)]
        return await asyncio.gather(*plain, *keyed)

    results = asyncio.run(main())
    keyed = results[20:]
    assert len({job.id for job in keyed}) == 1
    assert sum(not job.duplicate for job in keyed) == 1
    assert _count(node, "unique_key = 'k'") == 1
    assert _count(node, "topic = 'gc:key'") == 21  # the plain ones are all there


def test_bad_input_fails_its_caller_alone(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    async def main() -> list[Job | BaseException]:
        calls = [node.store.aenqueue("gc:mixed", {"n": n}) for n in range(30)]
        calls.insert(10, node.store.aenqueue("", {"bad": True}))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[10], InvalidTopic)
    assert all(isinstance(r, Job) for i, r in enumerate(results) if i != 10)
    assert _count(node, "topic = 'gc:mixed'") == 30


def test_a_failed_write_fails_every_caller_of_its_batch(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    node.store.enqueue("gc:warm", None)  # the table exists; now take the database away
    node.app.db.close()

    async def main() -> list[Job | BaseException]:
        calls = [node.store.aenqueue("gc:lost", {"n": n}) for n in range(40)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, DatabaseError) for r in results), results[:3]
    node.app.bootstrap()  # open it again: none of them was written
    assert _count(node, "topic = 'gc:lost'") == 0
    # The writer survived the failure and goes on writing.
    assert asyncio.run(node.store.aenqueue("gc:after", None)).status == "pending"
    assert _count(node, "topic = 'gc:after'") == 1


def test_callers_on_several_event_loops_and_a_cancelled_one(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    results: dict[int, list[Job]] = {}

    def loop_thread(index: int) -> None:
        async def main() -> list[Job]:
            # One caller gives up at once; the others are not disturbed by it.
            doomed = asyncio.ensure_future(node.store.aenqueue("gc:doomed", {"t": index}))
            await asyncio.sleep(0)
            doomed.cancel()
            calls = [node.store.aenqueue("gc:loops", {"t": index, "n": n}) for n in range(50)]
            return await asyncio.gather(*calls)

        results[index] = asyncio.run(main())

    threads = [threading.Thread(target=loop_thread, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for index, jobs_returned in results.items():
        assert [job.payload for job in jobs_returned] == [{"t": index, "n": n} for n in range(50)]
    assert _count(node, "topic = 'gc:loops'") == 200
    # A cancelled caller's job may or may not have been written (it was handed over).
    assert _count(node, "topic = 'gc:doomed'") <= 4


def test_enqueue_in_a_transaction_keeps_its_own_path(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    batches = node.store._group_commit.batches

    async def main() -> None:
        def write() -> None:
            with node.app.db.transaction() as tx:
                asyncio.run(node.store.aenqueue("gc:tx", None, tx=tx))
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await asyncio.to_thread(write)

    asyncio.run(main())
    assert node.store._group_commit.batches == batches
    assert _count(node, "topic = 'gc:tx'") == 0
