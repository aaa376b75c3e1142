"""One driver per database; :func:`driver_for` picks the one for an app's database.

The contract is :class:`JobsDriver` (see :mod:`~pocketjobs.plugins.jobs.drivers.base`): the
store and the dispatcher call its verbs with parameter objects (:class:`NewJob` to insert,
:class:`ClaimParams` to claim, :class:`Outcomes` of :class:`Claim` completions and
:class:`Failure` s to settle) and never branch on the database. Each database's own SQL
lives in its module (``sqlite.py``, ``postgres.py``); the statements that are the same on
both, once, in ``portable.py``.
"""

from __future__ import annotations

from pocketjobs.core import Database
from pocketjobs.plugins.jobs.drivers.base import (
    CANCEL_PREFIX,
    MAX_WAKE_TOPICS,
    NOTIFY_CHANNEL,
    Cancelled,
    CancelResult,
    Claim,
    ClaimParams,
    Failure,
    JobsDriver,
    NewJob,
    Outcomes,
    QueueClaim,
    QueueCounts,
    QueueState,
    ScheduleRow,
    Snoozed,
    WorkerInfo,
    parse_wake_payload,
    wake_payload,
)

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
    "driver_for",
    "parse_wake_payload",
    "wake_payload",
]


def driver_for(db: Database) -> JobsDriver:
    """The jobs driver for ``db``'s dialect."""
    if db.dialect == "postgres":
        from pocketjobs.plugins.jobs.drivers.postgres import PostgresJobsDriver

        return PostgresJobsDriver()
    from pocketjobs.plugins.jobs.drivers.sqlite import SQLiteJobsDriver

    return SQLiteJobsDriver()
