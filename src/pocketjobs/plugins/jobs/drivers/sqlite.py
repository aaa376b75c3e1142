"""The jobs plugin's SQLite driver: all of its SQL for the ``_jobs`` table.

Times are stored as fixed-width UTC text (``2025-01-08T12:00:00.000Z``) so that string
order is time order; payloads as JSON text. A claim is one ``UPDATE ... RETURNING`` inside
the caller's ``BEGIN IMMEDIATE`` transaction, which excludes every other writer, so no two
claimers can take the same job.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pocketjobs.core import Database, Migration, Queryable, Tx
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers.base import Failure, JobsDriver, NewJob
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = ["SQLiteJobsDriver"]

_COLUMNS = (
    "id, topic, payload, status, run_at, locked_until, retries, max_retries, last_error,"
    " created, updated"
)
# SQLite allows 32766 bound variables per statement; stay well below.
_MAX_VARIABLES = 30_000


def _create_table(tx: Tx) -> None:
    tx.execute(
        """CREATE TABLE _jobs (
            id           TEXT PRIMARY KEY NOT NULL,
            topic        TEXT NOT NULL,
            payload      TEXT NOT NULL DEFAULT 'null',
            status       TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
            run_at       TEXT NOT NULL,
            locked_until TEXT,
            locked_by    TEXT,
            retries      INTEGER NOT NULL DEFAULT 0,
            max_retries  INTEGER NOT NULL DEFAULT 3,
            last_error   TEXT,
            created      TEXT NOT NULL,
            updated      TEXT NOT NULL
        )"""
    )
    # The claim scans due pending jobs in run_at order; the rescue scans expired locks.
    tx.execute("CREATE INDEX idx_jobs_pending ON _jobs (run_at, id) WHERE status = 'pending'")
    tx.execute("CREATE INDEX idx_jobs_locked ON _jobs (locked_until) WHERE status = 'processing'")
    # Listing newest first (ids are time-ordered UUIDv7, so the primary key serves the
    # unfiltered list), filtered by status or topic, and counting per status.
    tx.execute("CREATE INDEX idx_jobs_status ON _jobs (status, id)")
    tx.execute("CREATE INDEX idx_jobs_topic ON _jobs (topic, id)")


def _no_function_needed(tx: Tx) -> None:
    """PostgreSQL's step 2 creates the dispatcher's functions (claim and settle, planned once
    per connection). SQLite caches its statements' plans by itself: nothing to do, the step
    only keeps the step names the same on both databases."""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        topic=row[1],
        payload=json.loads(row[2]),
        status=row[3],
        run_at=_time(row[4]),
        locked_until=_time(row[5]) if row[5] is not None else None,
        retries=row[6],
        max_retries=row[7],
        last_error=row[8],
        created=_time(row[9]),
        updated=_time(row[10]),
    )


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


@functools.lru_cache(maxsize=64)
def _claim_sql(topic_count: int) -> str:
    return f"""UPDATE _jobs SET status = 'processing', locked_until = ?, locked_by = ?, updated = ?
        WHERE id IN (
            SELECT id FROM _jobs INDEXED BY idx_jobs_pending
            WHERE status = 'pending' AND run_at <= ? AND topic IN ({_placeholders(topic_count)})
            ORDER BY run_at, id LIMIT ?
        ) RETURNING {_COLUMNS}"""


class SQLiteJobsDriver(JobsDriver):
    """``_jobs`` on SQLite."""

    def migrations(self) -> list[Migration]:
        return [
            Migration("jobs_0001_create_jobs", _create_table),
            Migration("jobs_0002_dispatcher_functions", _no_function_needed),
        ]

    def jobs_insert(self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime) -> None:
        # SQLite has no cross-process notification: the store wakes this process's
        # dispatcher itself, and other processes poll.
        stamps: dict[datetime, str] = {}  # a batch shares its times: format each once

        def stamp(moment: datetime) -> str:
            text = stamps.get(moment)
            if text is None:
                text = stamps[moment] = format_time(moment)
            return text

        rows = [
            (
                job.id,
                job.topic,
                job.payload_json,
                stamp(job.run_at),
                job.max_retries,
                stamp(job.created),
                stamp(job.created),
            )
            for job in jobs
        ]
        sql = (
            "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,"
            " created, updated) VALUES (?, ?, ?, 'pending', ?, 0, ?, ?, ?)"
        )
        if len(rows) == 1:
            q.execute(sql, rows[0])
        else:
            q.execute_many(sql, rows)

    def jobs_get(self, q: Queryable, job_id: str) -> Job | None:
        rows = q.fetch_tuples(f"SELECT {_COLUMNS} FROM _jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs_list(self, q: Queryable, job_filter: JobFilter) -> tuple[list[Job], int]:
        conditions: list[str] = []
        params: list[Any] = []
        if job_filter.topic is not None:
            conditions.append("topic = ?")
            params.append(job_filter.topic)
        if job_filter.status is not None:
            conditions.append("status = ?")
            params.append(job_filter.status)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total = int(q.fetch_value(f"SELECT COUNT(*) FROM _jobs {where}", params))
        rows = q.fetch_tuples(
            f"SELECT {_COLUMNS} FROM _jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, job_filter.limit, job_filter.offset],
        )
        return [_job(row) for row in rows], total

    def jobs_count_by_status(self, q: Queryable) -> dict[str, int]:
        return dict(q.fetch_tuples("SELECT status, COUNT(*) FROM _jobs GROUP BY status"))

    def jobs_delete(self, q: Queryable, job_id: str) -> bool:
        deleted = q.execute(
            "DELETE FROM _jobs WHERE id = ? AND status IN ('pending', 'failed')", (job_id,)
        )
        return deleted > 0

    def jobs_requeue(self, q: Queryable, job_id: str, now: datetime) -> Job | None:
        stamp = format_time(now)
        rows = q.fetch_tuples(
            f"""UPDATE _jobs SET status = 'pending', retries = 0, run_at = ?, locked_until = NULL,
                locked_by = NULL, updated = ?
            WHERE id = ? AND status = 'failed' RETURNING {_COLUMNS}""",
            (stamp, stamp, job_id),
        )
        return _job(rows[0]) if rows else None

    def jobs_claim(
        self,
        q: Queryable,
        topics: Sequence[str],
        limit: int,
        now: datetime,
        lock_until: datetime,
        claim_token: str,
    ) -> list[Job]:
        stamp = format_time(now)
        rows = q.fetch_tuples(
            _claim_sql(len(topics)),
            (format_time(lock_until), claim_token, stamp, stamp, *topics, limit),
        )
        jobs = [_job(row) for row in rows]
        jobs.sort(key=lambda job: (job.run_at, job.id))  # RETURNING order is unspecified
        return jobs

    def claim_plan(self, db: Database, topics: Sequence[str], limit: int, now: datetime) -> str:
        stamp = format_time(now)
        rows = db.fetch_tuples(
            "EXPLAIN QUERY PLAN " + _claim_sql(len(topics)),
            (stamp, "plan", stamp, stamp, *topics, limit),
        )
        return "\n".join(str(row[-1]) for row in rows)

    def jobs_next_due(self, q: Queryable, topics: Sequence[str]) -> datetime | None:
        value = q.fetch_value(
            f"""SELECT run_at FROM _jobs INDEXED BY idx_jobs_pending
            WHERE status = 'pending' AND topic IN ({_placeholders(len(topics))})
            ORDER BY run_at LIMIT 1""",
            topics,
        )
        return _time(value) if value is not None else None

    def jobs_complete(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        stamp = format_time(now)
        return q.execute_many(
            """UPDATE _jobs SET status = 'completed', locked_until = NULL, locked_by = NULL,
                updated = ?
            WHERE id = ? AND locked_by = ? AND status = 'processing'""",
            [(stamp, job_id, token) for job_id, token in claims],
        )

    def jobs_fail(self, q: Queryable, failures: Sequence[Failure], now: datetime) -> int:
        stamp = format_time(now)
        return q.execute_many(
            """UPDATE _jobs SET
                status = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END,
                retries = CASE WHEN ? IS NULL THEN retries ELSE retries + 1 END,
                run_at = COALESCE(?, run_at),
                last_error = ?, locked_until = NULL, locked_by = NULL, updated = ?
            WHERE id = ? AND locked_by = ? AND status = 'processing'""",
            [
                (retry, retry, retry, f.error, stamp, f.id, f.claim_token)
                for f in failures
                for retry in [format_time(f.retry_at) if f.retry_at else None]
            ],
        )

    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[tuple[str, str]], lock_until: datetime
    ) -> set[str]:
        owned: set[str] = set()
        by_token: dict[str, list[str]] = {}
        for job_id, token in claims:
            by_token.setdefault(token, []).append(job_id)
        until = format_time(lock_until)
        for token, ids in by_token.items():
            for start in range(0, len(ids), _MAX_VARIABLES):
                chunk = ids[start : start + _MAX_VARIABLES]
                rows = q.fetch_tuples(
                    f"""UPDATE _jobs SET locked_until = ?
                    WHERE locked_by = ? AND status = 'processing'
                      AND id IN ({_placeholders(len(chunk))})
                    RETURNING id""",
                    (until, token, *chunk),
                )
                owned.update(row[0] for row in rows)
        return owned

    def jobs_release(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        stamp = format_time(now)
        return q.execute_many(
            """UPDATE _jobs SET status = 'pending', run_at = ?, locked_until = NULL,
                locked_by = NULL, updated = ?
            WHERE id = ? AND locked_by = ? AND status = 'processing'""",
            [(stamp, stamp, job_id, token) for job_id, token in claims],
        )

    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        stamp = format_time(now)
        return q.execute(
            """UPDATE _jobs SET
                status = CASE WHEN retries < max_retries THEN 'pending' ELSE 'failed' END,
                retries = CASE WHEN retries < max_retries THEN retries + 1 ELSE retries END,
                run_at = ?, last_error = ?, locked_until = NULL, locked_by = NULL, updated = ?
            WHERE status = 'processing' AND locked_until < ?""",
            (stamp, error, stamp, stamp),
        )
