"""The jobs schema steps: the same names, in the same order, on both databases."""

from __future__ import annotations

from pocketjobs.plugins.jobs.drivers.postgres import PostgresJobsDriver
from pocketjobs.plugins.jobs.drivers.sqlite import SQLiteJobsDriver


def test_both_drivers_list_the_same_steps() -> None:
    postgres = [step.name for step in PostgresJobsDriver().migrations()]
    sqlite = [step.name for step in SQLiteJobsDriver().migrations()]
    assert postgres == sqlite
    assert postgres == sorted(postgres), "steps are applied in the order of their numbers"
    assert postgres[:5] == [
        "jobs_0001_create_jobs",
        "jobs_0002_dispatcher_functions",
        "jobs_0003_payload_json",
        "jobs_0004_index_only_plans",
        "jobs_0005_priority_unique_key",
    ]
