"""Load: 2,000 enqueue requests, 200 in flight, against ``serve`` as a real subprocess.

The example app (examples/base/main.py: topics ``demo:echo`` and ``demo:sleep``) serves on
each database; a superuser is created with the CLI first. Every request carries a unique
payload ``{"n": i}`` and must answer 200. Then every job must be there exactly once: read
through the API in pages of 500 while the server runs, and, after it stopped, through a
separate App in this process (plugin registered with ``auto_start=False``) on the same
database. The example's dispatcher runs the ``demo:echo`` jobs meanwhile; all of them must
end ``completed``. The achieved requests/s is printed (``-s`` to see it), not asserted.

The enqueues in flight are written together (group commit), so two more tests look at
what that must not break: unique keys sent by many requests at once give one job per key,
and a server killed with SIGKILL in the middle of the load has stored every job it
answered for, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketjobs import App
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import JobFilter
from support import ServerProcess, run_app_as_superuser

EMAIL = "load-admin@example.com"
PASSWORD = "load-admin-password-1"
REQUESTS = 2000
IN_FLIGHT = 200
TOPIC = "demo:echo"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("clean_jobs_env")]


async def _enqueue_all(
    base_url: str, token: str, bodies: list[dict[str, Any]] | None = None
) -> tuple[list[httpx.Response | httpx.HTTPError], float]:
    """POST each body (default: ``{"n": i}`` jobs of ``TOPIC``), ``IN_FLIGHT`` at a time;
    a request the server never answered gives its ``httpx`` error instead."""
    if bodies is None:
        bodies = [{"topic": TOPIC, "payload": {"n": n}} for n in range(REQUESTS)]
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers={"Authorization": token}
    ) as client:

        async def one(body: dict[str, Any]) -> httpx.Response | httpx.HTTPError:
            async with semaphore:
                try:
                    return await client.post("/api/jobs/enqueue", json=body)
                except httpx.HTTPError as exc:
                    return exc

        started = time.perf_counter()
        responses = await asyncio.gather(*(one(body) for body in bodies))
        elapsed = time.perf_counter() - started
    return list(responses), elapsed


def _answered(responses: list[httpx.Response | httpx.HTTPError]) -> list[httpx.Response]:
    """The responses; fails on a request that got none."""
    lost = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not lost, f"{len(lost)} requests got no answer, e.g. {lost[:3]!r}"
    return [r for r in responses if isinstance(r, httpx.Response)]


def _all_jobs_via_api(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    with server.client(headers={"Authorization": token}) as http:
        offset = 0
        while True:
            response = http.get("/api/jobs", params={"limit": 500, "offset": offset})
            assert response.status_code == 200, response.text
            page = response.json()
            assert page["limit"] == 500
            assert page["total"] == REQUESTS
            items.extend(page["items"])
            offset += 500
            if offset >= page["total"]:
                return items


def _wait_all_completed(server: ServerProcess, token: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    with server.client(headers={"Authorization": token}) as http:
        while True:
            stats: dict[str, Any] = http.get("/api/jobs/stats").json()
            if stats["completed"] == REQUESTS:
                return stats
            assert stats["failed"] == 0, stats
            assert time.monotonic() < deadline, f"not all jobs completed: {stats}"
            time.sleep(0.25)


def test_2000_concurrent_enqueues_each_stored_once(
    data_dir: Path, db_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_app_as_superuser(EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url) as (
        server,
        token,
    ):
        sent, elapsed = asyncio.run(_enqueue_all(server.base_url, token))
        responses = _answered(sent)
        bad = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
        assert not bad, f"{len(bad)} requests failed, e.g. {bad[:5]}\n{server.describe()}"
        returned = [r.json() for r in responses]
        assert sorted(job["payload"]["n"] for job in returned) == list(range(REQUESTS))
        assert len({job["id"] for job in returned}) == REQUESTS

        listed = _all_jobs_via_api(server, token)
        assert len(listed) == REQUESTS
        assert len({job["id"] for job in listed}) == REQUESTS
        assert {job["payload"]["n"] for job in listed} == set(range(REQUESTS))
        assert {job["id"] for job in listed} == {job["id"] for job in returned}
        stats = _wait_all_completed(server, token)
        server.stop_cleanly()
    log = server.log_text()
    assert "unhandled error" not in log, log[-5000:]
    assert stats["total"] == REQUESTS

    with capsys.disabled():
        database = "postgres" if db_url else "sqlite"
        print(
            f"\n[{database}] {REQUESTS} enqueues, {IN_FLIGHT} in flight: {elapsed:.2f} s, "
            f"{REQUESTS / elapsed:.0f} requests/s"
        )

    # A separate App on the same database (dispatcher off) sees every job exactly once.
    app = App(data_dir, db_url)
    store = jobs.register(app, jobs.Config(auto_start=False))
    assert store is not None
    app.bootstrap()
    try:
        assert app.db.fetch_value("SELECT COUNT(*) FROM _jobs") == REQUESTS
        numbers: list[int] = []
        for offset in range(0, REQUESTS, 500):
            page = store.list(JobFilter(topic=TOPIC, limit=500, offset=offset))
            assert page.total == REQUESTS
            numbers.extend(job.payload["n"] for job in page.items)
            assert all(job.status == "completed" for job in page.items)
        assert len(numbers) == REQUESTS
        assert len(set(numbers)) == REQUESTS
        assert set(numbers) == set(range(REQUESTS))
    finally:
        app.terminate()


UNIQUE_TOPIC = "load:unique"  # no handler: the jobs stay pending, so each key stays taken
KEYS = 25


def test_unique_keys_sent_at_once_give_one_job_per_key(data_dir: Path, db_url: str | None) -> None:
    bodies = [
        {"topic": UNIQUE_TOPIC, "payload": {"n": n}, "unique_key": f"k{n % KEYS}"}
        for n in range(1000)
    ]
    with run_app_as_superuser(EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url) as (
        server,
        token,
    ):
        sent, _ = asyncio.run(_enqueue_all(server.base_url, token, bodies))
        responses = _answered(sent)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:3]
        server.stop_cleanly()
    by_key: dict[str, set[str]] = {}
    created = 0
    for response in responses:
        job = response.json()
        by_key.setdefault(job["unique_key"], set()).add(job["id"])
        created += not job["duplicate"]
    assert created == KEYS
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    assert len(by_key) == KEYS

    app = App(data_dir, db_url)
    jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    try:
        stored = app.db.fetch_all(
            "SELECT id, unique_key FROM _jobs WHERE topic = ?", (UNIQUE_TOPIC,)
        )
        assert len(stored) == KEYS
        assert {row["unique_key"]: {row["id"]} for row in stored} == by_key
    finally:
        app.terminate()


def test_a_server_killed_under_load_stored_each_answered_job_once(
    data_dir: Path, db_url: str | None
) -> None:
    bodies = [{"topic": UNIQUE_TOPIC + ":kill", "payload": {"n": n}} for n in range(20_000)]
    with run_app_as_superuser(EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url) as (
        server,
        token,
    ):

        async def load_then_kill() -> list[httpx.Response | httpx.HTTPError]:
            load = asyncio.create_task(_enqueue_all(server.base_url, token, bodies))
            # Kill once a good part of the load was answered, in the middle of the rest.
            while server.returncode is None:
                await asyncio.sleep(0.05)
                if _stored_rows(data_dir, db_url) >= 1500:
                    break
            server.send_signal(signal.SIGKILL)
            sent, _ = await load
            return sent

        sent = asyncio.run(load_then_kill())
        assert server.wait() == -signal.SIGKILL
    answered = {
        r.json()["payload"]["n"]: r.json()["id"]
        for r in sent
        if isinstance(r, httpx.Response) and r.status_code == 200
    }
    refused = [r for r in sent if isinstance(r, httpx.Response) and r.status_code != 200]
    assert not refused, [r.text for r in refused[:3]]
    assert 1000 <= len(answered) < len(bodies), len(answered)  # killed in the middle

    app = App(data_dir, db_url)
    jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    try:
        rows = app.db.fetch_all(
            "SELECT id, payload FROM _jobs WHERE topic = ?", (UNIQUE_TOPIC + ":kill",)
        )
    finally:
        app.terminate()
    stored: dict[int, list[str]] = {}
    for row in rows:
        payload = row["payload"]
        number = (json.loads(payload) if isinstance(payload, str) else payload)["n"]
        stored.setdefault(number, []).append(row["id"])
    assert all(len(ids) == 1 for ids in stored.values()), "a job was stored twice"
    missing = [n for n, job_id in answered.items() if stored.get(n) != [job_id]]
    assert not missing, f"{len(missing)} answered jobs are not stored, e.g. {missing[:5]}"


def _stored_rows(data_dir: Path, db_url: str | None) -> int:
    """How many jobs the killed server's database holds so far (read directly)."""
    if db_url is None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(data_dir / "data.db", timeout=10)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM _jobs").fetchone()[0])
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM _jobs").fetchone()
        return int(row[0]) if row else 0
