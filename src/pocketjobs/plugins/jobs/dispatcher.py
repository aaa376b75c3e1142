"""The dispatcher: claims due jobs for free worker slots and runs them.

It wires five parts, each in its own module, around one control loop (this module)::

    enqueue (this process) ──wake──┐      NOTIFY / data_version ── Listener (notifier.py)
                                   ▼                                    │ wake
    ┌──────────────── control loop (claim, capacity, claims ahead) ◄────┘
    │   ▲ round: Maintenance (maintenance.py) heartbeat + rescue + chores (schedules,
    │   │        retention), on the clock
    │   │ round: Completer.round(claim params) ── the claim (inline: + outcomes)
    │   │
    │   └── RunningClaims (running.py): claims held, slots, claimed-ahead runs
    ▼
    Executor (executor.py): handler threads + event loop ── outcome ──► Completer
                                                          (completer.py; retry.py decides
                                                           retry or fail, error text)

Each queue the process works on has its own slots (``Config.queues``; by default the
``default`` queue with ``workers`` slots). One claim (one round trip) serves every queue:
from each, as many due jobs as it has free slots (at most ``batch_size``), and for a queue
with a global limit (``Config.queue_limits``) no more than leaves its running jobs across
all processes within it. While a queue's handlers take less than about two claim round
trips, it also claims ahead for that queue: as many jobs as its slots finish in two claim
round trips (at least one per slot; all within ``batch_size``), so that the next jobs
arrive as slots free up instead of one round trip later, and a deep backlog of short jobs
is claimed in large batches (one statement per ``batch_size`` jobs rather than per
``workers``); a job claimed ahead waits for a slot about two round trips at most. With
longer handlers it never claims ahead, so no claimed job waits for a slot while another
process could run it.

It sleeps until something happens: a finished job, an enqueue in this process
(:meth:`Dispatcher.wake`), a notification, the next known due time, maintenance, or at the
latest ``poll_interval``. Without notifications (``Config.listen`` off, or a database whose
notifications do not arrive) other processes' jobs are found by polling: an idle
dispatcher claims every ``claim_poll_interval`` (if shorter than ``poll_interval``), and
looks up the next due time only once per ``poll_interval``, so that an idle poll is one
statement. Schedules read the config's ``clock``; only the measurement of
round trips and the shutdown grace period use the monotonic clock.

A running job can be stopped before its handler ends: cancelled (:meth:`Dispatcher.cancel`,
a notification from another process, or found asked for when the held claims are looked
at), or past its timeout (the job's, else its handler's, else the config's
``default_timeout``). Its outcome is recorded at once (cancelled; or a failed attempt,
"timed out after Ns", retried per policy) and the handler is asked to stop: an async
handler's task is cancelled, a plain one sees ``job.cancel_requested``. A plain handler
that ignores it keeps its slot until it returns (logged); its late result is discarded.

Each lifecycle event (a job started, completed, retrying, failed, ...; the worker started
or stopped) is one log line with stable fields, written by :class:`~.logs.JobLog`.

Every write is fenced on the claim token: a dispatcher whose claim was lost (its lock
expired and another dispatcher took the job) cannot overwrite the new owner's state.
Database errors are logged and retried with backoff; nothing is lost or repeated.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pocketjobs.core import Database, DatabaseError
from pocketjobs.plugins.jobs.completer import Completer, db_backoff, new_completer
from pocketjobs.plugins.jobs.config import Config
from pocketjobs.plugins.jobs.drivers import (
    Cancelled,
    ClaimParams,
    Failure,
    JobsDriver,
    Outcomes,
    QueueClaim,
    Snoozed,
)
from pocketjobs.plugins.jobs.events import AttemptCounter, JobEvents, JobOutcome, JobStartEvent
from pocketjobs.plugins.jobs.executor import Executor, JobHandler, is_async_handler
from pocketjobs.plugins.jobs.handlers import HandlerOptions
from pocketjobs.plugins.jobs.job import Job
from pocketjobs.plugins.jobs.logs import JobLog
from pocketjobs.plugins.jobs.maintenance import Chore, Maintenance
from pocketjobs.plugins.jobs.notifier import Listener
from pocketjobs.plugins.jobs.presence import Presence
from pocketjobs.plugins.jobs.retry import (
    BackoffError,
    Discard,
    Snooze,
    error_text,
    retry_at,
    storable_text,
    will_retry,
)
from pocketjobs.plugins.jobs.running import Run, RunningClaims

__all__ = ["Dispatcher", "JobHandler", "is_async_handler"]

_RECHECK_DELAY = timedelta(milliseconds=20)
_CANCEL_CHECK_DELAY = 0.1  # seconds: the soonest look at held claims' cancels after another
_SETTLE_WINDOW = 0.001  # seconds a claim waits for more running jobs to finish
_SHORTEST_HANDLER = 1e-5  # seconds: a handler's run time as claiming ahead counts it, at least
# Claims pause while this many claims' worth of outcomes (the larger of the slots and
# batch_size) wait to be written.
_UNWRITTEN_CLAIMS = 4


class Dispatcher:
    """Runs the handlers of ``handlers`` on jobs claimed from ``db``."""

    def __init__(
        self,
        db: Database,
        driver: JobsDriver,
        config: Config,
        handlers: Mapping[str, JobHandler],
        logger: logging.Logger,
        *,
        options: Mapping[str, HandlerOptions] | None = None,
        queues: Mapping[str, int] | None = None,
        events: JobEvents | None = None,
        count_attempt: AttemptCounter | None = None,
        chores: Callable[[str, datetime], Sequence[Chore]] | None = None,
    ) -> None:
        self._db = db
        self._events = events if events is not None else JobEvents(logger)
        self._count_attempt = count_attempt  # the store's metrics, when on
        self._driver = driver
        self._config = config
        self._handlers = handlers
        self._options: Mapping[str, HandlerOptions] = options if options is not None else {}
        self._logger = logger
        self._clock = config.clock
        self._wake_event = threading.Event()  # the control thread has something to do
        #: The queues worked on here and their slots.
        self.queues: dict[str, int] = dict(queues) if queues else config.queue_sizes()
        workers = sum(self.queues.values())
        self._running = RunningClaims(self.queues)
        self._executor = Executor(workers, handlers, self._finish)
        self._completer: Completer = new_completer(
            db,
            driver,
            limit=_UNWRITTEN_CLAIMS * max(workers, config.batch_size),
            clock=self._clock,
            on_written=self._written,
            logger=logger,
        )
        self._presence = Presence(
            db, driver, queues=self.queues, topics=lambda: list(handlers), now=self._clock(),
            logger=logger,
        )  # fmt: skip
        self.node = self._presence.node  # attempted_by of its claims
        self._log = JobLog(logger, self.node)
        self._maintenance = Maintenance(
            db,
            driver,
            self._running,
            lock_duration=config.lock_duration,
            rescue_interval=config.poll_interval,
            clock=self._clock,
            log=self._log,
            presence=self._presence,
            chores=chores(self.node, self._clock()) if chores is not None else (),
        )
        #: Whether notifications tell of other processes' enqueues; if not, it polls.
        self._listening = config.listen
        self._next_due_looked_up = -float("inf")  # monotonic: the last jobs_next_due
        self._listener = Listener(
            db,
            self.wake,
            logger,
            cancel=self._cancel_notified,
            enabled=config.listen,
            unavailable=self._not_listening,
        )
        self._cancels: set[str] = set()  # job ids to stop (their cancel was requested)
        self._stops_lock = threading.Lock()  # guards _cancels and _next_deadline
        self._look_for_cancels = False  # a notification may hide a cancel: look
        self._cancels_seen_at = 0.0  # monotonic: the last look at held claims' cancels
        self._next_deadline: float | None = None  # monotonic: the first running timeout
        self._claim_seconds = 0.0  # moving average of a claim's round trip
        #: Claims made so far (each one statement; for diagnostics and tests).
        self.claims = 0
        self._recheck = _RECHECK_DELAY  # grows while due jobs stay unclaimable
        self._throttled = False  # slots are free, but too many outcomes wait to be written
        self._next_due: datetime | None = None
        self._next_due_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stop_deadline = 0.0
        self._sleeping = False  # the control thread waits for something to happen

    # -- public surface ------------------------------------------------------------------

    def start(self) -> None:
        """Start the handler, completer, listener and control threads. Starting twice is
        a no-op."""
        with self._state_lock:
            if self._started:
                return
            self._started = True
        self._log.worker_started(self.queues, list(self._handlers))  # before any job's line
        self._executor.start()
        self._listener.start()
        self._completer.start()
        threading.Thread(
            target=self._control_loop, name="pocketjobs-dispatcher", daemon=True
        ).start()

    def is_running(self) -> bool:
        """Whether the dispatcher has started and not yet stopped."""
        return self._started and not self._stopped.is_set()

    def running_jobs(self) -> int:
        """How many claimed jobs are running now (worker slots in use)."""
        return self._running.active

    def idle(self) -> bool:
        """Whether the dispatcher is waiting for work: no job running or waiting for a
        slot, and its control thread asleep (for tests and diagnostics)."""
        return self._sleeping and not self._running.active and not self._running.waiting

    def wake(self, due: datetime | None = None, topics: Collection[str] | None = None) -> None:
        """Tell the dispatcher that work is due at ``due`` (now if ``None``), for jobs of
        ``topics`` (``None``: of any topic); jobs of topics it handles none of wake nothing."""
        if topics is not None and not any(topic in self._handlers for topic in topics):
            return
        if due is not None and due > self._clock():
            self._remember_due(due)
        self._wake_event.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job ``job_id`` if this dispatcher runs it (its cancel was requested in
        the database): its outcome becomes ``cancelled``. Any thread may call this."""
        with self._stops_lock:
            self._cancels.add(job_id)
        self._wake_event.set()

    def _not_listening(self) -> None:
        """The listener gave up (no notifications): poll from now on."""
        self._listening = False
        self._wake_event.set()

    def _poll_interval(self) -> timedelta:
        """The longest sleep: ``poll_interval``; without notifications at most
        ``claim_poll_interval``."""
        if self._listening:
            return self._config.poll_interval
        return min(self._config.poll_interval, self._config.claim_poll_interval)

    def _cancel_notified(self, job_id: str | None) -> None:
        if job_id is not None:
            self.cancel(job_id)
        elif self._running:  # a commit elsewhere may have been a cancel: look, soon
            self._look_for_cancels = True
            self._wake_event.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let running jobs finish for up to ``timeout`` seconds (default
        ``shutdown_timeout``), then release the unfinished ones back to pending (their
        attempt not counted) so another worker takes them at once. Blocks until done, the
        outcomes of finished jobs written (or, while the database is unreachable, given up
        on after the grace period: their locks expire and they are run again)."""
        if not self._started or self._stopped.is_set():
            return
        grace = self._config.shutdown_timeout.total_seconds() if timeout is None else timeout
        self._stop_deadline = time.monotonic() + grace
        self._stopping.set()
        self._wake_event.set()
        self._stopped.wait()
        self._listener.stop()

    # -- the control loop ----------------------------------------------------------------

    def _control_loop(self) -> None:
        backoff = 0.0
        try:
            while True:
                self._wake_event.clear()
                if self._stopping.is_set():
                    self._release(self._running.release_waiting(), at_timeout=False)
                    if not self._running.active or time.monotonic() >= self._stop_deadline:
                        self._release(self._running.release_unfinished(), at_timeout=True)
                        break
                self._gather_finished()
                try:
                    busy = self._round()
                except DatabaseError as exc:
                    backoff = db_backoff(backoff)
                    self._logger.warning(
                        "jobs dispatcher: database error, retrying in %.1fs: %s", backoff, exc
                    )
                    self._wake_event.wait(backoff)
                    continue
                except Exception:  # a bug: never die silently, keep serving after a pause
                    self._logger.exception("jobs dispatcher: unexpected error; continuing")
                    self._wake_event.wait(1.0)
                    continue
                backoff = 0.0
                if not busy:
                    self._sleeping = True
                    self._wake_event.wait(self._sleep_seconds())
                    self._sleeping = False
        finally:
            self._maintenance.stop()
            self._completer.finish(self._stop_deadline)
            self._executor.shutdown()
            self._leave()
            self._log.worker_stopped()
            self._stopped.set()

    def _leave(self) -> None:
        try:
            self._presence.leave()
        except DatabaseError as exc:  # its row expires on its own
            self._logger.warning("jobs dispatcher: could not remove its worker row: %s", exc)

    def _gather_finished(self) -> None:
        """Give jobs that are still running a moment (``_SETTLE_WINDOW``) to finish too, so
        that slots are refilled in batches rather than one claim each. No wait when nothing
        has finished since the last claim, or nothing else is running, or when claiming
        ahead (the claim is for slots that free up while it is under way)."""
        running = self._running
        if (
            not running.finished_since_claim
            or self._stopping.is_set()
            or any(self._claims_ahead(queue) for queue in self.queues)
        ):
            return
        deadline = time.monotonic() + _SETTLE_WINDOW
        while running.active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake_event.clear()
            if not running.active:
                return
            self._wake_event.wait(remaining)

    def _round(self) -> bool:
        """One pass over the database work; ``True`` if another should follow at once (a
        queue's claim filled its limit and the queue has slots left)."""
        now = self._clock()
        stopping = self._stopping.is_set()
        self._maintenance.run_due(now, rescue=not stopping)
        self._stop_runs()
        topics = list(self._handlers)
        lanes = [] if stopping or not topics else self._lanes()
        params = None
        if lanes:
            token = secrets.token_hex(16)
            limit = sum(lane.limit for lane in lanes)
            lock_until = now + self._config.lock_duration
            params = ClaimParams(topics, limit, now, lock_until, token, lanes, self.node)
            with self._next_due_lock:
                if self._next_due is not None and self._next_due <= now:
                    self._next_due = None
        elif not self._completer.wants_round():
            return False
        self._running.finished_since_claim = 0
        started = time.monotonic()
        jobs = self._completer.round(params)
        if params is None:
            return False
        self.claims += 1
        self._claim_seconds = _average(self._claim_seconds, time.monotonic() - started)
        claimed = dict.fromkeys(self.queues, 0)
        for job in jobs:
            claimed[job.queue] += 1
        if jobs:
            self._recheck = _RECHECK_DELAY
            self._maintenance.claimed(now, self._running.add(jobs, params.token))
            self._start_waiting()
        elif self._looks_up_next_due():
            # Nothing due: learn when the next job is, to wake for it (while jobs are
            # claimed, rounds follow anyway, and enqueues and retries tell their due times)
            due = self._driver.jobs_next_due(self._db, [lane.name for lane in lanes], topics)
            if due is not None:
                # Due already yet not claimable (just became due, row-locked by another
                # claimer, or its queue at its global limit): look again shortly, a little
                # later each time, rather than spin.
                self._remember_due(max(due, self._clock() + self._recheck))
                self._recheck = min(2 * self._recheck, self._config.poll_interval)
        return any(
            claimed[lane.name] == lane.limit and self._running.free(lane.name) > 0 for lane in lanes
        )

    def _looks_up_next_due(self) -> bool:
        """Whether to look up the next due time after a claim found nothing: always while
        listening; when polling, once per ``poll_interval`` (the polls find a due job
        within ``claim_poll_interval`` anyway, and an idle poll stays one statement)."""
        if self._listening:
            return True
        started = time.monotonic()
        if started - self._next_due_looked_up < self._config.poll_interval.total_seconds():
            return False
        self._next_due_looked_up = started
        return True

    def _claims_ahead(self, queue: str) -> bool:
        """Whether to claim for slots of ``queue`` that are busy now: while its handlers
        take less than about two claim round trips, a slot frees up before a claim made
        when it is free would return; a job claimed ahead then waits for a slot no longer
        than that."""
        return self._running.handler_seconds[queue] <= 2 * self._claim_seconds

    def _ahead(self, queue: str, slots: int) -> int:
        """How many jobs to claim for ``queue`` beyond its free slots: while it claims
        ahead (:meth:`_claims_ahead`), what its ``slots`` finish in about two claim round
        trips (at least one job per slot), so that no job claimed ahead waits for a slot
        longer than that; else none."""
        if not self._claims_ahead(queue):
            return 0
        handler = max(self._running.handler_seconds[queue], _SHORTEST_HANDLER)
        return max(slots, int(slots * 2 * self._claim_seconds / handler))

    def _lanes(self) -> list[QueueClaim]:
        """What to claim now from each queue: its free slots plus what it claims ahead
        (:meth:`_ahead`), at most ``batch_size``; nothing while the completer's backlog
        throttles claims."""
        self._throttled = self._completer.throttled()
        if self._throttled:
            return []
        batch, limits = self._config.batch_size, self._config.queue_limits
        lanes = []
        for queue, slots in self.queues.items():
            limit = min(batch, self._running.free(queue) + self._ahead(queue, slots))
            if limit > 0:
                lanes.append(QueueClaim(queue, limit, limits.get(queue)))
        return lanes

    def _sleep_seconds(self) -> float:
        now = self._clock()
        stopping = self._stopping.is_set()
        until = min(now + self._poll_interval(), self._maintenance.next_at(chores=not stopping))
        with self._next_due_lock:
            if self._next_due is not None:
                until = min(until, self._next_due)
        timeout = (until - now).total_seconds()
        soonest = self._next_deadline
        if self._look_for_cancels and self._running:
            look_at = self._cancels_seen_at + _CANCEL_CHECK_DELAY
            soonest = look_at if soonest is None else min(soonest, look_at)
        if soonest is not None:
            timeout = min(timeout, soonest - time.monotonic())
        if stopping:
            timeout = min(timeout, self._stop_deadline - time.monotonic())
        return max(0.0, timeout)

    # -- stopping runs: cancels and timeouts ---------------------------------------------

    def _stop_runs(self) -> None:
        """Stop the runs whose job was cancelled or whose timeout passed. Held claims'
        cancels are looked up in the database soon after a notification that may hide
        one, and every ``poll_interval`` anyway (a missed notification, a process without
        notifications)."""
        with self._stops_lock:
            cancels, self._cancels = self._cancels, set()
        for job_id in cancels:
            for run in self._running.find(job_id):
                self._stop(run, "cancelled")
        started = time.monotonic()
        if not self._running:  # no claim held: no cancel to look for
            self._look_for_cancels = False
        due = self._cancels_seen_at + (
            _CANCEL_CHECK_DELAY
            if self._look_for_cancels
            else self._config.poll_interval.total_seconds()
        )
        if self._running and started >= due:
            self._look_for_cancels = False
            self._cancels_seen_at = started
            held = self._running.held()
            for claim in self._driver.jobs_cancel_requested(self._db, held):
                for run in self._running.find(claim.job_id):
                    if run.claim == claim:
                        self._stop(run, "cancelled")
        first = self._next_deadline
        if first is not None and started >= first:
            deadlines = []
            for run in self._running.running():
                if run.deadline is None:
                    continue
                if run.deadline <= started:
                    self._stop(run, "timed out")
                else:
                    deadlines.append(run.deadline)
            with self._stops_lock:  # a handler thread may have started a run meanwhile
                latest = self._next_deadline
                if latest is not None and latest > started:
                    deadlines.append(latest)
                self._next_deadline = min(deadlines, default=None)

    def _stop(self, run: Run, why: Literal["cancelled", "timed out"]) -> None:
        """Stop ``run`` (see the module's docstring) and record its outcome."""
        if not self._running.stop(run, why):
            return
        job = run.job
        job.cancel_requested.set()
        future = run.future
        if future is not None:
            # Cancels the handler's task; should it be cancelled before it ever ran (its
            # coroutine then never reports), the future's end frees the slot.
            future.add_done_callback(lambda _: self._finish(run, None, 0.0, False))
            future.cancel()
        ran = time.monotonic() - run.started if run.started else 0.0
        if why == "cancelled":
            self._log.cancelled(job, ran)
            self._completer.record(Cancelled(run.claim))
            self._ended(job, "cancelled", ran)
        else:
            limit = self._timeout_of(job)
            seconds = limit.total_seconds() if limit is not None else 0.0
            self._log.timed_out(job, ran, limit)
            self._record_failure(run, TimeoutError(f"timed out after {seconds:g}s"), ran)
        self._wake_event.set()

    def _record_failure(self, run: Run, error: BaseException, seconds: float) -> None:
        """Record the failed attempt of ``run`` (retried or failed for good)."""
        failure = self._failure(run, error, seconds)
        self._completer.record(failure)
        outcome: JobOutcome = "failed" if failure.retry_at is None else "retrying"
        self._ended(run.job, outcome, seconds, error, failure.retry_at)

    def _ended(
        self,
        job: Job,
        outcome: JobOutcome,
        seconds: float,
        error: BaseException | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """An attempt of ``job`` ended: count it (metrics) and tell the hook."""
        if self._count_attempt is not None:
            self._count_attempt(job, outcome, seconds)
        self._events.done(job, outcome, seconds, error, retry_at)

    def _timeout_of(self, job: Job) -> timedelta | None:
        """How long an attempt of ``job`` may run: its own timeout, else its handler's,
        else the config's ``default_timeout`` (``None``: no limit)."""
        if job.timeout is not None:
            return job.timeout
        options = self._options.get(job.topic)
        if options is not None and options.timeout is not None:
            return options.timeout
        return self._config.default_timeout

    def _remember_due(self, due: datetime) -> None:
        with self._next_due_lock:
            if self._next_due is None or due < self._next_due:
                self._next_due = due

    def _start_waiting(self, *, take: bool = False) -> Run | None:
        """Start claimed jobs while slots are free. ``take``: a handler thread whose job
        just finished asks for its next one: the first plain run is returned to run on that
        thread at once rather than handed to another through the queue."""
        taken: Run | None = None
        runs = self._running.start_waiting()
        if not runs:
            return None
        # Looked at once for the batch: whether anything wants the start, the time.
        events = self._events.wants_start()
        logged = self._log.logs_starts()
        started = time.monotonic()
        for run in runs:
            run.started = started
            if logged:
                self._log.started(run.job)
            if events:
                now = self._clock()
                waited = (now - run.job.run_at).total_seconds()
                self._events.emit(JobStartEvent(run.job, now, max(0.0, waited)))
            limit = self._timeout_of(run.job)
            if limit is not None:
                run.deadline = run.started + limit.total_seconds()
                with self._stops_lock:
                    if self._next_deadline is None or run.deadline < self._next_deadline:
                        self._next_deadline = run.deadline
                self._wake_event.set()
            if take and taken is None and self._executor.runs_on_thread(run):
                taken = run
            else:
                self._executor.submit(run)
        return taken

    def _release(self, runs: list[Run], *, at_timeout: bool) -> None:
        """At stop: give ``runs`` back (pending, due now, the attempt not counted)."""
        if not runs:
            return
        claims = [run.claim for run in runs]
        try:
            released = self._driver.jobs_release(self._db, claims, self._clock())
        except DatabaseError as exc:
            self._logger.warning(
                "jobs dispatcher: could not release %d unfinished job(s); they will be "
                "recovered when their locks expire: %s",
                len(claims),
                exc,
            )
            return
        if at_timeout:
            self._log.released(released)

    # -- outcomes ------------------------------------------------------------------------

    def _finish(
        self, run: Run, error: BaseException | None, seconds: float, on_thread: bool
    ) -> Run | None:
        """A handler ended: free its slot, queue its outcome and start waiting jobs
        (``on_thread``: return the next plain one to the calling handler thread)."""
        state = self._running.finish(run, seconds)
        if state == "stale":
            return None  # released at stop: the job is pending again, not ours
        if state == "stopped":
            self._log.late_result(run.job, seconds, run.stopped)
            following = self._start_waiting(take=on_thread)  # its slot is free now
            self._wake_event.set()
            return following
        if error is None:
            self._log.completed(run.job, seconds)
            self._completer.record(run.claim)
            self._ended(run.job, "completed", seconds)
        elif isinstance(error, Snooze):
            run_at = self._clock() + error.wait
            self._log.snoozed(run.job, seconds, run_at)
            self._completer.record(Snoozed(run.claim, run_at))
            self._ended(run.job, "snoozed", seconds, error, run_at)
        else:
            self._record_failure(run, error, seconds)
        following = self._start_waiting(take=on_thread)
        if not self._wake_event.is_set():  # set already: the control thread will look
            self._wake_event.set()
        return following

    def _failure(self, run: Run, error: BaseException, seconds: float) -> Failure:
        """The failed attempt of ``run``, to be retried or failed for good; logged."""
        job = run.job
        when: datetime | None = None
        if isinstance(error, Discard):
            self._log.discarded(job, seconds, error.reason)
            return Failure(run.claim, storable_text(f"Discarded: {error.reason}"), None)
        if will_retry(job):
            now = self._clock()
            options = self._options.get(job.topic)
            backoff = options.backoff if options and options.backoff else self._config.backoff
            max_wait = self._config.max_backoff
            try:
                when = retry_at(backoff, job, now, max_wait)
            except BackoffError:
                self._logger.exception("jobs: the backoff function failed for job %s", job.id)
                when = now + max_wait
        if when is not None:
            self._log.retrying(job, seconds, error, when)
        else:
            self._log.failed(job, seconds, error)
        self._log.traceback(job, error)
        return Failure(run.claim, error_text(error), when)

    def _written(self, outcomes: Outcomes, written: int) -> None:
        """The completer wrote ``outcomes`` (``written`` of them still ours)."""
        self._running.forget(
            itertools.chain(
                outcomes.completed,
                (failure.claim for failure in outcomes.failed),
                (snoozed.claim for snoozed in outcomes.snoozed),
                outcomes.cancelled,
            )
        )
        lost = len(outcomes) - written
        if lost:
            self._log.results_lost(lost)
        retries = [f.retry_at for f in outcomes.failed if f.retry_at is not None]
        retries += [snoozed.run_at for snoozed in outcomes.snoozed]
        if retries:
            self._remember_due(min(retries))
        if retries or self._throttled:
            self._wake_event.set()


def _average(average: float, sample: float) -> float:
    """An exponential moving average."""
    return 0.8 * average + 0.2 * sample
