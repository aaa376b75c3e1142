"""Retention: finished jobs are deleted once they are old enough, in small batches.

By default a completed job is kept for a day after it finished, a failed or cancelled
one for seven (:class:`Retention`; ``Config(retention=...)``, ``PB_JOBS_RETENTION_*``;
``None`` keeps them for ever). Pending and processing jobs are never pruned.

**Who prunes.** Every running dispatcher has a :class:`Pruner` among its maintenance
chores. Every ``prune_interval`` it tries to take the fleet-wide lease ``prune``
(``_jobs_leases``: one statement, which one process wins until the interval ends); the
process that wins prunes, on a thread of its own, so its claims go on meanwhile. So the
table is pruned at most once per interval whatever the number of processes, and with
one process down the others carry on.

**How.** :func:`prune` deletes, per status, the jobs finished before the cutoff in
batches (the driver's ``prune_batch``: 200 on SQLite, 1,000 on PostgreSQL; measured by
``python -m bench.pruning``), oldest finished first, each batch one short statement
(its own transaction) read from the index of finished jobs (``idx_jobs_finished``) from
where the batch before ended (on PostgreSQL the index keeps the entries of deleted rows
until vacuum: each batch starting over would step over all of them again): no
pending row is read or locked, and on PostgreSQL a row another transaction holds is
skipped, not waited for. Between batches it pauses (:data:`PRUNE_PAUSE`) so that on
SQLite, where writers take turns, claims and outcomes get the database in between.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pocketjobs.core import Database, DatabaseError, log_fields
from pocketjobs.plugins.jobs.drivers import JobsDriver

__all__ = [
    "DEFAULT_RETENTION",
    "FINISHED_STATUSES",
    "PRUNE_LEASE",
    "PRUNE_PAUSE",
    "Pruner",
    "Retention",
    "prune",
]

#: The statuses retention applies to, in the order they are pruned.
FINISHED_STATUSES: Final = ("completed", "failed", "cancelled")
#: The pause between two batches, in seconds.
PRUNE_PAUSE: Final = 0.005
#: The lease the processes of a fleet take turns on.
PRUNE_LEASE: Final = "prune"


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs are kept after they finished, per status; ``None`` keeps
    them for ever. A number is seconds."""

    completed: timedelta | None = timedelta(days=1)
    failed: timedelta | None = timedelta(days=7)
    cancelled: timedelta | None = timedelta(days=7)

    def __post_init__(self) -> None:
        for status in FINISHED_STATUSES:
            value = getattr(self, status)
            if isinstance(value, int | float) and not isinstance(value, bool):
                with contextlib.suppress(OverflowError, ValueError):  # problems() tells
                    object.__setattr__(self, status, timedelta(seconds=value))

    def problems(self) -> list[str]:
        """What is wrong with the fields (each must be ``None`` or a positive duration)."""
        found = []
        for status in FINISHED_STATUSES:
            value = getattr(self, status)
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                found.append(
                    f"retention.{status} must be a positive timedelta, a number of seconds"
                    f" or None, got {value!r}"
                )
        return found

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per status kept for a limited time: jobs finished before this are due."""
        cutoffs: dict[str, datetime] = {}
        for status in FINISHED_STATUSES:
            kept = getattr(self, status)
            if kept is not None:
                cutoffs[status] = now - kept
        return cutoffs


#: Completed jobs kept a day, failed and cancelled ones a week.
DEFAULT_RETENTION: Final = Retention()


def prune(
    db: Database,
    driver: JobsDriver,
    cutoffs: Mapping[str, datetime],
    *,
    stopping: Callable[[], bool] = lambda: False,
    batch: int | None = None,
    pause: float = PRUNE_PAUSE,
) -> dict[str, int]:
    """Delete, per status of ``cutoffs``, the jobs that finished before its cutoff, a
    batch per statement; return how many per status. Stops between batches once
    ``stopping()`` says so. Raises :class:`~pocketjobs.core.DatabaseError` (what was
    deleted by then stays deleted). ``batch``: jobs per statement (default: the driver's
    ``prune_batch``)."""
    batch = driver.prune_batch if batch is None else batch
    deleted: dict[str, int] = {}
    for status, before in cutoffs.items():
        count, since = 0, None
        while not stopping():
            done, since = driver.jobs_prune(db, status, before, batch, finished_from=since)
            count += done
            if done < batch:
                break
            if pause:
                time.sleep(pause)
        deleted[status] = count
    return deleted


class Pruner:
    """One dispatcher's retention chore: every ``interval``, take the fleet's prune lease
    and, if taken, prune on a thread of its own."""

    def __init__(
        self,
        db: Database,
        driver: JobsDriver,
        retention: Retention,
        *,
        interval: timedelta,
        node: str,
        logger: logging.Logger,
        now: datetime,
        on_pruned: Callable[[Mapping[str, int]], None] | None = None,
    ) -> None:
        self._on_pruned = on_pruned  # the store's metrics, when on
        self._db = db
        self._driver = driver
        self._retention = retention
        self._interval = interval
        self._node = node
        self._logger = logger
        self._at = now  # try at start: the table may have grown while nothing ran
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def next_at(self) -> datetime:
        """When the lease is next tried."""
        return self._at

    def run_due(self, now: datetime) -> None:
        """Try the lease if due at ``now``; prune (on another thread) if this process got
        it. Raises :class:`~pocketjobs.core.DatabaseError`."""
        if now < self._at:
            return
        self._at = now + self._interval
        if self._thread is not None and self._thread.is_alive():
            return  # still pruning: the next interval's lease waits for it
        cutoffs = self._retention.cutoffs(now)
        if not cutoffs or not self._driver.lease_acquire(
            self._db, PRUNE_LEASE, self._node, now=now, until=now + self._interval
        ):
            return
        self._thread = threading.Thread(
            target=self._prune, args=(cutoffs,), name="pocketjobs-prune", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pruning after the batch under way (waits for it, ``timeout`` at most)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _prune(self, cutoffs: Mapping[str, datetime]) -> None:
        started = time.monotonic()
        try:
            deleted = prune(self._db, self._driver, cutoffs, stopping=self._stopping.is_set)
        except DatabaseError as exc:  # the next interval's lease tries again
            self._logger.warning("jobs: pruning finished jobs failed: %s", exc)
            return
        except Exception:  # a bug: say so, and let the next interval try again
            self._logger.exception("jobs: pruning finished jobs failed")
            return
        if self._on_pruned is not None:
            self._on_pruned(deleted)
        if any(deleted.values()):
            seconds = time.monotonic() - started
            log_fields(
                self._logger, logging.INFO,
                "jobs: pruned %d finished job(s) in %.3fs (%s)", sum(deleted.values()),
                seconds, ", ".join(f"{status} {n}" for status, n in deleted.items()),
                event="jobs.pruned", node=self._node, duration_ms=round(seconds * 1000, 3),
                **deleted,
            )  # fmt: skip
