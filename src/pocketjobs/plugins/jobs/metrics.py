"""Prometheus metrics of the jobs plugin: a :class:`JobMetrics` per store, with a registry
of its own (never ``prometheus_client``'s global one, so several apps in one process do
not mix their numbers).

=========================================  ===============  ===============================
metric                                     labels           fed by
=========================================  ===============  ===============================
``pocketjobs_jobs_enqueued_total``         queue, topic     ``enqueue_many``: jobs inserted
                                                            (not duplicates), on commit
``pocketjobs_jobs_completed_total``        queue, topic     ended attempts: ``completed``
``pocketjobs_jobs_failed_total``           queue, topic     ended attempts: ``failed``
                                                            (for good)
``pocketjobs_jobs_retried_total``          queue, topic     ended attempts: ``retrying``
``pocketjobs_jobs_cancelled_total``        queue, topic     ended attempts: ``cancelled``
                                                            (running), and ``store.cancel``
                                                            of a pending job
``pocketjobs_jobs_snoozed_total``          queue, topic     ended attempts: ``snoozed``
``pocketjobs_job_run_seconds``             queue, topic     ended attempts: every attempt's
                                                            duration, whatever its outcome
``pocketjobs_job_queue_wait_seconds``      queue, topic     ended attempts: each attempt's
                                                            wait, due → claimed
``pocketjobs_jobs_pruned_total``           status           retention's prunes run here
                                                            (and ``store.prune``): jobs
                                                            deleted
``pocketjobs_jobs``                        queue, status    the database, at scrape time
=========================================  ===============  ===============================

"Ended attempts" are the ones the ``on_job_done`` hook sees, counted by the dispatcher as
they end (:meth:`JobMetrics.count_attempt`), not by a handler of that hook: no event is
built or queued for them. Counters and histograms count what *this process* saw:
its enqueues, the attempts its dispatcher ran, its cancels of pending jobs. Sum them over
processes (``sum by (queue, topic)``); they start at zero when a process starts, as
Prometheus counters do. The gauge
``pocketjobs_jobs`` (``status`` ``pending`` or ``processing``) is read from the database
when scraped, so every process reports the same numbers for all of them: take ``max``, not
``sum``, across processes. It costs a bounded amount of work whatever the backlog: pending
jobs are counted per queue up to :data:`PENDING_COUNT_CAP` (a queue with more shows the
cap), processing jobs are as many as there are worker slots (see
:meth:`~pocketjobs.plugins.jobs.drivers.base.JobsDriver.jobs_count_by_queue`).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pocketjobs.plugins.jobs.drivers import QueueCounts
from pocketjobs.plugins.jobs.events import JobOutcome
from pocketjobs.plugins.jobs.job import Job

__all__ = [
    "PENDING_COUNT_CAP",
    "QUEUE_WAIT_BUCKETS",
    "RUN_SECONDS_BUCKETS",
    "JobMetrics",
]

#: Pending jobs are counted per queue up to this number at each scrape.
PENDING_COUNT_CAP = 10_000
#: Attempt durations (upper bounds, seconds): from 5 ms to an hour.
RUN_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
#: Waits from due to started (upper bounds, seconds): from 5 ms (an idle worker) to a day.
QUEUE_WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400,
)  # fmt: skip
_LABELS = ("queue", "topic")
# The counters, in the order of _Series.counts; the ones an outcome feeds.
_COUNTERS = (
    ("enqueued", "Jobs enqueued (inserted; duplicates and rolled-back enqueues not counted)."),
    ("completed", "Attempts that completed."),
    ("failed", "Jobs that failed for good."),
    ("retried", "Failed attempts to be retried."),
    ("cancelled", "Jobs cancelled: running ones stopped here, pending ones cancelled here."),
    ("snoozed", "Attempts that snoozed."),
)
_OUTCOME_INDEX: dict[JobOutcome, int] = {
    "completed": 1, "failed": 2, "retrying": 3, "cancelled": 4, "snoozed": 5,
}  # fmt: skip
_ENQUEUED, _CANCELLED = 0, 4

CountByQueue = Callable[[int], Mapping[str, QueueCounts]]


class _Series:
    """The numbers of one ``(queue, topic)``: counters, and per histogram its bucket
    counts (not cumulative; the last one is +Inf) and sum."""

    __slots__ = ("counts", "run_buckets", "run_sum", "wait_buckets", "wait_sum")

    def __init__(self) -> None:
        self.counts = [0] * len(_COUNTERS)
        self.run_buckets = [0] * (len(RUN_SECONDS_BUCKETS) + 1)
        self.run_sum = 0.0
        self.wait_buckets = [0] * (len(QUEUE_WAIT_BUCKETS) + 1)
        self.wait_sum = 0.0

    def add(self, other: _Series) -> None:
        """Add ``other``'s numbers to these."""
        for mine, theirs in (
            (self.counts, other.counts),
            (self.run_buckets, other.run_buckets),
            (self.wait_buckets, other.wait_buckets),
        ):
            for index, value in enumerate(theirs):
                mine[index] += value
        self.run_sum += other.run_sum
        self.wait_sum += other.wait_sum


class JobMetrics:
    """The metrics of one store (see the module's docstring).

    ``count_by_queue(cap)`` reads the pending (capped) and processing jobs per queue from
    the database at scrape time; ``queues()`` names the queues this process works on
    (reported even when empty). The dispatcher calls :meth:`count_attempt` as each
    attempt ends; the store calls :meth:`count_enqueued` and :meth:`count_cancelled`.

    The numbers are plain integers turned into metric families when scraped (a custom
    collector), not ``prometheus_client`` counters (a lock per update). Each thread that
    counts writes a shard of its own (a dictionary of series that no other thread
    writes), so counting takes no lock and queues nothing: an attempt costs a lookup and
    a few additions on the thread where it ended. A scrape sums the shards."""

    def __init__(
        self,
        count_by_queue: CountByQueue,
        queues: Callable[[], Iterable[str]],
        logger: logging.Logger,
        *,
        pending_cap: int = PENDING_COUNT_CAP,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.pending_cap = pending_cap
        self._count_by_queue = count_by_queue
        self._queues = queues
        self._logger = logger
        self._local = threading.local()  # .shard: this thread's series
        self._shards: list[dict[tuple[str, str], _Series]] = []  # every thread's, kept
        self._shards_lock = threading.Lock()
        self._pruned: dict[str, int] = {}  # finished jobs deleted, per status
        self._pruned_lock = threading.Lock()
        self.registry.register(_Collector(self))

    def count_attempt(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        """An attempt of ``job`` ended with ``outcome`` after ``duration`` seconds. It
        feeds every counter and both histograms: its wait is the claimed job's
        ``attempted_at - run_at`` (due to claimed, as the database records it), so
        nothing is counted when an attempt starts."""
        series = self._series(job.queue, job.topic)
        series.counts[_OUTCOME_INDEX[outcome]] += 1
        series.run_buckets[bisect_left(RUN_SECONDS_BUCKETS, duration)] += 1
        series.run_sum += duration
        attempted_at = job.attempted_at
        if attempted_at is not None:  # set by every claim
            waited = max(0.0, (attempted_at - job.run_at).total_seconds())
            series.wait_buckets[bisect_left(QUEUE_WAIT_BUCKETS, waited)] += 1
            series.wait_sum += waited

    def count_enqueued(self, queue: str, topic: str, count: int) -> None:
        """``count`` jobs of ``topic`` were inserted into ``queue``."""
        self._series(queue, topic).counts[_ENQUEUED] += count

    def count_cancelled(self, queue: str, topic: str) -> None:
        """A pending job of ``topic`` in ``queue`` was cancelled (it never ran here)."""
        self._series(queue, topic).counts[_CANCELLED] += 1

    def count_pruned(self, deleted: Mapping[str, int]) -> None:
        """A prune deleted ``deleted[status]`` finished jobs of each status."""
        with self._pruned_lock:
            for status, count in deleted.items():
                self._pruned[status] = self._pruned.get(status, 0) + count

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics (the gauges read from the database now) and their content type:
        OpenMetrics when ``accept`` (an HTTP ``Accept`` header) asks for it, else the
        Prometheus text format."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def _series(self, queue: str, topic: str) -> _Series:
        """The calling thread's series of ``(queue, topic)``."""
        try:
            shard: dict[tuple[str, str], _Series] = self._local.shard
        except AttributeError:  # this thread's first count
            shard = self._local.shard = {}
            with self._shards_lock:
                self._shards.append(shard)
        series = shard.get((queue, topic))
        if series is None:
            series = shard[(queue, topic)] = _Series()
        return series

    def _totals(self) -> dict[tuple[str, str], _Series]:
        """The shards summed (each read as it is now: a count made meanwhile is in this
        scrape or the next)."""
        with self._shards_lock:
            shards = list(self._shards)
        totals: dict[tuple[str, str], _Series] = {}
        for shard in shards:
            for key, series in list(shard.items()):
                total = totals.get(key)
                if total is None:
                    total = totals[key] = _Series()
                total.add(series)
        return totals

    # -- scrape --------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        """Every metric now (see the module's docstring)."""
        totals = self._totals()
        keys = sorted(totals)
        for index, (name, what) in enumerate(_COUNTERS):
            family = CounterMetricFamily(f"pocketjobs_jobs_{name}", what, labels=_LABELS)
            for key in keys:
                value = totals[key].counts[index]
                if value:
                    family.add_metric(key, value)
            yield family
        run = HistogramMetricFamily(
            "pocketjobs_job_run_seconds", "How long attempts ran.", labels=_LABELS
        )
        wait = HistogramMetricFamily(
            "pocketjobs_job_queue_wait_seconds",
            "How long jobs waited from due to started.",
            labels=_LABELS,
        )
        for key in keys:
            series = totals[key]
            if any(series.run_buckets):
                run.add_metric(key, _cumulative(RUN_SECONDS_BUCKETS, series.run_buckets),
                               series.run_sum)  # fmt: skip
            if any(series.wait_buckets):
                wait.add_metric(key, _cumulative(QUEUE_WAIT_BUCKETS, series.wait_buckets),
                                series.wait_sum)  # fmt: skip
        yield run
        yield wait
        pruned = CounterMetricFamily(
            "pocketjobs_jobs_pruned", "Finished jobs deleted by retention.", labels=["status"]
        )
        with self._pruned_lock:
            for status, count in sorted(self._pruned.items()):
                pruned.add_metric([status], count)
        yield pruned
        yield self.queue_gauges(keys)

    def queue_gauges(self, seen: Iterable[tuple[str, str]] = ()) -> GaugeMetricFamily:
        """``pocketjobs_jobs{queue, status}`` now: per queue with jobs, worked on here or
        seen in ``seen`` (``(queue, topic)`` pairs), its pending (capped) and processing
        jobs. A database that cannot be read gives a family without samples (and a
        warning in the log): the counters are still scraped."""
        family = GaugeMetricFamily(
            "pocketjobs_jobs",
            f"Jobs now, per queue and status (pending counted up to {self.pending_cap}).",
            labels=("queue", "status"),
        )
        try:
            counts = self._count_by_queue(self.pending_cap)
        except RuntimeError:  # not bootstrapped yet (or any more): nothing to read
            return family
        except Exception as exc:
            self._logger.warning("jobs metrics: could not count the jobs per queue: %s", exc)
            return family
        empty = QueueCounts(0, 0)
        names = counts.keys() | set(self._queues()) | {queue for queue, _ in seen}
        for name in sorted(names):
            found = counts.get(name, empty)
            family.add_metric((name, "pending"), found.pending)
            family.add_metric((name, "processing"), found.processing)
        return family


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Bucket counts as the cumulative ``(le, count)`` pairs of the exposition."""
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets


class _Collector:
    """The registry's view of a :class:`JobMetrics` (read at each scrape)."""

    def __init__(self, metrics: JobMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Nothing to check against: the registry is the store's own.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()
