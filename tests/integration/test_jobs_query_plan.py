"""The claim query uses its partial index and touches a bounded number of rows, however many
finished jobs the table holds (50,000 here) and however large the due backlog is (20,000
in five queues and three priorities)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pocketjobs import App
from pocketjobs.core.times import format_time, now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import ClaimParams, QueueClaim, driver_for
from pocketjobs.plugins.jobs.store import JobStore

FINISHED = 50_000
PENDING = 30
LOCK = timedelta(minutes=5)


QUEUES = [f"q{n}" for n in range(5)]
BACKLOG_PER_LANE = 1_334  # per queue and priority: 20,010 due jobs in all


def claim_params(
    topics: list[str],
    limit: int,
    now: datetime,
    token: str = "tok",
    queues: tuple[QueueClaim, ...] = (),
) -> ClaimParams:
    return ClaimParams(topics, limit, now, now + LOCK, token, queues)


@pytest.fixture
def loaded(
    data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[App, JobStore]]:
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.register(app, jobs.Config(auto_start=False))
    assert store is not None
    app.bootstrap()
    old = now_utc() - timedelta(days=1)
    finished = store.enqueue_many("t", [{"n": n} for n in range(FINISHED)], run_at=old)
    app.db.execute("UPDATE _jobs SET status = 'completed'")
    store.enqueue_many("t", [{"p": n} for n in range(PENDING)], run_at=old)
    assert len(finished) == FINISHED
    if app.is_postgres():
        # The steady state autovacuum keeps (the migration tunes it for this table): the
        # finished jobs' old entries are gone from the partial index.
        app.db.execute("VACUUM ANALYZE _jobs")
    yield app, store
    app.terminate()


def _job_scans(plan: str) -> list[str]:
    """The plan's scans that pick pending jobs (not the primary-key lookups of the update,
    nor scans of the CTE, the topic list or a subquery)."""
    skip = ("_jobs_pkey", "_jobs_queues_pkey", "CTE Scan", "Function Scan", "Subquery Scan")
    return [
        line.strip()
        for line in plan.splitlines()
        if "Scan" in line and not any(part in line for part in skip)
    ]


def _actual_rows(line: str) -> int:
    if "(never executed)" in line:
        return 0
    match = re.search(r"actual time=\S+ rows=(\d+)", line)
    assert match, line
    return int(match.group(1))


def test_claim_uses_the_pending_index(loaded: tuple[App, JobStore]) -> None:
    app, _ = loaded
    driver = driver_for(app.db)
    plan = driver.claim_plan(app.db, claim_params(["t", "other"], 10, now_utc()))
    if not app.is_postgres():
        assert "USING INDEX idx_jobs_pending" in plan, plan
        return
    assert "Seq Scan" not in plan, plan
    assert "Bitmap" not in plan, plan
    # With only 30 pending rows the planner may read them through either index restricted
    # to pending rows; both touch a handful of pages, never the 50,000 finished rows.
    scans = _job_scans(plan)
    assert scans, plan
    # (idx_jobs_locked serves the count of a queue's processing jobs, for a global limit.)
    allowed = ("idx_jobs_pending", "idx_jobs_status", "idx_jobs_locked")
    assert all(any(index in scan for index in allowed) for scan in scans), plan
    assert all(_actual_rows(scan) <= PENDING for scan in scans), plan
    picked = plan.split("CTE picked", 1)[1].split("->  CTE Scan on picked", 1)[0]
    buffers = [int(n) for n in re.findall(r"shared hit=(\d+)", picked)]
    assert buffers, plan
    assert max(buffers) < 100, plan


def test_claim_reads_only_the_batch_from_a_large_backlog(loaded: tuple[App, JobStore]) -> None:
    """With a backlog of 20,000 due jobs in five queues and three priorities, the ordered
    partial index serves the claim of every queue and each scan stops after its queue's
    batch (the LIMIT), whatever the backlog's size; a queue with a global limit counts its
    processing jobs through the processing index."""
    app, store = loaded
    old = now_utc() - timedelta(hours=1)
    for queue in QUEUES:
        for priority in (9, 4, 0):
            payloads = [{"b": n} for n in range(BACKLOG_PER_LANE)]
            store.enqueue_many("t", payloads, run_at=old, priority=priority, queue=queue)
    lanes = tuple(QueueClaim(queue, 10, 50 if queue == "q4" else None) for queue in QUEUES)
    params = claim_params(["t", "other"], 50, now_utc(), queues=lanes)
    # No ANALYZE here: right after a bulk enqueue the planner's statistics lag behind, and
    # the claim must not depend on them.
    plan = driver_for(app.db).claim_plan(app.db, params)
    assert "idx_jobs_pending" in plan, plan
    if app.is_postgres():
        assert "Seq Scan" not in plan, plan
        assert "Bitmap" not in plan, plan
        scans = _job_scans(plan)
        assert scans, plan
        pending_scans = [scan for scan in scans if "idx_jobs_pending" in scan]
        counts = [scan for scan in scans if "idx_jobs_locked" in scan]
        assert pending_scans, plan
        assert counts, plan
        assert len(pending_scans) + len(counts) == len(scans), plan
        # Each pending scan runs once per queue and topic (rows are per loop) and stops
        # after its queue's batch.
        for scan in pending_scans:
            assert _actual_rows(scan) <= 10, plan
            assert int(re.findall(r"loops=(\d+)", scan)[0]) <= len(QUEUES) * 2, plan
        # What is sorted is at most one batch per topic, never the backlog.
        sorts = [line for line in plan.splitlines() if "->  Sort" in line]
        assert all(_actual_rows(line) <= 10 * 2 for line in sorts), plan
    else:
        assert plan.count("USING INDEX idx_jobs_pending") == len(QUEUES), plan
        assert "idx_jobs_locked" in plan, plan
        assert "SCAN _jobs\n" not in plan + "\n", plan  # no full scan of the table
    claimed = driver_for(app.db).jobs_claim(
        app.db, claim_params(["t"], 50, now_utc(), queues=lanes)
    )
    # From each queue its batch of 10, all of priority 0 (in q0... the 30 older pending
    # jobs of the default queue are not in these queues).
    assert sorted(job.queue for job in claimed) == sorted(QUEUES * 10)
    assert [job.priority for job in claimed] == [0] * 50


def test_claim_takes_only_due_pending_jobs_among_many_finished(
    loaded: tuple[App, JobStore],
) -> None:
    app, _ = loaded
    driver = driver_for(app.db)
    now = now_utc()
    claimed = driver.jobs_claim(app.db, claim_params(["t"], 10, now))
    assert len(claimed) == 10
    assert all(job.payload.get("p") is not None for job in claimed)
    assert [job.payload["p"] for job in claimed] == sorted(job.payload["p"] for job in claimed)
    assert format_time(claimed[0].run_at) <= format_time(now)


@pytest.mark.postgres
@pytest.mark.parametrize("pending", [10, 1_000])
def test_a_new_small_queue_is_claimed_through_indexes(
    data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, pending: int
) -> None:
    """PostgreSQL: a dispatcher's first claim on a new queue, never analyzed and still small,
    makes the plan its session keeps. A sequential scan of _jobs would be costed cheapest
    there (and then scan the whole table on every claim as it grows): the functions plan
    without sequential scans."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    app = App(data_dir=data_dir, database_url=postgres_url)
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    store.enqueue_many("t", list(range(pending)), run_at=now_utc() - timedelta(seconds=1))
    plan = driver_for(app.db).claim_plan(app.db, claim_params(["t"], 10, now_utc()))
    assert "Seq Scan" not in plan, plan
    assert "_jobs_pkey" in plan, plan
    app.terminate()


@pytest.mark.postgres
def test_dispatcher_functions_are_planned_once_and_claims_commit_lazily(
    data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the claim and settle statements run in functions with generic plans
    without sequential scans (the plan the tests above check). A claim on its own commits
    without waiting for the WAL flush; a claim inside a caller's transaction leaves that
    transaction durable."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    app = App(data_dir=data_dir, database_url=postgres_url)
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    store.enqueue_many("t", [1, 2, 3], run_at=now_utc() - timedelta(seconds=1))
    config = dict(
        app.db.fetch_tuples(
            "SELECT proname, array_to_string(proconfig, ',') FROM pg_proc"
            " WHERE proname IN ('_jobs_claim', '_jobs_settle')"
        )
    )
    assert config == {
        "_jobs_claim": "plan_cache_mode=force_generic_plan,enable_seqscan=off",
        "_jobs_settle": "plan_cache_mode=force_generic_plan,enable_seqscan=off",
    }
    driver = driver_for(app.db)
    now = now_utc()
    lock_until = now + timedelta(minutes=5)
    with app.db.transaction() as tx:
        claimed = driver.jobs_claim(tx, ClaimParams(["t"], 2, now, lock_until, "in-tx"))
        assert len(claimed) == 2
        assert tx.fetch_value("SELECT current_setting('synchronous_commit')") == "on"
    with app.db.transaction() as tx:
        rows = tx.fetch_tuples(
            "SELECT id FROM _jobs_claim(?::text[], ?, ARRAY['default'], ARRAY[1],"
            " ARRAY[NULL]::int[], ?, 'alone', false, 'node', ARRAY[]::text[])",
            (["t"], now, lock_until),
        )
        assert len(rows) == 1
        assert tx.fetch_value("SELECT current_setting('synchronous_commit')") == "off"
    assert app.db.fetch_value("SHOW synchronous_commit") == "on"  # the session is unchanged
    app.terminate()
