"""A failing handler leaves lines in the logs: each failed attempt at WARNING, the final
failure at ERROR, with job id, topic, attempt, duration and the exception's first line;
the traceback at DEBUG. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re

import pytest

from jobs_support import Harness, harness_fixture
from pocketjobs.plugins import jobs

harness = harness_fixture


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

    warnings = [r for r in mine if r.levelno == logging.WARNING]
    errors = [r for r in mine if r.levelno == logging.ERROR]
    debug = [r for r in mine if r.levelno == logging.DEBUG]
    assert len(warnings) == 1, [r.getMessage() for r in mine]
    assert len(errors) == 1, [r.getMessage() for r in mine]
    warning, error = warnings[0].getMessage(), errors[0].getMessage()
    for line in (warning, error):
        assert "'charge'" in line
        assert "ValueError: card declined" in line
        assert "second line" not in line
        assert re.search(r"after \d+\.\d{3}s", line)
    assert "attempt 1 of 2" in warning
    assert "retrying at" in warning
    assert "attempt 2 of 2" in error
    assert "failed for good" in error
    assert len(debug) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is ValueError for r in debug)


def test_a_job_that_completes_logs_no_failure(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketjobs")
    node = harness.node(handlers={"ok": lambda job: None})
    job = node.store.enqueue("ok")
    node.wait_status(job.id, "completed")
    assert not [r for r in caplog.records if job.id in r.getMessage()]
