"""docs-test setup ``seed_old_db``: an "old" database in the seed's Go design.

Creates the ``_jobs`` table exactly as the seed's ``createJobsTable`` (and the migration
``1736500000_create_jobs.go``) did, with its indexes, and fills it with :data:`ROWS`:
jobs in every status, times in Go PocketBase's format (``2025-01-08 12:00:00.000Z``),
PocketBase-style 15-character ids, a ``NULL`` payload.

Run as a script in a working directory::

    python seed_old_db.py [TARGET]

``TARGET`` is a SQLite file (default ``old_pb_data/data.db``, created with its directory)
or a ``postgresql://`` URL of an empty database. :mod:`check_copied_jobs` imports
:data:`ROWS` to know what must arrive.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "old_pb_data/data.db"

# The seed's plugin.go, createJobsTable().
SCHEMA = """CREATE TABLE _jobs (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    run_at TEXT NOT NULL,
    locked_until TEXT,
    retries INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,
    last_error TEXT,
    created TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL DEFAULT ''
)"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_jobs_pending ON _jobs(status, run_at) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS idx_jobs_topic ON _jobs(topic)",
    "CREATE INDEX IF NOT EXISTS idx_jobs_status ON _jobs(status)",
    "CREATE INDEX IF NOT EXISTS idx_jobs_locked ON _jobs(locked_until) WHERE status = 'processing'",
    "CREATE INDEX IF NOT EXISTS idx_jobs_created ON _jobs(created)",
)
COLUMNS = (
    "id",
    "topic",
    "payload",
    "status",
    "run_at",
    "locked_until",
    "retries",
    "max_retries",
    "last_error",
    "created",
    "updated",
)
CREATED = "2025-01-08 11:00:00.000Z"

#: The old jobs. Topics are ones the docs' example apps have no handler for, so copied
#: jobs stay pending where a docs server is running. Only pending and failed ones move.
ROWS: tuple[dict[str, Any], ...] = (
    # Two pending jobs with the same topic, run_at and max_retries: one enqueue_many batch.
    {
        "id": "k2c8w1m0p4r7t9a",
        "topic": "send_sms",
        "payload": '{"to": "+15550100", "text": "Your code is 1234"}',
        "status": "pending",
        "run_at": "2025-01-08 12:00:00.000Z",
        "max_retries": 3,
    },
    {
        "id": "k2c8w1m0p4r7t9b",
        "topic": "send_sms",
        "payload": '{"to": "+15550101", "text": "Hello"}',
        "status": "pending",
        "run_at": "2025-01-08 12:00:00.000Z",
        "max_retries": 3,
    },
    # Scheduled far ahead, with milliseconds and its own retry budget.
    {
        "id": "q9x3v6b2n8d5f1g",
        "topic": "generate_report",
        "payload": '{"day": "2030-06-01", "format": "pdf", "pages": [1, 2, 3]}',
        "status": "pending",
        "run_at": "2030-06-01 08:30:00.250Z",
        "max_retries": 5,
    },
    # A job with no payload and no retries.
    {
        "id": "z7y6x5w4v3u2t1s",
        "topic": "cleanup",
        "payload": None,
        "status": "pending",
        "run_at": "2025-01-09 00:00:00.000Z",
        "max_retries": 0,
    },
    # Failed for good in the old system: copied with a fresh set of attempts.
    {
        "id": "f1a2i3l4e5d6j7b",
        "topic": "generate_report",
        "payload": '{"day": "2025-01-07", "format": "csv"}',
        "status": "failed",
        "run_at": "2025-01-08 10:15:30.125Z",
        "retries": 3,
        "max_retries": 3,
        "last_error": "report service unavailable",
    },
    # Finished or in flight in the old system: not copied.
    {
        "id": "c0m1p2l3e4t5e6d",
        "topic": "send_sms",
        "payload": '{"to": "+15550199", "text": "already sent"}',
        "status": "completed",
        "run_at": "2025-01-08 09:00:00.000Z",
        "max_retries": 3,
    },
    {
        "id": "p0r1o2c3e4s5s6i",
        "topic": "cleanup",
        "payload": '{"note": "was running when the old app stopped"}',
        "status": "processing",
        "run_at": "2025-01-08 11:59:00.000Z",
        "locked_until": "2025-01-08 12:04:00.000Z",
        "max_retries": 3,
    },
)
COPIED_STATUSES = ("pending", "failed")


def full_row(row: dict[str, Any]) -> tuple[Any, ...]:
    """``row`` with the seed's defaults filled in, in :data:`COLUMNS` order."""
    values = {
        "locked_until": None,
        "retries": 0,
        "last_error": None,
        "created": CREATED,
        "updated": CREATED,
        **row,
    }
    return tuple(values[column] for column in COLUMNS)


def is_postgres(target: str) -> bool:
    return target.startswith(("postgres://", "postgresql://"))


def create(target: str = DEFAULT_TARGET) -> None:
    """Create the seed's ``_jobs`` table in ``target`` and insert :data:`ROWS`."""
    insert = f"INSERT INTO _jobs ({', '.join(COLUMNS)}) VALUES ({{}})"
    rows = [full_row(row) for row in ROWS]
    if is_postgres(target):
        import psycopg

        with psycopg.connect(target) as conn:
            conn.execute(SCHEMA)
            for index in INDEXES:
                conn.execute(index)
            with conn.cursor() as cursor:
                cursor.executemany(insert.format(", ".join(["%s"] * len(COLUMNS))), rows)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(target)) as conn, conn:
        conn.execute(SCHEMA)
        for index in INDEXES:
            conn.execute(index)
        conn.executemany(insert.format(", ".join(["?"] * len(COLUMNS))), rows)


def read(target: str = DEFAULT_TARGET) -> list[tuple[Any, ...]]:
    """Every row of the old ``_jobs`` table, in :data:`COLUMNS` order, sorted by id."""
    query = f"SELECT {', '.join(COLUMNS)} FROM _jobs ORDER BY id"
    if is_postgres(target):
        import psycopg

        with psycopg.connect(target) as conn:
            return [tuple(row) for row in conn.execute(query).fetchall()]
    with contextlib.closing(sqlite3.connect(target)) as conn:
        return conn.execute(query).fetchall()


if __name__ == "__main__":
    create(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TARGET)
