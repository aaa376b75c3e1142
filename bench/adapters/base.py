# ruff: noqa: RUF002 - the docstring uses the multiplication sign on purpose
"""The small interface every library adapter implements.

An adapter is one *configuration* of one library on one database (one row of the
results table), e.g. "pgqueuer, asyncpg, 5 queue managers × batch 10". The producer side
(enqueue) runs in the benchmark process; the worker side runs in its own process
(:meth:`Adapter.worker_main`, started by :meth:`Adapter.start_workers`) unless an
adapter says otherwise.

Sync libraries implement :meth:`enqueue_one` / :meth:`enqueue_chunk`; async ones set
``is_async`` and implement :meth:`aenqueue_one` / :meth:`aenqueue_chunk`, and the loops
below run inside one ``run_until_complete`` so the event loop's entry cost is paid once
per measurement, not per job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from bench.common import Scenario, Unsupported, WorkerProcess

#: Workload names.
ENQUEUE = "enqueue"
BURNDOWN = "burndown"
STEADY = "steady"
WAKEUP = "wakeup"
ALL_QUEUE_WORKLOADS = (ENQUEUE, BURNDOWN, STEADY, WAKEUP)


class WorkerHandle:
    """Running workers: :meth:`go` starts processing, :meth:`stop` ends it."""

    def go(self) -> None:
        raise NotImplementedError

    def check_alive(self) -> None:
        """Raise if the workers died."""

    def stop(self) -> None:
        raise NotImplementedError


class _SubprocessHandle(WorkerHandle):
    def __init__(self, proc: WorkerProcess) -> None:
        self.proc = proc

    def go(self) -> None:
        self.proc.go()

    def check_alive(self) -> None:
        self.proc.check_alive()

    def stop(self) -> None:
        self.proc.stop()


class Adapter:
    """One library configuration. Subclasses set the class attributes and the verbs."""

    key: ClassVar[str]  # unique, used on the worker command line
    library: ClassVar[str]  # pocketjobs | pgqueuer | procrastinate | huey
    label: ClassVar[str]  # the row label
    db: ClassVar[str]  # POSTGRES | SQLITE
    workloads: ClassVar[tuple[str, ...]] = ALL_QUEUE_WORKLOADS
    is_async: ClassVar[bool] = False
    #: Notes shown under the table (setup details that matter for fairness).
    notes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: Scenario) -> None:
        self.ctx = ctx
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        """Install the schema in the scenario's database and open the producer."""
        if self.is_async:
            self._loop = asyncio.new_event_loop()
            self.run(self.asetup())

    async def asetup(self) -> None:
        """Async part of :meth:`setup`."""

    def teardown(self) -> None:
        """Close the producer (the scenario drops the database afterwards)."""
        if self._loop is not None:
            try:
                self.run(self.ateardown())
            finally:
                self._loop.close()
                self._loop = None

    async def ateardown(self) -> None:
        """Async part of :meth:`teardown`."""

    def run(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    # -- producer verbs (one library call each) ------------------------------------------

    def enqueue_one(self, number: int) -> None:
        raise NotImplementedError

    def enqueue_chunk(self, numbers: Sequence[int]) -> None:
        """One bulk call for all of ``numbers``; raise :class:`Unsupported` if the API
        has none."""
        raise Unsupported("no bulk enqueue API")

    async def aenqueue_one(self, number: int) -> None:
        raise NotImplementedError

    async def aenqueue_chunk(self, numbers: Sequence[int]) -> None:
        raise Unsupported("no bulk enqueue API")

    # -- producer loops (what the workloads time) ----------------------------------------

    def enqueue_single(self, numbers: Sequence[int]) -> None:
        """One enqueue call per job."""
        if self.is_async:

            async def loop() -> None:
                for n in numbers:
                    await self.aenqueue_one(n)

            self.run(loop())
        else:
            for n in numbers:
                self.enqueue_one(n)

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int) -> None:
        """Bulk calls of ``chunk`` jobs each."""
        chunks = [numbers[i : i + chunk] for i in range(0, len(numbers), chunk)]
        if self.is_async:

            async def loop() -> None:
                for part in chunks:
                    await self.aenqueue_chunk(part)

            self.run(loop())
        else:
            for part in chunks:
                self.enqueue_chunk(part)

    def fill(self, numbers: Sequence[int]) -> None:
        """Queue ``numbers`` as fast as the API allows (not timed): bulk, else singly."""
        try:
            self.enqueue_bulk(numbers, 1000)
        except Unsupported:
            self.enqueue_single(numbers)

    def enqueue_paced(self, numbers: Sequence[int], interval: float) -> list[int]:
        """Enqueue one job every ``interval`` seconds; return each call's return time
        (``time.monotonic_ns()``)."""
        returned: list[int] = []
        start = time.monotonic()
        if self.is_async:

            async def loop() -> None:
                for index, n in enumerate(numbers):
                    delay = start + index * interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self.aenqueue_one(n)
                    returned.append(time.monotonic_ns())

            self.run(loop())
        else:
            for index, n in enumerate(numbers):
                delay = start + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.enqueue_one(n)
                returned.append(time.monotonic_ns())
        return returned

    def enqueue_steady(
        self, first: int, stop_at: float, chunk: int, may_enqueue: Callable[[int], bool]
    ) -> int:
        """Enqueue chunks of ``chunk`` jobs (bulk where the API has it, else one call per
        job) until ``time.monotonic() >= stop_at``, pausing while
        ``may_enqueue(enqueued_so_far)`` is false (bounded backlog). Return how many."""
        bulk = True
        sent = 0
        if self.is_async:

            async def loop() -> None:
                nonlocal bulk, sent
                while time.monotonic() < stop_at:
                    if not may_enqueue(sent):
                        await asyncio.sleep(0.001)
                        continue
                    numbers = range(first + sent, first + sent + chunk)
                    if bulk:
                        try:
                            await self.aenqueue_chunk(numbers)
                        except Unsupported:
                            bulk = False
                            continue
                    else:
                        for n in numbers:
                            await self.aenqueue_one(n)
                    sent += chunk

            self.run(loop())
            return sent
        while time.monotonic() < stop_at:
            if not may_enqueue(sent):
                time.sleep(0.001)
                continue
            numbers = range(first + sent, first + sent + chunk)
            if bulk:
                try:
                    self.enqueue_chunk(numbers)
                except Unsupported:
                    bulk = False
                    continue
            else:
                for n in numbers:
                    self.enqueue_one(n)
            sent += chunk
        return sent

    # -- queue state ---------------------------------------------------------------------

    def remaining(self) -> int:
        """Jobs not yet finished according to the library's own tables."""
        raise NotImplementedError

    # -- workers -------------------------------------------------------------------------

    def worker_spec(self) -> dict[str, Any]:
        """What the worker process needs (JSON-serializable)."""
        return {
            "db": self.ctx.db,
            "pg_url": self.ctx.pg_url,
            "tmp": str(self.ctx.tmp),
            "records": str(self.ctx.records),
            "concurrency": 10,
        }

    def start_workers(self) -> WorkerHandle:
        """Start the workers (idle until ``go``); returns once they are ready."""
        proc = WorkerProcess(self.key, self.worker_spec(), self.ctx.tmp)
        try:
            proc.wait_ready()
        except BaseException:
            proc.stop()
            raise
        return _SubprocessHandle(proc)

    @classmethod
    def worker_main(cls, spec: dict[str, Any]) -> None:
        """Run in the worker process: set up, :func:`worker_ready_and_wait`, then process
        jobs until SIGTERM."""
        raise NotImplementedError
