"""The jobs plugin's SQLite driver: its own SQL for the ``_jobs`` table.

Times are stored as fixed-width UTC text (``2025-01-08T12:00:00.000Z``) so that string
order is time order; payloads as the JSON text they were given. A claim is one
``UPDATE ... RETURNING`` inside the caller's ``BEGIN IMMEDIATE`` transaction, which
excludes every other writer, so no two claimers can take the same job. The statements
shared with PostgreSQL live in :mod:`~pocketjobs.plugins.jobs.drivers.portable`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pocketjobs.core import Database, Migration, Queryable, Tx
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers.base import Claim, ClaimParams, NewJob, Outcomes, QueueCounts
from pocketjobs.plugins.jobs.drivers.portable import (
    CLAIMED_COLUMNS,
    JOB_COLUMNS,
    PortableSQLDriver,
    add_schedules_and_retention,
    queue_counts,
)
from pocketjobs.plugins.jobs.job import MAX_ERRORS_KEPT, Job, build_job
from pocketjobs.plugins.jobs.limits import MAX_PRIORITY

__all__ = ["SQLiteJobsDriver"]

# SQLite allows 32766 bound variables per statement; stay well below.
_MAX_VARIABLES = 30_000
_PRIORITIES = json.dumps(list(range(MAX_PRIORITY + 1)))


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


def _payload_already_text(tx: Tx) -> None:
    """PostgreSQL's step 3 turns its JSONB payload column into JSON, which keeps the text a
    payload was given (JSONB normalises numbers and key order). SQLite has always stored
    that text: nothing to do, the step only keeps the step names the same on both
    databases."""


def _claim_names_its_index(tx: Tx) -> None:
    """PostgreSQL's step 4 keeps sequential scans out of its dispatcher functions' plans.
    SQLite's claim names its index (``INDEXED BY idx_jobs_pending``) and its other
    statements look jobs up by primary key: nothing to do, the step only keeps the step
    names the same on both databases."""


def _add_priority_and_unique_key(tx: Tx) -> None:
    """Add ``priority`` (0 first, default 0) and ``unique_key``; claim in priority order;
    keep one pending or processing job per topic and key (a partial unique index)."""
    tx.execute(
        "ALTER TABLE _jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"
        " CHECK (priority BETWEEN 0 AND 9)"
    )
    tx.execute("ALTER TABLE _jobs ADD COLUMN unique_key TEXT")
    tx.execute("DROP INDEX idx_jobs_pending")
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (priority, run_at, id) WHERE status = 'pending'"
    )
    tx.execute(f"CREATE UNIQUE INDEX idx_jobs_unique ON _jobs (topic, unique_key) {_UNIQUE_WHERE}")


def _add_queues(tx: Tx) -> None:
    """Add named queues: the pending index leads with the queue, the processing index too
    (a global limit counts a queue's processing jobs); the queue state table (pause) and
    the workers table (who runs, handling which topics)."""
    tx.execute("ALTER TABLE _jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'")
    tx.execute("DROP INDEX idx_jobs_pending")
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (queue, priority, run_at, id)"
        " WHERE status = 'pending'"
    )
    tx.execute("DROP INDEX idx_jobs_locked")
    tx.execute(
        "CREATE INDEX idx_jobs_locked ON _jobs (queue, locked_until) WHERE status = 'processing'"
    )
    tx.execute(
        """CREATE TABLE _jobs_queues (
            name    TEXT PRIMARY KEY NOT NULL,
            paused  INTEGER NOT NULL DEFAULT 0,
            updated TEXT NOT NULL
        )"""
    )
    tx.execute(
        """CREATE TABLE _jobs_workers (
            id      TEXT PRIMARY KEY NOT NULL,
            host    TEXT NOT NULL,
            pid     INTEGER NOT NULL,
            queues  TEXT NOT NULL,
            topics  TEXT NOT NULL,
            started TEXT NOT NULL,
            seen    TEXT NOT NULL
        )"""
    )


def _add_attempts_and_cancel(tx: Tx) -> None:
    """Add the ``cancelled`` status, the attempt history, the timeout (milliseconds) and
    the cancel request. SQLite cannot change a CHECK constraint in place: the table is
    rebuilt (a copy of every row, in this step's transaction) and its indexes re-created."""
    columns = (
        "id, topic, payload, status, run_at, locked_until, locked_by, retries, max_retries,"
        " last_error, created, updated, priority, unique_key, queue"
    )
    tx.execute(
        """CREATE TABLE _jobs_rebuilt (
            id                 TEXT PRIMARY KEY NOT NULL,
            topic              TEXT NOT NULL,
            payload            TEXT NOT NULL DEFAULT 'null',
            status             TEXT NOT NULL DEFAULT 'pending' CHECK (status IN
                               ('pending', 'processing', 'completed', 'failed', 'cancelled')),
            run_at             TEXT NOT NULL,
            locked_until       TEXT,
            locked_by          TEXT,
            retries            INTEGER NOT NULL DEFAULT 0,
            max_retries        INTEGER NOT NULL DEFAULT 3,
            last_error         TEXT,
            created            TEXT NOT NULL,
            updated            TEXT NOT NULL,
            priority           INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
            unique_key         TEXT,
            queue              TEXT NOT NULL DEFAULT 'default',
            attempted_at       TEXT,
            first_attempted_at TEXT,
            attempted_by       TEXT,
            finished_at        TEXT,
            errors             TEXT NOT NULL DEFAULT '[]',
            timeout            INTEGER,
            cancel_requested_at TEXT
        )"""
    )
    tx.execute(f"INSERT INTO _jobs_rebuilt ({columns}) SELECT {columns} FROM _jobs")
    tx.execute("DROP TABLE _jobs")
    tx.execute("ALTER TABLE _jobs_rebuilt RENAME TO _jobs")
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (queue, priority, run_at, id)"
        " WHERE status = 'pending'"
    )
    tx.execute(
        "CREATE INDEX idx_jobs_locked ON _jobs (queue, locked_until) WHERE status = 'processing'"
    )
    tx.execute("CREATE INDEX idx_jobs_status ON _jobs (status, id)")
    tx.execute("CREATE INDEX idx_jobs_topic ON _jobs (topic, id)")
    tx.execute(f"CREATE UNIQUE INDEX idx_jobs_unique ON _jobs (topic, unique_key) {_UNIQUE_WHERE}")


def _add_schedules_and_retention(tx: Tx) -> None:
    """Step 8 as on every database (see ``portable.py``), times as text."""
    add_schedules_and_retention(tx, "TEXT")


# The rows the unique index covers (the ON CONFLICT target repeats it).
_UNIQUE_WHERE = "WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')"
_INSERT_SQL = (
    "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries,"
    " created, updated, priority, unique_key, queue, timeout)"
    " VALUES (?, ?, ?, 'pending', ?, 0, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_UNIQUE_SQL = f"{_INSERT_SQL} ON CONFLICT (topic, unique_key) {_UNIQUE_WHERE} DO NOTHING"
_HOLDER_SQL = f"""SELECT {JOB_COLUMNS} FROM _jobs
    WHERE topic = ? AND unique_key = ? AND status IN ('pending', 'processing')"""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _time_or_none(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _job(row: Sequence[Any]) -> Job:
    # Positional (the fields' order is JOB_COLUMNS'), and the usual values without a
    # parse: a claim decodes every job it takes.
    payload, errors, timeout = row[2], row[18], row[19]
    return build_job(
        (
            row[0],
            row[1],
            None if payload == "null" else json.loads(payload),
            row[3],
            _time(row[4]),
            _time_or_none(row[5]),
            row[6],
            row[7],
            row[8],
            _time(row[9]),
            _time(row[10]),
            row[11],
            row[12],
            row[13],
            _time_or_none(row[14]),
            _time_or_none(row[15]),
            row[16],
            _time_or_none(row[17]),
            [] if errors == "[]" else json.loads(errors),
            None if timeout is None else timedelta(milliseconds=timeout),
            _time_or_none(row[20]),
        )
    )


def _claimed_job(
    row: Sequence[Any], now: datetime, lock_until: datetime, node: str, times: dict[str, datetime]
) -> Job:
    """A job as claimed at ``now`` (decoded from the stored text), from its
    CLAIMED_COLUMNS; ``times`` caches the claim's parsed times (a batch enqueued together
    shares its ``run_at`` and ``created``; a first attempt's ``first_attempted_at`` is
    the claim's own time)."""
    payload, errors, timeout = row[2], row[12], row[13]
    run_at, created, first = row[3], row[7], row[11]
    return build_job(
        (
            row[0],
            row[1],
            None if payload == "null" else json.loads(payload),
            "processing",
            times[run_at] if run_at in times else times.setdefault(run_at, _time(run_at)),
            lock_until,
            row[4],
            row[5],
            row[6],
            times[created] if created in times else times.setdefault(created, _time(created)),
            now,
            row[8],
            row[9],
            row[10],
            now,
            times[first] if first in times else _time(first),
            node,
            None,
            [] if errors == "[]" else json.loads(errors),
            None if timeout is None else timedelta(milliseconds=timeout),
            _time_or_none(row[14]),
        )
    )


def _millis(duration: timedelta | None) -> int | None:
    return None if duration is None else round(duration.total_seconds() * 1000)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


# A queue's share of a claim: nothing while it is paused; else its limit and, with a
# global limit, no more than the processing jobs of the queue leave (the claim runs in a
# BEGIN IMMEDIATE transaction, which excludes every other writer: the count is exact).
_PAUSED = "EXISTS (SELECT 1 FROM _jobs_queues WHERE name = ? AND paused)"
_LANE_LIMIT = f"CASE WHEN {_PAUSED} THEN 0 ELSE ? END"
_CAPPED_LANE_LIMIT = f"""CASE WHEN {_PAUSED} THEN 0 ELSE max(0, min(?, ? - (
    SELECT COUNT(*) FROM _jobs INDEXED BY idx_jobs_locked
    WHERE status = 'processing' AND queue = ?))) END"""


@functools.lru_cache(maxsize=256)
def _claim_sql(topic_count: int, capped: tuple[bool, ...]) -> str:
    """The claim over one queue per item of ``capped`` (whether it has a global limit):
    per queue, an ordered range of idx_jobs_pending (queue, priority, run_at, id)."""
    topics = _placeholders(topic_count)
    selects = [
        f"""SELECT id FROM _jobs INDEXED BY idx_jobs_pending
            WHERE status = 'pending' AND queue = ? AND run_at <= ? AND topic IN ({topics})
            ORDER BY priority, run_at, id LIMIT {_CAPPED_LANE_LIMIT if cap else _LANE_LIMIT}"""
        for cap in capped
    ]
    # One queue (the usual case): its select as it is; several: each in a subquery (a
    # compound select takes no LIMIT per part).
    lanes = (
        selects[0]
        if len(selects) == 1
        else " UNION ALL ".join(f"SELECT id FROM ({select})" for select in selects)
    )
    return f"""UPDATE _jobs SET status = 'processing', locked_until = ?, locked_by = ?, updated = ?,
            attempted_at = ?, first_attempted_at = COALESCE(first_attempted_at, ?),
            attempted_by = ?
        WHERE id IN ({lanes}) RETURNING {CLAIMED_COLUMNS}"""


def _claim_query(params: ClaimParams, stamp: str, lock_stamp: str) -> tuple[str, tuple[Any, ...]]:
    """The claim with ``params``; ``stamp`` and ``lock_stamp``: its now and lock_until as
    stored."""
    args: list[Any] = [lock_stamp, params.token, stamp, stamp, stamp, params.node]
    for lane in params.queues:
        args += (lane.name, stamp, *params.topics, lane.name, lane.limit)
        if lane.global_limit is not None:
            args += (lane.global_limit, lane.name)
    capped = tuple(lane.global_limit is not None for lane in params.queues)
    return _claim_sql(len(params.topics), capped), tuple(args)


_COMPLETE_SQL = """UPDATE _jobs SET status = 'completed', locked_until = NULL, locked_by = NULL,
        updated = ?1, finished_at = ?1
    WHERE id = ?2 AND locked_by = ?3 AND status = 'processing'"""

_CANCEL_SQL = """UPDATE _jobs SET status = 'cancelled', locked_until = NULL, locked_by = NULL,
        updated = ?1, finished_at = ?1
    WHERE id = ?2 AND locked_by = ?3 AND status = 'processing'"""

# ``errors`` with {at, attempt, error} appended (?1: the time, ?2: the error), the latest
# MAX_ERRORS_KEPT kept (one entry is added at a time: dropping the first is enough).
_ERRORS_APPENDED = f"""json_insert(
        CASE WHEN json_array_length(errors) >= {MAX_ERRORS_KEPT}
             THEN json_remove(errors, '$[0]') ELSE errors END,
        '$[#]', json_object('at', ?1, 'attempt', retries + 1, 'error', ?2))"""

# ?1 now, ?2 error, ?3 retry at (NULL: failed for good), ?4 id, ?5 token
# (A failure whose cancel was requested becomes cancelled: never retried.)
_FAIL_SQL = f"""UPDATE _jobs SET
        status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
            WHEN ?3 IS NULL THEN 'failed' ELSE 'pending' END,
        retries = CASE WHEN ?3 IS NULL OR cancel_requested_at IS NOT NULL
            THEN retries ELSE retries + 1 END,
        run_at = CASE WHEN cancel_requested_at IS NULL THEN COALESCE(?3, run_at) ELSE run_at END,
        finished_at = CASE WHEN ?3 IS NULL OR cancel_requested_at IS NOT NULL THEN ?1 END,
        errors = {_ERRORS_APPENDED},
        last_error = ?2, locked_until = NULL, locked_by = NULL, updated = ?1
    WHERE id = ?4 AND locked_by = ?5 AND status = 'processing'"""

_RELEASE_SQL = """UPDATE _jobs SET status = 'pending', run_at = ?, locked_until = NULL,
        locked_by = NULL, updated = ?
    WHERE id = ? AND locked_by = ? AND status = 'processing'"""


# Metrics: the queues with pending jobs, one probe of idx_jobs_pending (queue first) each
# (a loose index scan), and each one's pending jobs counted in that index up to the cap
# (the LIMIT stops the scan); then the processing jobs per queue, in idx_jobs_locked (as
# many as there are worker slots). One statement; it starts with SELECT, so it runs on a
# reader connection, never waiting for the writer.
_COUNT_BY_QUEUE_SQL = """SELECT queue, status, jobs FROM (WITH RECURSIVE t(queue) AS (
        SELECT (SELECT queue FROM _jobs INDEXED BY idx_jobs_pending WHERE status = 'pending'
                ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM _jobs AS j INDEXED BY idx_jobs_pending
                WHERE j.status = 'pending' AND j.queue > t.queue ORDER BY j.queue LIMIT 1)
        FROM t WHERE t.queue IS NOT NULL
    )
    SELECT t.queue AS queue, 'pending' AS status, (
        SELECT count(*) FROM (
            SELECT 1 FROM _jobs AS p INDEXED BY idx_jobs_pending
            WHERE p.status = 'pending' AND p.queue = t.queue LIMIT ?
        )) AS jobs
    FROM t WHERE t.queue IS NOT NULL
    UNION ALL
    SELECT queue, 'processing', count(*) FROM _jobs INDEXED BY idx_jobs_locked
    WHERE status = 'processing' GROUP BY queue
    ) AS counts"""


def _settle(tx: Queryable, outcomes: Outcomes) -> int:
    """:meth:`SQLiteJobsDriver.jobs_settle` on an open transaction."""
    stamp = format_time(outcomes.now)
    written = 0
    if outcomes.completed:
        written += tx.execute_many(
            _COMPLETE_SQL, [(stamp, claim.job_id, claim.token) for claim in outcomes.completed]
        )
    if outcomes.failed:
        written += tx.execute_many(
            _FAIL_SQL,
            [
                (stamp, f.error, format_time(f.retry_at) if f.retry_at else None,
                 f.claim.job_id, f.claim.token)
                for f in outcomes.failed
            ],
        )  # fmt: skip
    if outcomes.cancelled:
        written += tx.execute_many(
            _CANCEL_SQL, [(stamp, claim.job_id, claim.token) for claim in outcomes.cancelled]
        )
    if outcomes.snoozed:
        written += tx.execute_many(
            _RELEASE_SQL,
            [(format_time(s.run_at), stamp, s.claim.job_id, s.claim.token)
             for s in outcomes.snoozed],
        )  # fmt: skip
    return written


class SQLiteJobsDriver(PortableSQLDriver):
    """``_jobs`` on SQLite."""

    prune_batch = 200

    def migrations(self) -> list[Migration]:
        return [
            Migration("jobs_0001_create_jobs", _create_table),
            Migration("jobs_0002_dispatcher_functions", _no_function_needed),
            Migration("jobs_0003_payload_json", _payload_already_text),
            Migration("jobs_0004_index_only_plans", _claim_names_its_index),
            Migration("jobs_0005_priority_unique_key", _add_priority_and_unique_key),
            Migration("jobs_0006_queues", _add_queues),
            Migration("jobs_0007_attempts_and_cancel", _add_attempts_and_cancel),
            Migration("jobs_0008_schedules_and_retention", _add_schedules_and_retention),
        ]

    def encode_time(self, moment: datetime) -> str:
        return format_time(moment)

    def decode_time(self, value: Any) -> datetime:
        return _time(value)

    def decode_job(self, row: Sequence[Any]) -> Job:
        return _job(row)

    def jobs_insert(
        self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime
    ) -> list[Job | None]:
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
                job.priority,
                job.unique_key,
                job.queue,
                _millis(job.timeout),
            )
            for job in jobs
        ]
        if all(job.unique_key is None for job in jobs):
            if len(rows) == 1:
                q.execute(_INSERT_SQL, rows[0])
            else:
                q.execute_many(_INSERT_SQL, rows)
            return [None] * len(jobs)
        # One writer at a time: nothing can take or free a key between these statements.
        holders: list[Job | None] = []
        for job, row in zip(jobs, rows, strict=True):
            if job.unique_key is None:
                q.execute(_INSERT_SQL, row)
                holders.append(None)
            elif q.execute(_INSERT_UNIQUE_SQL, row) > 0:
                holders.append(None)
            else:
                found = q.fetch_tuples(_HOLDER_SQL, (job.topic, job.unique_key))
                holders.append(_job(found[0]))
        return holders

    def jobs_claim(self, q: Queryable, params: ClaimParams) -> list[Job]:
        if params.limit <= 0 or not params.topics:
            return []
        stamp, lock_stamp = format_time(params.now), format_time(params.lock_until)
        rows = q.fetch_tuples(*_claim_query(params, stamp, lock_stamp))
        # The times as stored (milliseconds), as every other read of the jobs gives them.
        now, lock_until = _time(stamp), _time(lock_stamp)
        times = {stamp: now}
        jobs = [_claimed_job(row, now, lock_until, params.node, times) for row in rows]
        # RETURNING order is unspecified
        jobs.sort(key=lambda job: (job.priority, job.run_at, job.id))
        return jobs

    def claim_plan(self, db: Database, params: ClaimParams) -> str:
        sql, args = _claim_query(params, format_time(params.now), format_time(params.lock_until))
        rows = db.fetch_tuples("EXPLAIN QUERY PLAN " + sql, args)
        return "\n".join(str(row[-1]) for row in rows)

    def jobs_next_due(
        self, q: Queryable, queues: Sequence[str], topics: Sequence[str]
    ) -> datetime | None:
        if not topics or not queues:
            return None
        # Per queue (not paused) and priority, the earliest of idx_jobs_pending's range.
        value = q.fetch_value(
            f"""SELECT min((SELECT run_at FROM _jobs INDEXED BY idx_jobs_pending
                WHERE status = 'pending' AND queue = c.value AND priority = p.value
                  AND topic IN ({_placeholders(len(topics))})
                ORDER BY run_at LIMIT 1))
            FROM json_each(?) AS c CROSS JOIN json_each(?) AS p
            WHERE NOT EXISTS (SELECT 1 FROM _jobs_queues WHERE name = c.value AND paused)""",
            (*topics, json.dumps(list(queues)), _PRIORITIES),
        )
        return _time(value) if value is not None else None

    def jobs_count_by_queue(self, q: Queryable, *, pending_cap: int) -> dict[str, QueueCounts]:
        return queue_counts(q.fetch_tuples(_COUNT_BY_QUEUE_SQL, (pending_cap,)))

    def count_by_queue_plan(self, db: Database, *, pending_cap: int) -> str:
        rows = db.fetch_tuples("EXPLAIN QUERY PLAN " + _COUNT_BY_QUEUE_SQL, (pending_cap,))
        return "\n".join(str(row[-1]) for row in rows)

    def jobs_settle(self, q: Queryable, outcomes: Outcomes) -> int:
        # Completions, failures and snoozes are executemany calls: on the database itself
        # they share one transaction, so the outcomes are written all or nothing.
        if not len(outcomes):
            return 0
        if isinstance(q, Database):
            with q.transaction() as tx:
                return _settle(tx, outcomes)
        return _settle(q, outcomes)

    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[Claim], lock_until: datetime
    ) -> set[Claim]:
        # One statement per claim token (a dispatcher's claims share a few tokens), each
        # naming its ids in an IN list.
        owned: set[Claim] = set()
        by_token: dict[str, list[str]] = {}
        for claim in claims:
            by_token.setdefault(claim.token, []).append(claim.job_id)
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
                owned.update(Claim(row[0], token) for row in rows)
        return owned

    def jobs_release(self, q: Queryable, claims: Sequence[Claim], now: datetime) -> int:
        if not claims:
            return 0
        stamp = format_time(now)
        return q.execute_many(
            _RELEASE_SQL, [(stamp, stamp, claim.job_id, claim.token) for claim in claims]
        )

    def jobs_prune(
        self,
        q: Queryable,
        status: str,
        finished_before: datetime,
        limit: int,
        *,
        finished_from: datetime | None = None,
    ) -> tuple[int, datetime | None]:
        since = "" if finished_from is None else "AND finished_at >= ?"
        moments = (finished_before,) if finished_from is None else (finished_before, finished_from)
        bounds = [format_time(moment) for moment in moments]
        rows = q.fetch_tuples(
            f"""DELETE FROM _jobs WHERE rowid IN (
                SELECT rowid FROM _jobs INDEXED BY idx_jobs_finished
                WHERE status = ? AND finished_at < ? {since}
                ORDER BY finished_at LIMIT ?)
            RETURNING finished_at""",
            (status, *bounds, limit),
        )
        return len(rows), _time(max(row[0] for row in rows)) if rows else None

    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        return q.execute(
            f"""UPDATE _jobs SET
                status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                    WHEN retries < max_retries THEN 'pending' ELSE 'failed' END,
                retries = CASE WHEN cancel_requested_at IS NULL AND retries < max_retries
                    THEN retries + 1 ELSE retries END,
                finished_at = CASE WHEN cancel_requested_at IS NULL AND retries < max_retries
                    THEN NULL ELSE ?1 END,
                errors = {_ERRORS_APPENDED},
                run_at = ?1, last_error = ?2, locked_until = NULL, locked_by = NULL,
                updated = ?1
            WHERE status = 'processing' AND locked_until < ?1""",
            (format_time(now), error),
        )
