"""Group commit: the jobs of concurrent awaitable enqueues written in one statement and
one commit.

``JobStore.aenqueue`` validates its job on the caller's event loop and hands the row to
the store's :class:`GroupCommit`. One writer thread takes every row that is waiting when
it becomes free and writes them together (``JobsDriver.jobs_insert``: one statement, in a
transaction when some have a unique key). Each caller's future is settled only after that
commit: an answered enqueue is durable, and a failed write fails every caller of its batch
with the same error, so none is told its job exists when it does not.

There is no timer: under light load a batch is one job and goes at once (one thread
hand-off, as ``asyncio.to_thread`` would be); under heavy load the rows that arrive while
one batch commits make the next. The writer exits after ``idle`` seconds without work and
is started again by the next row, so the object needs no lifecycle of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pocketjobs.plugins.jobs.drivers import NewJob
from pocketjobs.plugins.jobs.job import Job

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ROWS", "GroupCommit"]

#: A batch closes at this many rows ...
MAX_BATCH_ROWS = 1000
#: ... or once its payloads reach this many bytes (a request's own rows always go together).
MAX_BATCH_BYTES = 4 << 20

Holders = list[Job | None]
Writer = Callable[[Sequence[NewJob]], Holders]


@dataclass(slots=True)
class _Request:
    rows: Sequence[NewJob]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Holders]


def _settle(future: asyncio.Future[Holders], result: Holders | BaseException) -> None:
    if future.cancelled():  # the caller stopped waiting; what was written stays written
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class GroupCommit:
    """Writes the rows of concurrent :meth:`submit` calls together (see the module doc).

    ``write(rows)`` inserts and commits the rows and returns, per row, ``None`` (inserted)
    or the job that holds its unique key; it runs on the writer thread only.
    """

    def __init__(self, write: Writer, *, idle: float = 1.0, name: str = "pocketjobs-enqueue"):
        self._write = write
        self._idle = idle
        self._name = name
        self._waiting: deque[_Request] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._writer_running = False
        #: Batches written so far (each one statement and one commit).
        self.batches = 0

    async def submit(self, rows: Sequence[NewJob]) -> Holders:
        """Write ``rows`` (one caller's jobs, kept together in one batch); return what
        ``write`` returned for them, once committed. Raises what the batch's write raised."""
        loop = asyncio.get_running_loop()
        request = _Request(rows, loop, loop.create_future())
        with self._cond:
            self._waiting.append(request)
            if self._writer_running:
                self._cond.notify()
            else:
                self._writer_running = True
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
        return await request.future

    def _next_batch(self) -> list[_Request] | None:
        """The requests of the next batch (at least one), or ``None`` once idle for
        ``idle`` seconds (the writer then exits)."""
        with self._cond:
            while not self._waiting:
                if not self._cond.wait(self._idle) and not self._waiting:
                    self._writer_running = False
                    return None
            batch = [self._waiting.popleft()]
            rows = len(batch[0].rows)
            size = sum(len(row.payload_json) for row in batch[0].rows)
            while self._waiting:
                nxt = self._waiting[0]
                rows += len(nxt.rows)
                size += sum(len(row.payload_json) for row in nxt.rows)
                if rows > MAX_BATCH_ROWS or size > MAX_BATCH_BYTES:
                    break
                batch.append(self._waiting.popleft())
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            rows = [row for request in batch for row in request.rows]
            self.batches += 1
            try:
                holders = self._write(rows)
            except BaseException as exc:  # every caller of the batch gets the error
                for request in batch:
                    self._answer(request, exc)
                continue
            start = 0
            for request in batch:
                end = start + len(request.rows)
                self._answer(request, holders[start:end])
                start = end

    @staticmethod
    def _answer(request: _Request, result: Holders | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            request.loop.call_soon_threadsafe(_settle, request.future, result)
