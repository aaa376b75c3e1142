"""One driver per database; :func:`driver_for` picks the one for an app's database."""

from __future__ import annotations

from pocketjobs.core import Database
from pocketjobs.plugins.jobs.drivers.base import NOTIFY_CHANNEL, Failure, JobsDriver, NewJob

__all__ = ["NOTIFY_CHANNEL", "Failure", "JobsDriver", "NewJob", "driver_for"]


def driver_for(db: Database) -> JobsDriver:
    """The jobs driver for ``db``'s dialect."""
    if db.dialect == "postgres":
        from pocketjobs.plugins.jobs.drivers.postgres import PostgresJobsDriver

        return PostgresJobsDriver()
    from pocketjobs.plugins.jobs.drivers.sqlite import SQLiteJobsDriver

    return SQLiteJobsDriver()
