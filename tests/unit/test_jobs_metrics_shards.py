"""The metrics' counters: each thread counts into a shard of its own, without a lock; a
scrape sums the shards, and no count is lost however many threads count at once."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from pocketjobs.plugins.jobs.job import Job, build_job
from pocketjobs.plugins.jobs.metrics import JobMetrics

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job(topic: str, queue: str) -> Job:
    return build_job(
        ("id", topic, None, "processing", NOW - timedelta(seconds=2), None, 0, 3, None, NOW,
         NOW, 0, None, queue, NOW, NOW, "node", None, [], None, None)
    )  # fmt: skip


def samples(metrics: JobMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render(None)[0].decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_concurrent_counts_from_many_threads_add_up_exactly() -> None:
    metrics = JobMetrics(lambda cap: {}, lambda: ["default"], logging.getLogger("test"))
    threads, per_thread = 8, 5_000
    start = threading.Barrier(threads)
    jobs = [job("a", "default"), job("b", "mail")]

    def count(index: int) -> None:
        start.wait()
        for n in range(per_thread):
            metrics.count_attempt(jobs[n % 2], "completed" if index % 2 else "failed", 0.01)
        metrics.count_enqueued("default", "a", 2)
        metrics.count_cancelled("mail", "b")

    workers = [threading.Thread(target=count, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    found = samples(metrics)
    a, b = (("queue", "default"), ("topic", "a")), (("queue", "mail"), ("topic", "b"))
    half = threads // 2 * per_thread // 2  # per outcome and (queue, topic)
    assert found[("pocketjobs_jobs_completed_total", a)] == half
    assert found[("pocketjobs_jobs_failed_total", b)] == half
    assert found[("pocketjobs_jobs_enqueued_total", a)] == 2 * threads
    assert found[("pocketjobs_jobs_cancelled_total", b)] == threads
    assert found[("pocketjobs_job_run_seconds_count", a)] == threads * per_thread // 2
    assert found[("pocketjobs_job_queue_wait_seconds_sum", b)] == 2.0 * threads * per_thread // 2
