"""The driver contract (``drivers/base.py``): one behavioural suite every driver passes.

Each test calls the driver's verbs directly, on a real SQLite file and on a real
PostgreSQL database (the ``app`` fixture, a bare app on which only the jobs schema is
applied), with an explicit ``now``: nothing sleeps and nothing reads the clock. Jobs reach
their states through the verbs themselves (claim, settle), never by writing ``_jobs``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pocketjobs import App
from pocketjobs.core import Database, IntegrityError, Queryable, Tx
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs import Job, JobFilter
from pocketjobs.plugins.jobs.drivers import (
    NOTIFY_CHANNEL,
    Claim,
    ClaimParams,
    Failure,
    JobsDriver,
    NewJob,
    Outcomes,
    QueueClaim,
    QueueCounts,
    QueueState,
    WorkerInfo,
    driver_for,
)
from pocketjobs.plugins.jobs.job import uuid7

POSTGRES_ONLY = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]

#: The suite's clock: every verb gets an explicit time around this instant.
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LOCK = timedelta(minutes=5)


@dataclass
class Queue:
    """The driver under test on its database, with shorthands for the verbs."""

    db: Database
    driver: JobsDriver
    #: The run_at of the next job :meth:`in_status` adds: earlier than any before it, so
    #: that it is the first one due.
    earliest: datetime = NOW - timedelta(hours=1)

    def new_job(
        self,
        topic: str = "t",
        payload: str = "null",
        *,
        run_at: datetime = NOW,
        max_retries: int = 3,
        priority: int = 0,
        queue: str = "default",
    ) -> NewJob:
        return NewJob(
            uuid7(), topic, payload, run_at, max_retries, NOW - SECOND, priority, None, queue
        )

    def add(self, topic: str = "t", payload: str = "null", **options: Any) -> NewJob:
        """Insert one pending job (created a second before ``NOW``)."""
        job = self.new_job(topic, payload, **options)
        self.driver.jobs_insert(self.db, [job], wake_at=job.run_at)
        return job

    def add_many(self, count: int, topic: str = "t", **options: Any) -> list[NewJob]:
        jobs = [self.new_job(topic, str(n), **options) for n in range(count)]
        self.driver.jobs_insert(self.db, jobs, wake_at=NOW)
        return jobs

    def get(self, job_id: str) -> Job:
        job = self.driver.jobs_get(self.db, job_id)
        assert job is not None, f"job {job_id} not found"
        return job

    def claim(
        self,
        topics: Sequence[str] = ("t",),
        limit: int = 10,
        *,
        now: datetime = NOW,
        token: str = "token",
        q: Queryable | None = None,
        queues: Sequence[QueueClaim] = (),
    ) -> list[Job]:
        params = ClaimParams(list(topics), limit, now, now + LOCK, token, tuple(queues))
        return self.driver.jobs_claim(self.db if q is None else q, params)

    def claim_one(self, job_id: str, topic: str = "t", token: str = "token") -> Claim:
        """Claim the only due job of ``topic``, which must be ``job_id``."""
        (job,) = self.claim([topic], 1, token=token)
        assert job.id == job_id
        return Claim(job_id, token)

    def settle(self, *, completed: Sequence[Claim] = (), failed: Sequence[Failure] = ()) -> int:
        return self.driver.jobs_settle(self.db, Outcomes(NOW + SECOND, completed, failed))

    def in_status(self, status: str, topic: str = "t") -> Job:
        """A job brought to ``status`` through the verbs (claimed first of its topic)."""
        self.earliest -= SECOND
        job = self.add(topic, run_at=self.earliest)
        if status != "pending":
            claim = self.claim_one(job.id, topic, token=f"{status}-{job.id}")
            if status == "completed":
                assert self.settle(completed=[claim]) == 1
            elif status == "failed":
                assert self.settle(failed=[Failure(claim, "no luck", None)]) == 1
        stored = self.get(job.id)
        assert stored.status == status
        return stored

    def locked_by(self, job_id: str) -> str | None:
        value: str | None = self.db.fetch_value(
            "SELECT locked_by FROM _jobs WHERE id = ?", (job_id,)
        )
        return value

    def ids(self, jobs: Sequence[Job | NewJob]) -> list[str]:
        return [job.id for job in jobs]


class _RollBack(Exception):
    pass


@contextmanager
def rolled_back(db: Database) -> Iterator[Tx]:
    """A transaction that is rolled back when the block ends."""
    try:
        with db.transaction() as tx:
            yield tx
            raise _RollBack
    except _RollBack:
        pass


@pytest.fixture
def queue(app: App) -> Queue:
    """The app's jobs driver with the ``_jobs`` schema applied (no plugin, no dispatcher)."""
    driver = driver_for(app.db)
    app.apply_migrations(driver.migrations())
    return Queue(app.db, driver)


# --------------------------------------------------------------------------- insert, get


def test_insert_one_then_get_returns_the_stored_job(queue: Queue) -> None:
    new = queue.add("mail", '{"to":"a@example.com"}', run_at=NOW + SECOND, max_retries=7)
    job = queue.get(new.id)
    assert job == Job(
        id=new.id,
        topic="mail",
        payload={"to": "a@example.com"},
        status="pending",
        run_at=NOW + SECOND,
        locked_until=None,
        retries=0,
        max_retries=7,
        last_error=None,
        created=NOW - SECOND,
        updated=NOW - SECOND,
    )
    assert queue.locked_by(new.id) is None


def test_get_of_an_unknown_id_is_none(queue: Queue) -> None:
    assert queue.driver.jobs_get(queue.db, uuid7()) is None


def test_insert_many_inserts_every_job(queue: Queue) -> None:
    jobs = queue.add_many(5, "batch", run_at=NOW + SECOND)
    for n, new in enumerate(jobs):
        job = queue.get(new.id)
        assert (job.topic, job.payload, job.status, job.run_at) == (
            "batch",
            n,
            "pending",
            NOW + SECOND,
        )
        assert (job.retries, job.max_retries, job.created) == (0, 3, NOW - SECOND)


@pytest.mark.parametrize("size", [1, 3])
def test_insert_is_all_or_nothing(queue: Queue, size: int) -> None:
    existing = queue.add()
    batch = [queue.new_job() for _ in range(size - 1)]
    batch.append(NewJob(existing.id, "t", "null", NOW, 3, NOW))  # a duplicate id
    with pytest.raises(IntegrityError):
        queue.driver.jobs_insert(queue.db, batch, wake_at=NOW)
    assert queue.driver.jobs_count_by_status(queue.db) == {"pending": 1}


def test_insert_in_a_caller_transaction_is_undone_with_it(queue: Queue) -> None:
    with rolled_back(queue.db) as tx:
        queue.driver.jobs_insert(tx, [queue.new_job()], wake_at=NOW)
        queue.driver.jobs_insert(tx, [queue.new_job(), queue.new_job()], wake_at=NOW)
        assert tx.fetch_value("SELECT COUNT(*) FROM _jobs") == 3
    assert queue.driver.jobs_count_by_status(queue.db) == {}


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
@pytest.mark.parametrize("size", [1, 3])
def test_insert_notifies_the_wake_time_on_commit_not_before(queue: Queue, size: int) -> None:
    listener = queue.db.listen(NOTIFY_CHANNEL)
    assert listener is not None
    try:
        wake_at = NOW + 3 * SECOND
        with queue.db.transaction() as tx:
            jobs = [queue.new_job(run_at=wake_at) for _ in range(size)]
            queue.driver.jobs_insert(tx, jobs, wake_at=wake_at)
            assert listener.wait(0.2) == []  # not before the commit
        # the due time and the topics: a dispatcher that handles none stays asleep
        assert listener.wait(10) == [f'{format_time(wake_at)} ["t"]']
    finally:
        listener.close()


# --------------------------------------------------------------------------- list, count


def test_list_is_newest_first_with_the_total(queue: Queue) -> None:
    jobs = [queue.add(topic) for topic in ("a", "b", "a", "c")]
    items, total = queue.driver.jobs_list(queue.db, JobFilter())
    assert queue.ids(items) == queue.ids(jobs)[::-1]
    assert total == 4
    assert items[0] == queue.get(jobs[-1].id)


def test_list_filters_by_topic_and_status(queue: Queue) -> None:
    pending_a = queue.in_status("pending", "a")
    failed_a = queue.in_status("failed", "a")
    queue.in_status("pending", "b")
    completed_a = queue.in_status("completed", "a")

    def page(**fields: Any) -> tuple[list[str], int]:
        items, total = queue.driver.jobs_list(queue.db, JobFilter(**fields))
        return queue.ids(items), total

    assert page(topic="a") == ([completed_a.id, failed_a.id, pending_a.id], 3)
    assert page(status="pending")[1] == 2
    assert page(topic="a", status="pending") == ([pending_a.id], 1)
    assert page(topic="a", status="processing") == ([], 0)
    assert page(topic="nobody") == ([], 0)


def test_list_pages_with_limit_and_offset(queue: Queue) -> None:
    newest_first = queue.ids([queue.add() for _ in range(5)])[::-1]
    for limit, offset in [(2, 0), (2, 2), (2, 4), (10, 1), (3, 5), (1, 100)]:
        items, total = queue.driver.jobs_list(queue.db, JobFilter(limit=limit, offset=offset))
        assert queue.ids(items) == newest_first[offset : offset + limit]
        assert total == 5


def test_count_by_status_counts_the_statuses_present(queue: Queue) -> None:
    assert queue.driver.jobs_count_by_status(queue.db) == {}
    for status in ("pending", "pending", "processing", "completed", "failed", "failed"):
        queue.in_status(status)
    assert queue.driver.jobs_count_by_status(queue.db) == {
        "pending": 2,
        "processing": 1,
        "completed": 1,
        "failed": 2,
    }


# --------------------------------------------------------------------------- delete, requeue


@pytest.mark.parametrize(
    ("status", "deleted"),
    [("pending", True), ("failed", True), ("processing", False), ("completed", True)],
)
def test_delete_any_job_but_a_processing_one(queue: Queue, status: str, deleted: bool) -> None:
    job = queue.in_status(status)
    assert queue.driver.jobs_delete(queue.db, job.id) is deleted
    assert (queue.driver.jobs_get(queue.db, job.id) is None) is deleted


def test_delete_of_an_unknown_id_deletes_nothing(queue: Queue) -> None:
    queue.add()
    assert queue.driver.jobs_delete(queue.db, uuid7()) is False
    assert queue.driver.jobs_count_by_status(queue.db) == {"pending": 1}


def test_requeue_resets_a_failed_job_due_now(queue: Queue) -> None:
    job = queue.add(max_retries=2)
    claim = queue.claim_one(job.id)
    retry = Failure(claim, "first", NOW)
    assert queue.settle(failed=[retry]) == 1
    claim = queue.claim_one(job.id, token="second")
    assert queue.settle(failed=[Failure(claim, "second", None)]) == 1
    assert (queue.get(job.id).status, queue.get(job.id).retries) == ("failed", 1)

    later = NOW + timedelta(hours=1)
    requeued = queue.driver.jobs_requeue(queue.db, job.id, later)
    assert requeued == queue.get(job.id)
    assert requeued is not None
    assert (requeued.status, requeued.retries, requeued.run_at) == ("pending", 0, later)
    assert (requeued.locked_until, requeued.updated) == (None, later)
    assert queue.locked_by(job.id) is None


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_requeue_changes_only_failed_jobs(queue: Queue, status: str) -> None:
    job = queue.in_status(status)
    assert queue.driver.jobs_requeue(queue.db, job.id, NOW + timedelta(hours=1)) is None
    assert queue.get(job.id) == job


def test_requeue_of_an_unknown_id_is_none(queue: Queue) -> None:
    assert queue.driver.jobs_requeue(queue.db, uuid7(), NOW) is None


# --------------------------------------------------------------------------- claim


def test_claim_marks_jobs_processing_under_the_token(queue: Queue) -> None:
    new = queue.add("t", '{"n":1}')
    (claimed,) = queue.claim(token="mine")
    assert claimed == queue.get(new.id)
    assert claimed.status == "processing"
    assert claimed.payload == {"n": 1}
    assert (claimed.locked_until, claimed.updated, claimed.retries) == (NOW + LOCK, NOW, 0)
    assert queue.locked_by(new.id) == "mine"


def test_claim_takes_only_due_jobs(queue: Queue) -> None:
    early = queue.add(run_at=NOW - SECOND)
    on_time = queue.add(run_at=NOW)
    late = queue.add(run_at=NOW + timedelta(milliseconds=1))
    assert queue.ids(queue.claim()) == [early.id, on_time.id]
    assert queue.get(late.id).status == "pending"
    assert queue.ids(queue.claim(now=NOW + SECOND, token="later")) == [late.id]


def test_claim_takes_only_the_given_topics(queue: Queue) -> None:
    a = queue.add("a")
    queue.add("b")
    c = queue.add("c")
    assert queue.ids(queue.claim(["a", "c", "nobody"])) == [a.id, c.id]
    assert queue.driver.jobs_count_by_status(queue.db) == {"processing": 2, "pending": 1}


def test_claim_takes_topics_whatever_their_characters(queue: Queue) -> None:
    """Topics reach the claim intact (PostgreSQL receives them as an array literal)."""
    odd = ['a"b', "c\\d", "e,f", "{g}", "NULL", " spaced ", "ü'x", '\\"']
    added = {queue.add(topic).id: topic for topic in odd}
    queue.add("a")  # a topic not asked for, next to 'a"b'
    claimed = queue.claim([*odd, "nobody"], limit=20)
    assert {job.id: job.topic for job in claimed} == added


def test_claim_takes_the_oldest_run_at_then_id_first_up_to_the_limit(queue: Queue) -> None:
    # Inserted out of order, over two topics, some sharing a run_at (then the id decides).
    minute = timedelta(minutes=1)
    specs = [("a", 3), ("b", 1), ("a", 1), ("b", 2), ("a", 0), ("b", 3), ("a", 2)]
    added = [
        queue.add(topic, run_at=NOW - 10 * minute + minutes * minute) for topic, minutes in specs
    ]
    expected = [job.id for job in sorted(added, key=lambda job: (job.run_at, job.id))]
    first = queue.claim(["a", "b"], 3, token="first")
    assert queue.ids(first) == expected[:3]
    rest = queue.claim(["a", "b"], 10, token="rest")
    assert queue.ids(rest) == expected[3:]
    assert queue.claim(["a", "b"], 10, token="none") == []


@pytest.mark.parametrize("topics", [["t"], []])
def test_claim_with_a_limit_of_zero_or_no_topics_claims_nothing(
    queue: Queue, topics: list[str]
) -> None:
    job = queue.add()
    limit = 0 if topics else 10
    assert queue.claim(topics, limit) == []
    assert queue.get(job.id).status == "pending"


def test_claim_never_takes_jobs_that_are_not_pending(queue: Queue) -> None:
    for status in ("processing", "completed", "failed"):
        queue.in_status(status)
    # A day later the processing job's lock has expired: the rescue recovers it, not a claim.
    assert queue.claim(now=NOW + timedelta(days=1)) == []


def test_claim_inside_a_caller_transaction_commits_and_rolls_back_with_it(queue: Queue) -> None:
    kept, undone = queue.add("kept"), queue.add("undone")
    with queue.db.transaction() as tx:
        assert queue.ids(queue.claim(["kept"], q=tx)) == [kept.id]
    with rolled_back(queue.db) as tx:
        assert queue.ids(queue.claim(["undone"], q=tx)) == [undone.id]
    assert queue.get(kept.id).status == "processing"
    assert queue.get(undone.id).status == "pending"
    assert queue.locked_by(undone.id) is None


def test_concurrent_claimers_never_receive_the_same_job(queue: Queue) -> None:
    """Two threads, each claiming on its own connections until nothing is left."""
    jobs = queue.add_many(120)
    start = threading.Barrier(2)
    claimed: dict[str, list[str]] = {"A": [], "B": []}
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            start.wait(10)
            while batch := queue.claim(limit=3, token=name):
                claimed[name].extend(queue.ids(batch))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    a, b = set(claimed["A"]), set(claimed["B"])
    assert len(a) == len(claimed["A"])
    assert len(b) == len(claimed["B"])
    assert not a & b
    assert a | b == set(queue.ids(jobs))
    for name, ids in claimed.items():
        assert {queue.locked_by(job_id) for job_id in ids} <= {name}


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_claim_skips_the_jobs_an_open_claim_holds(queue: Queue) -> None:
    """PostgreSQL: while one claimer's transaction holds its jobs, another claimer takes the
    next ones at once (``SKIP LOCKED``), instead of waiting or taking the same."""
    jobs = queue.add_many(4)
    with queue.db.transaction() as tx:
        held = queue.claim(limit=2, token="holder", q=tx)
        other = queue.claim(limit=10, token="other")  # another pooled connection
        assert queue.ids(held) == queue.ids(jobs[:2])
        assert queue.ids(other) == queue.ids(jobs[2:])


def test_claim_plan_returns_a_plan_and_claims_nothing(queue: Queue) -> None:
    job = queue.add()
    params = ClaimParams(["t", "other"], 10, NOW, NOW + LOCK, "plan")
    plan = queue.driver.claim_plan(queue.db, params)
    assert isinstance(plan, str)
    assert plan.strip()
    assert queue.get(job.id).status == "pending"
    assert queue.locked_by(job.id) is None


def test_next_due_is_the_earliest_pending_run_at_of_the_topics(queue: Queue) -> None:
    assert queue.driver.jobs_next_due(queue.db, ["default"], ["a"]) is None
    queue.add("a", run_at=NOW + timedelta(hours=2))
    queue.add("b", run_at=NOW + SECOND)
    soon = queue.add("a", run_at=NOW + timedelta(hours=1))
    assert queue.driver.jobs_next_due(queue.db, ["default"], ["a"]) == NOW + timedelta(hours=1)
    assert queue.driver.jobs_next_due(queue.db, ["default"], ["a", "b"]) == NOW + SECOND
    assert queue.driver.jobs_next_due(queue.db, ["default"], ["nobody"]) is None
    # Claimed jobs are no longer pending: the next due is the next pending one.
    (claimed,) = queue.claim(["a"], 1, now=NOW + timedelta(hours=1))
    assert claimed.id == soon.id
    assert queue.driver.jobs_next_due(queue.db, ["default"], ["a"]) == NOW + timedelta(hours=2)


# --------------------------------------------------------------------------- settle


def test_settle_completes_claimed_jobs(queue: Queue) -> None:
    job = queue.add()
    claim = queue.claim_one(job.id)
    assert queue.settle(completed=[claim]) == 1
    done = queue.get(job.id)
    assert (done.status, done.locked_until, done.updated) == ("completed", None, NOW + SECOND)
    assert (done.retries, done.last_error, done.run_at) == (0, None, NOW)
    assert queue.locked_by(job.id) is None


def test_settle_a_failure_with_a_retry_time_puts_the_job_back(queue: Queue) -> None:
    job = queue.add()
    claim = queue.claim_one(job.id)
    retry_at = NOW + timedelta(minutes=4)
    assert queue.settle(failed=[Failure(claim, "boom\ntraceback", retry_at)]) == 1
    retried = queue.get(job.id)
    assert (retried.status, retried.retries, retried.run_at) == ("pending", 1, retry_at)
    assert (retried.last_error, retried.locked_until) == ("boom\ntraceback", None)
    assert retried.updated == NOW + SECOND
    assert queue.locked_by(job.id) is None
    assert queue.claim(now=retry_at - SECOND) == []
    assert queue.ids(queue.claim(now=retry_at, token="again")) == [job.id]


def test_settle_a_failure_without_a_retry_time_fails_the_job(queue: Queue) -> None:
    job = queue.add()
    claim = queue.claim_one(job.id)
    assert queue.settle(failed=[Failure(claim, "gave up", None)]) == 1
    failed = queue.get(job.id)
    assert (failed.status, failed.retries, failed.last_error) == ("failed", 0, "gave up")
    assert (failed.run_at, failed.locked_until, failed.updated) == (NOW, None, NOW + SECOND)
    assert queue.locked_by(job.id) is None


def test_settle_records_many_outcomes_at_once(queue: Queue) -> None:
    jobs = queue.add_many(5)
    claims = [Claim(job.id, "token") for job in queue.claim()]
    retry_at = NOW + timedelta(minutes=1)
    written = queue.settle(
        completed=claims[:3],
        failed=[Failure(claims[3], "again", retry_at), Failure(claims[4], "never", None)],
    )
    assert written == 5
    statuses = [queue.get(job.id).status for job in jobs]
    assert statuses == ["completed", "completed", "completed", "pending", "failed"]
    assert queue.settle() == 0


def test_settle_inside_a_caller_transaction_is_undone_with_it(queue: Queue) -> None:
    job = queue.add()
    claim = queue.claim_one(job.id)
    with rolled_back(queue.db) as tx:
        assert queue.driver.jobs_settle(tx, Outcomes(NOW, [claim])) == 1
    assert queue.get(job.id).status == "processing"


def test_writes_are_fenced_on_the_claim_token(queue: Queue) -> None:
    """A claimer whose claim was lost (another token in ``locked_by``) changes nothing:
    not through the database, not inside a transaction; and a completed job stays
    completed, whatever a later failure says."""
    job = queue.add("fenced", '{"a":1}')
    (claimed,) = queue.claim(["fenced"], 5, token="right-token")
    assert claimed.id == job.id
    assert claimed.status == "processing"
    before = queue.get(job.id)

    later = NOW + SECOND
    wrong = Claim(job.id, "wrong-token")
    retry = Failure(wrong, "boom", later + 5 * SECOND)
    driver, db = queue.driver, queue.db
    assert driver.jobs_settle(db, Outcomes(later, completed=[wrong])) == 0
    assert driver.jobs_settle(db, Outcomes(later, failed=[Failure(wrong, "boom", None)])) == 0
    assert driver.jobs_settle(db, Outcomes(later, failed=[retry])) == 0
    assert driver.jobs_extend_locks(db, [wrong], later + LOCK) == set()
    assert driver.jobs_release(db, [wrong], later) == 0
    with db.transaction() as tx:
        assert driver.jobs_settle(tx, Outcomes(later, [wrong], [retry])) == 0
        assert driver.jobs_extend_locks(tx, [wrong], later + LOCK) == set()
        assert driver.jobs_release(tx, [wrong], later) == 0
    assert queue.get(job.id) == before
    assert queue.locked_by(job.id) == "right-token"

    right = Claim(job.id, "right-token")
    assert driver.jobs_settle(db, Outcomes(later, completed=[right])) == 1
    done = queue.get(job.id)
    assert done.status == "completed"
    # Once completed, even the right token changes nothing any more.
    assert driver.jobs_settle(db, Outcomes(later, failed=[Failure(right, "x", None)])) == 0
    assert driver.jobs_settle(db, Outcomes(later, failed=[Failure(right, "x", later)])) == 0
    assert driver.jobs_settle(db, Outcomes(later, completed=[right])) == 0
    assert driver.jobs_release(db, [right], later) == 0
    assert driver.jobs_extend_locks(db, [right], later + LOCK) == set()
    assert queue.get(job.id) == done


# --------------------------------------------------------------------------- settle and claim


def test_settle_and_claim_settles_then_claims_in_one_transaction(queue: Queue) -> None:
    finished, retried = queue.add(), queue.add()
    claims = [Claim(job.id, "old") for job in queue.claim(token="old")]
    fresh = queue.add_many(2)
    outcomes = Outcomes(NOW, [claims[0]], [Failure(claims[1], "retry now", NOW)])
    params = ClaimParams(["t"], 10, NOW, NOW + LOCK, "new")
    written, claimed = queue.driver.jobs_settle_and_claim(queue.db, outcomes, params)
    assert written == 2
    # The retry was due again by the time of the claim, which came after the settle.
    assert sorted(queue.ids(claimed)) == sorted([retried.id, *queue.ids(fresh)])
    assert queue.get(finished.id).status == "completed"
    again = queue.get(retried.id)
    assert (again.status, again.retries, queue.locked_by(retried.id)) == ("processing", 1, "new")


def test_settle_and_claim_without_claim_params_only_settles(queue: Queue) -> None:
    job = queue.add()
    claim = queue.claim_one(job.id)
    waiting = queue.add()
    written, claimed = queue.driver.jobs_settle_and_claim(queue.db, Outcomes(NOW, [claim]), None)
    assert (written, claimed) == (1, [])
    assert queue.get(waiting.id).status == "pending"
    assert queue.driver.jobs_settle_and_claim(queue.db, Outcomes(NOW), None) == (0, [])


def test_settle_and_claim_is_all_or_nothing(queue: Queue) -> None:
    """When the claim fails, the settle in the same transaction is undone too."""
    job = queue.add()
    claim = queue.claim_one(job.id)

    class ClaimFails(type(queue.driver)):  # type: ignore[misc]
        def jobs_claim(self, q: Queryable, params: ClaimParams) -> list[Job]:
            raise RuntimeError("the claim failed")

    params = ClaimParams(["t"], 10, NOW, NOW + LOCK, "new")
    with pytest.raises(RuntimeError, match="the claim failed"):
        ClaimFails().jobs_settle_and_claim(queue.db, Outcomes(NOW, [claim]), params)
    assert queue.get(job.id).status == "processing"
    assert queue.locked_by(job.id) == "token"


# --------------------------------------------------------------------------- locks


def test_extend_locks_moves_only_the_owned_locks(queue: Queue) -> None:
    a1, a2, b1 = queue.add("a"), queue.add("a"), queue.add("b")
    done = queue.add("c")
    queue.claim(["a"], token="A")
    queue.claim(["b"], token="B")
    done_claim = queue.claim_one(done.id, "c", token="C")
    assert queue.settle(completed=[done_claim]) == 1
    until = NOW + 2 * LOCK
    claims = [Claim(a1.id, "A"), Claim(a2.id, "B"), Claim(b1.id, "B"), done_claim]
    owned = queue.driver.jobs_extend_locks(queue.db, claims, until)
    assert owned == {Claim(a1.id, "A"), Claim(b1.id, "B")}
    assert queue.get(a1.id).locked_until == until
    assert queue.get(b1.id).locked_until == until
    assert queue.get(a2.id).locked_until == NOW + LOCK  # its claim is A's, not B's
    assert queue.get(done.id).locked_until is None
    assert queue.get(a1.id).status == "processing"
    assert queue.driver.jobs_extend_locks(queue.db, [], until) == set()


def test_release_gives_owned_claims_back_due_now(queue: Queue) -> None:
    jobs = queue.add_many(3)
    claims = [Claim(job.id, "token") for job in queue.claim()]
    later = NOW + timedelta(minutes=2)
    released = queue.driver.jobs_release(
        queue.db, [claims[0], claims[1], Claim(jobs[2].id, "someone else")], later
    )
    assert released == 2
    for new in jobs[:2]:
        job = queue.get(new.id)
        assert (job.status, job.run_at, job.retries) == ("pending", later, 0)
        assert (job.locked_until, job.updated, job.last_error) == (None, later, None)
        assert queue.locked_by(new.id) is None
    assert queue.get(jobs[2].id).status == "processing"
    assert queue.driver.jobs_release(queue.db, [], later) == 0
    assert queue.ids(queue.claim(now=later, token="next")) == queue.ids(jobs[:2])


def test_rescue_expired_recovers_jobs_whose_lock_ran_out(queue: Queue) -> None:
    retry = queue.add("retry", max_retries=1)
    last = queue.add("last", max_retries=0)
    queue.claim(["retry", "last"], token="dead")  # locked until NOW + LOCK
    fresh = queue.add("fresh")
    boundary = queue.add("boundary")
    rescue_at = NOW + LOCK + SECOND
    queue.claim(["fresh"], now=rescue_at, token="alive")  # locked until rescue_at + LOCK
    queue.claim(["boundary"], now=rescue_at - LOCK, token="edge")  # until exactly rescue_at
    pending = queue.add("pending")

    rescued = queue.driver.jobs_rescue_expired(queue.db, rescue_at, "lock expired: worker died")
    assert rescued == 2
    again = queue.get(retry.id)
    assert (again.status, again.retries, again.run_at) == ("pending", 1, rescue_at)
    assert (again.last_error, again.locked_until) == ("lock expired: worker died", None)
    assert again.updated == rescue_at
    gone = queue.get(last.id)
    assert (gone.status, gone.retries, gone.last_error) == (
        "failed",
        0,
        "lock expired: worker died",
    )
    assert queue.locked_by(retry.id) is None
    assert queue.locked_by(last.id) is None
    # Unexpired locks (also one expiring exactly now) and pending jobs are untouched.
    assert queue.get(fresh.id).status == "processing"
    assert queue.locked_by(fresh.id) == "alive"
    assert queue.get(boundary.id).locked_until == rescue_at
    assert queue.get(boundary.id).status == "processing"
    assert queue.get(pending.id).status == "pending"
    assert queue.driver.jobs_rescue_expired(queue.db, rescue_at, "again") == 0


# --------------------------------------------------------------------------- queues


def test_a_job_is_in_the_default_queue_unless_given_one(queue: Queue) -> None:
    plain = queue.add()
    mail = queue.add(queue="mail")
    assert queue.get(plain.id).queue == "default"
    assert queue.get(mail.id).queue == "mail"
    many = queue.add_many(3, queue="mail")
    assert {queue.get(job.id).queue for job in many} == {"mail"}


def test_claim_takes_only_the_given_queues_each_up_to_its_limit(queue: Queue) -> None:
    queue.add_many(5, queue="a")
    queue.add_many(5, queue="b")
    others = queue.add_many(5, queue="c")
    claimed = queue.claim(queues=[QueueClaim("a", 2), QueueClaim("b", 3)])
    assert sorted(job.queue for job in claimed) == ["a", "a", "b", "b", "b"]
    assert all(queue.get(job.id).status == "pending" for job in others)
    # The default: the default queue alone.
    assert queue.claim() == []


def test_claim_orders_each_queue_by_priority_run_at_and_id(queue: Queue) -> None:
    late = queue.add(queue="a", priority=0, run_at=NOW)
    early_low = queue.add(queue="a", priority=5, run_at=NOW - timedelta(hours=1))
    early = queue.add(queue="a", priority=0, run_at=NOW - SECOND)
    other = queue.add("u", queue="a", priority=0, run_at=NOW - 2 * SECOND)
    claimed = queue.claim(["t", "u"], queues=[QueueClaim("a", 3)])
    assert queue.ids(claimed) == [other.id, early.id, late.id]
    assert queue.get(early_low.id).status == "pending"


def test_a_global_limit_counts_the_processing_jobs_of_every_claimer(queue: Queue) -> None:
    queue.add_many(10, queue="mail")
    first = queue.claim(queues=[QueueClaim("mail", 2, 3)], token="one")
    assert len(first) == 2
    second = queue.claim(queues=[QueueClaim("mail", 5, 3)], token="two")
    assert len(second) == 1  # 2 processing + 1 = the limit
    assert queue.claim(queues=[QueueClaim("mail", 5, 3)], token="three") == []
    # A finished job makes room for one more.
    assert queue.settle(completed=[Claim(first[0].id, "one")]) == 1
    assert len(queue.claim(queues=[QueueClaim("mail", 5, 3)], token="four")) == 1
    # Without the limit, the rest is there to claim.
    assert len(queue.claim(queues=[QueueClaim("mail", 10)], token="five")) == 6


def test_concurrent_claimers_never_exceed_a_global_limit(queue: Queue) -> None:
    queue.add_many(40, queue="mail")
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def claim(index: int) -> None:
        try:
            barrier.wait(10)
            jobs = queue.claim(queues=[QueueClaim("mail", 3, 5)], token=f"c{index}")
            results.append(len(jobs))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sum(results) == 5, results
    assert queue.db.fetch_value("SELECT COUNT(*) FROM _jobs WHERE status = 'processing'") == 5


def test_a_paused_queue_gives_nothing_until_resumed(queue: Queue) -> None:
    mail = queue.add(queue="mail")
    plain = queue.add()
    queue.driver.queues_set_paused(queue.db, "mail", True, NOW)
    lanes = [QueueClaim("mail", 5), QueueClaim("default", 5)]
    assert queue.ids(queue.claim(queues=lanes, token="a")) == [plain.id]
    assert queue.driver.jobs_next_due(queue.db, ["mail"], ["t"]) is None
    queue.driver.queues_set_paused(queue.db, "mail", False, NOW)
    assert queue.driver.jobs_next_due(queue.db, ["mail"], ["t"]) == NOW
    assert queue.ids(queue.claim(queues=lanes, token="b")) == [mail.id]


def test_queue_state_counts_jobs_and_keeps_paused_queues(queue: Queue) -> None:
    assert queue.driver.queues_state(queue.db) == []
    queue.add_many(3, queue="mail")
    queue.add()
    queue.claim(queues=[QueueClaim("mail", 1)])
    queue.driver.queues_set_paused(queue.db, "idle", True, NOW)
    assert queue.driver.queues_state(queue.db) == [
        QueueState("default", False, 1, 0),
        QueueState("idle", True, 0, 0),
        QueueState("mail", False, 2, 1),
    ]
    queue.driver.queues_set_paused(queue.db, "idle", False, NOW + SECOND)
    assert QueueState("idle", False, 0, 0) in queue.driver.queues_state(queue.db)


def test_cancel_says_whether_it_cancelled_a_pending_job(queue: Queue) -> None:
    pending = queue.add()
    first = queue.driver.jobs_cancel(queue.db, pending.id, NOW)
    assert first is not None
    assert (first.job.status, first.from_pending) == ("cancelled", True)
    again = queue.driver.jobs_cancel(queue.db, pending.id, NOW)  # the same instant
    assert again is not None
    assert (again.job, again.from_pending) == (first.job, False)
    running = queue.in_status("processing")
    requested = queue.driver.jobs_cancel(queue.db, running.id, NOW)
    assert requested is not None
    assert requested.job.status == "processing"
    assert requested.job.cancel_requested_at == NOW
    assert not requested.from_pending
    assert queue.driver.jobs_cancel(queue.db, uuid7(), NOW) is None


def test_count_by_queue_counts_pending_jobs_up_to_the_cap_and_processing_jobs(
    queue: Queue,
) -> None:
    assert queue.driver.jobs_count_by_queue(queue.db, pending_cap=3) == {}
    queue.add_many(5, queue="mail")
    queue.add_many(2)
    busy = queue.add(queue="busy")
    claimed = queue.claim(queues=[QueueClaim("mail", 1), QueueClaim("busy", 1)])
    assert busy.id in queue.ids(claimed)
    queue.in_status("completed")
    queue.in_status("failed")
    assert queue.driver.jobs_count_by_queue(queue.db, pending_cap=3) == {
        "busy": QueueCounts(0, 1),
        "default": QueueCounts(2, 0),
        "mail": QueueCounts(3, 1),  # 4 pending, counted up to 3
    }
    assert queue.driver.jobs_count_by_queue(queue.db, pending_cap=100)["mail"] == QueueCounts(4, 1)
    plan = queue.driver.count_by_queue_plan(queue.db, pending_cap=3)
    assert "idx_jobs_pending" in plan, plan


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_resuming_a_queue_notifies_listeners_on_commit(queue: Queue) -> None:
    listener = queue.db.listen(NOTIFY_CHANNEL)
    assert listener is not None
    try:
        queue.driver.queues_set_paused(queue.db, "mail", True, NOW)
        assert listener.wait(0.2) == []  # pausing wakes nobody
        with queue.db.transaction() as tx:
            queue.driver.queues_set_paused(tx, "mail", False, NOW)
            assert listener.wait(0.2) == []  # not before the commit
        assert listener.wait(10) == [format_time(NOW)]
    finally:
        listener.close()


# --------------------------------------------------------------------------- workers


def worker(worker_id: str, seen: datetime, topics: list[str]) -> WorkerInfo:
    return WorkerInfo(worker_id, "host", 42, {"default": 2}, topics, NOW - timedelta(hours=1), seen)


def test_workers_announce_list_prune_and_remove(queue: Queue) -> None:
    driver, db = queue.driver, queue.db
    driver.workers_announce(db, worker("a", NOW - timedelta(minutes=5), ["t"]))
    driver.workers_announce(db, worker("b", NOW, ["u"]))
    assert [w.id for w in driver.workers_list(db, seen_since=NOW - timedelta(hours=1))] == [
        "a",
        "b",
    ]
    assert driver.workers_list(db, seen_since=NOW - SECOND) == [worker("b", NOW, ["u"])]
    # Announcing again refreshes the row (seen, topics), not a second one.
    driver.workers_announce(db, worker("a", NOW, ["t", "v"]))
    assert driver.workers_list(db, seen_since=NOW - SECOND)[0] == worker("a", NOW, ["t", "v"])
    assert driver.workers_prune(db, seen_before=NOW - SECOND) == 0
    driver.workers_remove(db, "a")
    assert driver.workers_prune(db, seen_before=NOW + SECOND) == 1
    assert driver.workers_list(db, seen_since=NOW - timedelta(days=1)) == []


def test_pending_outside_counts_the_pending_jobs_of_other_topics(queue: Queue) -> None:
    queue.add_many(3, "orphan")
    queue.add_many(2, "handled")
    queue.in_status("completed", "finished")
    queue.in_status("processing", "busy")
    assert queue.driver.jobs_pending_outside(queue.db, ["handled"]) == {"orphan": 3}
    assert queue.driver.jobs_pending_outside(queue.db, []) == {"orphan": 3, "handled": 2}
    assert queue.driver.jobs_pending_outside(queue.db, ["handled", "orphan"]) == {}
