"""The dispatcher's log lines: one per lifecycle event, each with stable fields.

Every line has a readable message and structured fields (:func:`pocketjobs.core.log_fields`),
shown as `` key=value`` pairs in the text format and as keys in the JSON one. A job's
lines carry ``event``, ``job_id``, ``topic``, ``queue``, ``attempt`` (1 for the first run)
and ``node`` (the dispatcher's ``host:pid:node-id``, the job's ``attempted_by``), plus
``duration_ms`` once its handler ran, ``retry_at``/``run_at`` when it runs again, and
``error`` (the exception's first line) when it failed. Never the payload.

==================  ========  ==============================================================
event               level     when
==================  ========  ==============================================================
job.started         DEBUG     a handler starts on a claimed job
job.completed       DEBUG     a handler returned (DEBUG: one line per job is too many at INFO)
job.snoozed         INFO      a handler raised ``Snooze`` (``run_at``)
job.retrying        WARNING   an attempt failed and runs again (``retry_at``, ``error``)
job.failed          ERROR     the last attempt failed: the job ended ``failed`` (``error``)
job.discarded       WARNING   a handler raised ``Discard``: the job ended ``failed``
job.cancelled       WARNING   a running job was cancelled
job.timed_out       WARNING   an attempt ran past its timeout (``timeout_ms``); the failed
                              attempt's own line (``job.retrying``/``job.failed``) follows
job.late_result     INFO      the handler of a stopped job ended; its result was discarded
jobs.rescued        WARNING   expired locks recovered (``count``)
jobs.claim_lost     WARNING   a held claim was taken over by another worker
jobs.results_lost   WARNING   outcomes not written: their claims were taken over (``count``)
jobs.released       WARNING   jobs still running at the shutdown timeout given back
jobs.orphaned_topic WARNING   pending jobs of a topic no running worker handles (``pending``;
                              logged by ``presence.py``, once while it stays orphaned)
jobs.orphaned_queue WARNING   pending jobs in a queue no running worker works on (likewise)
jobs.scheduled      INFO      a schedule enqueued its slot's job (``schedule``, ``slot``;
                              logged by ``schedules.py``, as the two below)
jobs.schedule_missed WARNING  slots missed while no process ran (``missed``)
jobs.schedule_failed ERROR    a schedule's job could not be enqueued (``error``)
jobs.pruned         INFO      retention deleted finished jobs (a count per status,
                              ``duration_ms``; logged by ``retention.py``)
worker.started      INFO      the dispatcher started (``queues``, ``topics``)
worker.stopped      INFO      the dispatcher stopped
==================  ========  ==============================================================

The traceback of a failed attempt follows its line at DEBUG (``exc_info``: ``error`` in a
JSON line), with the job's fields but no ``event``. Lines logged at DEBUG are built only
when DEBUG is enabled, so they cost the hot path nothing otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pocketjobs.core import log_fields
from pocketjobs.plugins.jobs.job import Job
from pocketjobs.plugins.jobs.retry import error_summary

__all__ = ["JobLog"]

_DEBUG, _INFO, _WARNING, _ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class JobLog:
    """The lifecycle lines of the dispatcher ``node``, written to ``logger``."""

    def __init__(self, logger: logging.Logger, node: str) -> None:
        self.logger = logger
        self.node = node

    def _job(
        self, level: int, event: str, job: Job, message: str, *args: object, **fields: object
    ) -> None:
        log_fields(
            self.logger, level, message, *args, stacklevel=3, event=event, job_id=job.id,
            topic=job.topic, queue=job.queue, attempt=job.retries + 1, **fields, node=self.node,
        )  # fmt: skip

    # -- a job's run ---------------------------------------------------------------------

    def logs_starts(self) -> bool:
        """Whether :meth:`started` writes anything (its lines are debug ones)."""
        return self.logger.isEnabledFor(_DEBUG)

    def started(self, job: Job) -> None:
        if self.logger.isEnabledFor(_DEBUG):
            self._job(
                _DEBUG, "job.started", job, "jobs: job %s (topic %r) started, attempt %d",
                job.id, job.topic, job.retries + 1,
            )  # fmt: skip

    def completed(self, job: Job, seconds: float) -> None:
        if self.logger.isEnabledFor(_DEBUG):
            self._job(
                _DEBUG, "job.completed", job, "jobs: job %s (topic %r) completed in %.3fs",
                job.id, job.topic, seconds, duration_ms=_ms(seconds),
            )  # fmt: skip

    def snoozed(self, job: Job, seconds: float, run_at: datetime) -> None:
        self._job(
            _INFO, "job.snoozed", job, "jobs: job %s (topic %r) snoozed until %s",
            job.id, job.topic, run_at.isoformat(), duration_ms=_ms(seconds), run_at=run_at,
        )  # fmt: skip

    def retrying(self, job: Job, seconds: float, error: BaseException, when: datetime) -> None:
        attempt, attempts = job.retries + 1, job.max_retries + 1
        summary = error_summary(error)
        self._job(
            _WARNING, "job.retrying", job,
            "jobs: job %s (topic %r) attempt %d of %d failed after %.3fs, retrying at %s: %s",
            job.id, job.topic, attempt, attempts, seconds, when.isoformat(), summary,
            max_attempts=attempts, duration_ms=_ms(seconds), retry_at=when, error=summary,
        )  # fmt: skip

    def failed(self, job: Job, seconds: float, error: BaseException) -> None:
        attempt, attempts = job.retries + 1, job.max_retries + 1
        summary = error_summary(error)
        self._job(
            _ERROR, "job.failed", job,
            "jobs: job %s (topic %r) failed for good: attempt %d of %d failed after %.3fs: %s",
            job.id, job.topic, attempt, attempts, seconds, summary,
            max_attempts=attempts, duration_ms=_ms(seconds), error=summary,
        )  # fmt: skip

    def traceback(self, job: Job, error: BaseException) -> None:
        """The traceback of the failed attempt just logged, at DEBUG."""
        if self.logger.isEnabledFor(_DEBUG):
            log_fields(
                self.logger, _DEBUG, "jobs: job %s failed with", job.id, exc_info=error,
                stacklevel=2, job_id=job.id, topic=job.topic, queue=job.queue,
                attempt=job.retries + 1, node=self.node,
            )  # fmt: skip

    def discarded(self, job: Job, seconds: float, reason: str) -> None:
        self._job(
            _WARNING, "job.discarded", job,
            "jobs: job %s (topic %r) discarded by its handler at attempt %d: %s",
            job.id, job.topic, job.retries + 1, reason, duration_ms=_ms(seconds), error=reason,
        )  # fmt: skip

    def cancelled(self, job: Job, seconds: float) -> None:
        self._job(
            _WARNING, "job.cancelled", job, "jobs: job %s (topic %r) cancelled while running",
            job.id, job.topic, duration_ms=_ms(seconds),
        )  # fmt: skip

    def timed_out(self, job: Job, seconds: float, limit: timedelta | None) -> None:
        timeout = limit.total_seconds() if limit is not None else 0.0
        self._job(
            _WARNING, "job.timed_out", job,
            "jobs: job %s (topic %r) timed out after %gs; its handler was asked to stop",
            job.id, job.topic, timeout, duration_ms=_ms(seconds), timeout_ms=_ms(timeout),
        )  # fmt: skip

    def late_result(self, job: Job, seconds: float, why: str | None) -> None:
        self._job(
            _INFO, "job.late_result", job,
            "jobs: the handler of job %s (topic %r) ended %.3fs after it started; it had"
            " been stopped (%s), so its result was discarded",
            job.id, job.topic, seconds, why, duration_ms=_ms(seconds), stopped=why,
        )  # fmt: skip

    # -- the dispatcher ------------------------------------------------------------------

    def _line(self, level: int, event: str, message: str, *args: object, **fields: object) -> None:
        log_fields(
            self.logger, level, message, *args, stacklevel=3, event=event, **fields,
            node=self.node,
        )  # fmt: skip

    def rescued(self, count: int) -> None:
        self._line(
            _WARNING, "jobs.rescued", "jobs dispatcher: recovered %d job(s) with expired locks",
            count, count=count,
        )  # fmt: skip

    def claim_lost(self, job_id: str, job: Job | None) -> None:
        self._line(
            _WARNING, "jobs.claim_lost", "jobs dispatcher: lost the claim on job %s", job_id,
            job_id=job_id, topic=job.topic if job else None, queue=job.queue if job else None,
        )  # fmt: skip

    def results_lost(self, count: int) -> None:
        self._line(
            _WARNING, "jobs.results_lost",
            "jobs dispatcher: %d result(s) discarded: their claim was taken over", count,
            count=count,
        )  # fmt: skip

    def released(self, count: int) -> None:
        self._line(
            _WARNING, "jobs.released",
            "jobs dispatcher: released %d unfinished job(s) after the shutdown timeout", count,
            count=count,
        )  # fmt: skip

    def worker_started(self, queues: Mapping[str, int], topics: Sequence[str]) -> None:
        slots = ",".join(f"{name}:{size}" for name, size in queues.items())
        self._line(
            _INFO, "worker.started", "jobs: worker %s started (queues %s)", self.node, slots,
            queues=slots, topics=",".join(topics),
        )  # fmt: skip

    def worker_stopped(self) -> None:
        self._line(_INFO, "worker.stopped", "jobs: worker %s stopped", self.node)
