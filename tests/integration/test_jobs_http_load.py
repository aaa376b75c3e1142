"""Load: 2,000 enqueue requests, 50 in flight, against ``serve`` as a real subprocess.

The example app (examples/base/main.py: topics ``demo:echo`` and ``demo:sleep``) serves on
each database; a superuser is created with the CLI first. Every request carries a unique
payload ``{"n": i}`` and must answer 200. Then every job must be there exactly once: read
through the API in pages of 500 while the server runs, and, after it stopped, through a
separate App in this process (plugin registered with ``auto_start=False``) on the same
database. The example's dispatcher runs the ``demo:echo`` jobs meanwhile; all of them must
end ``completed``. The achieved requests/s is printed (``-s`` to see it), not asserted.
"""

from __future__ import annotations

import asyncio
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
IN_FLIGHT = 50
TOPIC = "demo:echo"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("clean_jobs_env")]


async def _enqueue_all(base_url: str, token: str) -> tuple[list[httpx.Response], float]:
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers={"Authorization": token}
    ) as client:

        async def one(n: int) -> httpx.Response:
            async with semaphore:
                return await client.post(
                    "/api/jobs/enqueue", json={"topic": TOPIC, "payload": {"n": n}}
                )

        started = time.perf_counter()
        responses = await asyncio.gather(*(one(n) for n in range(REQUESTS)))
        elapsed = time.perf_counter() - started
    return list(responses), elapsed


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
        responses, elapsed = asyncio.run(_enqueue_all(server.base_url, token))
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
