"""A failing handler leaves lines in the logs: each failed attempt at WARNING
(``job.retrying``), the final failure at ERROR (``job.failed``), with job id, topic,
attempt, duration and the exception's first line in the message and as fields; the
traceback at DEBUG; each start at DEBUG (``job.started``). On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from jobs_support import Harness, harness_fixture
from pocketjobs.plugins import jobs

harness = harness_fixture


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    assert isinstance(fields, dict), record.getMessage()
    return fields


def test_failed_attempts_and_the_final_failure_are_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pocketjobs")

    def failing(job: jobs.Job) -> None:
        raise ValueError("card declined\nsecond line of detail")

    node = harness.node(handlers={"charge": failing})
    job = node.store.enqueue("charge", {"n": 1}, max_retries=1)
    node.wait_status(job.id, "failed")
    mine = [r for r in caplog.records if job.id in r.getMessage()]

    events = [(_fields(r).get("event"), r.levelno) for r in mine]
    assert events == [
        ("job.started", logging.DEBUG),
        ("job.retrying", logging.WARNING),
        (None, logging.DEBUG),  # the traceback
        ("job.started", logging.DEBUG),
        ("job.failed", logging.ERROR),
        (None, logging.DEBUG),
    ], [r.getMessage() for r in mine]
    warning, error = (r for r in mine if r.levelno >= logging.WARNING)
    for record in (warning, error):
        line = record.getMessage()
        assert "'charge'" in line
        assert "ValueError: card declined" in line
        assert "second line" not in line
        assert re.search(r"after \d+\.\d{3}s", line)
        fields = _fields(record)
        assert fields["job_id"] == job.id
        assert (fields["topic"], fields["queue"], fields["max_attempts"]) == (
            "charge",
            "default",
            2,
        )
        assert fields["error"] == "ValueError: card declined"
        assert isinstance(fields["duration_ms"], float)
        assert fields["duration_ms"] >= 0
        assert fields["node"] == node.store.get(job.id).attempted_by
    assert "attempt 1 of 2" in warning.getMessage()
    assert "retrying at" in warning.getMessage()
    assert _fields(warning)["attempt"] == 1
    assert _fields(warning)["retry_at"] > job.created
    assert "attempt 2 of 2" in error.getMessage()
    assert "failed for good" in error.getMessage()
    assert _fields(error)["attempt"] == 2
    assert "retry_at" not in _fields(error)
    tracebacks = [r for r in mine if r.exc_info is not None]
    assert len(tracebacks) == 2
    assert all(r.levelno == logging.DEBUG and r.exc_info[0] is ValueError for r in tracebacks)
    assert [_fields(r)["attempt"] for r in tracebacks] == [1, 2]


def test_a_job_that_completes_logs_no_failure(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketjobs")
    node = harness.node(handlers={"ok": lambda job: None})
    job = node.store.enqueue("ok")
    node.wait_status(job.id, "completed")
    assert not [r for r in caplog.records if job.id in r.getMessage()]
