"""The statements that are the same SQL on every database, written once.

Getting, listing, counting, deleting and requeueing a job, and the queue and worker
tables, need nothing a database does differently, apart from how a time parameter is
encoded and decoded (SQLite: fixed-width UTC text; PostgreSQL: a ``timestamptz``) and how
a row is decoded into a :class:`Job`. A driver
derives from :class:`PortableSQLDriver` and provides those two hooks; the claim, the
outcomes and the DDL stay in the driver's own module.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final

from pocketjobs.core import Queryable, Tx
from pocketjobs.plugins.jobs.drivers.base import (
    CancelResult,
    Claim,
    JobsDriver,
    QueueCounts,
    QueueState,
    ScheduleRow,
    WorkerInfo,
)
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = [
    "CLAIMED_COLUMNS",
    "JOB_COLUMNS",
    "PortableSQLDriver",
    "add_schedules_and_retention",
    "queue_counts",
]

#: The columns of a :class:`Job`, in the order of its fields (what ``decode_job`` reads).
JOB_COLUMNS: Final = (
    "id, topic, payload, status, run_at, locked_until, retries, max_retries, last_error,"
    " created, updated, priority, unique_key, queue, attempted_at, first_attempted_at,"
    " attempted_by, finished_at, errors, timeout, cancel_requested_at"
)

#: The columns a claim returns: a claimed job's other fields are what the claim set
#: (status ``processing``, ``locked_until``, ``locked_by``, ``updated`` and
#: ``attempted_at`` now, ``attempted_by`` the node) or none (``finished_at``), so the
#: driver fills them in rather than fetch and decode them for every job claimed.
CLAIMED_COLUMNS: Final = (
    "id, topic, payload, run_at, retries, max_retries, last_error, created, priority,"
    " unique_key, queue, first_attempted_at, errors, timeout, cancel_requested_at"
)

_GET_SQL: Final = f"SELECT {JOB_COLUMNS} FROM _jobs WHERE id = ?"
_COUNT_BY_STATUS_SQL: Final = "SELECT status, COUNT(*) FROM _jobs GROUP BY status"
_DELETE_SQL: Final = "DELETE FROM _jobs WHERE id = ? AND status <> 'processing'"
_REQUEUE_SQL: Final = f"""UPDATE _jobs SET status = 'pending', retries = 0, run_at = ?,
        locked_until = NULL, locked_by = NULL, updated = ?, finished_at = NULL,
        cancel_requested_at = NULL
    WHERE id = ? AND status IN ('failed', 'cancelled') RETURNING {JOB_COLUMNS}"""
_CANCEL_PENDING_SQL: Final = f"""UPDATE _jobs SET status = 'cancelled', updated = ?,
        finished_at = ?
    WHERE id = ? AND status = 'pending' RETURNING {JOB_COLUMNS}"""
_CANCEL_RUNNING_SQL: Final = f"""UPDATE _jobs SET cancel_requested_at = ?, updated = ?
    WHERE id = ? AND status = 'processing' AND cancel_requested_at IS NULL
    RETURNING {JOB_COLUMNS}"""
_SET_PAUSED_SQL: Final = """INSERT INTO _jobs_queues (name, paused, updated) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated = excluded.updated"""
# The distinct topics, one index probe of idx_jobs_topic each (a loose index scan), not a
# scan of every job.
# (The statement starts with SELECT: SQLite runs it on a reader connection.)
_DISTINCT_TOPICS_SQL: Final = """SELECT topic FROM (
        WITH RECURSIVE t(topic) AS (
            SELECT (SELECT topic FROM _jobs ORDER BY topic LIMIT 1)
            UNION ALL
            SELECT (SELECT j.topic FROM _jobs AS j WHERE j.topic > t.topic
                    ORDER BY j.topic LIMIT 1)
            FROM t WHERE t.topic IS NOT NULL
        )
        SELECT topic FROM t
    ) AS topics"""
_PENDING_OF_TOPIC_SQL: Final = "SELECT COUNT(*) FROM _jobs WHERE topic = ? AND status = 'pending'"
# The queues with pending jobs: a loose index scan of idx_jobs_pending (queue first).
_DISTINCT_QUEUES_SQL: Final = """SELECT queue FROM (
        WITH RECURSIVE t(queue) AS (
            SELECT (SELECT queue FROM _jobs WHERE status = 'pending' ORDER BY queue LIMIT 1)
            UNION ALL
            SELECT (SELECT j.queue FROM _jobs AS j WHERE j.status = 'pending'
                    AND j.queue > t.queue ORDER BY j.queue LIMIT 1)
            FROM t WHERE t.queue IS NOT NULL
        )
        SELECT queue FROM t
    ) AS queues"""
_PENDING_OF_QUEUE_SQL: Final = "SELECT COUNT(*) FROM _jobs WHERE queue = ? AND status = 'pending'"
_WORKER_COLUMNS: Final = "id, host, pid, queues, topics, started, seen"
_ANNOUNCE_SQL: Final = f"""INSERT INTO _jobs_workers ({_WORKER_COLUMNS})
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, topics = excluded.topics,
        seen = excluded.seen"""

# The DDL of the schedule and lease tables, with each database's time type.
_SCHEDULES_DDL: Final = """CREATE TABLE _jobs_schedules (
        name        TEXT PRIMARY KEY NOT NULL,
        topic       TEXT NOT NULL,
        cron        TEXT NOT NULL,
        tz          TEXT NOT NULL,
        catch_up    TEXT NOT NULL,
        queue       TEXT NOT NULL,
        payload     TEXT NOT NULL,
        next_run    {time} NOT NULL,
        created     {time} NOT NULL,
        seen        {time} NOT NULL,
        last_run    {time},
        last_job_id TEXT
    )"""
_LEASES_DDL: Final = """CREATE TABLE _jobs_leases (
        name   TEXT PRIMARY KEY NOT NULL,
        holder TEXT NOT NULL,
        until  {time} NOT NULL
    )"""


def add_schedules_and_retention(tx: Tx, time_type: str) -> None:
    """Step ``jobs_0008`` on every database (``time_type``: its type for times): the
    schedules of periodic jobs, the leases of fleet-wide chores (pruning), and the index
    retention prunes by, finished jobs by status and finish time. Jobs finished before
    ``finished_at`` existed get their last update as their finish time."""
    tx.execute(_SCHEDULES_DDL.format(time=time_type))
    tx.execute(_LEASES_DDL.format(time=time_type))
    tx.execute(
        "UPDATE _jobs SET finished_at = updated WHERE finished_at IS NULL"
        " AND status IN ('completed', 'failed', 'cancelled')"
    )
    tx.execute(
        "CREATE INDEX idx_jobs_finished ON _jobs (status, finished_at)"
        " WHERE finished_at IS NOT NULL"
    )


_SCHEDULE_COLUMNS: Final = (
    "name, topic, cron, tz, catch_up, queue, payload, next_run, created, seen, last_run,"
    " last_job_id"
)
# A changed cron or time zone restarts the schedule from the next_run given (every SET
# expression reads the row as it was).
_SCHEDULE_SYNC_SQL: Final = """INSERT INTO _jobs_schedules
        (name, topic, cron, tz, catch_up, queue, payload, next_run, created, seen)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET topic = excluded.topic, catch_up = excluded.catch_up,
        queue = excluded.queue, payload = excluded.payload, seen = excluded.seen,
        cron = excluded.cron, tz = excluded.tz,
        next_run = CASE WHEN _jobs_schedules.cron = excluded.cron
            AND _jobs_schedules.tz = excluded.tz
            THEN _jobs_schedules.next_run ELSE excluded.next_run END
    RETURNING next_run"""
_SCHEDULE_ADVANCE_SQL: Final = """UPDATE _jobs_schedules
    SET next_run = ?, last_run = COALESCE(?, last_run)
    WHERE name = ? AND next_run = ?"""
_LEASE_SQL: Final = """INSERT INTO _jobs_leases (name, holder, until) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
    WHERE _jobs_leases.until <= ?
    RETURNING name"""


class PortableSQLDriver(JobsDriver, abc.ABC):
    """A :class:`JobsDriver` whose store verbs (get, list, count by status, delete,
    requeue) run the portable statements of this module.

    A subclass implements :meth:`encode_time` and :meth:`decode_job`, and the verbs that
    are its database's own (migrations, insert, claim, settle, locks, rescue)."""

    # -- hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def encode_time(self, moment: datetime) -> Any:
        """``moment`` (aware) as this database's statement parameter for a time column."""

    @abc.abstractmethod
    def decode_time(self, value: Any) -> datetime:
        """A time column's value as an aware datetime."""

    @abc.abstractmethod
    def decode_job(self, row: Sequence[Any]) -> Job:
        """A :class:`Job` from a row of :data:`JOB_COLUMNS`."""

    # -- store verbs ---------------------------------------------------------------------

    def jobs_get(self, q: Queryable, job_id: str) -> Job | None:
        rows = q.fetch_tuples(_GET_SQL, (job_id,))
        return self.decode_job(rows[0]) if rows else None

    def jobs_list(self, q: Queryable, job_filter: JobFilter) -> tuple[list[Job], int]:
        conditions: list[str] = []
        params: list[Any] = []
        if job_filter.topic is not None:
            conditions.append("topic = ?")
            params.append(job_filter.topic)
        if job_filter.status is not None:
            conditions.append("status = ?")
            params.append(job_filter.status)
        if job_filter.queue is not None:
            conditions.append("queue = ?")
            params.append(job_filter.queue)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total = int(q.fetch_value(f"SELECT COUNT(*) FROM _jobs {where}", params))
        # Ids are time-ordered UUIDv7s: id order is creation order, served by the indexes.
        rows = q.fetch_tuples(
            f"SELECT {JOB_COLUMNS} FROM _jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, job_filter.limit, job_filter.offset],
        )
        return [self.decode_job(row) for row in rows], total

    def jobs_count_by_status(self, q: Queryable) -> dict[str, int]:
        return {status: int(count) for status, count in q.fetch_tuples(_COUNT_BY_STATUS_SQL)}

    def jobs_delete(self, q: Queryable, job_id: str) -> bool:
        return q.execute(_DELETE_SQL, (job_id,)) > 0

    def jobs_requeue(self, q: Queryable, job_id: str, now: datetime) -> Job | None:
        stamp = self.encode_time(now)
        rows = q.fetch_tuples(_REQUEUE_SQL, (stamp, stamp, job_id))
        return self.decode_job(rows[0]) if rows else None

    def jobs_cancel(self, q: Queryable, job_id: str, now: datetime) -> CancelResult | None:
        stamp = self.encode_time(now)
        rows = q.fetch_tuples(_CANCEL_PENDING_SQL, (stamp, stamp, job_id))
        if rows:
            return CancelResult(self.decode_job(rows[0]), from_pending=True)
        rows = q.fetch_tuples(_CANCEL_RUNNING_SQL, (stamp, stamp, job_id))
        if rows:
            self._notify_cancel(q, job_id)
            return CancelResult(self.decode_job(rows[0]))
        job = self.jobs_get(q, job_id)
        return CancelResult(job) if job is not None else None

    def _notify_cancel(self, q: Queryable, job_id: str) -> None:
        """Tell the dispatchers, where the database can, that ``job_id``'s cancel was
        requested (on commit)."""

    def jobs_cancel_requested(self, q: Queryable, claims: Sequence[Claim]) -> set[Claim]:
        if not claims:
            return set()
        by_id = {claim.job_id: claim for claim in claims}
        found: set[Claim] = set()
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = q.fetch_tuples(
                f"""SELECT id, locked_by FROM _jobs WHERE id IN ({", ".join("?" * len(chunk))})
                AND status = 'processing' AND cancel_requested_at IS NOT NULL""",
                chunk,
            )
            found.update(by_id[job_id] for job_id, token in rows if by_id[job_id].token == token)
        return found

    # -- queues and workers --------------------------------------------------------------

    def queues_set_paused(self, q: Queryable, name: str, paused: bool, now: datetime) -> None:
        q.execute(_SET_PAUSED_SQL, (name, paused, self.encode_time(now)))

    def queues_state(self, q: Queryable) -> list[QueueState]:
        # Per status, one range of its partial index (which leads with the queue).
        counts: dict[str, list[int]] = {}
        for index, status in enumerate(("pending", "processing")):
            for name, count in q.fetch_tuples(
                "SELECT queue, COUNT(*) FROM _jobs WHERE status = ? GROUP BY queue", (status,)
            ):
                counts.setdefault(name, [0, 0])[index] = int(count)
        paused = {name: bool(flag) for name, flag in q.fetch_tuples(
            "SELECT name, paused FROM _jobs_queues")}  # fmt: skip
        return [
            QueueState(name, paused.get(name, False), *counts.get(name, (0, 0)))
            for name in sorted(counts.keys() | paused.keys())
        ]

    def workers_announce(self, q: Queryable, worker: WorkerInfo) -> None:
        w = worker
        q.execute(
            _ANNOUNCE_SQL,
            (w.id, w.host, w.pid, json.dumps(w.queues), json.dumps(w.topics),
             self.encode_time(w.started), self.encode_time(w.seen)),
        )  # fmt: skip

    def workers_remove(self, q: Queryable, worker_id: str) -> None:
        q.execute("DELETE FROM _jobs_workers WHERE id = ?", (worker_id,))

    def workers_prune(self, q: Queryable, *, seen_before: datetime) -> int:
        return q.execute(
            "DELETE FROM _jobs_workers WHERE seen < ?", (self.encode_time(seen_before),)
        )

    def workers_list(self, q: Queryable, *, seen_since: datetime) -> list[WorkerInfo]:
        rows = q.fetch_tuples(
            f"SELECT {_WORKER_COLUMNS} FROM _jobs_workers WHERE seen >= ? ORDER BY started, id",
            (self.encode_time(seen_since),),
        )
        return [
            WorkerInfo(worker_id, host, int(pid), json.loads(queues), json.loads(topics),
                       self.decode_time(started), self.decode_time(seen))
            for worker_id, host, pid, queues, topics, started, seen in rows
        ]  # fmt: skip

    def schedules_sync(self, q: Queryable, rows: Sequence[ScheduleRow]) -> dict[str, datetime]:
        stored: dict[str, datetime] = {}
        for r in rows:
            found = q.fetch_value(
                _SCHEDULE_SYNC_SQL,
                (r.name, r.topic, r.cron, r.tz, r.catch_up, r.queue, r.payload_json,
                 self.encode_time(r.next_run), self.encode_time(r.created),
                 self.encode_time(r.seen)),
            )  # fmt: skip
            stored[r.name] = self.decode_time(found)
        return stored

    def schedules_list(self, q: Queryable) -> list[ScheduleRow]:
        rows = q.fetch_tuples(f"SELECT {_SCHEDULE_COLUMNS} FROM _jobs_schedules ORDER BY name")
        t = self.decode_time
        return [
            ScheduleRow(name, topic, cron, tz, catch_up, queue, payload, t(next_run),
                        t(created), t(seen), None if last_run is None else t(last_run),
                        last_job_id)
            for (name, topic, cron, tz, catch_up, queue, payload, next_run, created, seen,
                 last_run, last_job_id) in rows
        ]  # fmt: skip

    def schedule_next_run(self, q: Queryable, name: str) -> datetime | None:
        value = q.fetch_value("SELECT next_run FROM _jobs_schedules WHERE name = ?", (name,))
        return None if value is None else self.decode_time(value)

    def schedule_advance(
        self,
        q: Queryable,
        name: str,
        *,
        expected: datetime,
        next_run: datetime,
        last_run: datetime | None,
    ) -> bool:
        encode = self.encode_time
        last = None if last_run is None else encode(last_run)
        moved = q.execute(_SCHEDULE_ADVANCE_SQL, (encode(next_run), last, name, encode(expected)))
        return moved > 0

    def schedule_set_last_job(self, q: Queryable, name: str, job_id: str) -> None:
        q.execute("UPDATE _jobs_schedules SET last_job_id = ? WHERE name = ?", (job_id, name))

    def schedules_delete(self, q: Queryable, name: str) -> bool:
        return q.execute("DELETE FROM _jobs_schedules WHERE name = ?", (name,)) > 0

    def lease_acquire(
        self, q: Queryable, name: str, holder: str, *, now: datetime, until: datetime
    ) -> bool:
        encode = self.encode_time
        rows = q.fetch_tuples(_LEASE_SQL, (name, holder, encode(until), encode(now)))
        return bool(rows)

    def jobs_pending_outside(self, q: Queryable, topics: Collection[str]) -> dict[str, int]:
        return _pending_outside(q, _DISTINCT_TOPICS_SQL, _PENDING_OF_TOPIC_SQL, topics)

    def jobs_pending_outside_queues(self, q: Queryable, queues: Collection[str]) -> dict[str, int]:
        return _pending_outside(q, _DISTINCT_QUEUES_SQL, _PENDING_OF_QUEUE_SQL, queues)


def queue_counts(rows: Sequence[Sequence[Any]]) -> dict[str, QueueCounts]:
    """``(queue, status, count)`` rows (status ``pending`` or ``processing``) as the
    result of :meth:`~pocketjobs.plugins.jobs.drivers.base.JobsDriver.jobs_count_by_queue`,
    by queue name."""
    pending: dict[str, int] = {}
    processing: dict[str, int] = {}
    for queue, status, count in rows:
        (pending if status == "pending" else processing)[queue] = int(count)
    return {
        name: QueueCounts(pending.get(name, 0), processing.get(name, 0))
        for name in sorted(pending.keys() | processing.keys())
    }


def _pending_outside(
    q: Queryable, distinct_sql: str, count_sql: str, known: Collection[str]
) -> dict[str, int]:
    """Pending jobs per value (of ``distinct_sql``'s values) that is not ``known``."""
    skip = set(known)
    found: dict[str, int] = {}
    for (value,) in q.fetch_tuples(distinct_sql):
        if value is None or value in skip:
            continue
        # Pending jobs are mostly the newest: look for one from the newest id down before
        # counting (a topic with only finished jobs is then read once, not twice).
        if q.fetch_value(count_sql.replace("COUNT(*)", "1") + " ORDER BY id DESC LIMIT 1",
                         (value,)) is None:  # fmt: skip
            continue
        found[value] = int(q.fetch_value(count_sql, (value,)))
    return found
