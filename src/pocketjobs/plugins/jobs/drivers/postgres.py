"""The jobs plugin's PostgreSQL driver: all of its SQL for the ``_jobs`` table.

Claims use ``FOR UPDATE SKIP LOCKED``, so any number of dispatchers in any number of
processes share the queue without blocking each other. Enqueues send ``pg_notify`` in the
same statement, so listening dispatchers wake when (and only if) the enqueue commits.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pocketjobs.core import Database, Migration, Queryable, Tx
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers.base import NOTIFY_CHANNEL, Failure, JobsDriver, NewJob
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = ["PostgresJobsDriver"]

_COLUMNS = (
    "id, topic, payload, status, run_at, locked_until, retries, max_retries, last_error,"
    " created, updated"
)


def _create_table(tx: Tx) -> None:
    tx.execute(
        """CREATE TABLE _jobs (
            id           TEXT PRIMARY KEY,
            topic        TEXT NOT NULL,
            payload      JSONB NOT NULL DEFAULT 'null',
            status       TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
            run_at       TIMESTAMPTZ NOT NULL,
            locked_until TIMESTAMPTZ,
            locked_by    TEXT,
            retries      INTEGER NOT NULL DEFAULT 0,
            max_retries  INTEGER NOT NULL DEFAULT 3,
            last_error   TEXT,
            created      TIMESTAMPTZ NOT NULL,
            updated      TIMESTAMPTZ NOT NULL
        )"""
    )
    # The claim reads, per handled topic, the due pending jobs in run_at order (an ordered
    # range scan that stops at the batch size, whatever the planner's statistics say);
    # the rescue scans expired locks.
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (topic, run_at, id) WHERE status = 'pending'"
    )
    tx.execute("CREATE INDEX idx_jobs_locked ON _jobs (locked_until) WHERE status = 'processing'")
    # Listing newest first (ids are time-ordered UUIDv7, so the primary key serves the
    # unfiltered list), filtered by status or topic, and counting per status. Not for
    # pending rows: with statistics that lag a bulk enqueue, the planner would take a
    # (status, created) index for the claim and sort the whole backlog.
    tx.execute("CREATE INDEX idx_jobs_status ON _jobs (status, id) WHERE status <> 'pending'")
    tx.execute("CREATE INDEX idx_jobs_topic ON _jobs (topic, id)")
    # A queue table churns: every job is updated twice. Vacuum it after 2% of its rows
    # changed (the default waits for 20%), so the pending index stays small.
    tx.execute(
        "ALTER TABLE _jobs SET (autovacuum_vacuum_scale_factor = 0.02,"
        " autovacuum_analyze_scale_factor = 0.02)"
    )


# The dispatcher's two hot statements run as the bodies of functions (below), so that
# PostgreSQL plans them once per session (plan_cache_mode = force_generic_plan): planning
# them costs as much as running them. Every row is reached through an index whatever the
# arguments (`id = ANY(...)` on the primary key, an ordered range of idx_jobs_pending), so
# the one generic plan is the right plan; tests/integration/test_jobs_query_plan.py checks.


@dataclass(frozen=True)
class _Function:
    """A SQL function over one statement; ``:arg`` marks its arguments in ``body``."""

    name: str
    args: tuple[tuple[str, str], ...]  # (name, SQL type)
    returns: str
    body: str
    prelude: str = ""  # PL/pgSQL statements run before the body

    def _with_args(self, name: Callable[[int, str], str], text: str | None = None) -> str:
        """``text`` (default: the body) with each ``:arg`` replaced by ``name(position,
        arg)`` (1-based)."""
        positions = {arg: index for index, (arg, _) in enumerate(self.args, 1)}
        return _ARG.sub(
            lambda m: name(positions[m.group(1)], m.group(1)),
            self.body if text is None else text,
        )

    def create(self, tx: Tx) -> None:
        # A later change to a body re-creates its function in a new migration step.
        arguments = ", ".join(f"p_{arg} {sql_type}" for arg, sql_type in self.args)
        body = self._with_args(lambda _, arg: f"p_{arg}")
        prelude = self._with_args(lambda _, arg: f"p_{arg}", self.prelude)
        tx.execute(
            f"""CREATE OR REPLACE FUNCTION {self.name}({arguments})
            RETURNS TABLE ({self.returns})
            LANGUAGE plpgsql VOLATILE
            SET plan_cache_mode = force_generic_plan
            AS $body$
            #variable_conflict use_column
            BEGIN
                {prelude}
                RETURN QUERY {body};
            END
            $body$"""
        )

    def call(self) -> str:
        """``SELECT * FROM name(?, ...)`` with the arguments cast to their types."""
        return "SELECT * FROM {}({})".format(
            self.name, ", ".join(f"?::{sql_type}" for _, sql_type in self.args)
        )

    def generic_plan(self, tx: Tx, params: Sequence[Any]) -> list[str]:
        """``EXPLAIN ANALYZE`` of the body's generic plan with ``params`` (it runs: call
        this in a transaction that is rolled back)."""
        name = f"_plan_{uuid.uuid4().hex}"
        types = ", ".join(sql_type for _, sql_type in self.args)
        tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        tx.execute(f"PREPARE {name} ({types}) AS {self._with_args(lambda n, _: f'${n}')}")
        # EXECUTE takes no bound parameters: the server quotes the values.
        quoted = ", ".join(f"%L::{sql_type}" for _, sql_type in self.args)
        values = ", ".join(f"?::{sql_type}" for _, sql_type in self.args)
        execute = tx.fetch_value(f"SELECT format('EXECUTE {name} ({quoted})', {values})", params)
        rows = tx.fetch_tuples(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {execute}")
        tx.execute(f"DEALLOCATE {name}")
        return [str(row[0]) for row in rows]


_ARG = re.compile(r"(?<![:\w]):([a-z_]+)")

# Per handled topic, a LIMIT-ed ordered scan of idx_jobs_pending that skips rows other
# claimers hold; then the oldest of those across topics. (One scan over all topics with
# `topic = ANY(...)` lets the planner bitmap-scan and sort every pending row when its
# statistics lag, e.g. right after a bulk enqueue.)
_CLAIM = _Function(
    name="_jobs_claim",
    args=(
        ("topics", "text[]"),
        ("now", "timestamptz"),
        ("batch", "integer"),
        ("lock_until", "timestamptz"),
        ("token", "text"),
        ("durable", "boolean"),
    ),
    # A claim that a server crash loses is only a job that runs again, as when a worker
    # dies: unless the caller's transaction holds other writes, commit without waiting
    # for the WAL flush (the next durable commit flushes it too).
    prelude="""IF NOT :durable THEN
                    PERFORM set_config('synchronous_commit', 'off', true);
                END IF;""",
    returns=(
        "id text, topic text, payload jsonb, status text, run_at timestamptz,"
        " locked_until timestamptz, retries integer, max_retries integer, last_error text,"
        " created timestamptz, updated timestamptz"
    ),
    body=f"""WITH picked AS (
            SELECT p.id FROM unnest(:topics) AS t(topic)
            CROSS JOIN LATERAL (
                SELECT id, run_at FROM _jobs
                WHERE status = 'pending' AND topic = t.topic AND run_at <= :now
                ORDER BY run_at, id
                LIMIT :batch
                FOR UPDATE SKIP LOCKED
            ) AS p
            ORDER BY p.run_at, p.id
            LIMIT :batch
        )
        UPDATE _jobs AS j SET status = 'processing', locked_until = :lock_until,
            locked_by = :token, updated = :now
        WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
        RETURNING {", ".join(f"j.{column.strip()}" for column in _COLUMNS.split(","))}""",
)

# Completions and failures of finished jobs in one statement, fenced on their claim tokens.
# Completions come as one JSON object {job id: claim token} (far cheaper to send than two
# arrays); failures, which are rare, as arrays.
_SETTLE = _Function(
    name="_jobs_settle",
    args=(
        ("done", "jsonb"),
        ("fail_ids", "text[]"),
        ("fail_tokens", "text[]"),
        ("fail_errors", "text[]"),
        ("fail_retry_at", "timestamptz[]"),
        ("now", "timestamptz"),
    ),
    returns="written bigint",
    body="""WITH done AS (
            UPDATE _jobs AS j SET status = 'completed', locked_until = NULL,
                locked_by = NULL, updated = :now
            WHERE j.id = ANY(ARRAY(SELECT jsonb_object_keys(:done)))
              AND j.status = 'processing' AND j.locked_by = :done ->> j.id
            RETURNING 1
        ),
        failed AS (
            UPDATE _jobs AS j SET
                status = CASE WHEN f.retry_at IS NULL THEN 'failed' ELSE 'pending' END,
                retries = CASE WHEN f.retry_at IS NULL THEN j.retries ELSE j.retries + 1 END,
                run_at = COALESCE(f.retry_at, j.run_at),
                last_error = f.error, locked_until = NULL, locked_by = NULL, updated = :now
            FROM unnest(:fail_ids, :fail_tokens, :fail_errors, :fail_retry_at)
                 AS f(id, token, error, retry_at)
            WHERE j.id = ANY(:fail_ids) AND j.id = f.id AND j.locked_by = f.token
              AND j.status = 'processing'
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM failed)""",
)


def _create_functions(tx: Tx) -> None:
    _CLAIM.create(tx)
    _SETTLE.create(tx)


_INSERT_ONE_SQL = """WITH inserted AS (
        INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,
                           updated)
        VALUES (?, ?, ?::jsonb, 'pending', ?, 0, ?, ?, ?)
    )
    SELECT pg_notify(?, ?)"""

# A batch travels as one JSON array of rows: far cheaper to build and send than one array
# parameter per column. (JSON null becomes SQL NULL here: hence the COALESCE.)
_INSERT_MANY_SQL = """WITH inserted AS (
        INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,
                           updated)
        SELECT id, topic, COALESCE(payload, 'null'), 'pending', run_at, 0, max_retries,
               created, created
        FROM jsonb_to_recordset(?::jsonb) AS t(id text, topic text, payload jsonb,
                                                run_at timestamptz, max_retries integer,
                                                created timestamptz)
    )
    SELECT pg_notify(?, ?)"""


def _rows_json(jobs: Sequence[NewJob]) -> str:
    """``jobs`` as the JSON array :data:`_INSERT_MANY_SQL` reads (payloads are JSON text
    already; the values shared by a batch are encoded once)."""
    encoded: dict[object, str] = {}

    def enc(value: str | datetime) -> str:
        text = encoded.get(value)
        if text is None:
            plain = value.isoformat() if isinstance(value, datetime) else value
            text = encoded[value] = json.dumps(plain)
        return text

    return "[{}]".format(
        ",".join(
            f'{{"id":{json.dumps(job.id)},"topic":{enc(job.topic)},"payload":{job.payload_json},'
            f'"run_at":{enc(job.run_at)},"max_retries":{job.max_retries},'
            f'"created":{enc(job.created)}}}'
            for job in jobs
        )
    )


def _job(row: Sequence[Any]) -> Job:
    return Job(*row)


def _pairs(claims: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [job_id for job_id, _ in claims], [token for _, token in claims]


class PostgresJobsDriver(JobsDriver):
    """``_jobs`` on PostgreSQL."""

    parallel_writes = True

    def migrations(self) -> list[Migration]:
        return [
            Migration("jobs_0001_create_jobs", _create_table),
            Migration("jobs_0002_dispatcher_functions", _create_functions),
        ]

    def jobs_insert(self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime) -> None:
        # One statement: the insert, and the notification that is delivered at commit.
        # JSON rows for a batch; plain parameters for one job.
        notify = (NOTIFY_CHANNEL, format_time(wake_at))
        if len(jobs) == 1:
            job = jobs[0]
            q.execute(
                _INSERT_ONE_SQL,
                (job.id, job.topic, job.payload_json, job.run_at, job.max_retries, job.created,
                 job.created, *notify),
            )  # fmt: skip
            return
        q.execute(_INSERT_MANY_SQL, (_rows_json(jobs), *notify))

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
        rows = q.fetch_tuples(
            f"""UPDATE _jobs SET status = 'pending', retries = 0, run_at = ?, locked_until = NULL,
                locked_by = NULL, updated = ?
            WHERE id = ? AND status = 'failed' RETURNING {_COLUMNS}""",
            (now, now, job_id),
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
        if limit <= 0 or not topics:
            return []
        # On the database itself the claim is its own transaction; in a caller's, whose other
        # writes must stay durable, it is committed as they are.
        durable = not isinstance(q, Database)
        rows = q.fetch_tuples(
            _CLAIM.call(), (list(topics), now, limit, lock_until, claim_token, durable)
        )
        jobs = [_job(row) for row in rows]
        jobs.sort(key=lambda job: (job.run_at, job.id))  # RETURNING order is unspecified
        return jobs

    def claim_plan(self, db: Database, topics: Sequence[str], limit: int, now: datetime) -> str:
        """The generic plan the claim function runs (it claims, then is rolled back)."""

        class _RollBack(Exception):
            pass

        plan: list[str] = []
        try:
            with db.transaction() as tx:
                plan = _CLAIM.generic_plan(tx, (list(topics), now, limit, now, "plan", True))
                raise _RollBack
        except _RollBack:
            pass
        return "\n".join(plan)

    def jobs_next_due(self, q: Queryable, topics: Sequence[str]) -> datetime | None:
        value = q.fetch_value(
            """SELECT min(p.run_at) FROM unnest(?::text[]) AS t(topic)
            CROSS JOIN LATERAL (
                SELECT run_at FROM _jobs WHERE status = 'pending' AND topic = t.topic
                ORDER BY run_at LIMIT 1
            ) AS p""",
            (list(topics),),
        )
        return value if isinstance(value, datetime) else None

    def jobs_complete(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        return self.jobs_settle(q, claims, (), now)

    def jobs_fail(self, q: Queryable, failures: Sequence[Failure], now: datetime) -> int:
        return self.jobs_settle(q, (), failures, now)

    def jobs_settle(
        self,
        db: Queryable,
        completed: Sequence[tuple[str, str]],
        failures: Sequence[Failure],
        now: datetime,
    ) -> int:
        if not completed and not failures:
            return 0
        params: tuple[Any, ...] = (json.dumps(dict(completed)) if completed else None,)
        if failures:
            params += (
                [f.id for f in failures],
                [f.claim_token for f in failures],
                [f.error for f in failures],
                [f.retry_at for f in failures],
            )
        else:
            params += (None, None, None, None)
        return int(db.fetch_value(_SETTLE.call(), (*params, now)))

    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[tuple[str, str]], lock_until: datetime
    ) -> set[str]:
        ids, tokens = _pairs(claims)
        rows = q.fetch_tuples(
            """UPDATE _jobs AS j SET locked_until = ?
            FROM unnest(?::text[], ?::text[]) AS c(id, token)
            WHERE j.id = c.id AND j.locked_by = c.token AND j.status = 'processing'
            RETURNING j.id""",
            (lock_until, ids, tokens),
        )
        return {row[0] for row in rows}

    def jobs_release(self, q: Queryable, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        ids, tokens = _pairs(claims)
        return q.execute(
            """UPDATE _jobs AS j SET status = 'pending', run_at = ?, locked_until = NULL,
                locked_by = NULL, updated = ?
            FROM unnest(?::text[], ?::text[]) AS c(id, token)
            WHERE j.id = c.id AND j.locked_by = c.token AND j.status = 'processing'""",
            (now, now, ids, tokens),
        )

    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        return q.execute(
            """UPDATE _jobs SET
                status = CASE WHEN retries < max_retries THEN 'pending' ELSE 'failed' END,
                retries = CASE WHEN retries < max_retries THEN retries + 1 ELSE retries END,
                run_at = ?, last_error = ?, locked_until = NULL, locked_by = NULL, updated = ?
            WHERE status = 'processing' AND locked_until < ?""",
            (now, error, now, now),
        )
