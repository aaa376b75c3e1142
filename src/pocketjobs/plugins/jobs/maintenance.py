"""The dispatcher's maintenance: heartbeating its locks, rescuing dead workers' jobs,
announcing itself, and its chores.

All of them run on the dispatcher's control thread, scheduled on the injected clock (the
config's ``clock``), so tests drive them by moving that clock instead of sleeping:

* **heartbeat**, every ``lock_duration / 3`` while claims are held: every held claim's
  lock moves to ``now + lock_duration`` (fenced on its token), so a long job is never
  taken over while its worker lives;
* **rescue**, every ``poll_interval``: jobs whose lock expired (their worker died or
  stopped responding) count a failed attempt and become due again, or fail for good;
* **announce**, every ``ANNOUNCE_INTERVAL`` (see ``presence.py``): the dispatcher's row in
  the workers table, and warnings about topics no running worker handles;
* **chores**, each when it says it is due (:class:`Chore`): the schedules of periodic jobs
  (``schedules.py``) and retention's pruning (``retention.py``). None runs while the
  dispatcher stops.

Lost claims and rescues are logged as ``jobs.claim_lost`` and ``jobs.rescued`` (``logs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pocketjobs.core import Database
from pocketjobs.plugins.jobs.drivers import JobsDriver
from pocketjobs.plugins.jobs.logs import JobLog
from pocketjobs.plugins.jobs.presence import ANNOUNCE_INTERVAL, Presence
from pocketjobs.plugins.jobs.retry import LOCK_EXPIRED_ERROR
from pocketjobs.plugins.jobs.running import RunningClaims

__all__ = ["Chore", "Maintenance"]


class Chore(Protocol):
    """Work a dispatcher's maintenance runs on its clock, besides its own."""

    def next_at(self) -> datetime:
        """When :meth:`run_due` should next be called."""
        ...

    def run_due(self, now: datetime) -> None:
        """Do what is due at ``now``; may raise :class:`~pocketjobs.core.DatabaseError`."""
        ...

    def stop(self) -> None:
        """The dispatcher stops: finish or abandon work under way elsewhere."""
        ...


class Maintenance:
    """Heartbeat and rescue for one dispatcher's claims, and its announcements."""

    def __init__(
        self,
        db: Database,
        driver: JobsDriver,
        running: RunningClaims,
        *,
        lock_duration: timedelta,
        rescue_interval: timedelta,
        clock: Callable[[], datetime],
        log: JobLog,
        presence: Presence | None = None,
        chores: Sequence[Chore] = (),
    ) -> None:
        self._db = db
        self._driver = driver
        self._running = running
        self._lock_duration = lock_duration
        self._heartbeat_interval = lock_duration / 3
        self._rescue_interval = rescue_interval
        self._log = log
        start = clock()
        self._heartbeat_at = start + self._heartbeat_interval
        self._rescue_at = start  # rescue once at start: workers may have died meanwhile
        self._presence = presence
        self._announce_at = start
        self._chores = tuple(chores)

    def next_at(self, *, chores: bool = True) -> datetime:
        """When maintenance is next due (the heartbeat only counts while claims are held;
        the chores unless ``chores`` is off: they do not run while the dispatcher stops)."""
        due = min(self._rescue_at, self._announce_at) if self._presence else self._rescue_at
        for chore in self._chores if chores else ():
            due = min(due, chore.next_at())
        if self._running:
            return min(self._heartbeat_at, due)
        return due

    def claimed(self, now: datetime, was_idle: bool) -> None:
        """Claims were just made at ``now``; ``was_idle``: none were held before, so the
        first heartbeat is due one interval from now (the new locks are fresh)."""
        if was_idle:
            self._heartbeat_at = now + self._heartbeat_interval

    def run_due(self, now: datetime, *, rescue: bool = True) -> None:
        """Heartbeat and (when ``rescue``: not stopping) rescue and the chores if due at
        ``now``. Raises :class:`~pocketjobs.core.DatabaseError`; what failed is retried
        next time."""
        if self._running and now >= self._heartbeat_at:
            self._heartbeat(now)
        if rescue and now >= self._rescue_at:
            self._rescue(now)
        if self._presence is not None and now >= self._announce_at:
            self._announce_at = now + ANNOUNCE_INTERVAL
            self._presence.announce(now)
        if rescue:
            for chore in self._chores:
                if now >= chore.next_at():
                    chore.run_due(now)

    def stop(self) -> None:
        """The dispatcher stops: so do the chores."""
        for chore in self._chores:
            chore.stop()

    def _heartbeat(self, now: datetime) -> None:
        self._heartbeat_at = now + self._heartbeat_interval
        claims = self._running.held()
        if not claims:
            return
        owned = self._driver.jobs_extend_locks(self._db, claims, now + self._lock_duration)
        for claim in claims:
            if claim not in owned:
                run = next((r for r in self._running.find(claim.job_id) if r.claim == claim), None)
                self._log.claim_lost(claim.job_id, run.job if run else None)

    def _rescue(self, now: datetime) -> None:
        self._rescue_at = now + self._rescue_interval
        rescued = self._driver.jobs_rescue_expired(self._db, now, LOCK_EXPIRED_ERROR)
        if rescued:
            self._log.rescued(rescued)
