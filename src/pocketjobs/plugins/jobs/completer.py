"""The completer: records the outcomes of finished jobs in the database.

Handlers hand their outcome (a completed :class:`~pocketjobs.plugins.jobs.drivers.Claim`
or a :class:`~pocketjobs.plugins.jobs.drivers.Failure`) to :meth:`Completer.record`; the
completer writes all that wait in one statement, fenced on their claims, and keeps them
queued and retries while the database fails, so an outage delays the bookkeeping but never
loses or repeats it. Two implementations, picked by :func:`new_completer`:

* :class:`ThreadedCompleter` (PostgreSQL, where transactions write in parallel): a thread of
  its own writes outcomes on its own connection while the control thread claims.
* :class:`InlineCompleter` (SQLite, one writer at a time): the control thread writes them
  in the transaction of its next claim (:meth:`Completer.round`).

Either way claims wait while ``limit`` outcomes wait to be written (:meth:`throttled`):
a completer that falls behind holds the claims back instead of letting the backlog grow.
"""

from __future__ import annotations

import abc
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pocketjobs.core import Database, DatabaseError
from pocketjobs.plugins.jobs.drivers import (
    Cancelled,
    Claim,
    ClaimParams,
    Failure,
    JobsDriver,
    Outcomes,
    Snoozed,
)
from pocketjobs.plugins.jobs.job import Job

__all__ = ["Completer", "InlineCompleter", "ThreadedCompleter", "new_completer"]

#: Longest pause between retries of a failing database (seconds).
MAX_DB_BACKOFF = 10.0
_THREAD_NAME = "pocketjobs-completer"

#: Called after a batch was written: the batch and how many of its jobs were written
#: (the others' claims had been taken over).
OnWritten = Callable[[Outcomes, int], None]


def db_backoff(previous: float) -> float:
    """The pause after a database error that follows a pause of ``previous`` seconds."""
    return min(MAX_DB_BACKOFF, max(0.1, previous * 2))


class Completer(abc.ABC):
    """Writes finished jobs' outcomes; ``limit`` unwritten outcomes throttle claims."""

    def __init__(
        self,
        db: Database,
        driver: JobsDriver,
        *,
        limit: int,
        clock: Callable[[], datetime],
        on_written: OnWritten,
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._driver = driver
        self._limit = limit
        self._clock = clock
        self._on_written = on_written
        self._logger = logger
        # Appended by handler threads, written and popped by one writer thread.
        self._queue: deque[Claim | Failure | Snoozed | Cancelled] = deque()

    def record(self, outcome: Claim | Failure | Snoozed | Cancelled) -> None:
        """Queue an outcome to be written (a completed claim, a failure, a snooze, a
        cancellation)."""
        self._queue.append(outcome)
        self._notify()

    def backlog(self) -> int:
        """How many outcomes wait to be written."""
        return len(self._queue)

    def throttled(self) -> bool:
        """Whether claims should wait for the backlog to be written."""
        return len(self._queue) >= self._limit

    def _take(self) -> tuple[int, Outcomes]:
        """The outcomes queued now, as one batch (outcomes keep arriving meanwhile)."""
        count = len(self._queue)
        completed: list[Claim] = []
        failed: list[Failure] = []
        snoozed: list[Snoozed] = []
        cancelled: list[Claim] = []
        for outcome in itertools.islice(self._queue, count):
            if isinstance(outcome, Claim):
                completed.append(outcome)
            elif isinstance(outcome, Failure):
                failed.append(outcome)
            elif isinstance(outcome, Snoozed):
                snoozed.append(outcome)
            else:
                cancelled.append(outcome.claim)
        return count, Outcomes(self._clock(), completed, failed, snoozed, cancelled)

    def _written(self, count: int, outcomes: Outcomes, written: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._on_written(outcomes, written)

    @abc.abstractmethod
    def _notify(self) -> None:
        """An outcome was queued."""

    @abc.abstractmethod
    def wants_round(self) -> bool:
        """Whether the control thread has writing to do even when it claims nothing."""

    @abc.abstractmethod
    def round(self, params: ClaimParams | None) -> list[Job]:
        """The control thread's round trip: claim with ``params`` (nothing when ``None``)
        and, inline, write the queued outcomes in the same transaction."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start writing."""

    @abc.abstractmethod
    def finish(self, deadline: float) -> None:
        """Claiming has ended: write what is queued, retrying a failing database until
        ``deadline`` (``time.monotonic()``); then give up on the rest (their locks expire
        and they run again)."""

    def _give_up(self, exc: DatabaseError) -> None:
        self._logger.warning(
            "jobs completer: could not record %d result(s) at stop; their jobs will run "
            "again when their locks expire: %s",
            len(self._queue),
            exc,
        )


class InlineCompleter(Completer):
    """Outcomes written by the control thread, in its claim's transaction (SQLite)."""

    def _notify(self) -> None:
        pass  # the control thread writes outcomes on its next round; it is woken anyway

    def wants_round(self) -> bool:
        return bool(self._queue)

    def round(self, params: ClaimParams | None) -> list[Job]:
        if not self._queue:
            return self._driver.jobs_claim(self._db, params) if params is not None else []
        count, outcomes = self._take()
        written, jobs = self._driver.jobs_settle_and_claim(self._db, outcomes, params)
        self._written(count, outcomes, written)
        return jobs

    def start(self) -> None:
        pass

    def finish(self, deadline: float) -> None:
        backoff = 0.0
        while self._queue:
            try:
                self.round(None)
            except DatabaseError as exc:
                if time.monotonic() >= deadline:
                    self._give_up(exc)
                    return
                backoff = db_backoff(backoff)
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))


class ThreadedCompleter(Completer):
    """Outcomes written by a thread of their own, in parallel with claims (PostgreSQL)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event = threading.Event()
        self._finishing = False
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._write_loop, name=_THREAD_NAME, daemon=True)

    def _notify(self) -> None:
        if not self._event.is_set():  # set already: the writer will look (a lock saved)
            self._event.set()

    def wants_round(self) -> bool:
        return False

    def round(self, params: ClaimParams | None) -> list[Job]:
        return self._driver.jobs_claim(self._db, params) if params is not None else []

    def start(self) -> None:
        self._thread.start()

    def finish(self, deadline: float) -> None:
        self._deadline = deadline
        self._finishing = True
        self._event.set()
        if self._thread.is_alive():
            self._thread.join()

    def _write_loop(self) -> None:
        backoff = 0.0
        while True:
            self._event.clear()
            if not self._queue:
                if self._finishing:
                    return
                self._event.wait()
                continue
            try:
                count, outcomes = self._take()
                written = self._driver.jobs_settle(self._db, outcomes)
            except DatabaseError as exc:
                if self._finishing and time.monotonic() >= self._deadline:
                    self._give_up(exc)
                    return
                backoff = db_backoff(backoff)
                self._logger.warning(
                    "jobs completer: database error, retrying in %.1fs: %s", backoff, exc
                )
                self._event.wait(backoff)
            except Exception:  # a bug: never die silently, keep serving after a pause
                self._logger.exception("jobs completer: unexpected error; continuing")
                self._event.wait(1.0)
            else:
                backoff = 0.0
                self._written(count, outcomes, written)


def new_completer(db: Database, driver: JobsDriver, **options: Any) -> Completer:
    """The completer for ``driver``'s database (threaded where writes run in parallel),
    with :class:`Completer`'s keyword ``options``."""
    kind = ThreadedCompleter if driver.parallel_writes else InlineCompleter
    return kind(db, driver, **options)
