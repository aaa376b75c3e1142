"""docs-test setup ``db_before_queues``: a database as pocketjobs left it before named queues.

Creates the app database in ``./pb_data`` (SQLite) with the kernel's tables and the jobs
schema up to step ``jobs_0005_priority_unique_key``: the plugin's own steps, applied as a
release without step ``jobs_0006_queues`` applied them. Then inserts :data:`OLD_JOBS` the
way such a release wrote them (no ``queue`` column yet): two pending jobs and a completed
one. The block that follows registers the plugin on that database and bootstraps, which
applies ``jobs_0006_queues``.
"""

from pocketjobs import App as _OldApp
from pocketjobs.plugins.jobs.drivers.sqlite import SQLiteJobsDriver as _SQLiteJobsDriver
from pocketjobs.plugins.jobs.job import uuid7 as _uuid7

#: (topic, status, priority) of the jobs in the old database.
OLD_JOBS = (("send_email", "pending", 0), ("report", "pending", 5), ("report", "completed", 0))

_old = _OldApp()
_old.bootstrap()  # the kernel's tables only: the jobs plugin is not registered here
_old.apply_migrations(
    [step for step in _SQLiteJobsDriver().migrations() if step.name < "jobs_0006"]
)
_stamp = "2025-01-08T12:00:00.000Z"
for _topic, _status, _priority in OLD_JOBS:
    _old.db.execute(
        "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,"
        " updated, priority) VALUES (?, ?, '{}', ?, ?, 0, 3, ?, ?, ?)",
        (_uuid7(), _topic, _status, _stamp, _stamp, _stamp, _priority),
    )
assert "queue" not in {row["name"] for row in _old.db.fetch_all("PRAGMA table_info(_jobs)")}
_old.terminate()
