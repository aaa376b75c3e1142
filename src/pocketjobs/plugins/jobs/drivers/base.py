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
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from pocketjobs.core import Database, Migration, Queryable
from pocketjobs.core.times import format_time, parse_time
from pocketjobs.plugins.jobs.job import DEFAULT_QUEUE, Job, JobFilter

__all__ = [
    "CANCEL_PREFIX",
    "MAX_WAKE_TOPICS",
    "NOTIFY_CHANNEL",
    "CancelResult",
    "Cancelled",
    "Claim",
    "ClaimParams",
    "Failure",
    "JobsDriver",
    "NewJob",
    "Outcomes",
    "QueueClaim",
    "QueueCounts",
    "QueueState",
    "ScheduleRow",
    "Snoozed",
    "WorkerInfo",
    "parse_wake_payload",
    "wake_payload",
]

#: The PostgreSQL notification channel that wakes dispatchers. A payload is a due time
#: (jobs to claim), optionally followed by a space and a JSON array of the new jobs'
#: topics (:func:`wake_payload`), or :data:`CANCEL_PREFIX` and a job id (a cancel to
#: carry out).
NOTIFY_CHANNEL = "pocketjobs_jobs"
CANCEL_PREFIX = "cancel:"
#: A wake-up names at most this many topics; more, and it names none (wakes everyone).
MAX_WAKE_TOPICS = 16


def wake_payload(due: datetime, topics: Iterable[str] = ()) -> str:
    """The notification of new jobs due at ``due``: the time, then (when there are at most
    :data:`MAX_WAKE_TOPICS`) their topics, so a dispatcher that handles none of them need
    not claim. A reader that knows no topics part takes the whole as "due now"."""
    names = sorted(set(topics))
    if not names or len(names) > MAX_WAKE_TOPICS:
        return format_time(due)
    return f"{format_time(due)} {json.dumps(names, ensure_ascii=False)}"


def parse_wake_payload(payload: str) -> tuple[datetime | None, frozenset[str] | None]:
    """A :func:`wake_payload` as ``(due, topics)``: ``due`` is ``None`` (now) when the
    payload holds no time, ``topics`` ``None`` (any topic) when it names none."""
    text, _, names = payload.partition(" ")
    try:
        due: datetime | None = parse_time(text)
    except ValueError:
        return None, None
    if not names:
        return due, None
    try:
        topics = json.loads(names)
    except ValueError:
        return due, None
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return due, None
    return due, frozenset(topics)


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
    queue: str = DEFAULT_QUEUE
    timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim on a job: the job's id and the token its claimer wrote in ``locked_by``.

    Every write of a claimer is fenced on it: once the job was taken over (its lock
    expired, another claimer holds a new token), the old claim changes nothing."""

    job_id: str
    token: str


@dataclass(frozen=True, slots=True)
class QueueClaim:
    """What one claim takes from one queue: at most ``limit`` jobs and, with a
    ``global_limit``, no more than bring the queue's processing jobs (in every process) to
    that number."""

    name: str
    limit: int
    global_limit: int | None = None


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """What to claim: up to ``limit`` due pending jobs of ``topics`` at ``now``, locked
    until ``lock_until`` under ``token``, from ``queues`` (each with its own limit; by
    default the default queue alone, up to ``limit``). Paused queues give nothing."""

    topics: Sequence[str]
    limit: int
    now: datetime
    lock_until: datetime
    token: str
    queues: Sequence[QueueClaim] = ()
    #: Who claims: written to ``attempted_by`` (``host:pid:node-id``).
    node: str = ""

    def __post_init__(self) -> None:
        if not self.queues:
            object.__setattr__(self, "queues", (QueueClaim(DEFAULT_QUEUE, self.limit),))


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue as the database knows it: paused or not, and its jobs now."""

    name: str
    paused: bool
    pending: int
    processing: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """A queue's jobs now, counted cheaply (for metrics): its pending jobs up to a cap
    (a queue with more shows the cap) and its processing jobs."""

    pending: int
    processing: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A running dispatcher, as it announces itself in the database."""

    id: str
    host: str
    pid: int
    queues: dict[str, int]
    topics: list[str]
    started: datetime
    seen: datetime


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A periodic schedule as ``_jobs_schedules`` holds it: what it enqueues (``topic``,
    ``payload_json`` into ``queue``), when (``cron`` in time zone ``tz``, missed slots
    handled per ``catch_up``), the slot it enqueues next (``next_run``), the last slot it
    enqueued a job for and that job, and when a process last registered it (``seen``)."""

    name: str
    topic: str
    cron: str
    tz: str
    catch_up: str
    queue: str
    payload_json: str
    next_run: datetime
    created: datetime
    seen: datetime
    last_run: datetime | None = None
    last_job_id: str | None = None


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
class Cancelled:
    """A claimed job cancelled while it ran (or waited for a slot): it becomes
    ``cancelled``, never retried."""

    claim: Claim


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What a cancel found and did: ``job`` as it is then, and whether it was pending and
    this cancel cancelled it (``from_pending``; a job that was cancelled already is not)."""

    job: Job
    from_pending: bool = False


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Finished attempts to record at ``now``: the completed claims, the failures, the
    snoozed ones and the cancelled ones."""

    now: datetime
    completed: Sequence[Claim] = ()
    failed: Sequence[Failure] = ()
    snoozed: Sequence[Snoozed] = ()
    cancelled: Sequence[Claim] = ()

    def __len__(self) -> int:
        return len(self.completed) + len(self.failed) + len(self.snoozed) + len(self.cancelled)


class JobsDriver(abc.ABC):
    """One database's SQL for the ``_jobs`` table."""

    #: Whether two transactions can write at once (PostgreSQL), rather than one waiting for
    #: the other (SQLite). It picks the dispatcher's completer (see ``completer.py``).
    parallel_writes: ClassVar[bool] = False
    #: Finished jobs one statement of retention's prune deletes: fewer where writers take
    #: turns (each batch holds the one write lock), more where they do not.
    prune_batch: ClassVar[int] = 500

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
        """Delete the job unless it is processing (or missing); return whether it was
        deleted."""

    @abc.abstractmethod
    def jobs_prune(
        self,
        q: Queryable,
        status: str,
        finished_before: datetime,
        limit: int,
        *,
        finished_from: datetime | None = None,
    ) -> tuple[int, datetime | None]:
        """Delete up to ``limit`` jobs of the finished ``status`` (completed, failed or
        cancelled) that finished before ``finished_before`` (and at or after
        ``finished_from``: where the batch before ended), oldest finished first, read from
        their index (no other rows read or locked; on PostgreSQL rows another transaction
        holds are skipped). Return how many were deleted and the latest finish time among
        them (``None`` if none)."""

    @abc.abstractmethod
    def jobs_requeue(self, q: Queryable, job_id: str, now: datetime) -> Job | None:
        """Reset a failed or cancelled job to pending (retries 0, due ``now``; its
        attempt history kept); ``None`` if it is neither."""

    @abc.abstractmethod
    def jobs_cancel(self, q: Queryable, job_id: str, now: datetime) -> CancelResult | None:
        """Cancel the job: a pending one becomes ``cancelled`` at once; for a processing
        one the cancel is requested (``cancel_requested_at``), and, where the database
        can, the dispatchers are notified on commit so that the one running it stops it.
        Returns the job as it is then (unchanged when it had finished) and whether it was
        cancelled from pending; ``None`` if there is no such job."""

    @abc.abstractmethod
    def jobs_cancel_requested(self, q: Queryable, claims: Sequence[Claim]) -> set[Claim]:
        """The ones of ``claims`` (still owned) whose job's cancel was requested."""

    # -- dispatcher verbs ----------------------------------------------------------------

    @abc.abstractmethod
    def jobs_claim(self, q: Queryable, params: ClaimParams) -> list[Job]:
        """Atomically take pending jobs of ``params.topics`` due at ``params.now`` (their
        ``attempted_at`` becomes ``now``, ``first_attempted_at`` too on a first attempt,
        ``attempted_by`` ``params.node``), from
        each of ``params.queues`` that is not paused up to its ``limit`` (in ``(priority,
        run_at, id)`` order within the queue) and, for a queue with a ``global_limit``, no
        more than keep its processing jobs in all processes at or under that limit (claims
        of such a queue are serialized); marking them processing, locked until
        ``params.lock_until`` by ``params.token``. Concurrent claimers never receive the
        same job. Returns them in ``(priority, run_at, id)`` order; none for a limit of 0
        or no topics."""

    @abc.abstractmethod
    def claim_plan(self, db: Database, params: ClaimParams) -> str:
        """The database's query plan of :meth:`jobs_claim` (for diagnostics and tests);
        claims nothing."""

    @abc.abstractmethod
    def jobs_next_due(
        self, q: Queryable, queues: Sequence[str], topics: Sequence[str]
    ) -> datetime | None:
        """The earliest ``run_at`` of a pending job of ``topics`` in the ones of ``queues``
        that are not paused, or ``None``."""

    @abc.abstractmethod
    def jobs_settle(self, q: Queryable, outcomes: Outcomes) -> int:
        """Record finished attempts, all or nothing, fenced on their claims: completed
        claims become ``completed``; a failure goes back to pending with ``retries + 1`` at
        its ``retry_at``, or becomes ``failed`` with its retries unchanged (its
        ``last_error`` set either way); a snoozed job goes back to pending at its
        ``run_at``, retries and ``last_error`` unchanged; a cancelled claim becomes
        ``cancelled``. A failure appends ``{at, attempt, error}`` to the job's ``errors``
        (keeping the latest ``MAX_ERRORS_KEPT``); a job that finishes gets ``finished_at``.
        A job whose claim was lost is left alone. Returns the number of jobs written."""

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

    # -- queues and workers --------------------------------------------------------------

    @abc.abstractmethod
    def queues_set_paused(self, q: Queryable, name: str, paused: bool, now: datetime) -> None:
        """Pause (no job of the queue is claimed, in any process) or resume queue ``name``;
        on resume, wake every listening dispatcher where the database can."""

    @abc.abstractmethod
    def queues_state(self, q: Queryable) -> list[QueueState]:
        """Every queue that has pending or processing jobs or was ever paused, by name."""

    @abc.abstractmethod
    def jobs_count_by_queue(self, q: Queryable, *, pending_cap: int) -> dict[str, QueueCounts]:
        """Every queue that has pending or processing jobs, with its number of processing
        jobs and of pending jobs counted up to ``pending_cap`` (a queue with more shows
        ``pending_cap``). Cheap whatever the backlog, for a metrics scrape: the queues with
        pending jobs are found by a loose scan of the pending index and each one's jobs
        counted in that index, reading at most ``pending_cap`` entries; the processing
        jobs (as many as there are worker slots) are counted in their own index."""

    @abc.abstractmethod
    def count_by_queue_plan(self, db: Database, *, pending_cap: int) -> str:
        """The database's query plan of :meth:`jobs_count_by_queue` (for diagnostics and
        tests; on PostgreSQL with the rows each step read)."""

    @abc.abstractmethod
    def schedules_sync(self, q: Queryable, rows: Sequence[ScheduleRow]) -> dict[str, datetime]:
        """Register ``rows`` (insert, or update what they enqueue and their ``seen``) and
        return each one's ``next_run`` as stored: the row's own one, unless its ``cron`` or
        ``tz`` changed (then the one given). ``last_run`` and ``last_job_id`` are kept."""

    @abc.abstractmethod
    def schedules_list(self, q: Queryable) -> list[ScheduleRow]:
        """Every schedule in the database, by name."""

    @abc.abstractmethod
    def schedule_next_run(self, q: Queryable, name: str) -> datetime | None:
        """The stored ``next_run`` of schedule ``name``, or ``None`` if there is none."""

    @abc.abstractmethod
    def schedule_advance(
        self,
        q: Queryable,
        name: str,
        *,
        expected: datetime,
        next_run: datetime,
        last_run: datetime | None,
    ) -> bool:
        """Move schedule ``name``'s ``next_run`` from ``expected`` to ``next_run`` (and its
        ``last_run`` to ``last_run`` unless ``None``) if it is still ``expected``: the one
        write that decides which process enqueues a slot. Return whether it moved."""

    @abc.abstractmethod
    def schedule_set_last_job(self, q: Queryable, name: str, job_id: str) -> None:
        """Record ``job_id`` as the job schedule ``name`` enqueued last."""

    @abc.abstractmethod
    def schedules_delete(self, q: Queryable, name: str) -> bool:
        """Forget schedule ``name``; return whether there was one."""

    @abc.abstractmethod
    def lease_acquire(
        self, q: Queryable, name: str, holder: str, *, now: datetime, until: datetime
    ) -> bool:
        """Take the lease ``name`` for ``holder`` until ``until`` if nobody holds it at
        ``now`` (its last holder's time ran out); return whether it was taken. One
        statement: of processes racing for it, one wins."""

    @abc.abstractmethod
    def workers_announce(self, q: Queryable, worker: WorkerInfo) -> None:
        """Record ``worker`` (insert, or update its ``seen``, queues and topics)."""

    @abc.abstractmethod
    def workers_remove(self, q: Queryable, worker_id: str) -> None:
        """Forget the worker ``worker_id`` (it stopped)."""

    @abc.abstractmethod
    def workers_prune(self, q: Queryable, *, seen_before: datetime) -> int:
        """Forget every worker not seen since ``seen_before`` (it died); return how many."""

    @abc.abstractmethod
    def workers_list(self, q: Queryable, *, seen_since: datetime) -> list[WorkerInfo]:
        """The workers seen since ``seen_since``, oldest first."""

    @abc.abstractmethod
    def jobs_pending_outside(self, q: Queryable, topics: Collection[str]) -> dict[str, int]:
        """``topic -> number of pending jobs`` for every topic with pending jobs that is
        not one of ``topics``; cheap when those are few (each other topic of the table is
        looked up in its index, not the pending backlog counted)."""

    @abc.abstractmethod
    def jobs_pending_outside_queues(self, q: Queryable, queues: Collection[str]) -> dict[str, int]:
        """``queue -> number of pending jobs`` for every queue with pending jobs that is
        not one of ``queues`` (the queues are found by a loose scan of the pending index)."""

    @abc.abstractmethod
    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        """Recover processing jobs whose lock expired before ``now`` (their worker died):
        each counts a failed attempt (``error`` in ``last_error`` and ``errors``), so it
        becomes pending (due now) with ``retries + 1``, or failed once its retries are used
        up; one whose cancel was requested becomes ``cancelled``. Return the number
        recovered."""
