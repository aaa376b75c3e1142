"""The jobs plugin's PostgreSQL driver: its own SQL for the ``_jobs`` table.

Claims use ``FOR UPDATE SKIP LOCKED``, so any number of dispatchers in any number of
processes share the queue without blocking each other. Enqueues send ``pg_notify`` in the
same statement, so listening dispatchers wake when (and only if) the enqueue commits.
Payloads are stored as ``json``, the text they were given, so they decode to exactly the
value that was enqueued. The statements shared with SQLite live in
:mod:`~pocketjobs.plugins.jobs.drivers.portable`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pocketjobs.core import Database, Migration, Queryable, Tx
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers.base import (
    CANCEL_PREFIX,
    NOTIFY_CHANNEL,
    Claim,
    ClaimParams,
    NewJob,
    Outcomes,
    QueueCounts,
    wake_payload,
)
from pocketjobs.plugins.jobs.drivers.portable import (
    CLAIMED_COLUMNS,
    JOB_COLUMNS,
    PortableSQLDriver,
    add_schedules_and_retention,
    queue_counts,
)
from pocketjobs.plugins.jobs.job import MAX_ERRORS_KEPT, Job, build_job
from pocketjobs.plugins.jobs.limits import MAX_PRIORITY

__all__ = ["PostgresJobsDriver"]


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
_GENERIC_PLAN = (("plan_cache_mode", "force_generic_plan"),)
# That plan is made at a session's first call, whatever the table's size then, and kept
# until the table is next analyzed. On a small table that has not been analyzed yet (a new
# queue's first claim; the first 2,000 jobs or so) the planner costs a sequential scan of
# _jobs below the primary-key lookups and would then scan the whole table on every call as
# it grows. Since every row is reachable through an index, sequential scans are off.
_INDEX_PLAN = (*_GENERIC_PLAN, ("enable_seqscan", "off"))


@dataclass(frozen=True)
class _Function:
    """A SQL function over one statement; ``:arg`` marks its arguments in ``body``."""

    name: str
    args: tuple[tuple[str, str], ...]  # (name, SQL type)
    returns: str
    body: str
    prelude: str = ""  # PL/pgSQL statements run before the body
    declare: str = ""  # PL/pgSQL variable declarations of the prelude
    settings: tuple[tuple[str, str], ...] = _INDEX_PLAN  # planner settings of the body

    def _with_args(self, name: Callable[[int, str], str], text: str | None = None) -> str:
        """``text`` (default: the body) with each ``:arg`` replaced by ``name(position,
        arg)`` (1-based)."""
        positions = {arg: index for index, (arg, _) in enumerate(self.args, 1)}
        return _ARG.sub(
            lambda m: name(positions[m.group(1)], m.group(1)),
            self.body if text is None else text,
        )

    def create(self, tx: Tx) -> None:
        # A later change to a body re-creates its function in a new migration step (a
        # change to what it returns needs drop() first: CREATE OR REPLACE cannot do that).
        arguments = ", ".join(f"p_{arg} {sql_type}" for arg, sql_type in self.args)
        body = self._with_args(lambda _, arg: f"p_{arg}")
        prelude = self._with_args(lambda _, arg: f"p_{arg}", self.prelude)
        settings = " ".join(f"SET {name} = {value}" for name, value in self.settings)
        tx.execute(
            f"""CREATE OR REPLACE FUNCTION {self.name}({arguments})
            RETURNS TABLE ({self.returns})
            LANGUAGE plpgsql VOLATILE
            {settings}
            AS $body$
            #variable_conflict use_column
            {"DECLARE " + self.declare if self.declare else ""}
            BEGIN
                {prelude}
                RETURN QUERY {body};
            END
            $body$"""
        )

    def signature(self) -> str:
        """``name(types)``: how PostgreSQL tells the function from other overloads."""
        return "{}({})".format(self.name, ", ".join(sql_type for _, sql_type in self.args))

    def drop(self, tx: Tx) -> None:
        """Drop the function."""
        tx.execute(f"DROP FUNCTION {self.signature()}")

    def alter_settings(self, tx: Tx) -> None:
        """Give the existing function this definition's planner settings."""
        for name, value in self.settings:
            tx.execute(f"ALTER FUNCTION {self.signature()} SET {name} = {value}")

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
        for setting, value in self.settings:
            tx.execute(f"SET LOCAL {setting} = {value}")
        tx.execute(f"PREPARE {name} ({types}) AS {self._with_args(lambda n, _: f'${n}')}")
        # EXECUTE takes no bound parameters: the server quotes the values.
        quoted = ", ".join(f"%L::{sql_type}" for _, sql_type in self.args)
        values = ", ".join(f"?::{sql_type}" for _, sql_type in self.args)
        execute = tx.fetch_value(f"SELECT format('EXECUTE {name} ({quoted})', {values})", params)
        rows = tx.fetch_tuples(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {execute}")
        tx.execute(f"DEALLOCATE {name}")
        return [str(row[0]) for row in rows]


_ARG = re.compile(r"(?<![:\w]):([a-z_]+)")

# A claimed job, as the claim function returns it (steps 3 and 4: without the priority
# and unique key that step 5 adds).
_CLAIM_COLUMNS_0004 = (
    "id text, topic text, payload json, status text, run_at timestamptz,"
    " locked_until timestamptz, retries integer, max_retries integer, last_error text,"
    " created timestamptz, updated timestamptz"
)
_CLAIM_COLUMNS_0005 = _CLAIM_COLUMNS_0004 + ", priority integer, unique_key text"
_CLAIM_COLUMNS = _CLAIM_COLUMNS_0005 + ", queue text"
_RETURNING_0004 = (
    "j.id, j.topic, j.payload, j.status, j.run_at, j.locked_until, j.retries, j.max_retries,"
    " j.last_error, j.created, j.updated"
)

# Per handled topic, a LIMIT-ed ordered scan of idx_jobs_pending that skips rows other
# claimers hold; then the oldest of those across topics. (One scan over all topics with
# `topic = ANY(...)` lets the planner bitmap-scan and sort every pending row when its
# statistics lag, e.g. right after a bulk enqueue.)
_CLAIM_0004 = _Function(
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
    returns=_CLAIM_COLUMNS_0004,
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
        RETURNING {_RETURNING_0004}""",
)

# Step 5: the same claim in (priority, run_at, id) order, on idx_jobs_pending (topic,
# priority, run_at, id): per topic an ordered range scan that skips jobs not yet due.
_CLAIM_0005 = dataclasses.replace(
    _CLAIM_0004,
    returns=_CLAIM_COLUMNS_0005,
    body=f"""WITH picked AS (
            SELECT p.id FROM unnest(:topics) AS t(topic)
            CROSS JOIN LATERAL (
                SELECT id, priority, run_at FROM _jobs
                WHERE status = 'pending' AND topic = t.topic AND run_at <= :now
                ORDER BY priority, run_at, id
                LIMIT :batch
                FOR UPDATE SKIP LOCKED
            ) AS p
            ORDER BY p.priority, p.run_at, p.id
            LIMIT :batch
        )
        UPDATE _jobs AS j SET status = 'processing', locked_until = :lock_until,
            locked_by = :token, updated = :now
        WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
        RETURNING {_RETURNING_0004}, j.priority, j.unique_key""",
)

# The first key of the advisory locks that serialize the claims of a queue with a global
# limit ("pjob"); the second is the hash of the queue's name.
_QUEUE_LOCK_CLASS = 0x706A6F62

_CLAIM_COLUMNS_0006 = _CLAIM_COLUMNS_0005 + ", queue text"
_CLAIM_COLUMNS = (
    _CLAIM_COLUMNS_0006 + ", attempted_at timestamptz, first_attempted_at timestamptz,"
    " attempted_by text, finished_at timestamptz, errors jsonb, timeout interval,"
    " cancel_requested_at timestamptz"
)


def _claim_by_queue(set_columns: str, returning: str) -> str:
    """The claim by queue (steps 6 and 7): the update sets ``set_columns`` too."""
    return f"""WITH lanes AS (
            SELECT c.queue, GREATEST(0, CASE WHEN c.cap IS NULL THEN c.lim
                ELSE LEAST(c.lim, c.cap - (
                    SELECT count(*) FROM _jobs AS r
                    WHERE r.status = 'processing' AND r.queue = c.queue)::integer)
                END) AS lim
            FROM unnest(:queues, :limits, :caps) AS c(queue, lim, cap)
            WHERE NOT EXISTS (
                SELECT 1 FROM _jobs_queues AS s WHERE s.name = c.queue AND s.paused)
        ),
        picked AS (
            SELECT p.id FROM lanes AS l
            CROSS JOIN LATERAL (
                SELECT x.id FROM unnest(:topics) AS t(topic)
                CROSS JOIN LATERAL (
                    SELECT id, priority, run_at FROM _jobs
                    WHERE status = 'pending' AND queue = l.queue AND topic = t.topic
                      AND run_at <= :now
                    ORDER BY priority, run_at, id
                    LIMIT l.lim
                    FOR UPDATE SKIP LOCKED
                ) AS x
                ORDER BY x.priority, x.run_at, x.id
                LIMIT l.lim
            ) AS p
        )
        UPDATE _jobs AS j SET status = 'processing', locked_until = :lock_until,
            locked_by = :token, updated = :now{set_columns}
        WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
        RETURNING {returning}"""


# Step 6: per queue (named queues, each with its own limit; paused ones skipped), per
# handled topic, an ordered range scan of idx_jobs_pending (queue, topic, priority, run_at,
# id); the queue's limit applies to the merge of its topics. A queue with a global limit
# is claimed under a transaction-level advisory lock (taken in name order, so two claimers
# never deadlock), and the claim's statement, which starts after the lock is held, counts
# the queue's processing jobs: every claimer sees the ones before it committed.
_CLAIM_0006 = _Function(
    name="_jobs_claim",
    args=(
        ("topics", "text[]"),
        ("now", "timestamptz"),
        ("queues", "text[]"),
        ("limits", "integer[]"),
        ("caps", "integer[]"),
        ("lock_until", "timestamptz"),
        ("token", "text"),
        ("durable", "boolean"),
    ),
    declare="v_queue text;",
    prelude=f"""{_CLAIM_0004.prelude}
                FOR v_queue IN
                    SELECT c.queue FROM unnest(:queues, :caps) AS c(queue, cap)
                    WHERE c.cap IS NOT NULL ORDER BY c.queue
                LOOP
                    PERFORM pg_advisory_xact_lock({_QUEUE_LOCK_CLASS}, hashtext(v_queue));
                END LOOP;""",
    returns=_CLAIM_COLUMNS_0006,
    body=_claim_by_queue("", f"{_RETURNING_0004}, j.priority, j.unique_key, j.queue"),
)

# Step 7: the claim also records the attempt (when, first when, by which node); the queues
# with a global limit come sorted in their own array (``locks``), so that a claim without
# one runs no statement and evaluates no expression before the claim itself.
_CLAIM = dataclasses.replace(
    _CLAIM_0006,
    args=(*_CLAIM_0006.args, ("node", "text"), ("locks", "text[]")),
    declare="v_queue text;",
    prelude=f"""{_CLAIM_0004.prelude}
                FOREACH v_queue IN ARRAY :locks LOOP
                    PERFORM pg_advisory_xact_lock({_QUEUE_LOCK_CLASS}, hashtext(v_queue));
                END LOOP;""",
    returns=_CLAIM_COLUMNS,
    body=_claim_by_queue(
        """, attempted_at = :now,
            first_attempted_at = COALESCE(j.first_attempted_at, :now), attempted_by = :node""",
        ", ".join(f"j.{column.strip()}" for column in JOB_COLUMNS.split(",")),
    ),
)

# Completions and failures of finished jobs in one statement, fenced on their claim tokens.
# Completions come as one JSON object {job id: claim token} (far cheaper to send than two
# arrays); failures, which are rare, as arrays.
_SETTLE_0006 = _Function(
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


def _errors_appended(error: str, attempt: str, now: str) -> str:
    """SQL: ``j.errors`` with ``{at: now, attempt, error}`` appended, the latest
    ``MAX_ERRORS_KEPT`` kept."""
    entry = (
        f"jsonb_build_object('at', to_char({now} AT TIME ZONE 'UTC',"
        f" 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'attempt', {attempt}, 'error', {error})"
    )
    return f"""(SELECT COALESCE(jsonb_agg(e.value ORDER BY e.n), '[]'::jsonb)
                FROM jsonb_array_elements(j.errors || jsonb_build_array({entry}))
                     WITH ORDINALITY AS e(value, n)
                WHERE e.n > jsonb_array_length(j.errors) + 1 - {MAX_ERRORS_KEPT})"""


# Step 7: finished jobs get finished_at, failures append to errors, and cancelled claims
# (as two arrays) become cancelled; so does a failure whose cancel was requested (never
# retried).
_SETTLE = dataclasses.replace(
    _SETTLE_0006,
    args=(
        *_SETTLE_0006.args[:5],
        ("cancel_ids", "text[]"),
        ("cancel_tokens", "text[]"),
        ("now", "timestamptz"),
    ),
    body=f"""WITH done AS (
            UPDATE _jobs AS j SET status = 'completed', locked_until = NULL,
                locked_by = NULL, updated = :now, finished_at = :now
            WHERE j.id = ANY(ARRAY(SELECT jsonb_object_keys(:done)))
              AND j.status = 'processing' AND j.locked_by = :done ->> j.id
            RETURNING 1
        ),
        failed AS (
            UPDATE _jobs AS j SET
                status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                    WHEN f.retry_at IS NULL THEN 'failed' ELSE 'pending' END,
                retries = CASE WHEN f.retry_at IS NULL OR j.cancel_requested_at IS NOT NULL
                    THEN j.retries ELSE j.retries + 1 END,
                run_at = CASE WHEN j.cancel_requested_at IS NULL
                    THEN COALESCE(f.retry_at, j.run_at) ELSE j.run_at END,
                finished_at = CASE WHEN f.retry_at IS NULL OR j.cancel_requested_at IS NOT NULL
                    THEN :now END,
                errors = {_errors_appended("f.error", "j.retries + 1", ":now")},
                last_error = f.error, locked_until = NULL, locked_by = NULL, updated = :now
            FROM unnest(:fail_ids, :fail_tokens, :fail_errors, :fail_retry_at)
                 AS f(id, token, error, retry_at)
            WHERE j.id = ANY(:fail_ids) AND j.id = f.id AND j.locked_by = f.token
              AND j.status = 'processing'
            RETURNING 1
        ),
        cancelled AS (
            UPDATE _jobs AS j SET status = 'cancelled', locked_until = NULL, locked_by = NULL,
                updated = :now, finished_at = :now
            FROM unnest(:cancel_ids, :cancel_tokens) AS c(id, token)
            WHERE j.id = ANY(:cancel_ids) AND j.id = c.id AND j.locked_by = c.token
              AND j.status = 'processing'
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM failed)
            + (SELECT count(*) FROM cancelled)""",
)


# The functions as earlier steps created them (an applied step keeps doing what it did;
# should a body change, its old steps get a copy of the body they had). Step 2: payloads
# as jsonb, the column's type until step 3, and sequential scans allowed until step 4.
_CLAIM_0003 = dataclasses.replace(_CLAIM_0004, settings=_GENERIC_PLAN)
_CLAIM_0002 = dataclasses.replace(
    _CLAIM_0003, returns=_CLAIM_COLUMNS_0004.replace("payload json,", "payload jsonb,")
)
_SETTLE_0002 = dataclasses.replace(_SETTLE_0006, settings=_GENERIC_PLAN)


def _create_functions(tx: Tx) -> None:
    _CLAIM_0002.create(tx)
    _SETTLE_0002.create(tx)


def _store_payload_text(tx: Tx) -> None:
    """Store payloads as ``json`` (the text as given) instead of ``jsonb``, which rewrites
    numbers (``1e16`` came back as an int, ``-0.0`` as ``0.0``) and reorders keys.

    Existing rows keep their values as JSONB last wrote them (that loss already happened).
    Changing the type rewrites the table under an exclusive lock: on a large queue, run
    the upgrade while its dispatchers are stopped."""
    tx.execute(
        """ALTER TABLE _jobs ALTER COLUMN payload DROP DEFAULT,
            ALTER COLUMN payload TYPE json USING payload::json,
            ALTER COLUMN payload SET DEFAULT 'null'"""
    )
    _CLAIM_0002.drop(tx)  # its result type changes: CREATE OR REPLACE cannot do that
    _CLAIM_0003.create(tx)


def _plan_without_seqscans(tx: Tx) -> None:
    """Plan the dispatcher's functions with index scans only (see :data:`_INDEX_PLAN`)."""
    _CLAIM_0004.alter_settings(tx)
    _SETTLE_0006.alter_settings(tx)


def _add_priority_and_unique_key(tx: Tx) -> None:
    """Add ``priority`` (0 first, default 0) and ``unique_key`` without rewriting the
    table (a column with a constant default and a nullable one are catalogue changes; the
    check is validated by a scan under a weaker lock); claim in priority order; keep one
    pending or processing job per topic and key (a partial unique index)."""
    tx.execute(
        """ALTER TABLE _jobs ADD COLUMN priority integer NOT NULL DEFAULT 0,
            ADD COLUMN unique_key text"""
    )
    tx.execute(
        "ALTER TABLE _jobs ADD CONSTRAINT _jobs_priority_range"
        " CHECK (priority BETWEEN 0 AND 9) NOT VALID"
    )
    tx.execute("ALTER TABLE _jobs VALIDATE CONSTRAINT _jobs_priority_range")
    tx.execute("DROP INDEX idx_jobs_pending")
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (topic, priority, run_at, id)"
        " WHERE status = 'pending'"
    )
    tx.execute(f"CREATE UNIQUE INDEX idx_jobs_unique ON _jobs (topic, unique_key) {_UNIQUE_WHERE}")
    _CLAIM_0004.drop(tx)  # its result type changes: CREATE OR REPLACE cannot do that
    _CLAIM_0005.create(tx)


def _add_queues(tx: Tx) -> None:
    """Add named queues without rewriting the table (``queue`` has a constant default:
    a catalogue change): the pending index leads with the queue, the processing index too
    (a global limit counts a queue's processing jobs); the queue state table (pause) and
    the workers table (who runs, handling which topics). The claim takes queues."""
    tx.execute("ALTER TABLE _jobs ADD COLUMN queue text NOT NULL DEFAULT 'default'")
    tx.execute("DROP INDEX idx_jobs_pending")
    tx.execute(
        "CREATE INDEX idx_jobs_pending ON _jobs (queue, topic, priority, run_at, id)"
        " WHERE status = 'pending'"
    )
    tx.execute("DROP INDEX idx_jobs_locked")
    tx.execute(
        "CREATE INDEX idx_jobs_locked ON _jobs (queue, locked_until) WHERE status = 'processing'"
    )
    tx.execute(
        """CREATE TABLE _jobs_queues (
            name    text PRIMARY KEY,
            paused  boolean NOT NULL DEFAULT false,
            updated timestamptz NOT NULL
        )"""
    )
    tx.execute(
        """CREATE TABLE _jobs_workers (
            id      text PRIMARY KEY,
            host    text NOT NULL,
            pid     integer NOT NULL,
            queues  text NOT NULL,
            topics  text NOT NULL,
            started timestamptz NOT NULL,
            seen    timestamptz NOT NULL
        )"""
    )
    _CLAIM_0005.drop(tx)  # its arguments and result type change
    _CLAIM_0006.create(tx)


def _add_attempts_and_cancel(tx: Tx) -> None:
    """Add the ``cancelled`` status (the check is replaced and validated by a scan under
    a weaker lock) and the attempt history, the timeout and the cancel request (nullable
    columns and one with a constant default: catalogue changes, no table rewrite). The
    claim records attempts; the settle writes errors, finish times and cancellations."""
    tx.execute("ALTER TABLE _jobs DROP CONSTRAINT _jobs_status_check")
    tx.execute(
        "ALTER TABLE _jobs ADD CONSTRAINT _jobs_status_check CHECK (status IN"
        " ('pending', 'processing', 'completed', 'failed', 'cancelled')) NOT VALID"
    )
    tx.execute("ALTER TABLE _jobs VALIDATE CONSTRAINT _jobs_status_check")
    tx.execute(
        """ALTER TABLE _jobs ADD COLUMN attempted_at timestamptz,
            ADD COLUMN first_attempted_at timestamptz,
            ADD COLUMN attempted_by text,
            ADD COLUMN finished_at timestamptz,
            ADD COLUMN errors jsonb NOT NULL DEFAULT '[]',
            ADD COLUMN timeout interval,
            ADD COLUMN cancel_requested_at timestamptz"""
    )
    _CLAIM_0006.drop(tx)  # its arguments and result type change
    _CLAIM.create(tx)
    _SETTLE_0006.drop(tx)  # its arguments change
    _SETTLE.create(tx)


def _add_schedules_and_retention(tx: Tx) -> None:
    """Step 8 as on every database (see ``portable.py``), times as ``timestamptz``; the
    index is built in this step's transaction (writes to ``_jobs`` wait for it, about a
    second per million finished jobs). Autovacuum looks at ``_jobs`` after 5% of its rows
    changed rather than 20%: pruning deletes steadily, and dead rows are reclaimed sooner."""
    add_schedules_and_retention(tx, "timestamptz")
    tx.execute(
        "ALTER TABLE _jobs SET (autovacuum_vacuum_scale_factor = 0.05,"
        " autovacuum_analyze_scale_factor = 0.05)"
    )


# The rows the unique index covers (the ON CONFLICT target repeats it).
_UNIQUE_WHERE = "WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')"


_INSERT_ONE_SQL = """WITH inserted AS (
        INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,
                           updated, priority, queue, timeout)
        VALUES (?, ?, ?::json, 'pending', ?, 0, ?, ?, ?, ?, ?, ?::interval)
    )
    SELECT pg_notify(?, ?)"""

# A job with a unique key: inserted unless its topic and key are taken (the notification
# only if it was inserted); else the job that holds them.
_INSERT_UNIQUE_SQL = f"""WITH inserted AS (
        INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,
                           updated, priority, unique_key, queue, timeout)
        VALUES (?, ?, ?::json, 'pending', ?, 0, ?, ?, ?, ?, ?, ?, ?::interval)
        ON CONFLICT (topic, unique_key) {_UNIQUE_WHERE} DO NOTHING
        RETURNING id
    )
    SELECT pg_notify(?, ?) FROM inserted"""
_HOLDER_SQL = f"""SELECT {JOB_COLUMNS} FROM _jobs
    WHERE topic = ? AND unique_key = ? AND status IN ('pending', 'processing')"""

# A batch travels as one JSON array of rows: far cheaper to build and send than one array
# parameter per column. json_to_recordset (not jsonb_...) hands a `json` column the value's
# own text: an object, array or number exactly as written (a top-level string is unescaped
# and escaped again: the same string). JSON null becomes SQL NULL here: hence the COALESCE.
_INSERT_MANY_SQL = """WITH inserted AS (
        INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,
                           updated, priority, queue, timeout)
        SELECT id, topic, COALESCE(payload, 'null'), 'pending', run_at, 0, max_retries,
               created, created, priority, queue, make_interval(secs => timeout)
        FROM json_to_recordset(?::json) AS t(id text, topic text, payload json,
                                              run_at timestamptz, max_retries integer,
                                              created timestamptz, priority integer,
                                              queue text, timeout double precision)
    )
    SELECT pg_notify(?, ?)"""


# Metrics: the queues with pending jobs, one probe of idx_jobs_pending (queue first) each
# (a loose index scan), and each one's pending jobs counted in that index up to the cap
# (the LIMIT stops the scan); then the processing jobs per queue, in idx_jobs_locked (as
# many as there are worker slots). Planned without bitmap or sequential scans
# (_COUNT_SETTINGS): before the table is analyzed the planner takes a bitmap scan of the
# queue's whole range of the index, which the LIMIT does not stop (every pending job of a
# backlog read at each scrape); only an ordered index scan stops at the cap.
_COUNT_SETTINGS = (("enable_bitmapscan", "off"), ("enable_seqscan", "off"))
_COUNT_BY_QUEUE_SQL = """WITH RECURSIVE t(queue) AS (
        SELECT (SELECT queue FROM _jobs WHERE status = 'pending' ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM _jobs AS j WHERE j.status = 'pending' AND j.queue > t.queue
                ORDER BY j.queue LIMIT 1)
        FROM t WHERE t.queue IS NOT NULL
    )
    SELECT t.queue, 'pending', (
        SELECT count(*) FROM (
            SELECT 1 FROM _jobs AS p WHERE p.status = 'pending' AND p.queue = t.queue
            LIMIT ?::bigint
        ) AS capped)
    FROM t WHERE t.queue IS NOT NULL
    UNION ALL
    SELECT queue, 'processing', count(*) FROM _jobs WHERE status = 'processing' GROUP BY queue"""


def _counting(q: Queryable, sql: str, pending_cap: int) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (the count by queue, or its plan), planned with
    :data:`_COUNT_SETTINGS` in a transaction (``q``'s, or one of its own)."""
    if isinstance(q, Database):
        with q.transaction() as tx:
            return _counting(tx, sql, pending_cap)
    for name, value in _COUNT_SETTINGS:
        q.execute(f"SET LOCAL {name} = {value}")
    return q.fetch_tuples(sql, (pending_cap,))


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
            f'"created":{enc(job.created)},"priority":{job.priority},"queue":{enc(job.queue)},'
            f'"timeout":{_seconds_json(job.timeout)}}}'
            for job in jobs
        )
    )


def _seconds_json(duration: timedelta | None) -> str:
    return "null" if duration is None else repr(duration.total_seconds())


def _job(row: Sequence[Any]) -> Job:
    return build_job(row)


# The claim, reading CLAIMED_COLUMNS of what the function returns; the payload and the
# errors as text: decoded here with no work for the usual "[]" (psycopg's json loader
# decodes bytes first, per value).
_CLAIMED_AS_TEXT = CLAIMED_COLUMNS.replace("payload", "payload::text").replace(
    "errors", "errors::text"
)
_CLAIM_SQL = _CLAIM.call().replace("SELECT *", f"SELECT {_CLAIMED_AS_TEXT}", 1)


def _claimed_job(row: Sequence[Any], params: ClaimParams) -> Job:
    """A job as claimed with ``params``, from its CLAIMED_COLUMNS."""
    payload, errors = row[2], row[12]
    now = params.now
    return build_job(
        (
            row[0],
            row[1],
            None if payload == "null" else json.loads(payload),
            "processing",
            row[3],
            params.lock_until,
            row[4],
            row[5],
            row[6],
            row[7],
            now,
            row[8],
            row[9],
            row[10],
            now,
            row[11],
            params.node,
            None,
            [] if errors == "[]" else json.loads(errors),
            row[13],
            row[14],
        )
    )


def _claim_order(job: Job) -> tuple[int, datetime, str]:
    return job.priority, job.run_at, job.id


def _claim_arrays(claims: Sequence[Claim]) -> tuple[list[str], list[str]]:
    """The claims' job ids and tokens, as two parallel arrays."""
    return [claim.job_id for claim in claims], [claim.token for claim in claims]


def _array(values: Iterable[str | int | None]) -> str:
    """``values`` as a PostgreSQL array literal (``{"a",NULL,3}``), for a ``?::type[]``
    argument: psycopg's list dumper inspects every list it sends, which for the claim's
    five small arrays cost ~27 us a call against ~3 us for strings, on the control
    thread that every claim waits for."""
    return "{" + ",".join(map(_array_element, values)) + "}"


def _array_element(value: str | int | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _claim_args(params: ClaimParams, *, durable: bool) -> tuple[Any, ...]:
    """The claim function's arguments (see :data:`_CLAIM`)."""
    p = params
    queues = p.queues
    return (
        _array(p.topics), p.now, _array([c.name for c in queues]),
        _array([c.limit for c in queues]), _array([c.global_limit for c in queues]),
        p.lock_until, p.token, durable, p.node,
        _array(sorted(c.name for c in queues if c.global_limit is not None)),
    )  # fmt: skip


class PostgresJobsDriver(PortableSQLDriver):
    """``_jobs`` on PostgreSQL."""

    parallel_writes = True
    prune_batch = 1000

    def migrations(self) -> list[Migration]:
        return [
            Migration("jobs_0001_create_jobs", _create_table),
            Migration("jobs_0002_dispatcher_functions", _create_functions),
            Migration("jobs_0003_payload_json", _store_payload_text),
            Migration("jobs_0004_index_only_plans", _plan_without_seqscans),
            Migration("jobs_0005_priority_unique_key", _add_priority_and_unique_key),
            Migration("jobs_0006_queues", _add_queues),
            Migration("jobs_0007_attempts_and_cancel", _add_attempts_and_cancel),
            Migration("jobs_0008_schedules_and_retention", _add_schedules_and_retention),
        ]

    def encode_time(self, moment: datetime) -> datetime:
        return moment  # psycopg sends an aware datetime as a timestamptz

    def decode_time(self, value: Any) -> datetime:
        return cast(datetime, value)

    def decode_job(self, row: Sequence[Any]) -> Job:
        return _job(row)

    def jobs_insert(
        self, q: Queryable, jobs: Sequence[NewJob], *, wake_at: datetime
    ) -> list[Job | None]:
        # One statement: the insert, and the notification that is delivered at commit.
        # JSON rows for a batch; plain parameters for one job; a statement of its own for
        # each job with a unique key.
        # The topics let a dispatcher that handles none of them stay asleep.
        notify = (NOTIFY_CHANNEL, wake_payload(wake_at, (job.topic for job in jobs)))
        plain = [job for job in jobs if job.unique_key is None]
        if len(plain) == 1:
            job = plain[0]
            q.execute(
                _INSERT_ONE_SQL,
                (job.id, job.topic, job.payload_json, job.run_at, job.max_retries, job.created,
                 job.created, job.priority, job.queue, job.timeout, *notify),
            )  # fmt: skip
        elif plain:
            q.execute(_INSERT_MANY_SQL, (_rows_json(plain), *notify))
        if len(plain) == len(jobs):
            return [None] * len(jobs)
        return [None if job.unique_key is None else self._insert_unique(q, job, notify)
                for job in jobs]  # fmt: skip

    def _insert_unique(self, q: Queryable, job: NewJob, notify: tuple[str, str]) -> Job | None:
        """Insert ``job`` unless its key is taken; the job holding the key, or ``None``."""
        while True:
            inserted = q.fetch_tuples(
                _INSERT_UNIQUE_SQL,
                (job.id, job.topic, job.payload_json, job.run_at, job.max_retries, job.created,
                 job.created, job.priority, job.unique_key, job.queue, job.timeout, *notify),
            )  # fmt: skip
            if inserted:
                return None
            holders = q.fetch_tuples(_HOLDER_SQL, (job.topic, job.unique_key))
            if holders:
                return _job(holders[0])
            # The holder finished between the two statements: the key is free, try again.

    def jobs_claim(self, q: Queryable, params: ClaimParams) -> list[Job]:
        if params.limit <= 0 or not params.topics:
            return []
        # On the database itself the claim is its own transaction; in a caller's, whose other
        # writes must stay durable, it is committed as they are.
        durable = not isinstance(q, Database)
        rows = q.fetch_tuples(_CLAIM_SQL, _claim_args(params, durable=durable))
        jobs = [_claimed_job(row, params) for row in rows]
        jobs.sort(key=_claim_order)  # RETURNING order is unspecified
        return jobs

    def claim_plan(self, db: Database, params: ClaimParams) -> str:
        """The generic plan the claim function runs (it claims, then is rolled back)."""

        class _RollBack(Exception):
            pass

        plan: list[str] = []
        try:
            with db.transaction() as tx:
                plan = _CLAIM.generic_plan(tx, _claim_args(params, durable=True))
                raise _RollBack
        except _RollBack:
            pass
        return "\n".join(plan)

    def jobs_next_due(
        self, q: Queryable, queues: Sequence[str], topics: Sequence[str]
    ) -> datetime | None:
        value = q.fetch_value(
            # One probe of idx_jobs_pending per queue (not paused), topic and priority.
            f"""SELECT min(p.run_at) FROM unnest(?::text[]) AS c(queue)
            CROSS JOIN unnest(?::text[]) AS t(topic)
            CROSS JOIN generate_series(0, {MAX_PRIORITY}) AS r(priority)
            CROSS JOIN LATERAL (
                SELECT run_at FROM _jobs
                WHERE status = 'pending' AND queue = c.queue AND topic = t.topic
                  AND priority = r.priority
                ORDER BY run_at LIMIT 1
            ) AS p
            WHERE NOT EXISTS (
                SELECT 1 FROM _jobs_queues AS s WHERE s.name = c.queue AND s.paused)""",
            (list(queues), list(topics)),
        )
        return value if isinstance(value, datetime) else None

    def jobs_count_by_queue(self, q: Queryable, *, pending_cap: int) -> dict[str, QueueCounts]:
        # The planner settings are the transaction's (in a caller's: for the rest of it).
        return queue_counts(_counting(q, _COUNT_BY_QUEUE_SQL, pending_cap))

    def count_by_queue_plan(self, db: Database, *, pending_cap: int) -> str:
        explain = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + _COUNT_BY_QUEUE_SQL
        return "\n".join(str(row[0]) for row in _counting(db, explain, pending_cap))

    def queues_set_paused(self, q: Queryable, name: str, paused: bool, now: datetime) -> None:
        super().queues_set_paused(q, name, paused, now)
        if not paused:  # delivered at commit: listening dispatchers claim from it again
            q.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, format_time(now)))

    def jobs_settle(self, q: Queryable, outcomes: Outcomes) -> int:
        if outcomes.snoozed:  # rare: a second statement, in one transaction with the first
            if isinstance(q, Database):
                with q.transaction() as tx:
                    return self._settle_snoozed(tx, outcomes)
            return self._settle_snoozed(q, outcomes)
        return self._settle(q, outcomes)

    def _settle_snoozed(self, q: Queryable, outcomes: Outcomes) -> int:
        snoozed = outcomes.snoozed
        written = q.execute(
            """UPDATE _jobs AS j SET status = 'pending', run_at = c.run_at, locked_until = NULL,
                locked_by = NULL, updated = ?
            FROM unnest(?::text[], ?::text[], ?::timestamptz[]) AS c(id, token, run_at)
            WHERE j.id = c.id AND j.locked_by = c.token AND j.status = 'processing'""",
            (outcomes.now, [s.claim.job_id for s in snoozed], [s.claim.token for s in snoozed],
             [s.run_at for s in snoozed]),
        )  # fmt: skip
        return written + self._settle(q, outcomes)

    def _settle(self, q: Queryable, outcomes: Outcomes) -> int:
        """The completions, failures and cancellations: one statement, so all or nothing
        wherever it runs."""
        completed, failed, cancelled = outcomes.completed, outcomes.failed, outcomes.cancelled
        if not completed and not failed and not cancelled:
            return 0
        params: tuple[Any, ...] = (
            json.dumps({claim.job_id: claim.token for claim in completed}) if completed else None,
        )
        if failed:
            params += (
                [f.claim.job_id for f in failed],
                [f.claim.token for f in failed],
                [f.error for f in failed],
                [f.retry_at for f in failed],
            )
        else:
            params += (None, None, None, None)
        params += _claim_arrays(cancelled) if cancelled else (None, None)
        return int(q.fetch_value(_SETTLE.call(), (*params, outcomes.now)))

    def jobs_extend_locks(
        self, q: Queryable, claims: Sequence[Claim], lock_until: datetime
    ) -> set[Claim]:
        if not claims:
            return set()
        ids, tokens = _claim_arrays(claims)
        rows = q.fetch_tuples(
            """UPDATE _jobs AS j SET locked_until = ?
            FROM unnest(?::text[], ?::text[]) AS c(id, token)
            WHERE j.id = c.id AND j.locked_by = c.token AND j.status = 'processing'
            RETURNING j.id, j.locked_by""",
            (lock_until, ids, tokens),
        )
        return {Claim(job_id, token) for job_id, token in rows}

    def jobs_release(self, q: Queryable, claims: Sequence[Claim], now: datetime) -> int:
        if not claims:
            return 0
        ids, tokens = _claim_arrays(claims)
        return q.execute(
            """UPDATE _jobs AS j SET status = 'pending', run_at = ?, locked_until = NULL,
                locked_by = NULL, updated = ?
            FROM unnest(?::text[], ?::text[]) AS c(id, token)
            WHERE j.id = c.id AND j.locked_by = c.token AND j.status = 'processing'""",
            (now, now, ids, tokens),
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
        # SKIP LOCKED: a row another transaction holds (a delete or requeue of it) is left
        # for a later batch rather than waited for. The entries of deleted rows stay in
        # the indexes until vacuum: the lower bound keeps the scan of idx_jobs_finished
        # from stepping over those of the batches before, and ``id = ANY(ARRAY(...))``
        # (not ``id IN (...)``, a join) keeps the planner from looking up the lowest id in
        # the primary key, which walks every dead entry there (PostgreSQL 15).
        since = "" if finished_from is None else "AND finished_at >= ?"
        bounds = (finished_before,) if finished_from is None else (finished_before, finished_from)
        rows = q.fetch_tuples(
            f"""WITH deleted AS (
                DELETE FROM _jobs WHERE id = ANY(ARRAY(
                    SELECT id FROM _jobs WHERE status = ? AND finished_at < ? {since}
                    ORDER BY finished_at LIMIT ? FOR UPDATE SKIP LOCKED))
                RETURNING finished_at)
            SELECT count(*), max(finished_at) FROM deleted""",
            (status, *bounds, limit),
        )
        count, last = rows[0]
        return int(count), last

    def jobs_rescue_expired(self, q: Queryable, now: datetime, error: str) -> int:
        return q.execute(
            f"""WITH v(now, error) AS (SELECT ?::timestamptz, ?::text)
            UPDATE _jobs AS j SET
                status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                    WHEN j.retries < j.max_retries THEN 'pending' ELSE 'failed' END,
                retries = CASE WHEN j.cancel_requested_at IS NULL AND j.retries < j.max_retries
                    THEN j.retries + 1 ELSE j.retries END,
                finished_at = CASE WHEN j.cancel_requested_at IS NULL
                    AND j.retries < j.max_retries THEN NULL ELSE v.now END,
                errors = {_errors_appended("v.error", "j.retries + 1", "v.now")},
                run_at = v.now, last_error = v.error, locked_until = NULL, locked_by = NULL,
                updated = v.now
            FROM v
            WHERE j.status = 'processing' AND j.locked_until < v.now""",
            (now, error),
        )

    def _notify_cancel(self, q: Queryable, job_id: str) -> None:
        q.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, f"{CANCEL_PREFIX}{job_id}"))
