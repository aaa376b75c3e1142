"""Job events: hooks that run when an attempt starts and when it ends.

::

    @store.on_job_start.handler()
    def started(e: jobs.JobStartEvent) -> None:
        print("started", e.job.id, "after waiting", e.waited)
        e.next()

    @store.on_job_done.handler(id="audit", priority=-10)
    def done(e: jobs.JobDoneEvent) -> None:
        print(e.job.id, e.outcome, f"{e.duration:.3f}s", e.error)
        e.next()

Hooks of the kernel's kind (:class:`~pocketjobs.tools.hook.Hook`: ids, priorities,
``e.next()``), bound on the store. They run in order on one thread of their own, never on
a handler thread or the dispatcher's: a slow hook delays other hooks, not jobs. Events of
hooks with no handler bound are not even created. An exception in a hook is logged and
does not stop the events that follow. The ``done`` outcome is the attempt's outcome as
the worker decided it: ``completed``, ``failed`` (for good), ``retrying`` (failed, to run
again at ``retry_at``), ``cancelled`` or ``snoozed``.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from pocketjobs.plugins.jobs.job import Job
from pocketjobs.tools.hook import Event, Hook

__all__ = ["AttemptCounter", "JobDoneEvent", "JobEvents", "JobOutcome", "JobStartEvent"]

JobOutcome = Literal["completed", "failed", "retrying", "cancelled", "snoozed"]
#: Counts an ended attempt ``(job, outcome, duration)``: the store's metrics.
AttemptCounter: TypeAlias = Callable[[Job, JobOutcome, float], None]
# An ended attempt as the dispatcher queues it: (job, outcome, duration, error, retry_at);
# the JobDoneEvent is built on the events thread, and only for a bound hook.
_Done: TypeAlias = tuple[Job, JobOutcome, float, BaseException | None, datetime | None]
_THREAD_NAME = "pocketjobs-events"
#: How long the events thread lets a burst of events gather before it triggers them.
_GATHER_SECONDS = 0.05


@dataclass
class JobStartEvent(Event):
    """An attempt of ``job`` started at ``started_at``, ``waited`` seconds after the job
    was due (its queue wait)."""

    job: Job
    started_at: datetime
    waited: float


@dataclass
class JobDoneEvent(Event):
    """An attempt of ``job`` ended with ``outcome`` after ``duration`` seconds (for a
    stopped attempt: until it was stopped); ``error`` is what the handler raised (or the
    timeout), ``retry_at`` when a ``retrying`` or ``snoozed`` job runs again."""

    job: Job
    outcome: JobOutcome
    duration: float
    error: BaseException | None = None
    retry_at: datetime | None = None


class JobEvents:
    """The store's two hooks, and the thread that triggers them.

    Emitting costs the dispatcher an append to a deque (no lock, no thread switch): the
    events thread sleeps until an event comes, lets a burst gather for
    :data:`_GATHER_SECONDS`, then triggers all that wait, in order, before it sleeps
    again (:meth:`flush` cuts the gathering short). So hooks run up to 50 ms after the
    fact, and a busy dispatcher wakes the thread 20 times a second, not once per event:
    measured with ``bench/``, waking it every millisecond costs a no-op burn-down on
    SQLite ~13%, every 50 ms ~5%."""

    def __init__(self, logger: logging.Logger) -> None:
        self.on_job_start: Hook[JobStartEvent] = Hook()
        self.on_job_done: Hook[JobDoneEvent] = Hook()
        self._logger = logger
        # Events (and flush markers) in order; appended and popped without a lock.
        self._queue: collections.deque[JobStartEvent | _Done | threading.Event] = (
            collections.deque()
        )
        self._wake = threading.Event()
        self._gather = threading.Event()  # set by flush: trigger what waits, at once
        self._sleeping = False  # the thread waits on _wake (emit must set it)
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def wants_start(self) -> bool:
        """Whether a start event would reach a handler."""
        return self.on_job_start.length() > 0

    def done(
        self,
        job: Job,
        outcome: JobOutcome,
        duration: float,
        error: BaseException | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """An attempt of ``job`` ended (see :class:`JobDoneEvent`): queue it for the hook
        if a handler is bound (returns at once; the event is built on the events
        thread)."""
        if self.on_job_done.length():
            self._put((job, outcome, duration, error, retry_at))

    def emit(self, event: JobStartEvent | JobDoneEvent) -> None:
        """Queue ``event`` for its hook (returns at once)."""
        if isinstance(event, JobDoneEvent):
            self._put((event.job, event.outcome, event.duration, event.error, event.retry_at))
        else:
            self._put(event)

    def _put(self, item: JobStartEvent | _Done) -> None:
        self._queue.append(item)
        # The thread sets _sleeping before it looks at the queue a last time, and emit
        # appends before it reads _sleeping: one of the two sees the other's write.
        if self._sleeping:
            self._sleeping = False
            self._wake.set()
        elif self._thread is None:
            self._start_thread()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call was triggered; whether it was
        within ``timeout``."""
        if self._thread is None:
            return True
        marker = threading.Event()
        self._queue.append(marker)
        self._sleeping = False
        self._wake.set()
        self._gather.set()
        return marker.wait(timeout)

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=_THREAD_NAME, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        pending, popleft = self._queue, self._queue.popleft
        on_start, on_done = self.on_job_start, self.on_job_done
        while True:
            self._gather.wait(_GATHER_SECONDS)  # a flush cuts it short
            self._gather.clear()
            while pending:
                item = popleft()
                if isinstance(item, tuple):
                    job, outcome, duration, error, retry_at = item
                    try:
                        on_done.trigger(JobDoneEvent(job, outcome, duration, error, retry_at))
                    except Exception:
                        self._hook_failed("done", job)
                elif isinstance(item, JobStartEvent):
                    try:
                        on_start.trigger(item)
                    except Exception:
                        self._hook_failed("start", item.job)
                else:
                    item.set()  # a flush marker: everything before it was triggered
            self._sleeping = True
            if pending:  # emitted before it saw _sleeping: go on
                self._sleeping = False
                continue
            self._wake.wait()
            self._wake.clear()

    def _hook_failed(self, hook: str, job: Job) -> None:
        self._logger.exception("jobs: a %s hook failed for job %s", hook, job.id)
