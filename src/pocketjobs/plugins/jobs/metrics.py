"""Prometheus metrics of the jobs plugin: a :class:`JobMetrics` per store, with a registry
of its own (never ``prometheus_client``'s global one, so several apps in one process do
not mix their numbers).

=========================================  ===============  ===============================
metric                                     labels           fed by
=========================================  ===============  ===============================
``pocketjobs_jobs_enqueued_total``         queue, topic     ``enqueue_many``: jobs inserted
                                                            (not duplicates), on commit
``pocketjobs_jobs_completed_total``        queue, topic     ``on_job_done``: ``completed``
``pocketjobs_jobs_failed_total``           queue, topic     ``on_job_done``: ``failed``
                                                            (for good)
``pocketjobs_jobs_retried_total``          queue, topic     ``on_job_done``: ``retrying``
``pocketjobs_jobs_cancelled_total``        queue, topic     ``on_job_done``: ``cancelled``
                                                            (running), and ``store.cancel``
                                                            of a pending job
``pocketjobs_jobs_snoozed_total``          queue, topic     ``on_job_done``: ``snoozed``
``pocketjobs_job_run_seconds``             queue, topic     ``on_job_done``: every attempt's
                                                            duration, whatever its outcome
``pocketjobs_job_queue_wait_seconds``      queue, topic     ``on_job_start``: due → started
``pocketjobs_jobs``                        queue, status    the database, at scrape time
=========================================  ===============  ===============================

Counters and histograms count what *this process* saw: its enqueues, the attempts its
dispatcher ran, its cancels of pending jobs. Sum them over processes (``sum by (queue,
topic)``); they start at zero when a process starts, as Prometheus counters do. The gauge
``pocketjobs_jobs`` (``status`` ``pending`` or ``processing``) is read from the database
when scraped, so every process reports the same numbers for all of them: take ``max``, not
``sum``, across processes. It costs a bounded amount of work whatever the backlog: pending
jobs are counted per queue up to :data:`PENDING_COUNT_CAP` (a queue with more shows the
cap), processing jobs are as many as there are worker slots (see
:meth:`~pocketjobs.plugins.jobs.drivers.base.JobsDriver.jobs_count_by_queue`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from pocketjobs.plugins.jobs.drivers import QueueCounts
from pocketjobs.plugins.jobs.events import JobDoneEvent, JobOutcome, JobStartEvent
from pocketjobs.tools.hook import Handler, Hook

__all__ = [
    "DONE_HANDLER_ID",
    "HANDLER_PRIORITY",
    "PENDING_COUNT_CAP",
    "QUEUE_WAIT_BUCKETS",
    "RUN_SECONDS_BUCKETS",
    "START_HANDLER_ID",
    "JobMetrics",
]

START_HANDLER_ID = "__pbJobsMetricsOnJobStart__"
DONE_HANDLER_ID = "__pbJobsMetricsOnJobDone__"
#: The metrics handlers run first: a later handler that never calls ``e.next()`` cannot
#: keep an event from being counted.
HANDLER_PRIORITY = -999
#: Pending jobs are counted per queue up to this number at each scrape.
PENDING_COUNT_CAP = 10_000
#: Attempt durations: from 5 ms to an hour.
RUN_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
#: Waits from due to started: from 5 ms (an idle worker) to a day (a backlog).
QUEUE_WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400,
)  # fmt: skip
_LABELS = ("queue", "topic")

CountByQueue = Callable[[int], Mapping[str, QueueCounts]]


class JobMetrics:
    """The metrics of one store (see the module's docstring).

    ``count_by_queue(cap)`` reads the pending (capped) and processing jobs per queue from
    the database at scrape time; ``queues()`` names the queues this process works on
    (reported even when empty). :meth:`bind` feeds the counters and histograms from the
    store's job event hooks; the store calls :meth:`count_enqueued` and
    :meth:`count_cancelled`."""

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
        self._seen_queues: set[str] = set()

        def counter(name: str, what: str) -> Counter:
            return Counter(name, what, _LABELS, registry=self.registry)

        self.enqueued = counter("pocketjobs_jobs_enqueued_total", "Jobs enqueued (inserted).")
        self.completed = counter("pocketjobs_jobs_completed_total", "Attempts that completed.")
        self.failed = counter("pocketjobs_jobs_failed_total", "Jobs that failed for good.")
        self.retried = counter("pocketjobs_jobs_retried_total", "Failed attempts to retry.")
        self.cancelled = counter("pocketjobs_jobs_cancelled_total", "Jobs cancelled.")
        self.snoozed = counter("pocketjobs_jobs_snoozed_total", "Attempts that snoozed.")
        self.run_seconds = Histogram(
            "pocketjobs_job_run_seconds", "How long attempts ran.", _LABELS,
            buckets=RUN_SECONDS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_wait_seconds = Histogram(
            "pocketjobs_job_queue_wait_seconds", "How long jobs waited from due to started.",
            _LABELS, buckets=QUEUE_WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._by_outcome: dict[JobOutcome, Counter] = {
            "completed": self.completed,
            "failed": self.failed,
            "retrying": self.retried,
            "cancelled": self.cancelled,
            "snoozed": self.snoozed,
        }
        self.registry.register(_QueueGauges(self))

    def bind(self, on_job_start: Hook[JobStartEvent], on_job_done: Hook[JobDoneEvent]) -> None:
        """Count attempts from the store's event hooks (handlers ``START_HANDLER_ID`` and
        ``DONE_HANDLER_ID``, first in their chains)."""
        on_job_start.bind(
            Handler(fn=self._on_start, id=START_HANDLER_ID, priority=HANDLER_PRIORITY)
        )
        on_job_done.bind(Handler(fn=self._on_done, id=DONE_HANDLER_ID, priority=HANDLER_PRIORITY))

    def count_enqueued(self, queue: str, topic: str, count: int) -> None:
        """``count`` jobs of ``topic`` were inserted into ``queue``."""
        self._seen_queues.add(queue)
        self.enqueued.labels(queue, topic).inc(count)

    def count_cancelled(self, queue: str, topic: str) -> None:
        """A pending job of ``topic`` in ``queue`` was cancelled (it never ran here)."""
        self._seen_queues.add(queue)
        self.cancelled.labels(queue, topic).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics (the gauges read from the database now) and their content type:
        OpenMetrics when ``accept`` (an HTTP ``Accept`` header) asks for it, else the
        Prometheus text format."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def _on_start(self, event: JobStartEvent) -> None:
        job = event.job
        self._seen_queues.add(job.queue)
        self.queue_wait_seconds.labels(job.queue, job.topic).observe(event.waited)
        event.next()

    def _on_done(self, event: JobDoneEvent) -> None:
        job = event.job
        self._by_outcome[event.outcome].labels(job.queue, job.topic).inc()
        self.run_seconds.labels(job.queue, job.topic).observe(event.duration)
        event.next()

    def queue_gauges(self) -> GaugeMetricFamily:
        """``pocketjobs_jobs{queue, status}`` now: per queue with jobs, worked on here or
        seen here, its pending (capped) and processing jobs. A database that cannot be
        read gives a family without samples (and a warning in the log): the counters are
        still scraped."""
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
        for name in sorted(counts.keys() | set(self._queues()) | self._seen_queues):
            found = counts.get(name, empty)
            family.add_metric((name, "pending"), found.pending)
            family.add_metric((name, "processing"), found.processing)
        return family


class _QueueGauges:
    """The registry's collector of ``pocketjobs_jobs`` (read at each scrape)."""

    def __init__(self, metrics: JobMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Names the metric for the registry's duplicate check without reading the database.
        yield GaugeMetricFamily("pocketjobs_jobs", "", labels=("queue", "status"))

    def collect(self) -> Iterator[Metric]:
        yield self._metrics.queue_gauges()
