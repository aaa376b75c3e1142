"""docs-test check ``check_copied_jobs``: the old jobs arrived in the new store, intact.

Run in the working directory after the migration guide's copy script::

    python check_copied_jobs.py [OLD]

``OLD`` is what the copy script read (default ``old_pb_data/data.db``). The new store is
the app in ``./pb_data`` (or ``PB_DATABASE_URL``). Checks that every pending and failed row
of :data:`seed_old_db.ROWS`, and nothing else of them, is now a job with the same topic,
payload, ``run_at`` (to the millisecond) and ``max_retries``, pending with no retries
used; and that the old database was left unchanged. Exits non-zero with the differences.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from seed_old_db import COPIED_STATUSES, DEFAULT_TARGET, ROWS, full_row, read

from pocketjobs import App
from pocketjobs.plugins import jobs


def go_time(text: str) -> datetime:
    """``2025-01-08 12:00:00.000Z`` → an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=UTC)


def key(topic: str, payload: Any, run_at: datetime, max_retries: int) -> str:
    return json.dumps(
        [topic, payload, run_at.astimezone(UTC).isoformat(), max_retries], sort_keys=True
    )


def main(old: str) -> list[str]:
    problems: list[str] = []
    if read(old) != [full_row(row) for row in sorted(ROWS, key=lambda r: r["id"])]:
        problems.append(f"the old database {old} was modified")

    expected = sorted(
        key(
            row["topic"],
            json.loads(row["payload"]) if row["payload"] else None,
            go_time(row["run_at"]),
            row["max_retries"],
        )
        for row in ROWS
        if row["status"] in COPIED_STATUSES
    )
    app = App()
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    try:
        found: list[jobs.Job] = []
        for topic in sorted({row["topic"] for row in ROWS}):
            found += store.list(jobs.JobFilter(topic=topic, limit=500)).items
    finally:
        app.terminate()
    actual = sorted(key(j.topic, j.payload, j.run_at, j.max_retries) for j in found)
    if actual != expected:
        problems.append(
            "copied jobs differ from the old pending/failed rows:\n  expected "
            + "\n           ".join(expected)
            + "\n  found    "
            + "\n           ".join(actual)
        )
    for job in found:
        if job.status != "pending" or job.retries != 0 or job.last_error is not None:
            problems.append(f"job {job.id} should be pending with no retries used: {job}")
    return problems


if __name__ == "__main__":
    issues = main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TARGET)
    for issue in issues:
        print(f"check_copied_jobs: {issue}", file=sys.stderr)
    if not issues:
        print(f"check_copied_jobs: {sum(r['status'] in COPIED_STATUSES for r in ROWS)} jobs OK")
    sys.exit(1 if issues else 0)
