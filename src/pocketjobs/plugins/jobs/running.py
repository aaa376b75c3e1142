"""The claims a dispatcher holds, and its worker slots (per queue).

Everything is tracked per :class:`~pocketjobs.plugins.jobs.drivers.Claim` (job id *and*
claim token), never per job id: a dispatcher that was paused past its lock can claim the
same job again while its first, stale run is still going, and both runs must give their
slot back when they end.

A claim passes through three states: *waiting* (claimed ahead, no slot yet), *active*
(its handler runs in a slot), *finished* (the handler returned or raised; its outcome is
not written yet, so its lock is still heartbeated). It is forgotten once its outcome is
written, or when it is released at stop.

Each queue has its own slots: a claim of one queue waits only for a slot of that queue,
so a queue whose handlers are slow or stuck never holds up another.

A claim can also be *stopped* before its handler ends: its job was cancelled, or its
attempt ran past its timeout. Its outcome is then decided at once (cancelled, or failed by
the timeout) and whatever the handler does later is discarded; a stopped handler that is
still running keeps its slot until it returns (a thread cannot be killed), so the slots
never count more handlers than really run.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from pocketjobs.plugins.jobs.drivers import Claim
from pocketjobs.plugins.jobs.job import Job

__all__ = ["Run", "RunningClaims"]


@dataclass(slots=True, eq=False)
class Run:
    """One claimed job and the claim it runs under."""

    job: Job
    claim: Claim
    finished: bool = False  # the handler returned or raised
    released: bool = False  # given back at stop: its outcome is no longer ours to write
    #: Why the run was stopped before its handler ended; its outcome is decided.
    stopped: Literal["cancelled", "timed out"] | None = None
    #: When the handler started and must end (monotonic seconds; no end: no timeout).
    started: float = 0.0
    deadline: float | None = None
    #: The async handler's future (cancelling it cancels the handler's task).
    future: Future[Any] | None = None


def _average(average: float, sample: float) -> float:
    """An exponential moving average (the first sample replaces an infinite average)."""
    return sample if math.isinf(average) else 0.8 * average + 0.2 * sample


class RunningClaims:
    """The claims of one dispatcher and the worker slots of each of its queues
    (``slots``: queue name -> number of slots); thread-safe."""

    def __init__(self, slots: Mapping[str, int]) -> None:
        self.slots = dict(slots)
        self._lock = threading.Lock()
        self._runs: dict[Claim, Run] = {}
        self._waiting: dict[str, deque[Run]] = {queue: deque() for queue in self.slots}
        self._active_in: dict[str, int] = dict.fromkeys(self.slots, 0)
        self._active = 0
        self._waiting_count = 0
        self._stopped_running: set[Run] = set()  # stopped, their handlers still running
        #: Per queue, a moving average of a handler's run time (seconds; infinite before
        #: the first).
        self.handler_seconds: dict[str, float] = dict.fromkeys(self.slots, math.inf)
        #: Handlers finished since the last claim (reset by the claimer).
        self.finished_since_claim = 0

    @property
    def active(self) -> int:
        """Slots in use: handlers running now (in all queues)."""
        return self._active

    @property
    def waiting(self) -> int:
        """Claims waiting for a slot (claimed ahead; in all queues)."""
        return self._waiting_count

    def free(self, queue: str) -> int:
        """The slots of ``queue`` neither in use nor promised to a waiting claim (negative
        while more claims wait than slots exist)."""
        return self.slots[queue] - self._active_in[queue] - len(self._waiting[queue])

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, jobs: Sequence[Job], token: str) -> bool:
        """Hold the claims on ``jobs`` (made under ``token``), waiting for a slot of their
        queue. Returns whether no claim was held before (the heartbeat then starts afresh)."""
        with self._lock:
            was_idle = not self._runs
            for job in jobs:
                run = Run(job, Claim(job.id, token))
                self._runs[run.claim] = run
                self._waiting[job.queue].append(run)
            self._waiting_count += len(jobs)
        return was_idle

    def start_waiting(self) -> list[Run]:
        """Give slots to waiting claims while their queue has free slots; return the runs
        to start."""
        starting: list[Run] = []
        with self._lock:
            if not self._waiting_count:
                return starting
            for queue, waiting in self._waiting.items():
                slots = self.slots[queue]
                while waiting and self._active_in[queue] < slots:
                    starting.append(waiting.popleft())
                    self._active_in[queue] += 1
            self._active += len(starting)
            self._waiting_count -= len(starting)
        return starting

    def finish(self, run: Run, seconds: float) -> Literal["ours", "stopped", "stale"]:
        """The handler of ``run`` ended after ``seconds``: free its slot. Returns
        ``"ours"`` when its outcome is still ours to write; ``"stopped"`` when it had been
        stopped (its outcome was decided then; its slot is free now); ``"stale"`` when
        nothing is ours any more (released at stop, or reported twice)."""
        queue = run.job.queue
        with self._lock:
            if run in self._stopped_running:
                self._stopped_running.discard(run)
                run.finished = True  # its slot was kept until now
                self._active -= 1
                self._active_in[queue] -= 1
                return "stopped"
            if run.released or run.finished or self._runs.get(run.claim) is not run:
                return "stale"
            run.finished = True
            self._active -= 1
            self._active_in[queue] -= 1
            self.finished_since_claim += 1
            self.handler_seconds[queue] = _average(self.handler_seconds[queue], seconds)
        return "ours"

    def forget(self, claims: Iterable[Claim]) -> None:
        """Stop holding ``claims``: their outcomes are written (or were fenced out)."""
        with self._lock:
            for claim in claims:
                self._runs.pop(claim, None)

    def stop(self, run: Run, why: Literal["cancelled", "timed out"]) -> bool:
        """Stop ``run`` before its handler ends (see the module's docstring). Returns
        whether it was stopped now: ``False`` if its handler had ended, it was stopped
        before, or it is no longer held. A claim still waiting for a slot is dropped from
        the wait (its handler never starts)."""
        with self._lock:
            if run.stopped or run.finished or run.released or self._runs.get(run.claim) is not run:
                return False
            run.stopped = why
            waiting = self._waiting[run.job.queue]
            if run in waiting:
                waiting.remove(run)
                self._waiting_count -= 1
                run.finished = True  # no handler, no slot
            else:
                self._stopped_running.add(run)
        return True

    def find(self, job_id: str) -> list[Run]:
        """The held runs of the job ``job_id`` (normally one)."""
        with self._lock:
            return [run for claim, run in self._runs.items() if claim.job_id == job_id]

    def running(self) -> list[Run]:
        """The held runs whose handler runs now and has not been stopped."""
        with self._lock:
            return [
                run for run in self._runs.values()
                if not run.finished and not run.stopped and run not in self._waiting[run.job.queue]
            ]  # fmt: skip

    def held(self) -> list[Claim]:
        """Every claim held now (their locks are to be heartbeated)."""
        with self._lock:
            return list(self._runs)

    def release_waiting(self) -> list[Run]:
        """At stop: stop holding the claims that never got a slot, and return them (a
        stopped claim's outcome is decided: it is not one of them)."""
        with self._lock:
            released = [run for waiting in self._waiting.values() for run in waiting]
            self._clear_waiting()
            for run in released:
                run.released = True
                self._runs.pop(run.claim, None)
        return released

    def release_unfinished(self) -> list[Run]:
        """At stop, once the grace period is over: stop holding every claim whose handler
        has not finished (and any still waiting), free all slots, and return them. Their
        handlers' outcomes, should they still end, are ignored."""
        with self._lock:
            released = [run for run in self._runs.values() if not run.finished and not run.stopped]
            self._clear_waiting()
            for run in released:
                run.released = True
                del self._runs[run.claim]
            for run in self._stopped_running:  # their slots are reset too
                run.released = True
            self._stopped_running.clear()
            self._active = 0
            self._active_in = dict.fromkeys(self.slots, 0)
        return released

    def _clear_waiting(self) -> None:
        for waiting in self._waiting.values():
            waiting.clear()
        self._waiting_count = 0
