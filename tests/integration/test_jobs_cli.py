"""``jobs stats``, ``list``, ``queues``, ``pause``, ``resume`` and ``cancel``, and ``worker
--queues``: the terminal views and actions, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_support import wait_until
from pocketjobs import App
from pocketjobs.plugins import jobs
from support import run_cli, run_process


@pytest.fixture
def queued(data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three jobs written by an enqueue-only app: one completed, one failed, one pending."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.register(app, jobs.Config(auto_start=False))
    assert store is not None
    app.bootstrap()
    try:
        done = store.enqueue("demo:echo", {"n": 1})
        failed = store.enqueue("demo:echo", {"n": 2})
        pending = store.enqueue("other", {"n": 3})
        app.db.execute("UPDATE _jobs SET status = 'completed' WHERE id = ?", (done.id,))
        app.db.execute(
            "UPDATE _jobs SET status = 'failed', last_error = ? WHERE id = ?",
            ("Traceback (most recent call last):\nValueError: boom", failed.id),
        )
        return [done.id, failed.id, pending.id]
    finally:
        app.terminate()


def test_jobs_stats(queued: list[str], data_dir: Path, db_url: str | None) -> None:
    result = run_cli("jobs", "stats", data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    table, topics, queues = result.stdout.split("\n\n")  # then what no worker will run
    lines = {line.split()[0]: line.split()[-1] for line in table.splitlines()[2:]}
    assert lines["pending"] == "1"
    assert lines["completed"] == "1"
    assert lines["failed"] == "1"
    assert lines["cancelled"] == "0"
    assert lines["total"] == "3"
    assert "50.0%" in result.stdout
    assert (
        topics.splitlines()[0] == "Topics with pending jobs and no handler in any running worker:"
    )
    assert topics.splitlines()[3].split() == ["other", "1"]
    assert queues.splitlines()[0] == (
        "Queues with pending jobs and no running worker working on them:"
    )
    assert queues.splitlines()[1].split() == ["queue", "pending"]
    assert queues.splitlines()[3].split() == ["default", "1"]


def test_jobs_list_and_filters(queued: list[str], data_dir: Path, db_url: str | None) -> None:
    done, failed, pending = queued
    result = run_cli("jobs", "list", data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index(pending) < out.index(failed) < out.index(done)  # newest first
    assert "ValueError: boom" in out
    assert "1-3 of 3" in out

    failed_only = run_cli("jobs", "list", "--status", "failed", data_dir=data_dir, db_url=db_url)
    assert failed_only.returncode == 0, failed_only.stderr
    assert failed in failed_only.stdout
    assert done not in failed_only.stdout
    assert "1-1 of 1" in failed_only.stdout

    by_topic = run_cli("jobs", "list", "--topic", "other", data_dir=data_dir, db_url=db_url)
    assert pending in by_topic.stdout
    assert failed not in by_topic.stdout

    paged = run_cli(
        "jobs", "list", "--limit", "1", "--offset", "1", data_dir=data_dir, db_url=db_url
    )
    assert failed in paged.stdout
    assert "2-2 of 3" in paged.stdout


def test_jobs_list_bad_arguments(queued: list[str], data_dir: Path, db_url: str | None) -> None:
    bad_status = run_cli("jobs", "list", "--status", "bogus", data_dir=data_dir, db_url=db_url)
    assert bad_status.returncode == 2
    assert "invalid choice" in bad_status.stderr
    bad_limit = run_cli("jobs", "list", "--limit", "0", data_dir=data_dir, db_url=db_url)
    assert bad_limit.returncode == 2
    assert "--limit" in bad_limit.stderr


def test_jobs_command_never_runs_jobs(
    queued: list[str], data_dir: Path, db_url: str | None
) -> None:
    """A one-shot command does not start the dispatcher: the pending demo job stays."""
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.register(app, jobs.Config(auto_start=False))
    assert store is not None
    app.bootstrap()
    try:
        extra = store.enqueue("demo:echo", {"n": 4})
    finally:
        app.terminate()
    assert run_cli("jobs", "stats", data_dir=data_dir, db_url=db_url).returncode == 0
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.register(app, jobs.Config(auto_start=False))
    assert store is not None
    app.bootstrap()
    try:
        assert store.get(extra.id).status == "pending"
    finally:
        app.terminate()


def test_jobs_queues_pause_and_resume(
    queued: list[str], data_dir: Path, db_url: str | None
) -> None:
    paused = run_cli("jobs", "pause", "other", data_dir=data_dir, db_url=db_url)
    assert paused.returncode == 0, paused.stderr
    assert "queue other paused" in paused.stdout
    listing = run_cli("jobs", "queues", data_dir=data_dir, db_url=db_url)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[2:]}
    # queue, state, pending, processing, slots here, global limit
    assert rows["default"] == ["default", "active", "1", "0", "10", "-"]
    assert rows["other"] == ["other", "paused", "0", "0", "0", "-"]
    resumed = run_cli("jobs", "resume", "other", data_dir=data_dir, db_url=db_url)
    assert resumed.returncode == 0, resumed.stderr
    listing = run_cli("jobs", "queues", data_dir=data_dir, db_url=db_url)
    assert "paused" not in listing.stdout


def test_jobs_pause_refuses_a_bad_queue_name(data_dir: Path, db_url: str | None) -> None:
    result = run_cli("jobs", "pause", "no such queue", data_dir=data_dir, db_url=db_url)
    assert result.returncode == 1
    assert "queue must be 1 to 64" in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_list_filters_by_queue(data_dir: Path, db_url: str | None) -> None:
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.client(app)
    app.bootstrap()
    try:
        mail = store.enqueue("send", queue="mail")
        plain = store.enqueue("send")
    finally:
        app.terminate()
    result = run_cli("jobs", "list", "--queue", "mail", data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert mail.id in result.stdout
    assert plain.id not in result.stdout
    assert "1-1 of 1" in result.stdout


def test_worker_with_queues_works_on_those_queues_only(data_dir: Path, db_url: str | None) -> None:
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.client(app)
    app.bootstrap()
    try:
        elsewhere = store.enqueue("demo:echo", {"n": 1})  # due first, in "default"
        mail = store.enqueue("demo:echo", {"n": 2}, queue="mail")
        with run_process(
            "worker", "--queues", "mail:3", data_dir=data_dir, db_url=db_url,
            ready_log="Worker started",
        ) as worker:  # fmt: skip
            assert "queues mail:3" in worker.log_text()
            wait_until(lambda: store.get(mail.id).status == "completed", 15, "the mail job")
            assert store.get(elsewhere.id).status == "pending"
            assert {q.name: q.pending for q in store.queues()}["default"] == 1
    finally:
        app.terminate()


@pytest.mark.parametrize("flag", ["bad name", "mail:0", "mail,mail"])
def test_worker_refuses_bad_queues(flag: str, data_dir: Path) -> None:
    result = run_cli("worker", "--queues", flag, data_dir=data_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def _status(data_dir: Path, db_url: str | None, job_id: str) -> jobs.Job:
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.client(app)
    app.bootstrap()
    try:
        return store.get(job_id)
    finally:
        app.terminate()


def test_jobs_cancel_a_pending_job(queued: list[str], data_dir: Path, db_url: str | None) -> None:
    pending = queued[2]
    result = run_cli("jobs", "cancel", pending, data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {pending} cancelled"
    assert _status(data_dir, db_url, pending).status == "cancelled"
    again = run_cli("jobs", "cancel", pending, data_dir=data_dir, db_url=db_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"job {pending} cancelled"

    stats = run_cli("jobs", "stats", data_dir=data_dir, db_url=db_url)
    lines = {line.split()[0]: line.split()[-1] for line in stats.stdout.splitlines()[2:8]}
    assert (lines["pending"], lines["cancelled"]) == ("0", "1")
    assert "Queues with pending jobs" not in stats.stdout  # nothing pending any more
    listed = run_cli("jobs", "list", "--status", "cancelled", data_dir=data_dir, db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert pending in listed.stdout
    assert "1-1 of 1" in listed.stdout


def test_jobs_cancel_a_running_job_asks_it_to_stop(
    queued: list[str], data_dir: Path, db_url: str | None
) -> None:
    pending = queued[2]
    app = App(data_dir=data_dir, database_url=db_url)
    jobs.client(app)
    app.bootstrap()
    try:  # as a worker elsewhere leaves it while it runs
        app.db.execute("UPDATE _jobs SET status = 'processing' WHERE id = ?", (pending,))
    finally:
        app.terminate()
    result = run_cli("jobs", "cancel", pending, data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {pending}: cancel requested (it is running)"
    job = _status(data_dir, db_url, pending)
    assert job.status == "processing"
    assert job.cancel_requested_at is not None


def test_jobs_cancel_refuses_finished_and_unknown_jobs(
    queued: list[str], data_dir: Path, db_url: str | None
) -> None:
    done, failed, _ = queued
    for job_id, status in ((done, "completed"), (failed, "failed")):
        result = run_cli("jobs", "cancel", job_id, data_dir=data_dir, db_url=db_url)
        assert result.returncode == 1, result.stdout
        message = f"error: job {job_id} is {status}: there is nothing to cancel"
        assert result.stderr.splitlines()[-1] == message  # after the plugin's log line
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert _status(data_dir, db_url, job_id).status == status
    unknown = "0190a8b2-0000-7000-8000-000000000000"
    for job_id in (unknown, "not an id"):
        result = run_cli("jobs", "cancel", job_id, data_dir=data_dir, db_url=db_url)
        assert result.returncode == 1, result.stdout
        assert result.stderr.splitlines()[-1] == f"error: job {job_id!r} not found"
        assert "Traceback" not in result.stderr
    missing = run_cli("jobs", "cancel", data_dir=data_dir, db_url=db_url)
    assert missing.returncode == 2
    assert "ID" in missing.stderr
