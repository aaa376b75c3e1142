"""The contract every database driver of the jobs plugin implements.

A driver owns all of its database's SQL (DDL, claim, completion, listing). The store and
the dispatcher call these verbs and never branch on the database. Every verb takes the
:class:`~pocketjobs.core.Queryable` to run on (the database, or a caller's transaction)
and, where time matters, an explicit ``now``, so tests control time.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pocketjobs.core import Database, Migration, Queryable
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = ["NOTIFY_CHANNEL", "Failure", "JobsDriver", "NewJob"]

#: The PostgreSQL notification channel that wakes dispatchers.
NOTIFY_CHANNEL = "pocketjobs_jobs"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert; ``payload_json`` is already serialized (and size-checked)."""

    id: str
    topic: str
    payload_json: str
    run_at: datetime
    max_retries: int
    created: datetime


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt of a claimed job: retried at ``retry_at``, or failed for good
    when ``retry_at`` is ``None``."""

    id: str
    claim_token: str
    error: str
    retry_at: datetime | None


class JobsDriver(abc.ABC):
    """One database's SQL for the ``_jobs`` table."""

    #: Whether two transactions can write at once (PostgreSQL), rather than one waiting for
    #: the other (SQLite). The dispatcher then records outcomes on a thread of their own,
    #: in parallel with its claims; otherwise it records them in its claim transaction.
    parallel_writes: ClassVar[bool] = False

    @abc.abstractmethod
    def migrations(self) -> list[Migration]:
        """The versioned schema of ``_jobs`` on this database."""

    # -- store verbs ---------------------------------------------------------------------

    @abc.abstractmethod
    def jobs_insert(self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime) -> None:
        """Insert ``jobs`` (all or nothing) and, where the database can, notify every
        listening dispatcher, on commit, that work is due at ``wake_at``."""

    @abc.abstractmethod
    def jobs_get(self, q: Queryable, job_id: str) -> Job | None:
        """The job with ``job_id``, or ``None``."""

    @abc.abstractmethod
    def jobs_list(self, q: Queryable, job_filter: JobFilter) -> tuple[list[Job], int]:
        """A page of jobs matching the filter, newest first, and the number matching."""

    @abc.abstractmethod
    def jobs_count_by_status(self, q: Queryable) -> dict[str, int]:
        """``status -> number of jobs``."""

    @abc.abstractmethod
    def jobs_delete(self, q: Queryable, job_id: str) -> bool:
        """Delete the job if it is pending or failed; return whether it was deleted."""

    @abc.abstractmethod
    def jobs_requeue(self, q: Queryable, job_id: str, now: datetime) -> Job | None:
        """Reset a failed job to pending (retries 0, run now); ``None`` if not failed."""

    # -- dispatcher verbs ----------------------------------------------------------------

    @abc.abstractmethod
    def jobs_claim(
        self,
        q: Queryable,
        topics: Sequence[str],
        limit: int,
        now: datetime,
        lock_until: datetime,
        claim_token: str,
    ) -> list[Job]:
        """Atomically take up to ``limit`` due pending jobs of ``topics`` (oldest ``run_at``
        first), marking them processing, locked until ``lock_until`` by ``claim_token``.
        Concurrent claimers never receive the same job."""

    @abc.abstractmethod
    def claim_plan(self, db: Database, topics: Sequence[str], limit: int, now: datetime) -> str:
        """The database's query plan of :meth:`jobs_claim` (for diagnostics and tests);
        claims nothing."""

    @abc.abstractmethod
    def jobs_next_due(self, q: Queryable, topics: Sequence[str]) -> datetime | None:
        """The earliest ``run_at`` of a pending job of ``topics``, or ``None``."""

    @abc.abstractmethod
    def jobs_complete(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        """Mark ``(job id, claim token)`` pairs completed, fenced on the token: a job whose
        claim was lost is left alone. Return the number updated."""

    @abc.abstractmethod
    def jobs_fail(self, q: Queryable, failures: Sequence[Failure], now: datetime) -> int:
        """Record failed attempts, fenced on the claim token: back to pending with
        ``retries + 1`` at ``retry_at``, or failed. Return the number updated."""

    def jobs_settle(
        self,
        db: Database,
        completed: Sequence[tuple[str, str]],
        failures: Sequence[Failure],
        now: datetime,
    ) -> int:
        """The dispatcher's bookkeeping of finished jobs: :meth:`jobs_complete` and
        :meth:`jobs_fail`, all or nothing. Returns the number written (fenced-out claims
        are not). This default is :meth:`jobs_settle_and_claim` claiming nothing; a driver
        may use one statement.
        """
        if not completed and not failures:
            return 0
        return self.jobs_settle_and_claim(db, completed, failures, (), 0, now, now, "")[0]

    def jobs_settle_and_claim(
        self,
        db: Database,
        completed: Sequence[tuple[str, str]],
        failures: Sequence[Failure],
        topics: Sequence[str],
        limit: int,
        now: datetime,
        lock_until: datetime,
        claim_token: str,
    ) -> tuple[int, list[Job]]:
        """:meth:`jobs_settle`, then :meth:`jobs_claim` of up to ``limit`` jobs (none if 0),
        in one transaction: the dispatcher's round when writes cannot run in parallel."""
        written = 0
        with db.transaction() as tx:
            if completed:
                written += self.jobs_complete(tx, completed, now)
            if failures:
                written += self.jobs_fail(tx, failures, now)
            claimed = (
                self.jobs_claim(tx, topics, limit, now, lock_until, claim_token)
                if limit > 0 and topics
                else []
            )
        return written, claimed

    @abc.abstractmethod
    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[tuple[str, str]], lock_until: datetime
    ) -> set[str]:
        """Heartbeat: move the locks of still-owned ``(id, token)`` claims to
        ``lock_until``; return the ids still owned."""

    @abc.abstractmethod
    def jobs_release(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        """Give owned claims back: pending, due now, the attempt not counted."""

    @abc.abstractmethod
    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        """Recover processing jobs whose lock expired before ``now`` (their worker died):
        each counts a failed attempt, so it becomes pending (due now) with ``retries + 1``,
        or failed once its retries are used up. Return the number recovered."""
