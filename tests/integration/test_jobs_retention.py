"""Retention: finished jobs are pruned once due, never pending or processing ones; one
process of a fleet prunes per interval (the lease); claims are not blocked by a prune;
``jobs prune`` on the CLI; the migration gives old finished jobs a finish time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs_support import Harness, ManualClock, Node, fast_config, harness_fixture, wait_until
from pocketjobs import App
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import ClaimParams, driver_for
from pocketjobs.plugins.jobs.drivers.portable import PortableSQLDriver
from pocketjobs.plugins.jobs.job import uuid7
from pocketjobs.plugins.jobs.retention import PRUNE_LEASE, prune
from support import run_cli

harness = harness_fixture

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def seed(node: Node, status: str, finished: datetime | None, count: int = 1) -> list[str]:
    """``count`` jobs of ``status`` that finished at ``finished``, written as the engine
    leaves them."""
    driver = driver_for(node.app.db)
    assert isinstance(driver, PortableSQLDriver)
    stamp = driver.encode_time(NOW - timedelta(days=30))
    done = None if finished is None else driver.encode_time(finished)
    ids = [uuid7() for _ in range(count)]
    node.app.db.execute_many(
        "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,"
        " updated, finished_at) VALUES (?, 't', 'null', ?, ?, 0, 3, ?, ?, ?)",
        [(job_id, status, stamp, stamp, done or stamp, done) for job_id in ids],
    )
    return ids


def scrape(node: Node) -> str:
    assert node.store.metrics is not None
    return node.store.metrics.render(None)[0].decode()


def statuses(node: Node) -> dict[str, int]:
    rows = node.app.db.fetch_tuples("SELECT status, COUNT(*) FROM _jobs GROUP BY status")
    return {status: int(count) for status, count in rows}


def remaining(node: Node, ids: Iterable[str]) -> set[str]:
    wanted = set(ids)
    return {row[0] for row in node.app.db.fetch_tuples("SELECT id FROM _jobs") if row[0] in wanted}


def test_prune_deletes_only_what_is_due(harness: Harness) -> None:
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False))
    old, day = NOW - timedelta(days=30), timedelta(days=1)
    due = {
        "completed": seed(node, "completed", NOW - day - timedelta(seconds=1), 3),
        "failed": seed(node, "failed", NOW - 7 * day - timedelta(seconds=1), 2),
        "cancelled": seed(node, "cancelled", old, 2),
    }
    kept = [
        *seed(node, "completed", NOW - day + timedelta(seconds=1)),  # not a day old yet
        *seed(node, "failed", NOW - 6 * day),
        *seed(node, "cancelled", NOW - 6 * day),
        *seed(node, "pending", None, 2),  # never pruned, however old
        *seed(node, "processing", None),
    ]
    assert node.store.prune() == {"completed": 3, "failed": 2, "cancelled": 2}
    assert 'pocketjobs_jobs_pruned_total{status="completed"} 3.0' in scrape(node)
    assert 'pocketjobs_jobs_pruned_total{status="cancelled"} 2.0' in scrape(node)
    assert remaining(node, [job_id for ids in due.values() for job_id in ids]) == set()
    assert remaining(node, kept) == set(kept)
    assert node.store.prune() == {"completed": 0, "failed": 0, "cancelled": 0}


def test_prune_older_than_and_statuses(harness: Harness) -> None:
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False, retention=None))
    hours3 = seed(node, "completed", NOW - timedelta(hours=3), 2)
    hour1 = seed(node, "completed", NOW - timedelta(hours=1))
    failed = seed(node, "failed", NOW - timedelta(hours=3))
    with pytest.raises(jobs.InvalidJobOptions, match="retention=None"):
        node.store.prune()  # the config keeps everything: say how old
    deleted = node.store.prune(older_than=timedelta(hours=2), statuses=["completed"])
    assert deleted == {"completed": 2}
    assert remaining(node, hours3 + hour1 + failed) == {*hour1, *failed}
    assert node.store.prune(older_than=7200) == {"completed": 0, "failed": 1, "cancelled": 0}
    bad_arguments = [
        {"older_than": 0}, {"older_than": -5}, {"older_than": "2h"},
        {"statuses": ["pending"]}, {"statuses": "completed"}, {"statuses": []},
    ]  # fmt: skip
    for bad in bad_arguments:
        with pytest.raises(jobs.InvalidJobOptions):
            node.store.prune(**bad)  # type: ignore[arg-type]
    assert remaining(node, hour1) == set(hour1)


def test_prune_deletes_in_batches_and_stops_when_asked(harness: Harness) -> None:
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False))
    seed(node, "completed", NOW - timedelta(days=2), 25)
    driver = driver_for(node.app.db)
    cutoffs = {"completed": NOW - timedelta(days=1)}
    batches: list[int] = []
    stop_after_two = lambda: len(batches) >= 2  # noqa: E731
    original = driver.jobs_prune

    def counting(*args: object, **kwargs: object) -> tuple[int, datetime | None]:
        done = original(*args, **kwargs)  # type: ignore[arg-type]
        batches.append(done[0])
        return done

    driver.jobs_prune = counting  # type: ignore[method-assign]
    assert prune(node.app.db, driver, cutoffs, batch=10, stopping=stop_after_two) == {
        "completed": 20
    }
    assert prune(node.app.db, driver, cutoffs, batch=10, pause=0) == {"completed": 5}
    assert batches == [10, 10, 5]
    assert statuses(node) == {}


def test_finished_jobs_are_pruned_by_the_running_dispatchers(harness: Harness) -> None:
    clock = ManualClock(NOW)
    retention = jobs.Retention(completed=timedelta(hours=1), failed=None, cancelled=None)
    config = fast_config(clock=clock, retention=retention, prune_interval=60, lock_duration=3600)
    node = harness.node(config, handlers={"t": lambda job: None})
    job = node.store.enqueue("t")
    node.wait_status(job.id, "completed")
    failed = seed(node, "failed", NOW - timedelta(days=365))  # kept for ever here
    clock.advance(timedelta(minutes=59))
    node.store._wake(None)
    time.sleep(0.3)
    assert node.store.get(job.id).status == "completed"  # not an hour yet
    clock.advance(timedelta(minutes=2))
    node.store._wake(None)
    wait_until(lambda: not remaining(node, [job.id]), what="the completed job to be pruned")
    wait_until(lambda: 'pruned_total{status="completed"} 1.0' in scrape(node), what="the count")
    assert remaining(node, failed) == set(failed)


def test_the_lease_lets_one_process_prune_per_interval(harness: Harness) -> None:
    node = harness.node(fast_config(auto_start=False))
    driver, db = driver_for(node.app.db), node.app.db
    until = NOW + timedelta(minutes=1)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def take(holder: str) -> None:
        barrier.wait()
        results.append(driver.lease_acquire(db, PRUNE_LEASE, holder, now=NOW, until=until))

    threads = [threading.Thread(target=take, args=(f"n{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    later = NOW + timedelta(seconds=59)
    assert not driver.lease_acquire(db, PRUNE_LEASE, "x", now=later, until=later + timedelta(1))
    assert driver.lease_acquire(db, PRUNE_LEASE, "x", now=until, until=until + timedelta(minutes=1))
    assert driver.lease_acquire(db, "other", "y", now=NOW, until=until)  # leases are by name


def test_one_of_several_dispatchers_prunes_per_interval(harness: Harness) -> None:
    clock = ManualClock(NOW)
    config = fast_config(clock=clock, prune_interval=60)
    nodes = [harness.node(config) for _ in range(3)]
    wait_until(lambda: nodes[0].app.db.fetch_value("SELECT holder FROM _jobs_leases"))
    holders = {nodes[0].app.db.fetch_value("SELECT holder FROM _jobs_leases")}
    for _ in range(4):  # each interval: one lease taken, by any of them
        before = nodes[0].app.db.fetch_value("SELECT until FROM _jobs_leases")
        clock.advance(61)
        for node in nodes:
            node.store._wake(None)
        wait_until(
            lambda b=before: nodes[0].app.db.fetch_value("SELECT until FROM _jobs_leases") != b
        )
        holders.add(nodes[0].app.db.fetch_value("SELECT holder FROM _jobs_leases"))
    nodes_names = {node.store._dispatcher.node for node in nodes if node.store._dispatcher}
    assert holders <= nodes_names
    until = nodes[0].app.db.fetch_value("SELECT until FROM _jobs_leases")
    driver = driver_for(nodes[0].app.db)
    assert driver.decode_time(until) == clock() + timedelta(seconds=60)  # type: ignore[attr-defined]


# -- claims while pruning ------------------------------------------------------------------


def claim_params(now: datetime, limit: int = 5) -> ClaimParams:
    return ClaimParams(["t"], limit, now, now + timedelta(minutes=5), uuid7(), node="test")


def test_a_claim_during_a_prune_is_not_blocked(harness: Harness) -> None:
    """The claim goes on while a prune runs: on PostgreSQL even while a prune batch's
    transaction holds its rows; on SQLite between the batches."""
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False))
    db, driver = node.app.db, driver_for(node.app.db)
    pending = seed(node, "pending", None, 20)
    if node.app.is_postgres():
        seed(node, "completed", NOW - timedelta(days=2), 1000)
        with db.transaction() as tx:
            assert driver.jobs_prune(tx, "completed", NOW - timedelta(days=1), 500)[0] == 500
            tx.execute("SELECT 1")  # the batch's rows stay locked until this commits
            started = time.monotonic()
            claimed = driver.jobs_claim(db, claim_params(NOW))  # another connection
            waited = time.monotonic() - started
            # The rest of the backlog is pruned past the locked rows (SKIP LOCKED), not
            # waited for.
            assert driver.jobs_prune(db, "completed", NOW - timedelta(days=1), 1000)[0] == 500
        assert len(claimed) == 5
        assert waited < 5.0, f"the claim waited {waited:.1f}s for the prune's transaction"
    else:
        seed(node, "completed", NOW - timedelta(days=2), 20_000)
        pruning = threading.Thread(
            target=prune, args=(db, driver, {"completed": NOW - timedelta(days=1)})
        )
        pruning.start()
        claims_during = 0
        while pruning.is_alive():
            if driver.jobs_claim(db, claim_params(NOW, 1)) and pruning.is_alive():
                claims_during += 1
            time.sleep(0.002)
        pruning.join()
        assert claims_during >= 3, "claims did not get in between the prune's batches"
    assert statuses(node).get("completed", 0) == 0
    assert remaining(node, pending) == set(pending)


# -- the CLI and the migration -------------------------------------------------------------


def test_jobs_prune_on_the_cli(harness: Harness, data_dir: Path, db_url: str | None) -> None:
    node = harness.node(fast_config(auto_start=False))
    now = now_utc()
    old = seed(node, "completed", now - timedelta(hours=3), 2)
    young = seed(node, "completed", now - timedelta(minutes=10))
    failed = seed(node, "failed", now - timedelta(hours=3))
    result = run_cli("jobs", "prune", "--older-than", "2h", "--status", "completed",
                     data_dir=data_dir, db_url=db_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["status", "deleted", "---------", "-------", "completed", "2"]
    assert remaining(node, old + young + failed) == {*young, *failed}
    default = run_cli("jobs", "prune", data_dir=data_dir, db_url=db_url)  # retention: 1 day
    assert default.returncode == 0, default.stderr
    assert remaining(node, young + failed) == {*young, *failed}
    for bad in (["--older-than", "soon"], ["--status", "pending"]):
        refused = run_cli("jobs", "prune", *bad, data_dir=data_dir, db_url=db_url)
        assert refused.returncode == 2
        assert "invalid" in refused.stderr
    assert remaining(node, young + failed) == {*young, *failed}


def test_the_migration_gives_old_finished_jobs_a_finish_time(app: App, harness: Harness) -> None:
    driver = driver_for(app.db)
    assert isinstance(driver, PortableSQLDriver)
    steps = driver.migrations()
    assert steps[7].name == "jobs_0008_schedules_and_retention"
    app.apply_migrations(steps[:7])
    old = driver.encode_time(NOW - timedelta(days=10))
    ids = {status: uuid7() for status in ("completed", "failed", "cancelled", "pending")}
    for status, job_id in ids.items():
        app.db.execute(
            "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,"
            " created, updated) VALUES (?, 't', 'null', ?, ?, 0, 3, ?, ?)",
            (job_id, status, old, old, old),
        )
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False))  # applies step 8
    finished = {status: node.store.get(job_id).finished_at for status, job_id in ids.items()}
    assert finished == {
        "completed": NOW - timedelta(days=10), "failed": NOW - timedelta(days=10),
        "cancelled": NOW - timedelta(days=10), "pending": None,
    }  # fmt: skip
    assert node.store.prune() == {"completed": 1, "failed": 1, "cancelled": 1}
    assert statuses(node) == {"pending": 1}


def test_a_batch_goes_on_where_the_one_before_ended(harness: Harness) -> None:
    node = harness.node(fast_config(clock=lambda: NOW, auto_start=False))
    driver = driver_for(node.app.db)
    base = NOW - timedelta(days=3)
    times = [base + timedelta(minutes=m) for m in (0, 1, 1, 2, 3)]  # two share a minute
    ids = [seed(node, "completed", moment)[0] for moment in times]
    cutoff = NOW - timedelta(days=1)
    count, last = driver.jobs_prune(node.app.db, "completed", cutoff, 2)
    assert (count, last) == (2, times[1])  # the oldest two, one of the 00:01 pair
    left = remaining(node, ids)
    assert ids[0] not in left
    assert len(left & {ids[1], ids[2]}) == 1
    count, last = driver.jobs_prune(node.app.db, "completed", cutoff, 2, finished_from=last)
    assert (count, last) == (2, times[3])  # the other of the pair (same time), then 00:02
    count, last = driver.jobs_prune(node.app.db, "completed", cutoff, 2, finished_from=last)
    assert (count, last) == (1, times[4])
    assert driver.jobs_prune(node.app.db, "completed", cutoff, 2, finished_from=last) == (0, None)
    assert remaining(node, ids) == set()
