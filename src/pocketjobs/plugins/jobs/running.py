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
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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

    def finish(self, run: Run, seconds: float) -> bool:
        """The handler of ``run`` ended after ``seconds``: free its slot. Returns whether
        its outcome is still ours to write (``False`` once it was released at stop)."""
        queue = run.job.queue
        with self._lock:
            if run.released or run.finished or self._runs.get(run.claim) is not run:
                return False
            run.finished = True
            self._active -= 1
            self._active_in[queue] -= 1
            self.finished_since_claim += 1
            self.handler_seconds[queue] = _average(self.handler_seconds[queue], seconds)
        return True

    def forget(self, claims: Iterable[Claim]) -> None:
        """Stop holding ``claims``: their outcomes are written (or were fenced out)."""
        with self._lock:
            for claim in claims:
                self._runs.pop(claim, None)

    def held(self) -> list[Claim]:
        """Every claim held now (their locks are to be heartbeated)."""
        with self._lock:
            return list(self._runs)

    def release_waiting(self) -> list[Run]:
        """At stop: stop holding the claims that never got a slot, and return them."""
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
            released = [run for run in self._runs.values() if not run.finished]
            self._clear_waiting()
            for run in released:
                run.released = True
                del self._runs[run.claim]
            self._active = 0
            self._active_in = dict.fromkeys(self.slots, 0)
        return released

    def _clear_waiting(self) -> None:
        for waiting in self._waiting.values():
            waiting.clear()
        self._waiting_count = 0
