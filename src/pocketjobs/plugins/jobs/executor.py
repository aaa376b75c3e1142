"""The executor: runs job handlers in the dispatcher's worker slots.

Plain handlers run on ``workers`` daemon threads; ``async def`` handlers run on one
event-loop thread, started when the first one is needed. Both count against the same
slots (the dispatcher gives a slot before it submits a run). When a handler thread's job
ends, the dispatcher may hand it the next claimed job at once (:data:`OnFinish` returns
it), so a busy slot is refilled without a hand-off through the queue.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pocketjobs.plugins.jobs.job import Job
from pocketjobs.plugins.jobs.running import Run

__all__ = ["Executor", "JobHandler", "OnFinish", "is_async_handler"]

JobHandler = Callable[[Job], None] | Callable[[Job], Awaitable[None]]
#: Called when a handler ends: ``(run, error or None, seconds, on_handler_thread)``;
#: returns the next plain run for that handler thread to run, or ``None``.
OnFinish = Callable[[Run, BaseException | None, float, bool], Run | None]


def is_async_handler(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function or a callable object) is ``async``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class Executor:
    """Runs the handlers of ``handlers`` (topic → function) for submitted runs."""

    def __init__(self, workers: int, handlers: Mapping[str, JobHandler], on_finish: OnFinish):
        self._workers = workers
        self._handlers = handlers
        self._on_finish = on_finish
        self._work: queue.SimpleQueue[Run | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        # Per topic, its handler when last looked at and whether it is async (inspect's
        # check costs about a microsecond, a job's whole dispatch a few dozen).
        self._kinds: dict[str, tuple[JobHandler, bool]] = {}

    def start(self) -> None:
        """Start the handler threads."""
        for index in range(self._workers):
            thread = threading.Thread(
                target=self._work_loop, name=f"pocketjobs-worker-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def runs_on_thread(self, run: Run) -> bool:
        """Whether ``run``'s handler is a plain function (it runs on a handler thread)."""
        return not self._is_async(run.job.topic)

    def submit(self, run: Run) -> None:
        """Run ``run``'s handler (its slot is already taken). An async handler's future
        is kept on the run (``run.future``): cancelling it cancels the handler."""
        topic = run.job.topic
        if self._is_async(topic):
            handler = self._handlers[topic]
            coroutine = self._run_async(handler, run)
            run.future = asyncio.run_coroutine_threadsafe(coroutine, self._event_loop())
        else:
            self._work.put(run)

    def _is_async(self, topic: str) -> bool:
        """Whether the handler of ``topic`` is async (no handler: no)."""
        handler = self._handlers.get(topic)
        kind = self._kinds.get(topic)
        if kind is None or kind[0] is not handler:
            if handler is None:
                return False
            kind = self._kinds[topic] = (handler, is_async_handler(handler))
        return kind[1]

    def shutdown(self) -> None:
        """Let the handler threads end once idle and stop the event loop (coroutines still
        running are cancelled: their jobs were released)."""
        for _ in self._threads:
            self._work.put(None)
        with self._loop_lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)

    def _work_loop(self) -> None:
        run: Run | None = None
        while True:
            if run is None:
                run = self._work.get()
                if run is None:
                    return
            handler = self._handlers.get(run.job.topic)
            started = time.monotonic()
            try:
                if handler is None:
                    raise LookupError(f"no handler registered for topic {run.job.topic!r}")
                handler(run.job)
            except BaseException as exc:
                error: BaseException | None = exc
            else:
                error = None
            run = self._on_finish(run, error, time.monotonic() - started, True)

    async def _run_async(self, handler: JobHandler, run: Run) -> None:
        started = time.monotonic()
        try:
            await handler(run.job)  # type: ignore[misc]
        except BaseException as exc:
            self._on_finish(run, exc, time.monotonic() - started, False)
        else:
            self._on_finish(run, None, time.monotonic() - started, False)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:  # runs are submitted from the control and handler threads
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_event_loop, args=(loop,), name="pocketjobs-async", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop


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
