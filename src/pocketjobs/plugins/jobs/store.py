"""The JobStore: enqueue, inspect and manage jobs; register handlers; control the dispatcher.

Every method has an awaitable twin (``aenqueue``, ``aget``, ...) that runs the same code
in a worker thread, so async code never blocks its event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
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
    ScheduleAlreadyRegistered,
    ScheduleNotFound,
    TopicAlreadyRegistered,
)
from pocketjobs.plugins.jobs.events import JobEvents
from pocketjobs.plugins.jobs.groupcommit import GroupCommit
from pocketjobs.plugins.jobs.handlers import HandlerOptions, check_handler
from pocketjobs.plugins.jobs.job import (
    DEFAULT_QUEUE,
    Job,
    JobFilter,
    JobList,
    JobStats,
    QueueInfo,
    uuid7,
)
from pocketjobs.plugins.jobs.maintenance import Chore
from pocketjobs.plugins.jobs.metrics import JobMetrics
from pocketjobs.plugins.jobs.presence import orphaned_work
from pocketjobs.plugins.jobs.retention import FINISHED_STATUSES, Pruner, prune
from pocketjobs.plugins.jobs.schedules import (
    CATCH_UP,
    CatchUp,
    Schedule,
    ScheduleInfo,
    Scheduler,
    check_cron,
    check_name,
    check_tz,
    list_schedules,
    slot_key,
)
from pocketjobs.plugins.jobs.task import Task
from pocketjobs.plugins.jobs.validation import (
    EnqueueSpec,
    check_enqueue,
    check_filter,
    check_job_id,
    check_queue,
    check_topic,
    is_storable_text,
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
    cron: str | None
    tz: str


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
        self._handlers_lock = threading.Lock()  # guards the handlers and the schedules
        self._schedules: dict[str, Schedule] = {}
        self._dispatcher: Dispatcher | None = None
        self._dispatcher_lock = threading.Lock()
        self._queue_sizes = config.queue_sizes()
        self._events = JobEvents(app.logger)
        self._group_commit = GroupCommit(self._write_batch)
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

    @property
    def app(self) -> BaseApp:
        """The kernel app whose jobs these are."""
        return self._app

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
        spec, rows, now = self._new_rows(
            topic, payloads, run_at=run_at, delay=delay, max_retries=max_retries,
            priority=priority, unique_keys=unique_keys, queue=queue, timeout=timeout,
        )  # fmt: skip
        if not rows:
            return []
        if tx is None:
            holders = self._write_batch(rows)
        else:
            holders = self._driver.jobs_insert(tx, rows, wake_at=spec.due)
            inserted = sum(holder is None for holder in holders)
            if inserted:
                tx.on_commit(lambda: self._inserted(spec.due, spec.queue, topic, inserted))
        return _jobs_of(spec, rows, payloads, holders, now)

    def _new_rows(
        self,
        topic: str,
        payloads: Sequence[Any],
        *,
        run_at: datetime | None,
        delay: timedelta | float | None,
        max_retries: int | None,
        priority: int | None,
        unique_keys: Sequence[str | None] | None,
        queue: str | None,
        timeout: timedelta | float | None,
    ) -> tuple[EnqueueSpec, builtins.list[NewJob], datetime]:
        """Validate an enqueue (the handler's defaults filled in) and make its rows; the
        spec, the rows and the time they were made. Raises as :meth:`enqueue` does."""
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
        rows = [
            NewJob(uuid7(), topic, text, spec.due, spec.max_retries, now, spec.priority, key,
                   spec.queue, spec.timeout)
            for text, key in zip(spec.payload_texts, spec.unique_keys, strict=True)
        ]  # fmt: skip
        return spec, rows, now

    def _write_batch(self, rows: Sequence[NewJob]) -> builtins.list[Job | None]:
        """Insert ``rows`` (an enqueue's, or a group commit's: ``groupcommit.py``): one
        statement, in a transaction when some have a unique key (several statements: all
        or nothing); count and wake once committed."""
        due = min(row.run_at for row in rows)
        if any(row.unique_key is not None for row in rows):
            with self._app.db.transaction() as tx:
                holders = self._driver.jobs_insert(tx, rows, wake_at=due)
        else:
            holders = self._driver.jobs_insert(self._app.db, rows, wake_at=due)
        counts = collections.Counter(
            (row.queue, row.topic)
            for row, holder in zip(rows, holders, strict=True)
            if holder is None
        )
        if counts:
            self._wake(due, {topic for _, topic in counts})
        if self.metrics is not None:
            for (queue, topic), count in counts.items():
                self.metrics.count_enqueued(queue, topic, count)
        return holders

    def _inserted(self, due: datetime, queue: str, topic: str, count: int) -> None:
        """``count`` new jobs are in the database (committed): wake the dispatcher, count them."""
        self._wake(due, (topic,))
        if self.metrics is not None:
            self.metrics.count_enqueued(queue, topic, count)

    def _count_by_queue(self, pending_cap: int) -> dict[str, QueueCounts]:
        return self._driver.jobs_count_by_queue(self._app.db, pending_cap=pending_cap)

    def _wake(self, due: datetime | None, topics: Collection[str] | None = None) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.wake(due, topics)

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
        """Delete a job that is not running (pending, completed, failed or cancelled);
        raises :class:`JobNotFound` or :class:`JobCannotDelete` (processing: cancel it)."""
        if check_job_id(job_id) and self._driver.jobs_delete(self._app.db, job_id):
            return
        job = self.get(job_id)
        raise JobCannotDelete(
            f"job {job_id} is {job.status}; a running job cannot be deleted (cancel it first)"
        )

    def prune(
        self,
        *,
        older_than: timedelta | float | None = None,
        statuses: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Delete finished jobs now, in batches (see ``retention.py``), and return how many
        per status: those the config's ``retention`` says are due or, with ``older_than``
        (a ``timedelta`` or seconds), those that finished longer ago than that. ``statuses``
        limits it to some of ``completed``, ``failed`` and ``cancelled``. Pending and
        processing jobs are never deleted. Raises :class:`InvalidJobOptions` for a bad
        argument, or when neither ``older_than`` nor a retention says what is due."""
        chosen = _finished_statuses(statuses)
        now = self.now()
        if older_than is not None:
            kept = _positive_duration(older_than, "older_than")
            cutoffs = dict.fromkeys(chosen, now - kept)
        elif self.config.retention is None:
            raise InvalidJobOptions(
                "the config keeps finished jobs for ever (retention=None): give older_than",
                field="older_than", code="validation_required",
            )  # fmt: skip
        else:
            due = self.config.retention.cutoffs(now)
            cutoffs = {status: due[status] for status in chosen if status in due}
        deleted = prune(self._app.db, self._driver, cutoffs)
        if self.metrics is not None:
            self.metrics.count_pruned(deleted)
        return deleted

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
        cron: str | None = None,
        tz: str = "UTC",
    ) -> None:
        """Run ``fn(job)`` for jobs of ``topic`` (a plain or ``async`` function).

        ``queue``, ``priority`` and ``max_retries`` are the topic's defaults for jobs enqueued in
        this process without their own; ``timeout`` (seconds or a ``timedelta``) bounds each attempt
        of its jobs that have none of their own; ``backoff`` replaces the config's for its failed
        attempts (capped at ``max_backoff`` all the same). ``cron`` (with ``tz``) also enqueues a
        job of the topic (payload ``None``) on that schedule: :meth:`periodic`, named after the
        topic. Raises :class:`InvalidHandler` when ``fn`` cannot be called with one argument (the
        job) or ``backoff`` is not callable, :class:`InvalidJobOptions` for a bad default or
        schedule, :class:`TopicAlreadyRegistered` if the topic has a handler and
        :class:`ScheduleAlreadyRegistered` if a schedule has its name.
        """
        check_topic(topic)
        options = HandlerOptions.checked(priority, max_retries, backoff, queue, timeout)
        check_handler(fn)
        schedule = None
        if cron is None and tz != "UTC":
            raise InvalidJobOptions("tz is the time zone of a cron schedule: give cron", field="tz")
        if cron is not None:  # its jobs take the topic's defaults, as any enqueue
            schedule = self._schedule(
                cron, topic, None, topic, tz, "skip",
                queue=None, priority=None, max_retries=None, timeout=None,
            )  # fmt: skip
        with self._handlers_lock:
            if topic in self._handlers:
                raise TopicAlreadyRegistered(f"a handler for topic {topic!r} is already registered")
            if schedule is not None and schedule.name in self._schedules:
                raise ScheduleAlreadyRegistered(f"a schedule named {topic!r} is registered")
            self._options[topic] = options
            self._handlers[topic] = fn
            if schedule is not None:
                self._schedules[schedule.name] = schedule
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

    # -- periodic jobs -------------------------------------------------------------------

    def periodic(
        self,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        name: str | None = None,
        tz: str = "UTC",
        catch_up: CatchUp = "skip",
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: timedelta | float | None = None,
    ) -> Schedule:
        """Enqueue a job of ``topic`` with ``payload`` at every time ``cron`` names in time
        zone ``tz`` (an IANA name): exactly one per slot however many processes register
        the same schedule (see ``schedules.py``). The running dispatchers enqueue them, so
        register it where ``serve`` or ``worker`` runs, before or after start.

        ``name`` (default: the topic) identifies the schedule across processes;
        ``catch_up``: ``"skip"`` (the default) skips the slots missed while no process ran,
        ``"last"`` runs the latest of them once. ``queue``, ``priority``, ``max_retries``
        and ``timeout`` are its jobs' options (default: the topic's handler's, as for an
        enqueue). Raises :class:`InvalidJobOptions` (bad cron, tz, catch-up or option),
        :class:`InvalidTopic`, :class:`InvalidPayload`, or
        :class:`ScheduleAlreadyRegistered` if this process has a schedule of that name."""
        schedule = self._schedule(
            cron, topic, payload, topic if name is None else name, tz, catch_up,
            queue=queue, priority=priority, max_retries=max_retries, timeout=timeout,
        )  # fmt: skip
        with self._handlers_lock:
            if schedule.name in self._schedules:
                raise ScheduleAlreadyRegistered(f"a schedule named {schedule.name!r} is registered")
            self._schedules[schedule.name] = schedule
        self._wake(None)
        return schedule

    def _schedule(
        self,
        cron: object,
        topic: str,
        payload: Any,
        name: object,
        tz: object,
        catch_up: object,
        **options: Any,
    ) -> Schedule:
        """A checked :class:`Schedule`; its jobs' options are checked as an enqueue's."""
        check_topic(topic)
        checked_name = check_name(name)
        if catch_up not in CATCH_UP:
            raise InvalidJobOptions(
                f"catch_up must be one of {', '.join(CATCH_UP)}, got {catch_up!r}",
                field="catch_up",
            )  # fmt: skip
        text = check_cron(cron)
        zone = check_tz(tz)
        spec = check_enqueue(
            topic, [payload], None, None, options["max_retries"], now=self.now(),
            priority=options["priority"], queue=options["queue"], timeout=options["timeout"],
            default_max_retries=self.config.max_retries, max_size=self.config.max_payload_size,
        )  # fmt: skip
        given = {key: getattr(spec, key) if value is not None else None
                 for key, value in options.items()}  # fmt: skip
        payload_json = spec.payload_texts[0]
        return Schedule(
            checked_name, spec.topic, text, zone.key, json.loads(payload_json), payload_json,
            catch_up, given["queue"], given["priority"], given["max_retries"],
            given["timeout"],
        )  # fmt: skip

    def schedules(self) -> builtins.list[ScheduleInfo]:
        """Every schedule: those in the database (written by the running dispatchers of
        every process, ``active`` while one registers it) and this process's, with their
        next slot and the last job they enqueued; by name."""
        rows = self._driver.schedules_list(self._app.db)
        with self._handlers_lock:
            here = dict(self._schedules)
        return list_schedules(rows, here, self.now(), self._queue_of)

    def delete_schedule(self, name: str) -> None:
        """Forget the schedule ``name`` in the database (one that no process registers any
        more; a running process that registers it writes it again within seconds). Raises
        :class:`ScheduleNotFound`."""
        if not (
            isinstance(name, str)
            and is_storable_text(name)
            and self._driver.schedules_delete(self._app.db, name)
        ):
            raise ScheduleNotFound(f"schedule {name!r} not found")

    def _queue_of(self, schedule: Schedule) -> str:
        """The queue a schedule's jobs go to (its own, else its topic's handler's)."""
        if schedule.queue is not None:
            return schedule.queue
        options = self._options.get(schedule.topic)
        return options.queue if options is not None and options.queue else DEFAULT_QUEUE

    def _enqueue_slot(self, tx: Tx, schedule: Schedule, slot: datetime) -> Job:
        """The job of ``schedule``'s ``slot``: due at the slot, its unique key naming both."""
        s = schedule
        return self.enqueue(
            s.topic, s.payload, run_at=slot, max_retries=s.max_retries, priority=s.priority,
            queue=s.queue, timeout=s.timeout, unique_key=slot_key(s.name, slot), tx=tx,
        )  # fmt: skip

    def _chores(self, node: str, now: datetime) -> builtins.list[Chore]:
        """A dispatcher's chores: the schedules, and pruning when retention is on."""
        db, logger = self._app.db, self._app.logger
        chores: builtins.list[Chore] = [
            Scheduler(
                db,
                self._driver,
                self._schedules,
                enqueue=self._enqueue_slot,
                queue_of=self._queue_of,
                logger=logger,
                node=node,
                now=now,
            )
        ]
        if self.config.retention is not None:
            chores.append(
                Pruner(
                    db,
                    self._driver,
                    self.config.retention,
                    interval=self.config.prune_interval,
                    node=node,
                    logger=logger,
                    now=now,
                    on_pruned=self.metrics.count_pruned if self.metrics else None,
                )
            )
        return chores

    def start(self) -> None:
        """Start processing jobs in this process (automatic when ``auto_start`` is on)."""
        with self._dispatcher_lock:
            if self._dispatcher is None or not self._dispatcher.is_running():
                self._dispatcher = Dispatcher(
                    self._app.db, self._driver, self.config, self._handlers, self._app.logger,
                    options=self._options, queues=self._queue_sizes, events=self._events,
                    count_attempt=self.metrics.count_attempt if self.metrics else None,
                    chores=self._chores,
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
        """Awaitable :meth:`enqueue`. Without ``tx``, the job is validated on the caller's
        loop and written with the other awaitable enqueues in flight (``groupcommit.py``):
        one statement and one commit for all of them; it returns once its row is durable."""
        if tx is not None:
            return await asyncio.to_thread(
                self.enqueue, topic, payload, run_at=run_at, delay=delay,
                max_retries=max_retries, priority=priority, unique_key=unique_key, queue=queue,
                timeout=timeout, tx=tx,
            )  # fmt: skip
        payloads = [payload]
        spec, rows, now = self._new_rows(
            topic, payloads, run_at=run_at, delay=delay, max_retries=max_retries,
            priority=priority, unique_keys=None if unique_key is None else [unique_key],
            queue=queue, timeout=timeout,
        )  # fmt: skip
        holders = await self._group_commit.submit(rows)
        return _jobs_of(spec, rows, payloads, holders, now)[0]

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

    async def aprune(
        self,
        *,
        older_than: timedelta | float | None = None,
        statuses: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Awaitable :meth:`prune`."""
        return await asyncio.to_thread(self.prune, older_than=older_than, statuses=statuses)

    async def aschedules(self) -> builtins.list[ScheduleInfo]:
        """Awaitable :meth:`schedules`."""
        return await asyncio.to_thread(self.schedules)

    async def adelete_schedule(self, name: str) -> None:
        """Awaitable :meth:`delete_schedule`."""
        await asyncio.to_thread(self.delete_schedule, name)


def _jobs_of(
    spec: EnqueueSpec,
    rows: Sequence[NewJob],
    payloads: Sequence[Any],
    holders: Sequence[Job | None],
    now: datetime,
) -> builtins.list[Job]:
    """The jobs an enqueue returns: each new row's job, or the holder of its unique key
    (``duplicate=True``)."""
    return [
        Job(row.id, row.topic, payload, "pending", spec.due, None, 0, spec.max_retries, None,
            now, now, spec.priority, row.unique_key, spec.queue, timeout=spec.timeout)
        if holder is None
        else dataclasses.replace(holder, duplicate=True)
        for row, payload, holder in zip(rows, payloads, holders, strict=True)
    ]  # fmt: skip


def _finished_statuses(statuses: object) -> builtins.list[str]:
    """``statuses`` (``None``: all three) if each is a finished status; else
    :class:`InvalidJobOptions`."""
    if statuses is None:
        return list(FINISHED_STATUSES)
    if isinstance(statuses, str) or not isinstance(statuses, Sequence) or not statuses:
        raise InvalidJobOptions("statuses must be a list of finished statuses", field="status")
    for status in statuses:
        if status not in FINISHED_STATUSES:
            raise InvalidJobOptions(
                f"only finished jobs are pruned: status must be one of "
                f"{', '.join(FINISHED_STATUSES)}, got {status!r}",
                field="status", code="validation_invalid_status",
            )  # fmt: skip
    return list(dict.fromkeys(statuses))


def _positive_duration(value: object, field: str) -> timedelta:
    """``value`` (a timedelta or seconds) if it is a positive duration; else
    :class:`InvalidJobOptions`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, ValueError):
            value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidJobOptions(
            f"{field} must be a positive timedelta or number of seconds, got {value!r}",
            field=field, code="validation_invalid_duration",
        )  # fmt: skip
    return value


def _queue_name(name: object) -> str:
    """``name`` if it is a queue name (``None`` is not: unlike an enqueue's ``queue``, it
    does not mean the default queue here); else :class:`InvalidJobOptions`."""
    if name is None:
        raise InvalidJobOptions("name a queue", field="queue", code="validation_invalid_queue")
    return check_queue(name)
