"""The claims a dispatcher holds, and its worker slots.

Everything is tracked per :class:`~pocketjobs.plugins.jobs.drivers.Claim` (job id *and*
claim token), never per job id: a dispatcher that was paused past its lock can claim the
same job again while its first, stale run is still going, and both runs must give their
slot back when they end.

A claim passes through three states: *waiting* (claimed ahead, no slot yet), *active*
(its handler runs in a slot), *finished* (the handler returned or raised; its outcome is
not written yet, so its lock is still heartbeated). It is forgotten once its outcome is
written, or when it is released at stop.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
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
    """The claims of one dispatcher and its ``workers`` slots; thread-safe."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._runs: dict[Claim, Run] = {}
        self._waiting: deque[Run] = deque()
        self._active = 0
        #: A moving average of a handler's run time (seconds; infinite before the first).
        self.handler_seconds = math.inf
        #: Handlers finished since the last claim (reset by the claimer).
        self.finished_since_claim = 0

    @property
    def active(self) -> int:
        """Slots in use: handlers running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Claims waiting for a slot (claimed ahead)."""
        return len(self._waiting)

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, jobs: Sequence[Job], token: str) -> bool:
        """Hold the claims on ``jobs`` (made under ``token``), waiting for a slot. Returns
        whether no claim was held before (the heartbeat then starts afresh)."""
        with self._lock:
            was_idle = not self._runs
            for job in jobs:
                run = Run(job, Claim(job.id, token))
                self._runs[run.claim] = run
                self._waiting.append(run)
        return was_idle

    def start_waiting(self) -> list[Run]:
        """Give slots to waiting claims while slots are free; return the runs to start."""
        starting: list[Run] = []
        with self._lock:
            while self._waiting and self._active < self.workers:
                starting.append(self._waiting.popleft())
                self._active += 1
        return starting

    def finish(self, run: Run, seconds: float) -> bool:
        """The handler of ``run`` ended after ``seconds``: free its slot. Returns whether
        its outcome is still ours to write (``False`` once it was released at stop)."""
        with self._lock:
            if run.released or run.finished or self._runs.get(run.claim) is not run:
                return False
            run.finished = True
            self._active -= 1
            self.finished_since_claim += 1
            self.handler_seconds = _average(self.handler_seconds, seconds)
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
            released = list(self._waiting)
            self._waiting.clear()
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
            self._waiting.clear()
            for run in released:
                run.released = True
                del self._runs[run.claim]
            self._active = 0
        return released
