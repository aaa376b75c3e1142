"""The dispatcher: claims due jobs, runs their handlers, records the outcomes.

One control thread owns the database side: it flushes finished jobs (completions and
failures of a round in one transaction), heartbeats the locks of running jobs, rescues
jobs whose worker died, and claims as many jobs as there are free worker slots (never
more, so no claimed job waits for a slot while its lock runs out). Plain handlers run on
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
from pocketjobs.plugins.jobs.drivers import NOTIFY_CHANNEL, Failure, JobsDriver
from pocketjobs.plugins.jobs.job import Job

__all__ = ["Dispatcher", "JobHandler", "is_async_handler"]

JobHandler = Callable[[Job], None] | Callable[[Job], Awaitable[None]]

LOCK_EXPIRED_ERROR = "lock expired: the worker running this job stopped responding"
MAX_ERROR_LENGTH = 16_384
_MAX_BACKOFF = 10.0  # seconds between retries of a failing database
_LISTENER_THREAD = "pocketjobs-listener"
_RECHECK_DELAY = timedelta(milliseconds=20)
_SETTLE_WINDOW = 0.001  # seconds a round waits for more running jobs to finish
_MAX_RETRY_WAIT = timedelta(days=365)
_LISTEN_TICK = 0.25  # seconds: how often the listener checks whether to stop


def is_async_handler(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function or a callable object) is ``async``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).strip()
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH // 2] + "\n...\n" + text[-MAX_ERROR_LENGTH // 2 :]
    return text


@dataclass(slots=True)
class _Running:
    job: Job
    claim_token: str
    released: bool = False


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
        self._wake_event = threading.Event()
        self._running: dict[str, _Running] = {}
        self._results: deque[_Result] = deque()
        self._work: queue.SimpleQueue[tuple[Job, str] | None] = queue.SimpleQueue()
        self._timers = _Timers()
        self._state_lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public surface ------------------------------------------------------------------

    def start(self) -> None:
        """Start the control, worker and listener threads. Starting twice is a no-op."""
        with self._state_lock:
            if self._started:
                return
            self._started = True
        for index in range(self._config.workers):
            self._spawn(self._work_loop, f"pocketjobs-worker-{index}")
        self._spawn(self._listen_loop, _LISTENER_THREAD)
        self._spawn(self._control_loop, "pocketjobs-dispatcher")

    def is_running(self) -> bool:
        """Whether the dispatcher has started and not yet stopped."""
        return self._started and not self._stopped.is_set()

    def running_jobs(self) -> int:
        """How many claimed jobs are running now."""
        return len(self._running)

    def wake(self, due: datetime | None = None) -> None:
        """Tell the dispatcher that work is due at ``due`` (now if ``None``)."""
        if due is not None and due > self._clock():
            self._remember_due(due)
        self._wake_event.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let running jobs finish for up to ``timeout`` seconds (default
        ``shutdown_timeout``), then release the unfinished ones back to pending (their
        attempt not counted) so another worker takes them at once. Blocks until done."""
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
            while not self._stopping.is_set() or self._running or self._results:
                self._wake_event.clear()
                if self._stopping.is_set() and time.monotonic() >= self._stop_deadline:
                    self._release_unfinished()
                    break
                self._gather_results()
                busy = self._round()
                if not busy:
                    self._wake_event.wait(self._sleep_seconds())
        finally:
            self._shutdown_threads()
            self._stopped.set()

    def _gather_results(self) -> None:
        """Give jobs that are still running a moment (``_SETTLE_WINDOW``) to finish too, so
        that finished jobs are settled, and slots refilled, in batches rather than one round
        trip each. No wait when nothing has finished or nothing else is running."""
        if not self._results or self._stopping.is_set():
            return
        deadline = time.monotonic() + _SETTLE_WINDOW
        while len(self._results) < len(self._running):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake_event.clear()
            if len(self._results) >= len(self._running):
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
            filled = self._settle_and_claim()
        except DatabaseError as exc:
            self._timers.backoff = min(_MAX_BACKOFF, max(0.1, self._timers.backoff * 2))
            self._logger.warning(
                "jobs dispatcher: database error, retrying in %.1fs: %s", self._timers.backoff, exc
            )
            self._wake_event.wait(self._timers.backoff)
            return True
        except Exception:  # a bug: never die silently, keep serving after a pause
            self._logger.exception("jobs dispatcher: unexpected error; continuing")
            self._wake_event.wait(1.0)
            return True
        self._timers.backoff = 0.0
        return filled

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

    # -- database work (control thread only) ---------------------------------------------

    def _settle_and_claim(self) -> bool:
        """Record the finished jobs and claim as many as there are free slots, in one
        database round trip. ``True`` if the claim filled its batch and slots remain."""
        batch = list(self._results)  # results keep arriving; take what is there now
        now = self._clock()
        completed, failures = self._outcomes(batch, now)
        finished = {result.job_id for result in batch}
        busy = sum(1 for job_id in self._running if job_id not in finished)
        topics = list(self._handlers)
        limit = 0
        if topics and not self._stopping.is_set():
            limit = max(0, min(self._config.workers - busy, self._config.batch_size))
        if not completed and not failures and limit == 0:
            self._forget(len(batch))
            return False
        if limit:
            with self._timers.lock:
                if self._timers.next_due is not None and self._timers.next_due <= now:
                    self._timers.next_due = None
        token = uuid.uuid4().hex
        written, jobs = self._driver.jobs_settle_and_claim(
            self._db,
            completed,
            failures,
            topics,
            limit,
            now,
            now + self._config.lock_duration,
            token,
        )
        self._forget(len(batch))  # written, or fenced out: their slots are free now
        lost = len(completed) + len(failures) - written
        if lost:
            self._logger.warning(
                "jobs dispatcher: %d result(s) discarded: their claim was taken over", lost
            )
        retries = [f.retry_at for f in failures if f.retry_at is not None]
        if retries:
            self._remember_due(min(retries))
        if jobs and not self._running:
            self._timers.heartbeat_at = time.monotonic() + self._heartbeat_interval()
        for job in jobs:
            self._running[job.id] = _Running(job, token)
            self._dispatch(job, token)
        if limit and not jobs:  # nothing due: learn when the next job is, to wake for it
            due = self._driver.jobs_next_due(self._db, topics)
            if due is not None:
                # Due already yet not claimable (just became due, or row-locked by another
                # claimer): look again shortly rather than spin.
                self._remember_due(max(due, self._clock() + _RECHECK_DELAY))
        return limit > 0 and len(jobs) == limit and len(self._running) < self._config.workers

    def _outcomes(
        self, batch: list[_Result], now: datetime
    ) -> tuple[list[tuple[str, str]], list[Failure]]:
        completed: list[tuple[str, str]] = []
        failures: list[Failure] = []
        for result in batch:
            running = self._running.get(result.job_id)
            if running is None or running.released:
                continue
            if result.error is None:
                completed.append((result.job_id, result.claim_token))
            else:
                job = running.job
                retry_at = self._retry_at(job, now) if job.retries < job.max_retries else None
                failures.append(Failure(job.id, result.claim_token, result.error, retry_at))
        return completed, failures

    def _forget(self, count: int) -> None:
        """Drop the first ``count`` results and their running entries (control thread)."""
        for _ in range(count):
            result = self._results.popleft()
            self._running.pop(result.job_id, None)

    def _remember_due(self, due: datetime | None) -> None:
        if due is None:
            return
        with self._timers.lock:
            if self._timers.next_due is None or due < self._timers.next_due:
                self._timers.next_due = due

    def _dispatch(self, job: Job, token: str) -> None:
        handler = self._handlers.get(job.topic)
        if handler is not None and is_async_handler(handler):
            loop = self._event_loop()
            asyncio.run_coroutine_threadsafe(self._run_async(handler, job, token), loop)
        else:
            self._work.put((job, token))

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

    def _heartbeat(self) -> None:
        claims = [(job_id, r.claim_token) for job_id, r in self._running.items() if not r.released]
        self._timers.heartbeat_at = time.monotonic() + self._heartbeat_interval()
        if not claims:
            return
        owned = self._driver.jobs_extend_locks(
            self._db, claims, self._clock() + self._config.lock_duration
        )
        for job_id, _ in claims:
            if job_id not in owned:
                self._logger.warning("jobs dispatcher: lost the claim on job %s", job_id)

    def _heartbeat_interval(self) -> float:
        return self._config.lock_duration.total_seconds() / 3

    def _rescue(self) -> None:
        self._timers.rescue_at = time.monotonic() + self._config.poll_interval.total_seconds()
        rescued = self._driver.jobs_rescue_expired(self._db, self._clock(), LOCK_EXPIRED_ERROR)
        if rescued:
            self._logger.warning("jobs dispatcher: recovered %d job(s) with expired locks", rescued)

    def _release_unfinished(self) -> None:
        try:
            self._settle_and_claim()  # stopping: records results, claims nothing
        except DatabaseError as exc:
            self._logger.warning("jobs dispatcher: could not record results at stop: %s", exc)
        claims = [(job_id, r.claim_token) for job_id, r in self._running.items()]
        if not claims:
            return
        for running in self._running.values():
            running.released = True
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
        self._logger.warning(
            "jobs dispatcher: released %d unfinished job(s) after the shutdown timeout", released
        )

    # -- handlers ------------------------------------------------------------------------

    def _finish(self, job: Job, token: str, error: BaseException | None) -> None:
        self._results.append(_Result(job.id, token, None if error is None else _error_text(error)))
        self._wake_event.set()

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            job, token = item
            handler = self._handlers.get(job.topic)
            try:
                if handler is None:
                    raise LookupError(f"no handler registered for topic {job.topic!r}")
                handler(job)
            except BaseException as exc:
                self._finish(job, token, exc)
            else:
                self._finish(job, token, None)

    async def _run_async(self, handler: JobHandler, job: Job, token: str) -> None:
        try:
            await handler(job)  # type: ignore[misc]
        except BaseException as exc:
            self._finish(job, token, exc)
        else:
            self._finish(job, token, None)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
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
