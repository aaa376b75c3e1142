"""The dispatcher: claims due jobs, runs their handlers, records the outcomes.

A control thread claims as many due jobs as there are free worker slots, heartbeats the
locks of claimed jobs, and rescues jobs whose worker died. While handlers take less than
about two claim round trips, it also claims one batch ahead, so that the next jobs arrive
as slots free up instead of one round trip later; with longer handlers it never does, so no
claimed job waits for a slot while another process could run it.

On PostgreSQL a completer thread records the outcomes of finished jobs (all that wait, in
one statement) on its own connection while the control thread claims: a slot is free as
soon as its handler returns and never waits for the bookkeeping. A finished job stays
claimed (its lock heartbeated) until its outcome is written. On SQLite, one writer at a
time, the control thread records them in its next claim's transaction. Plain handlers run on
``workers`` daemon threads; ``async def`` handlers run on one event-loop thread; both
count against ``workers``.

The control thread sleeps until something happens: a finished job, an enqueue in this
process (:meth:`Dispatcher.wake`), a PostgreSQL notification from any process, the next
known due time, a heartbeat, or at the latest ``poll_interval``.

Every write is fenced on the claim token: a dispatcher whose claim was lost (its lock
expired and another dispatcher took the job) cannot overwrite the new owner's state.
Database errors are logged and retried with backoff; finished results stay queued until
they are written, so an outage delays bookkeeping but never loses or repeats it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pocketjobs.core import Database, DatabaseError
from pocketjobs.core.times import now_utc, parse_time
from pocketjobs.plugins.jobs.config import Config
from pocketjobs.plugins.jobs.drivers import (
    NOTIFY_CHANNEL,
    Claim,
    ClaimParams,
    Failure,
    JobsDriver,
    Outcomes,
)
from pocketjobs.plugins.jobs.job import Job

__all__ = ["Dispatcher", "JobHandler", "is_async_handler"]

JobHandler = Callable[[Job], None] | Callable[[Job], Awaitable[None]]

LOCK_EXPIRED_ERROR = "lock expired: the worker running this job stopped responding"
MAX_ERROR_LENGTH = 16_384
_MAX_BACKOFF = 10.0  # seconds between retries of a failing database
_LISTENER_THREAD = "pocketjobs-listener"
_COMPLETER_THREAD = "pocketjobs-completer"
_RECHECK_DELAY = timedelta(milliseconds=20)
_SETTLE_WINDOW = 0.001  # seconds a claim waits for more running jobs to finish
_UNWRITTEN_PER_WORKER = 4  # finished jobs waiting for their outcome to be written, per slot
_MAX_RETRY_WAIT = timedelta(days=365)
_LISTEN_TICK = 0.25  # seconds: how often the listener checks whether to stop


def is_async_handler(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function or a callable object) is ``async``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def _average(average: float, sample: float) -> float:
    """An exponential moving average (the first sample replaces an infinite average)."""
    return sample if math.isinf(average) else 0.8 * average + 0.2 * sample


def _error_text(exc: BaseException) -> str:
    # NUL cannot be stored in PostgreSQL text: escaped alike on both databases.
    text = "".join(traceback.format_exception(exc)).strip().replace("\x00", "\\x00")
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH // 2] + "\n...\n" + text[-MAX_ERROR_LENGTH // 2 :]
    return text


@dataclass(slots=True)
class _Running:
    job: Job
    claim_token: str
    finished: bool = False  # the handler returned or raised; the outcome is not written yet
    released: bool = False  # given back at stop: its outcome is no longer ours to write


@dataclass(slots=True)
class _Result:
    job_id: str
    claim_token: str
    error: str | None  # None: the handler returned


@dataclass
class _Timers:
    """When the control thread next has to act on its own."""

    heartbeat_at: float = 0.0
    rescue_at: float = 0.0
    backoff: float = 0.0
    next_due: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


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
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._db = db
        self._driver = driver
        self._config = config
        self._handlers = handlers
        self._logger = logger
        self._clock = clock
        self._wake_event = threading.Event()  # the control thread has something to do
        self._settle_event = threading.Event()  # the completer has results to write
        # Claimed jobs whose outcome is not written yet; those claimed ahead, waiting for a
        # slot; how many are running (the slots in use); guarded by _lock.
        self._running: dict[str, _Running] = {}
        self._ready: deque[tuple[Job, str]] = deque()
        self._active = 0
        # Moving averages of a handler's run time and of a claim's round trip (seconds).
        self._handler_seconds = math.inf
        self._claim_seconds = 0.0
        self._finished_since_claim = 0
        self._throttled = False  # slots are free, but too many outcomes wait to be written
        self._lock = threading.Lock()
        self._results: deque[_Result] = deque()
        self._work: queue.SimpleQueue[tuple[Job, str] | None] = queue.SimpleQueue()
        self._timers = _Timers()
        self._state_lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._claiming_done = threading.Event()  # no more claims or releases: drain results
        self._stopped = threading.Event()
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public surface ------------------------------------------------------------------

    def start(self) -> None:
        """Start the control, completer, worker and listener threads. Starting twice is a
        no-op."""
        with self._state_lock:
            if self._started:
                return
            self._started = True
        for index in range(self._config.workers):
            self._spawn(self._work_loop, f"pocketjobs-worker-{index}")
        self._spawn(self._listen_loop, _LISTENER_THREAD)
        if self._driver.parallel_writes:
            self._spawn(self._settle_loop, _COMPLETER_THREAD)
        self._spawn(self._control_loop, "pocketjobs-dispatcher")

    def is_running(self) -> bool:
        """Whether the dispatcher has started and not yet stopped."""
        return self._started and not self._stopped.is_set()

    def running_jobs(self) -> int:
        """How many claimed jobs are running now (worker slots in use)."""
        return self._active

    def wake(self, due: datetime | None = None) -> None:
        """Tell the dispatcher that work is due at ``due`` (now if ``None``)."""
        if due is not None and due > self._clock():
            self._remember_due(due)
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
        for thread in self._threads:  # the listener's connection is closed when this returns
            if thread.name == _LISTENER_THREAD:
                thread.join(_LISTEN_TICK * 4)

    # -- threads -------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _control_loop(self) -> None:
        try:
            while True:
                self._wake_event.clear()
                if self._stopping.is_set():
                    if self._ready:  # claimed ahead, never started: give them back now
                        self._release_unfinished(started=False)
                    if self._active == 0 or time.monotonic() >= self._stop_deadline:
                        self._release_unfinished(started=True)
                        break
                self._gather_finished()
                busy = self._round()
                if not busy:
                    self._wake_event.wait(self._sleep_seconds())
        finally:
            self._claiming_done.set()
            self._settle_event.set()
            if self._driver.parallel_writes:
                for thread in self._threads:
                    if thread.name == _COMPLETER_THREAD:
                        thread.join()
            else:  # this thread records the outcomes: write the last ones
                self._settle_loop()
            self._shutdown_threads()
            self._stopped.set()

    def _gather_finished(self) -> None:
        """Give jobs that are still running a moment (``_SETTLE_WINDOW``) to finish too, so
        that slots are refilled in batches rather than one claim each. No wait when nothing
        has finished since the last claim, or nothing else is running, or when claiming
        ahead (the claim is for slots that free up while it is under way)."""
        if not self._finished_since_claim or self._stopping.is_set() or self._claims_ahead():
            return
        deadline = time.monotonic() + _SETTLE_WINDOW
        while self._active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake_event.clear()
            if not self._active:
                return
            self._wake_event.wait(remaining)

    def _round(self) -> bool:
        """One pass over the database work; ``True`` if another pass should follow at once."""
        try:
            now_mono = time.monotonic()
            if self._running and now_mono >= self._timers.heartbeat_at:
                self._heartbeat()
            if not self._stopping.is_set() and now_mono >= self._timers.rescue_at:
                self._rescue()
            filled = self._claim()
        except DatabaseError as exc:
            self._timers.backoff = self._pause_after(exc, self._timers.backoff, self._wake_event)
            return True
        except Exception:  # a bug: never die silently, keep serving after a pause
            self._logger.exception("jobs dispatcher: unexpected error; continuing")
            self._wake_event.wait(1.0)
            return True
        self._timers.backoff = 0.0
        return filled

    def _pause_after(self, exc: DatabaseError, backoff: float, event: threading.Event) -> float:
        """Log a database error and wait (doubling ``backoff``, up to ``_MAX_BACKOFF``) or
        until ``event`` is set; return the new backoff."""
        backoff = min(_MAX_BACKOFF, max(0.1, backoff * 2))
        self._logger.warning(
            "jobs %s: database error, retrying in %.1fs: %s",
            "completer" if event is self._settle_event else "dispatcher",
            backoff,
            exc,
        )
        event.wait(backoff)
        return backoff

    def _sleep_seconds(self) -> float:
        timeout = self._config.poll_interval.total_seconds()
        now_mono = time.monotonic()
        if self._running:
            timeout = min(timeout, self._timers.heartbeat_at - now_mono)
        if self._stopping.is_set():
            timeout = min(timeout, self._stop_deadline - now_mono)
        with self._timers.lock:
            next_due = self._timers.next_due
        if next_due is not None:
            timeout = min(timeout, (next_due - self._clock()).total_seconds())
        return max(0.0, timeout)

    # -- database work: claiming (control thread) ----------------------------------------

    def _claim(self) -> bool:
        """Claim as many due jobs as there are free slots (up to ``batch_size``) and hand
        them to the workers; where writes cannot run in parallel, record the finished jobs'
        outcomes in the same transaction. ``True`` if the claim filled its batch and slots
        remain."""
        topics = list(self._handlers)
        limit = 0
        if topics and not self._stopping.is_set():
            limit = max(0, min(self._capacity(), self._config.batch_size))
        settle = not self._driver.parallel_writes and bool(self._results)
        if limit == 0 and not settle:
            return False
        self._finished_since_claim = 0
        now = self._clock()
        if limit:
            with self._timers.lock:
                if self._timers.next_due is not None and self._timers.next_due <= now:
                    self._timers.next_due = None
        token = uuid.uuid4().hex
        lock_until = now + self._config.lock_duration
        started = time.monotonic()
        params = ClaimParams(topics, limit, now, lock_until, token) if limit else None
        if settle:
            count, completed, failures = self._outcomes(now)
            written, jobs = self._driver.jobs_settle_and_claim(
                self._db, Outcomes(now, completed, failures), params
            )
            self._settled(count, completed, failures, written)
        else:
            jobs = self._driver.jobs_claim(self._db, params) if params is not None else []
        if limit:
            self._claim_seconds = _average(self._claim_seconds, time.monotonic() - started)
        if jobs:
            with self._lock:
                if not self._running:
                    self._timers.heartbeat_at = time.monotonic() + self._heartbeat_interval()
                for job in jobs:
                    self._running[job.id] = _Running(job, token)
                    self._ready.append((job, token))
            self._start_ready()
        elif limit:  # nothing due: learn when the next job is, to wake for it
            due = self._driver.jobs_next_due(self._db, topics)
            if due is not None:
                # Due already yet not claimable (just became due, or row-locked by another
                # claimer): look again shortly rather than spin.
                self._remember_due(max(due, self._clock() + _RECHECK_DELAY))
        return limit > 0 and len(jobs) == limit and self._capacity() > 0

    def _claims_ahead(self) -> bool:
        """Whether to claim for slots that are busy now: while handlers take less than
        about two claim round trips, a slot frees up before a claim made when it is free
        would return; a job claimed ahead then waits for a slot no longer than that."""
        return self._handler_seconds <= 2 * self._claim_seconds

    def _capacity(self) -> int:
        """How many more jobs to claim now: the free slots (plus up to a batch claimed ahead,
        see :meth:`_claims_ahead`); none once ``_UNWRITTEN_PER_WORKER * workers``
        finished jobs wait for their outcome to be written (claims wait for a completer
        that falls behind)."""
        workers = self._config.workers
        ahead = min(workers, self._config.batch_size) if self._claims_ahead() else 0
        with self._lock:
            waiting = len(self._ready)
            unwritten = len(self._running) - self._active - waiting
            self._throttled = unwritten >= _UNWRITTEN_PER_WORKER * workers
            return 0 if self._throttled else workers + ahead - self._active - waiting

    def _start_ready(self, *, take: bool = False) -> tuple[Job, str] | None:
        """Start jobs claimed ahead while slots are free. ``take``: a handler thread whose
        job just finished asks for its next one: the first plain job is returned to run on
        that thread at once rather than handed to another through the queue."""
        starting: list[tuple[Job, str]] = []
        with self._lock:
            while self._ready and self._active < self._config.workers:
                starting.append(self._ready.popleft())
                self._active += 1
        taken: tuple[Job, str] | None = None
        for job, token in starting:
            if take and taken is None and self._async_handler(job) is None:
                taken = (job, token)
            else:
                self._dispatch(job, token)
        return taken

    def _remember_due(self, due: datetime | None) -> None:
        if due is None:
            return
        with self._timers.lock:
            if self._timers.next_due is None or due < self._timers.next_due:
                self._timers.next_due = due

    def _async_handler(self, job: Job) -> JobHandler | None:
        """The job's handler if it is ``async`` (it runs on the event loop), else ``None``."""
        handler = self._handlers.get(job.topic)
        return handler if handler is not None and is_async_handler(handler) else None

    def _dispatch(self, job: Job, token: str) -> None:
        handler = self._async_handler(job)
        if handler is not None:
            loop = self._event_loop()
            asyncio.run_coroutine_threadsafe(self._run_async(handler, job, token), loop)
        else:
            self._work.put((job, token))

    def _heartbeat(self) -> None:
        with self._lock:
            claims = [Claim(job_id, r.claim_token) for job_id, r in self._running.items()]
        self._timers.heartbeat_at = time.monotonic() + self._heartbeat_interval()
        if not claims:
            return
        owned = self._driver.jobs_extend_locks(
            self._db, claims, self._clock() + self._config.lock_duration
        )
        for claim in claims:
            if claim not in owned:
                self._logger.warning("jobs dispatcher: lost the claim on job %s", claim.job_id)

    def _heartbeat_interval(self) -> float:
        return self._config.lock_duration.total_seconds() / 3

    def _rescue(self) -> None:
        self._timers.rescue_at = time.monotonic() + self._config.poll_interval.total_seconds()
        rescued = self._driver.jobs_rescue_expired(self._db, self._clock(), LOCK_EXPIRED_ERROR)
        if rescued:
            self._logger.warning("jobs dispatcher: recovered %d job(s) with expired locks", rescued)

    def _release_unfinished(self, *, started: bool) -> None:
        """At stop: give back the jobs claimed ahead (``started=False``), or those still
        running and any left waiting (``started=True``; their outcome is then ignored)."""
        with self._lock:
            waiting = [job.id for job, _ in self._ready]
            self._ready.clear()
            ids = [i for i, r in self._running.items() if not r.finished] if started else waiting
            unfinished = [self._running.pop(job_id) for job_id in ids]
            for running in unfinished:
                running.released = True
            if started:
                self._active = 0
        if not unfinished:
            return
        claims = [Claim(r.job.id, r.claim_token) for r in unfinished]
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
        if started:
            self._logger.warning(
                "jobs dispatcher: released %d unfinished job(s) after the shutdown timeout",
                released,
            )

    # -- database work: recording outcomes (completer thread) ----------------------------

    def _settle_loop(self) -> None:
        """Write the outcomes of finished jobs, all that are queued in one statement; keep
        them queued and retry while the database fails. Ends once claiming has ended and
        every outcome is written (or, when stopping, the grace period is over)."""
        backoff = 0.0
        while True:
            self._settle_event.clear()
            if not self._results:
                if self._claiming_done.is_set():
                    return
                self._settle_event.wait()
                continue
            try:
                self._settle()
            except DatabaseError as exc:
                if self._claiming_done.is_set() and time.monotonic() >= self._stop_deadline:
                    self._logger.warning(
                        "jobs completer: could not record %d result(s) at stop; their jobs "
                        "will run again when their locks expire: %s",
                        len(self._results),
                        exc,
                    )
                    return
                backoff = self._pause_after(exc, backoff, self._settle_event)
            except Exception:  # a bug: never die silently, keep serving after a pause
                self._logger.exception("jobs completer: unexpected error; continuing")
                self._settle_event.wait(1.0)
            else:
                backoff = 0.0

    def _settle(self) -> None:
        now = self._clock()
        count, completed, failures = self._outcomes(now)
        written = self._driver.jobs_settle(self._db, Outcomes(now, completed, failures))
        self._settled(count, completed, failures, written)

    def _outcomes(self, now: datetime) -> tuple[int, list[Claim], list[Failure]]:
        """The outcomes of the results queued now (results keep arriving): how many results
        they are, the completions and the failures (with their next attempt's time)."""
        batch = list(self._results)
        completed: list[Claim] = []
        failures: list[Failure] = []
        with self._lock:
            jobs = [self._running.get(result.job_id) for result in batch]
        for result, running in zip(batch, jobs, strict=True):
            if running is None or running.released:
                continue
            if result.error is None:
                completed.append(Claim(result.job_id, result.claim_token))
            else:
                job = running.job
                retry_at = self._retry_at(job, now) if job.retries < job.max_retries else None
                claim = Claim(job.id, result.claim_token)
                failures.append(Failure(claim, result.error, retry_at))
        return len(batch), completed, failures

    def _settled(
        self,
        count: int,
        completed: list[Claim],
        failures: list[Failure],
        written: int,
    ) -> None:
        """Forget the first ``count`` results, now written (or fenced out)."""
        with self._lock:
            for _ in range(count):
                self._running.pop(self._results.popleft().job_id, None)
        lost = len(completed) + len(failures) - written
        if lost:
            self._logger.warning(
                "jobs dispatcher: %d result(s) discarded: their claim was taken over", lost
            )
        retries = [f.retry_at for f in failures if f.retry_at is not None]
        if retries:
            self._remember_due(min(retries))
        if retries or self._throttled:
            self._wake_event.set()

    def _retry_at(self, job: Job, now: datetime) -> datetime:
        """When the next attempt is due: ``now + backoff(retries + 1)``, at most a year out.
        A backoff that raises or returns nonsense is logged and treated as a year."""
        attempt = job.retries + 1
        try:
            wait = self._config.backoff(attempt)
            if not isinstance(wait, timedelta):
                raise TypeError(f"backoff({attempt}) returned {wait!r}, not a timedelta")
        except Exception:
            self._logger.exception(
                "jobs dispatcher: the backoff function failed for job %s", job.id
            )
            wait = _MAX_RETRY_WAIT
        return now + min(max(wait, timedelta(0)), _MAX_RETRY_WAIT)

    # -- handlers ------------------------------------------------------------------------

    def _finish(
        self,
        job: Job,
        token: str,
        error: BaseException | None,
        seconds: float,
        *,
        take: bool = False,
    ) -> tuple[Job, str] | None:
        """Record a handler's outcome (to be written) and free its slot; start jobs claimed
        ahead (``take``: return the next plain one to the calling handler thread)."""
        with self._lock:
            running = self._running.get(job.id)
            if running is None or running.released or running.claim_token != token:
                return None  # released at stop: the job is pending again, not ours
            running.finished = True
            self._active -= 1
            self._finished_since_claim += 1
            self._handler_seconds = _average(self._handler_seconds, seconds)
        self._results.append(_Result(job.id, token, None if error is None else _error_text(error)))
        following = self._start_ready(take=take)
        self._settle_event.set()
        self._wake_event.set()
        return following

    def _work_loop(self) -> None:
        item: tuple[Job, str] | None = None
        while True:
            if item is None:
                item = self._work.get()
                if item is None:
                    return
            job, token = item
            handler = self._handlers.get(job.topic)
            started = time.monotonic()
            try:
                if handler is None:
                    raise LookupError(f"no handler registered for topic {job.topic!r}")
                handler(job)
            except BaseException as exc:
                error: BaseException | None = exc
            else:
                error = None
            item = self._finish(job, token, error, time.monotonic() - started, take=True)

    async def _run_async(self, handler: JobHandler, job: Job, token: str) -> None:
        started = time.monotonic()
        try:
            await handler(job)  # type: ignore[misc]
        except BaseException as exc:
            self._finish(job, token, exc, time.monotonic() - started)
        else:
            self._finish(job, token, None, time.monotonic() - started)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._state_lock:  # jobs are started from the control and handler threads
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._spawn(lambda: self._run_event_loop(loop), "pocketjobs-async")
                self._loop = loop
            return self._loop

    @staticmethod
    def _run_event_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:  # stopped: cancel handlers still running (their jobs were released)
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _listen_loop(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            try:
                listener = self._db.listen(NOTIFY_CHANNEL)
            except DatabaseError as exc:
                delay = min(_MAX_BACKOFF, max(0.2, delay * 2))
                self._logger.warning(
                    "jobs listener: cannot listen, retrying in %.1fs: %s", delay, exc
                )
                self._stopping.wait(delay)
                continue
            if listener is None:
                return
            delay = 0.0
            self._wake_event.set()  # notifications may have been missed while disconnected
            try:
                while not self._stopping.is_set():
                    for payload in listener.wait(_LISTEN_TICK):
                        self._on_notification(payload)
            except DatabaseError as exc:
                self._logger.warning("jobs listener: connection lost, reconnecting: %s", exc)
            finally:
                listener.close()

    def _on_notification(self, payload: str) -> None:
        try:
            due: datetime | None = parse_time(payload)
        except ValueError:
            due = None
        self.wake(due)

    def _shutdown_threads(self) -> None:
        for _ in range(self._config.workers):
            self._work.put(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
