"""The JobStore: enqueue, inspect and manage jobs; register handlers; control the dispatcher.

Every method has an awaitable twin (``aenqueue``, ``aget``, ...) that runs the same code
in a worker thread, so async code never blocks its event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from pocketjobs.core import IntegrityError, Tx
from pocketjobs.plugins.jobs.config import Config
from pocketjobs.plugins.jobs.dispatcher import Dispatcher, JobHandler
from pocketjobs.plugins.jobs.drivers import JobsDriver, NewJob, QueueCounts
from pocketjobs.plugins.jobs.errors import (
    InvalidJobOptions,
    JobCannotCancel,
    JobCannotDelete,
    JobCannotRequeue,
    JobNotFound,
    TopicAlreadyRegistered,
)
from pocketjobs.plugins.jobs.events import JobEvents
from pocketjobs.plugins.jobs.handlers import HandlerOptions, check_handler
from pocketjobs.plugins.jobs.job import Job, JobFilter, JobList, JobStats, QueueInfo, uuid7
from pocketjobs.plugins.jobs.metrics import JobMetrics
from pocketjobs.plugins.jobs.presence import orphaned_work
from pocketjobs.plugins.jobs.task import Task
from pocketjobs.plugins.jobs.validation import (
    check_enqueue,
    check_filter,
    check_job_id,
    check_queue,
    check_topic,
    to_millis,
)

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = ["JobStore"]

H = TypeVar("H", bound=JobHandler)


class HandlerArgs(TypedDict, total=False):
    """The options of :meth:`JobStore.register`, as the decorators pass them on."""

    priority: int | None
    max_retries: int | None
    backoff: Callable[[int], timedelta] | None
    queue: str | None
    timeout: timedelta | float | None


_EVENTS_FLUSH_SECONDS = 5.0


class JobStore:
    """The jobs of one app. Obtain it from :func:`~pocketjobs.plugins.jobs.register`."""

    def __init__(self, app: BaseApp, config: Config) -> None:
        self._app = app
        self.config = config
        self._clock = config.clock
        self._driver_instance: JobsDriver | None = None
        self._handlers: dict[str, JobHandler] = {}
        self._options: dict[str, HandlerOptions] = {}
        self._handlers_lock = threading.Lock()
        self._dispatcher: Dispatcher | None = None
        self._dispatcher_lock = threading.Lock()
        self._queue_sizes = config.queue_sizes()
        self._events = JobEvents(app.logger)
        #: Hooks run when an attempt starts and when it ends (see ``events.py``).
        self.on_job_start = self._events.on_job_start
        self.on_job_done = self._events.on_job_done
        #: The store's Prometheus metrics (``metrics.py``); ``None`` when the config's
        #: ``metrics`` is off.
        self.metrics: JobMetrics | None = None
        if config.metrics:
            self.metrics = JobMetrics(self._count_by_queue, self.queue_sizes, app.logger)

    def attach(self, driver: JobsDriver) -> None:
        """Use ``driver`` for the app's (now open) database. Called by the plugin on bootstrap."""
        self._driver_instance = driver

    @property
    def _driver(self) -> JobsDriver:
        if self._driver_instance is None:
            raise RuntimeError("the app is not bootstrapped: call app.bootstrap() first")
        return self._driver_instance

    def now(self) -> datetime:
        """The current time by the config's ``clock`` (aware UTC): the store's and the
        dispatcher's notion of now."""
        return self._clock()

    # -- enqueue -------------------------------------------------------------------------

    def enqueue(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        queue: str | None = None,
        timeout: timedelta | float | None = None,
        tx: Tx | None = None,
    ) -> Job:
        """Add a job; it runs at ``run_at`` (aware datetime), after ``delay``, or now.

        ``max_retries=None`` takes the handler's default, else the config's; ``0`` means no retry.
        ``queue``: the named queue it waits in (the handler's default, else ``"default"``).
        ``priority``: 0 (the default) runs first, 9 last, among the due jobs of its queue.
        ``timeout``: how long an attempt may run (seconds or a ``timedelta``; default: the
        handler's, else the config's ``default_timeout``). ``unique_key``: while a job of this topic
        with this key is pending or processing, no other is inserted: that job is returned instead,
        with ``duplicate=True`` (the database's unique index decides, so concurrent enqueues in any
        process create one job). With ``tx`` the job is written in that transaction: it exists only
        if the transaction commits (and a rolled-back transaction leaves its key free). Raises
        :class:`InvalidTopic`, :class:`InvalidPayload`, :class:`PayloadTooLarge` or
        :class:`InvalidJobOptions` and writes nothing on bad input.
        """
        keys = None if unique_key is None else [unique_key]
        return self.enqueue_many(
            topic, [payload], run_at=run_at, delay=delay, max_retries=max_retries,
            priority=priority, unique_keys=keys, queue=queue, timeout=timeout, tx=tx,
        )[0]  # fmt: skip

    def enqueue_at(self, topic: str, payload: Any, run_at: datetime) -> Job:
        """Add a job that runs at ``run_at`` (a timezone-aware datetime)."""
        return self.enqueue(topic, payload, run_at=run_at)

    def enqueue_many(
        self,
        topic: str,
        payloads: Sequence[Any],
        *,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
        unique_keys: Sequence[str | None] | None = None,
        queue: str | None = None,
        timeout: timedelta | float | None = None,
        tx: Tx | None = None,
    ) -> list[Job]:
        """Add one job per payload: all of them or, on any error, none (one statement
        when no job has a unique key).

        ``unique_keys``: one key (or ``None``) per payload, as :meth:`enqueue`'s
        ``unique_key``; a key taken by an existing job, or by an earlier payload of the
        same call, gives that job (``duplicate=True``) at its place. Raises as
        :meth:`enqueue` does (``InvalidPayload`` also when ``payloads`` is not a list)."""
        now = to_millis(self._clock())
        defaults = self._options.get(topic) if isinstance(topic, str) else None
        if defaults is not None:
            priority = defaults.priority if priority is None else priority
            max_retries = defaults.max_retries if max_retries is None else max_retries
            queue = defaults.queue if queue is None else queue
        spec = check_enqueue(
            topic, payloads, run_at, delay, max_retries, now=now, priority=priority,
            unique_keys=unique_keys, queue=queue, timeout=timeout,
            default_max_retries=self.config.max_retries, max_size=self.config.max_payload_size,
        )  # fmt: skip
        due, retries, texts = spec.due, spec.max_retries, spec.payload_texts
        if not texts:
            return []
        rows = [
            NewJob(
                uuid7(),
                topic,
                text,
                due,
                retries,
                now,
                spec.priority,
                key,
                spec.queue,
                spec.timeout,
            )
            for text, key in zip(texts, spec.unique_keys, strict=True)
        ]
        if tx is None and any(spec.unique_keys):
            with self._app.db.transaction() as own_tx:  # several statements: all or nothing
                holders = self._driver.jobs_insert(own_tx, rows, wake_at=due)
        else:
            holders = self._driver.jobs_insert(
                tx if tx is not None else self._app.db, rows, wake_at=due
            )
        inserted = sum(holder is None for holder in holders)
        if inserted:
            if tx is not None:
                tx.on_commit(lambda: self._inserted(due, spec.queue, topic, inserted))
            else:
                self._inserted(due, spec.queue, topic, inserted)
        return [
            Job(row.id, topic, payload, "pending", due, None, 0, retries, None, now, now,
                spec.priority, row.unique_key, spec.queue, timeout=spec.timeout)
            if holder is None
            else dataclasses.replace(holder, duplicate=True)
            for row, payload, holder in zip(rows, payloads, holders, strict=True)
        ]  # fmt: skip

    def _inserted(self, due: datetime, queue: str, topic: str, count: int) -> None:
        """``count`` new jobs are in the database (committed): wake the dispatcher, count them."""
        self._wake(due)
        if self.metrics is not None:
            self.metrics.count_enqueued(queue, topic, count)

    def _count_by_queue(self, pending_cap: int) -> dict[str, QueueCounts]:
        return self._driver.jobs_count_by_queue(self._app.db, pending_cap=pending_cap)

    def _wake(self, due: datetime | None) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.wake(due)

    # -- inspect and manage --------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job with ``job_id``; raises :class:`JobNotFound`."""
        job = self._driver.jobs_get(self._app.db, job_id) if check_job_id(job_id) else None
        if job is None:
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    def list(self, job_filter: JobFilter | None = None) -> JobList:
        """A page of jobs, newest first. Raises :class:`InvalidJobOptions` for a bad filter."""
        job_filter = check_filter(job_filter or JobFilter())
        items, total = self._driver.jobs_list(self._app.db, job_filter)
        return JobList(items, total, job_filter.limit, job_filter.offset)

    def stats(self) -> JobStats:
        """Counts of jobs per status, the success rate, and the pending jobs that nothing
        will run: per topic that no running worker (in any process) handles
        (``orphaned_topics``), per queue that none works on (``orphaned_queues``)."""
        db = self._app.db
        topics, queues = orphaned_work(db, self._driver, self.now())
        return JobStats.from_counts(self._driver.jobs_count_by_status(db), topics, queues)

    # -- queues --------------------------------------------------------------------------

    def queues(self) -> builtins.list[QueueInfo]:
        """Every queue: the ones this process works on, the ones with pending or
        processing jobs, and the ones ever paused; by name."""
        states = {state.name: state for state in self._driver.queues_state(self._app.db)}
        limits = self.config.queue_limits
        return [
            QueueInfo(
                name,
                state.paused if state else False,
                state.pending if state else 0,
                state.processing if state else 0,
                self._queue_sizes.get(name, 0),
                limits.get(name),
            )
            for name in sorted(states.keys() | self._queue_sizes.keys())
            for state in [states.get(name)]
        ]

    def pause_queue(self, name: str) -> None:
        """Stop claiming jobs of queue ``name`` in every process (running jobs finish;
        enqueues go on). The state is in the database: it outlasts restarts. Raises
        :class:`InvalidJobOptions` for a bad queue name."""
        self._driver.queues_set_paused(self._app.db, _queue_name(name), True, self.now())

    def resume_queue(self, name: str) -> None:
        """Claim jobs of queue ``name`` again, in every process (resuming a queue that is
        not paused does nothing). Raises :class:`InvalidJobOptions` for a bad name."""
        self._driver.queues_set_paused(self._app.db, _queue_name(name), False, self.now())
        self._wake(None)

    def queue_sizes(self) -> dict[str, int]:
        """The queues this process works on (or would, once started) and their slots."""
        return dict(self._queue_sizes)

    def use_queues(self, sizes: Mapping[str, int]) -> None:
        """Work on these queues (name -> worker slots) instead of the config's; for the
        ``--queues`` flag of ``serve``/``worker``. Takes effect at the next :meth:`start`.
        Raises :class:`InvalidJobOptions` for a bad name or size."""
        checked: dict[str, int] = {}
        for name, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise InvalidJobOptions(
                    f"queue {name!r} needs at least 1 worker slot", field="queues",
                    code="validation_invalid_number",
                )  # fmt: skip
            checked[check_queue(name)] = size
        if not checked:
            raise InvalidJobOptions("name at least one queue", field="queues")
        self._queue_sizes = checked

    def delete(self, job_id: str) -> None:
        """Delete a pending, failed or cancelled job; raises :class:`JobNotFound` or
        :class:`JobCannotDelete` (processing or completed)."""
        if check_job_id(job_id) and self._driver.jobs_delete(self._app.db, job_id):
            return
        job = self.get(job_id)
        raise JobCannotDelete(
            f"job {job_id} is {job.status}; only pending, failed or cancelled jobs can be deleted"
        )

    def cancel(self, job_id: str) -> Job:
        """Cancel a job, from any process. A pending job becomes ``cancelled`` at once. A
        processing one is asked to stop wherever it runs (an async handler is cancelled; a
        plain one sees ``job.cancel_requested``); its attempt becomes ``cancelled``, never
        retried, and whatever that run does later is discarded. The job is returned as it
        is then (``cancel_requested_at`` set while it still runs); cancelling a cancelled
        job changes nothing. Raises :class:`JobNotFound`, or :class:`JobCannotCancel` for a
        completed or failed job."""
        result = (
            self._driver.jobs_cancel(self._app.db, job_id, to_millis(self._clock()))
            if check_job_id(job_id)
            else None
        )
        if result is None:
            raise JobNotFound(f"job {job_id!r} not found")
        job = result.job
        if result.from_pending and self.metrics is not None:  # it never ran: no done event
            self.metrics.count_cancelled(job.queue, job.topic)
        if job.status in ("completed", "failed"):
            raise JobCannotCancel(f"job {job_id} is {job.status}: there is nothing to cancel")
        dispatcher = self._dispatcher
        if job.status == "processing" and dispatcher is not None:
            dispatcher.cancel(job.id)  # this process may be running it: stop it at once
        return job

    def requeue(self, job_id: str) -> Job:
        """Give a failed or cancelled job a fresh start (retries 0, due now; its attempt
        history kept); raises :class:`JobNotFound` or :class:`JobCannotRequeue` (neither
        failed nor cancelled, or its unique key is held by another pending or processing
        job)."""
        try:
            job = (
                self._driver.jobs_requeue(self._app.db, job_id, to_millis(self._clock()))
                if check_job_id(job_id)
                else None
            )
        except IntegrityError:
            raise JobCannotRequeue(
                f"job {job_id} cannot be requeued: another job of its topic with its unique"
                " key is pending or processing"
            ) from None
        if job is None:
            current = self.get(job_id)
            raise JobCannotRequeue(
                f"job {job_id} is {current.status}; only failed or cancelled jobs can be requeued"
            )
        self._wake(job.run_at)
        return job

    # -- handlers and the dispatcher -----------------------------------------------------

    def register(
        self,
        topic: str,
        fn: JobHandler,
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        backoff: Callable[[int], timedelta] | None = None,
        queue: str | None = None,
        timeout: timedelta | float | None = None,
    ) -> None:
        """Run ``fn(job)`` for jobs of ``topic`` (a plain or ``async`` function).

        ``queue``, ``priority`` and ``max_retries`` are the topic's defaults for jobs enqueued in
        this process without their own; ``timeout`` (seconds or a ``timedelta``) bounds each attempt
        of its jobs that have none of their own; ``backoff`` replaces the config's for its failed
        attempts (capped at ``max_backoff`` all the same). Raises :class:`InvalidHandler` when
        ``fn`` cannot be called with one argument (the job) or ``backoff`` is not callable,
        :class:`InvalidJobOptions` for a bad default, and :class:`TopicAlreadyRegistered` if the
        topic has a handler.
        """
        check_topic(topic)
        options = HandlerOptions.checked(priority, max_retries, backoff, queue, timeout)
        check_handler(fn)
        with self._handlers_lock:
            if topic in self._handlers:
                raise TopicAlreadyRegistered(f"a handler for topic {topic!r} is already registered")
            self._options[topic] = options
            self._handlers[topic] = fn
        self._wake(None)

    def handler(self, topic: str, **options: Unpack[HandlerArgs]) -> Callable[[H], H]:
        """Decorator form of :meth:`register` (the same options); returns the function
        unchanged."""

        def decorate(fn: H) -> H:
            self.register(topic, fn, **options)
            return fn

        return decorate

    def task(self, topic: str, **options: Unpack[HandlerArgs]) -> Callable[[JobHandler], Task]:
        """Decorator like :meth:`handler` that returns a :class:`Task`: the handler, with
        ``.enqueue(payload, **options)`` / ``.aenqueue(...)`` for its topic (a payload may
        be a dataclass or a pydantic model)."""

        def decorate(fn: JobHandler) -> Task:
            self.register(topic, fn, **options)
            return Task(self, topic, fn)

        return decorate

    def topics(self) -> builtins.list[str]:
        """The topics that have a handler."""
        return list(self._handlers)

    def start(self) -> None:
        """Start processing jobs in this process (automatic when ``auto_start`` is on)."""
        with self._dispatcher_lock:
            if self._dispatcher is None or not self._dispatcher.is_running():
                self._dispatcher = Dispatcher(
                    self._app.db, self._driver, self.config, self._handlers, self._app.logger,
                    options=self._options, queues=self._queue_sizes, events=self._events,
                    count_attempt=self.metrics.count_attempt if self.metrics else None,
                )  # fmt: skip
            self._dispatcher.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop processing gracefully (see :meth:`Dispatcher.stop`); blocks until stopped
        (and the job events queued by then have been handed to their hooks, for at most
        a few seconds more)."""
        with self._dispatcher_lock:
            dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.stop(timeout)
            self._events.flush(_EVENTS_FLUSH_SECONDS)

    def is_running(self) -> bool:
        """Whether this process is processing jobs."""
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.is_running()

    # -- awaitable twins -----------------------------------------------------------------

    async def aenqueue(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        queue: str | None = None,
        timeout: timedelta | float | None = None,  # noqa: ASYNC109 - the job's, not ours
        tx: Tx | None = None,
    ) -> Job:
        """Awaitable :meth:`enqueue`."""
        return await asyncio.to_thread(
            self.enqueue, topic, payload, run_at=run_at, delay=delay, max_retries=max_retries,
            priority=priority, unique_key=unique_key, queue=queue, timeout=timeout, tx=tx,
        )  # fmt: skip

    async def aenqueue_at(self, topic: str, payload: Any, run_at: datetime) -> Job:
        """Awaitable :meth:`enqueue_at`."""
        return await asyncio.to_thread(self.enqueue_at, topic, payload, run_at)

    async def aenqueue_many(
        self,
        topic: str,
        payloads: Sequence[Any],
        *,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
        unique_keys: Sequence[str | None] | None = None,
        queue: str | None = None,
        timeout: timedelta | float | None = None,  # noqa: ASYNC109 - the job's, not ours
        tx: Tx | None = None,
    ) -> builtins.list[Job]:
        """Awaitable :meth:`enqueue_many`."""
        return await asyncio.to_thread(
            self.enqueue_many, topic, payloads, run_at=run_at, delay=delay,
            max_retries=max_retries, priority=priority, unique_keys=unique_keys, queue=queue,
            timeout=timeout, tx=tx,
        )  # fmt: skip

    async def aget(self, job_id: str) -> Job:
        """Awaitable :meth:`get`."""
        return await asyncio.to_thread(self.get, job_id)

    async def alist(self, job_filter: JobFilter | None = None) -> JobList:
        """Awaitable :meth:`list`."""
        return await asyncio.to_thread(self.list, job_filter)

    async def astats(self) -> JobStats:
        """Awaitable :meth:`stats`."""
        return await asyncio.to_thread(self.stats)

    async def aqueues(self) -> builtins.list[QueueInfo]:
        """Awaitable :meth:`queues`."""
        return await asyncio.to_thread(self.queues)

    async def apause_queue(self, name: str) -> None:
        """Awaitable :meth:`pause_queue`."""
        await asyncio.to_thread(self.pause_queue, name)

    async def aresume_queue(self, name: str) -> None:
        """Awaitable :meth:`resume_queue`."""
        await asyncio.to_thread(self.resume_queue, name)

    async def adelete(self, job_id: str) -> None:
        """Awaitable :meth:`delete`."""
        await asyncio.to_thread(self.delete, job_id)

    async def acancel(self, job_id: str) -> Job:
        """Awaitable :meth:`cancel`."""
        return await asyncio.to_thread(self.cancel, job_id)

    async def arequeue(self, job_id: str) -> Job:
        """Awaitable :meth:`requeue`."""
        return await asyncio.to_thread(self.requeue, job_id)


def _queue_name(name: object) -> str:
    """``name`` if it is a queue name (``None`` is not: unlike an enqueue's ``queue``, it
    does not mean the default queue here); else :class:`InvalidJobOptions`."""
    if name is None:
        raise InvalidJobOptions("name a queue", field="queue", code="validation_invalid_queue")
    return check_queue(name)
