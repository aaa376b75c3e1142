"""The contract every database driver of the jobs plugin implements.

A driver owns its database's SQL (DDL, claim, outcomes, listing); the statements that are
the same on every database live once, in :mod:`~pocketjobs.plugins.jobs.drivers.portable`.
The store and the dispatcher call these verbs and never branch on the database. Every verb
takes the :class:`~pocketjobs.core.Queryable` to run on (the database, or a caller's
transaction) and, where time matters, an explicit ``now``, so tests control time. Verbs
with more than a few arguments take a parameter object (:class:`ClaimParams`,
:class:`Outcomes`); a claimed job is named by its :class:`Claim` (job id and claim token),
never by a bare tuple.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pocketjobs.core import Database, Migration, Queryable
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = [
    "NOTIFY_CHANNEL",
    "Claim",
    "ClaimParams",
    "Failure",
    "JobsDriver",
    "NewJob",
    "Outcomes",
    "Snoozed",
]

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
    priority: int = 0
    unique_key: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim on a job: the job's id and the token its claimer wrote in ``locked_by``.

    Every write of a claimer is fenced on it: once the job was taken over (its lock
    expired, another claimer holds a new token), the old claim changes nothing."""

    job_id: str
    token: str


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """What to claim: up to ``limit`` due pending jobs of ``topics`` at ``now``, locked
    until ``lock_until`` under ``token``."""

    topics: Sequence[str]
    limit: int
    now: datetime
    lock_until: datetime
    token: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt of a claimed job: retried at ``retry_at``, or failed for good
    when ``retry_at`` is ``None``."""

    claim: Claim
    error: str
    retry_at: datetime | None


@dataclass(frozen=True, slots=True)
class Snoozed:
    """An attempt of a claimed job that asked to run again at ``run_at``: pending again,
    the attempt not counted (retries and ``last_error`` unchanged)."""

    claim: Claim
    run_at: datetime


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Finished attempts to record at ``now``: the completed claims, the failures and the
    snoozed ones."""

    now: datetime
    completed: Sequence[Claim] = ()
    failed: Sequence[Failure] = ()
    snoozed: Sequence[Snoozed] = ()

    def __len__(self) -> int:
        return len(self.completed) + len(self.failed) + len(self.snoozed)


class JobsDriver(abc.ABC):
    """One database's SQL for the ``_jobs`` table."""

    #: Whether two transactions can write at once (PostgreSQL), rather than one waiting for
    #: the other (SQLite). It picks the dispatcher's completer (see ``completer.py``).
    parallel_writes: ClassVar[bool] = False

    @abc.abstractmethod
    def migrations(self) -> list[Migration]:
        """The versioned schema of ``_jobs`` on this database."""

    # -- store verbs ---------------------------------------------------------------------

    @abc.abstractmethod
    def jobs_insert(
        self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime
    ) -> list[Job | None]:
        """Insert ``jobs`` and, where the database can, notify every listening dispatcher,
        on commit, that work is due at ``wake_at``. A job with a ``unique_key`` whose topic
        and key a pending or processing job holds (the database's unique index decides,
        also against concurrent transactions) is not inserted: the result has that job at
        its place, ``None`` where a job was inserted. Jobs with keys need ``q`` to be a
        transaction (the store opens one) for all-or-nothing."""

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
        """Reset a failed job to pending (retries 0, due ``now``); ``None`` if not failed."""

    # -- dispatcher verbs ----------------------------------------------------------------

    @abc.abstractmethod
    def jobs_claim(self, q: Queryable, params: ClaimParams) -> list[Job]:
        """Atomically take up to ``params.limit`` pending jobs of ``params.topics`` due at
        ``params.now`` (oldest ``run_at`` first, then id), marking them processing, locked
        until ``params.lock_until`` by ``params.token``. Concurrent claimers never receive
        the same job. Returns them in ``(run_at, id)`` order; none for a limit of 0 or no
        topics."""

    @abc.abstractmethod
    def claim_plan(self, db: Database, params: ClaimParams) -> str:
        """The database's query plan of :meth:`jobs_claim` (for diagnostics and tests);
        claims nothing."""

    @abc.abstractmethod
    def jobs_next_due(self, q: Queryable, topics: Sequence[str]) -> datetime | None:
        """The earliest ``run_at`` of a pending job of ``topics``, or ``None``."""

    @abc.abstractmethod
    def jobs_settle(self, q: Queryable, outcomes: Outcomes) -> int:
        """Record finished attempts, all or nothing, fenced on their claims: completed
        claims become ``completed``; a failure goes back to pending with ``retries + 1`` at
        its ``retry_at``, or becomes ``failed`` with its retries unchanged (its
        ``last_error`` set either way); a snoozed job goes back to pending at its
        ``run_at``, retries and ``last_error`` unchanged. A job whose claim was lost is left
        alone. Returns the number of jobs written."""

    def jobs_settle_and_claim(
        self, db: Database, outcomes: Outcomes, params: ClaimParams | None
    ) -> tuple[int, list[Job]]:
        """:meth:`jobs_settle`, then :meth:`jobs_claim` (none if ``params`` is ``None``),
        in one transaction: the dispatcher's round where writes cannot run in parallel."""
        with db.transaction() as tx:
            written = self.jobs_settle(tx, outcomes) if len(outcomes) else 0
            claimed = self.jobs_claim(tx, params) if params is not None else []
        return written, claimed

    @abc.abstractmethod
    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[Claim], lock_until: datetime
    ) -> set[Claim]:
        """Heartbeat: move the locks of the still-owned ``claims`` to ``lock_until``;
        return the claims still owned."""

    @abc.abstractmethod
    def jobs_release(self, q: Queryable, claims: Sequence[Claim], now: datetime) -> int:
        """Give owned claims back: pending, due ``now``, the attempt not counted. Returns
        the number released."""

    @abc.abstractmethod
    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        """Recover processing jobs whose lock expired before ``now`` (their worker died):
        each counts a failed attempt, so it becomes pending (due now) with ``retries + 1``,
        or failed once its retries are used up; ``last_error`` is ``error``. Return the
        number recovered."""
