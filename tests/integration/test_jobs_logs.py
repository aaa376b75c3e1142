"""A real worker process's log lines, as an operator reads them (SQLite and PostgreSQL).

Workers run ``tests/apps/jobs_worker_app.py worker`` (``fleet_support``). With
``PB_LOG_FORMAT=json`` every line is a JSON object; each lifecycle event is one line with
``event``, ``job_id``, ``topic``, ``queue``, ``attempt``, ``duration_ms`` and ``node`` (plus
``retry_at`` and ``error`` for a retried attempt), and no payload ever appears. In the
default text format the same fields trail the message as ``key=value`` pairs.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleet_support import Fleet, enqueuer
from pocketjobs import App
from support import AppProcess, run_cli

#: A payload value that must never reach a log line.
SECRET = "sk_live_do-not-log-4242"
#: Retries come at once, polls are short: the retried job is done within a second or so.
FAST_ENV = {"PB_JOBS_POLL_INTERVAL": "0.2s", "PB_JOBS_MAX_BACKOFF": "50ms"}
_PAIR = re.compile(r' (?P<key>\w+)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]+)')


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def status(app: App, job_id: str) -> str | None:
    value = app.db.fetch_value("SELECT status FROM _jobs WHERE id = ?", (job_id,))
    return None if value is None else str(value)


def json_lines(worker: AppProcess) -> list[dict[str, Any]]:
    """Every line of the worker's log, parsed (a line that is not JSON fails the test)."""
    lines = []
    for number, line in enumerate(worker.log_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        lines.append(entry)
    return lines


def text_fields(line: str) -> dict[str, str]:
    """The ``key=value`` pairs a text line ends with (quoted values decoded)."""
    return {
        m["key"]: json.loads(m["value"]) if m["value"].startswith('"') else m["value"]
        for m in _PAIR.finditer(line)
    }


def events_of(lines: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("job_id") == job_id and "event" in line]


def test_json_lines_carry_each_lifecycle_event_and_no_payload(
    data_dir: Path, db_url: str | None
) -> None:
    env = {**FAST_ENV, "PB_LOG_FORMAT": "json", "PB_LOG_LEVEL": "debug"}
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url, env) as fleet:
        worker = fleet.start()
        done = store.enqueue("record", {"card": SECRET})
        flaky = store.enqueue("flaky", {"card": SECRET}, max_retries=2)
        wait_until(
            lambda: status(app, done.id) == status(app, flaky.id) == "completed",
            "both jobs to complete",
        )
        node = store.get(flaky.id).attempted_by
        worker.stop_cleanly(signal.SIGTERM)

        lines = json_lines(worker)
        assert SECRET not in worker.log_text()
        for line in lines:
            assert {"time", "level", "logger", "message"} <= line.keys(), line
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
            assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}, line

        assert node is not None
        assert node.split(":")[1] == str(worker.pid)
        started, stopped = (
            [line for line in lines if line.get("event") == event]
            for event in ("worker.started", "worker.stopped")
        )
        assert len(started) == len(stopped) == 1, lines
        assert started[0]["node"] == stopped[0]["node"] == node
        assert started[0]["level"] == "INFO"
        assert started[0]["queues"] == "default:10"
        assert "flaky" in started[0]["topics"].split(",")

        completed = events_of(lines, done.id)
        assert [(e["event"], e["level"]) for e in completed] == [
            ("job.started", "DEBUG"),
            ("job.completed", "DEBUG"),
        ]
        for entry in completed:
            assert entry["topic"] == "record"
            assert entry["queue"] == "default"
            assert entry["attempt"] == 1
            assert entry["node"] == node
        assert completed[1]["duration_ms"] >= 0
        assert "duration_ms" not in completed[0]

        retried = events_of(lines, flaky.id)
        assert [(e["event"], e["attempt"]) for e in retried] == [
            ("job.started", 1),
            ("job.retrying", 1),
            ("job.started", 2),
            ("job.completed", 2),
        ]
        retrying = retried[1]
        assert retrying["level"] == "WARNING"
        assert retrying["topic"] == "flaky"
        assert retrying["error"] == "ValueError: flaky failure"
        assert retrying["max_attempts"] == 3
        assert isinstance(retrying["duration_ms"], int | float)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", retrying["retry_at"])
        assert "retrying at" in retrying["message"]
        # The traceback follows at DEBUG, as the line's "error", with the job's fields.
        [traceback] = [
            line
            for line in lines
            if line.get("job_id") == flaky.id and "event" not in line and "error" in line
        ]
        assert traceback["level"] == "DEBUG"
        assert traceback["error"].startswith("Traceback (most recent call last):")
        assert traceback["error"].endswith("ValueError: flaky failure\nsecond line")
        assert traceback["attempt"] == 1


def test_text_lines_end_with_key_value_fields(data_dir: Path, db_url: str | None) -> None:
    # The default format and level: INFO and up, so no per-job DEBUG lines.
    with enqueuer(data_dir, db_url) as (app, store), Fleet(data_dir, db_url, FAST_ENV) as fleet:
        worker = fleet.start()
        flaky = store.enqueue("flaky", {"card": SECRET}, max_retries=1)
        wait_until(lambda: status(app, flaky.id) == "completed", "the retried job to complete")
        node = store.get(flaky.id).attempted_by
        worker.stop_cleanly(signal.SIGTERM)

        log = worker.log_text()
        assert SECRET not in log
        assert "event=job.started" not in log
        assert "event=job.completed" not in log
        assert "Traceback" not in log
        [line] = [line for line in log.splitlines() if "event=job.retrying" in line]
        assert re.match(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING pocketjobs: jobs: job ", line
        )
        fields = text_fields(line)
        assert fields["job_id"] == flaky.id
        assert (fields["topic"], fields["queue"], fields["attempt"]) == ("flaky", "default", "1")
        assert fields["error"] == "ValueError: flaky failure"
        assert ' error="ValueError: flaky failure" ' in line  # quoted: it holds spaces
        assert fields["node"] == node
        assert float(fields["duration_ms"]) >= 0
        assert fields["retry_at"].endswith("Z")
        [stopped] = [line for line in log.splitlines() if "event=worker.stopped" in line]
        assert f"node={node}" in stopped


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PB_LOG_LEVEL", "loud", "error: PB_LOG_LEVEL: invalid level 'loud'"),
        ("PB_LOG_FORMAT", "xml", "error: PB_LOG_FORMAT: invalid format 'xml'"),
    ],
)
def test_a_bad_log_variable_is_an_error_of_the_cli(
    data_dir: Path, variable: str, value: str, message: str
) -> None:
    result = run_cli("jobs", "stats", data_dir=data_dir, env={variable: value})
    assert result.returncode == 1, result
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
