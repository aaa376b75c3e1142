"""The statements that are the same SQL on every database, written once.

Getting, listing, counting, deleting and requeueing a job need nothing a database does
differently, apart from how a time parameter is encoded (SQLite: fixed-width UTC text;
PostgreSQL: a ``timestamptz``) and how a row is decoded into a :class:`Job`. A driver
derives from :class:`PortableSQLDriver` and provides those two hooks; the claim, the
outcomes and the DDL stay in the driver's own module.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from pocketjobs.core import Queryable
from pocketjobs.plugins.jobs.drivers.base import JobsDriver
from pocketjobs.plugins.jobs.job import Job, JobFilter

__all__ = ["JOB_COLUMNS", "PortableSQLDriver"]

#: The columns of a :class:`Job`, in the order of its fields (what ``decode_job`` reads).
JOB_COLUMNS: Final = (
    "id, topic, payload, status, run_at, locked_until, retries, max_retries, last_error,"
    " created, updated, priority, unique_key"
)

_GET_SQL: Final = f"SELECT {JOB_COLUMNS} FROM _jobs WHERE id = ?"
_COUNT_BY_STATUS_SQL: Final = "SELECT status, COUNT(*) FROM _jobs GROUP BY status"
_DELETE_SQL: Final = "DELETE FROM _jobs WHERE id = ? AND status IN ('pending', 'failed')"
_REQUEUE_SQL: Final = f"""UPDATE _jobs SET status = 'pending', retries = 0, run_at = ?,
        locked_until = NULL, locked_by = NULL, updated = ?
    WHERE id = ? AND status = 'failed' RETURNING {JOB_COLUMNS}"""


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
