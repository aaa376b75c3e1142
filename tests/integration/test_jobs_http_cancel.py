"""Cancel, timeouts and the attempt history in the jobs HTTP API, over real HTTP, on a real
SQLite file and on PostgreSQL.

``POST /api/jobs/{id}/cancel`` (under ``manage_rule``): a pending job is cancelled at once,
a running one is asked to stop and becomes ``cancelled`` when its worker stops it, a
finished one is a 400; requeue and delete of a cancelled job; an enqueue's ``timeout``;
the ``cancelled`` count and ``orphaned_queues`` of the statistics. The servers, clients
and assertions are those of ``test_jobs_http.py``: most tests share its one server per
database (dispatcher off, so statuses stay as written); tests whose jobs must really run
start their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import test_jobs_http as base
from test_jobs_http import (
    MS,
    MSG_401,
    MSG_403,
    MSG_404_JOB,
    UNKNOWN_ID,
    USER_EMAIL,
    JobsServer,
    assert_error,
    assert_field_error,
    assert_job_json,
    at,
)

from jobs_support import wait_until
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.limits import MAX_TIMEOUT

# test_jobs_http's fixtures: one shared server per database, a server of one's own.
_clean_env = base._clean_env
shared = base.shared
srv = base.srv
make_server = base.make_server

BAD_TIMEOUT = "validation_invalid_number"


def cancel(server: JobsServer, job_id: str, who: str | None = "super") -> httpx.Response:
    return server.http.post(f"/api/jobs/{job_id}/cancel", headers=server.headers(who))


def get(server: JobsServer, job_id: str) -> dict[str, Any]:
    response = server.http.get(f"/api/jobs/{job_id}", headers=server.su)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def store_of(server: JobsServer) -> jobs.JobStore:
    store = jobs.get_job_store(server.app)
    assert store is not None
    return store


# -- cancel --------------------------------------------------------------------------------


def test_cancel_a_pending_job(srv: JobsServer) -> None:
    job = srv.new_job("t", {"n": 1}, run_at="2099-01-01T00:00:00Z")
    keep = srv.new_job("t")
    before = now_utc()
    response = cancel(srv, job["id"])
    after = now_utc()
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert_job_json(cancelled)
    assert (cancelled["id"], cancelled["status"]) == (job["id"], "cancelled")
    assert cancelled["payload"] == {"n": 1}
    assert before - MS <= at(cancelled["finished_at"]) <= after
    assert cancelled["cancel_requested_at"] is None  # nothing ran: nothing to stop
    assert (cancelled["attempted_at"], cancelled["errors"]) == (None, [])
    assert srv.db_status(job["id"]) == "cancelled"
    assert srv.db_status(keep["id"]) == "pending"
    assert get(srv, job["id"]) == cancelled

    again = cancel(srv, job["id"])  # a cancelled job: returned as it is
    assert again.status_code == 200, again.text
    assert again.json() == cancelled


def test_cancel_a_running_job_asks_it_to_stop(make_server: Callable[..., JobsServer]) -> None:
    started = threading.Event()
    saw: dict[str, bool] = {}

    def setup(store: jobs.JobStore) -> None:
        @store.handler("hang")
        def hang(job: jobs.Job) -> None:
            started.set()
            saw["stopped"] = job.cancel_requested.wait(20)

    srv = make_server(
        jobs.Config(poll_interval=0.2, shutdown_timeout=5, max_retries=3),
        accounts=("super",),
        setup=setup,
    )
    job = srv.new_job("hang", {"n": 1})
    assert started.wait(20)
    running = get(srv, job["id"])
    assert running["status"] == "processing"
    assert running["attempted_by"] is not None
    assert running["cancel_requested_at"] is None

    response = cancel(srv, job["id"])
    assert response.status_code == 200, response.text
    asked = response.json()
    assert_job_json(asked)
    assert asked["status"] == "processing"  # it still runs: its worker stops it
    assert asked["cancel_requested_at"] is not None
    assert asked["finished_at"] is None

    done = base._wait_for_status(srv, job["id"], "cancelled")
    wait_until(lambda: "stopped" in saw, 20, "the handler to see the cancel")
    assert saw == {"stopped": True}
    assert done["cancel_requested_at"] == asked["cancel_requested_at"]
    assert done["finished_at"] is not None
    assert (done["retries"], done["locked_until"]) == (0, None)  # never retried
    assert cancel(srv, job["id"]).json()["status"] == "cancelled"
    stats = srv.http.get("/api/jobs/stats", headers=srv.su).json()
    assert (stats["cancelled"], stats["processing"], stats["success_rate"]) == (1, 0, 0.0)


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_cancel_of_a_finished_job_is_400(srv: JobsServer, status: str) -> None:
    job = srv.new_job()
    srv.set_status(job["id"], status)
    response = cancel(srv, job["id"])
    assert_error(response, 400, f"job {job['id']} is {status}: there is nothing to cancel")
    assert srv.db_status(job["id"]) == status
    assert get(srv, job["id"])["cancel_requested_at"] is None


@pytest.mark.parametrize(
    "job_id", [UNKNOWN_ID, "not-a-uuid", "x" * 300, "%ED%A0%80", "a%00b", "%20"]
)
def test_cancel_of_an_unknown_or_bad_id_is_404_like_get(srv: JobsServer, job_id: str) -> None:
    job = srv.new_job()
    fetched = srv.http.get(f"/api/jobs/{job_id}", headers=srv.su)
    assert_error(fetched, 404, MSG_404_JOB)
    assert_error(cancel(srv, job_id), 404, MSG_404_JOB)
    assert srv.db_status(job["id"]) == "pending"


def test_cancel_needs_the_manage_rule(srv: JobsServer) -> None:
    job = srv.new_job()
    assert_error(cancel(srv, job["id"], who=None), 401, MSG_401)
    assert_error(cancel(srv, job["id"], who="user"), 403, MSG_403)  # superusers only
    assert_error(cancel(srv, UNKNOWN_ID, who="user"), 403, MSG_403)  # before the lookup
    assert srv.db_status(job["id"]) == "pending"


def test_cancel_under_a_manage_rule_for_one_user(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(
        jobs.Config(
            auto_start=False,
            enqueue_rule="true",
            manage_rule=f'@request.auth.email = "{USER_EMAIL}"',
        ),
        accounts=("user",),
    )
    enqueued = srv.enqueue({"topic": "t"}, who=None)
    assert enqueued.status_code == 200, enqueued.text
    job = enqueued.json()
    assert_error(cancel(srv, job["id"], who=None), 401, MSG_401)
    assert srv.db_status(job["id"]) == "pending"
    response = cancel(srv, job["id"], who="user")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# -- requeue, delete and list of a cancelled job -------------------------------------------


def test_requeue_a_cancelled_job(srv: JobsServer) -> None:
    job = srv.new_job("t", {"k": 1}, run_at="2099-01-01T00:00:00Z", max_retries=2)
    cancel(srv, job["id"])
    before = now_utc()
    response = srv.http.post(f"/api/jobs/{job['id']}/requeue", headers=srv.su)
    after = now_utc()
    assert response.status_code == 200, response.text
    requeued = response.json()
    assert_job_json(requeued)
    assert (requeued["status"], requeued["retries"], requeued["max_retries"]) == ("pending", 0, 2)
    assert requeued["finished_at"] is None
    assert before - MS <= at(requeued["run_at"]) <= after
    assert srv.db_status(job["id"]) == "pending"
    assert cancel(srv, job["id"]).json()["status"] == "cancelled"  # and cancel it again


def test_delete_a_cancelled_job(srv: JobsServer) -> None:
    job = srv.new_job()
    keep = srv.new_job()
    cancel(srv, job["id"])
    response = srv.http.delete(f"/api/jobs/{job['id']}", headers=srv.su)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    assert srv.db_status(job["id"]) is None
    assert srv.db_status(keep["id"]) == "pending"
    assert_error(cancel(srv, job["id"]), 404, MSG_404_JOB)


def test_list_filters_by_the_cancelled_status(srv: JobsServer) -> None:
    ids = [srv.new_job("t", {"i": i})["id"] for i in range(3)]
    cancel(srv, ids[0])
    cancel(srv, ids[2])
    response = srv.http.get("/api/jobs", params={"status": "cancelled"}, headers=srv.su)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [job["id"] for job in body["items"]] == [ids[2], ids[0]]
    assert body["total"] == 2
    for job in body["items"]:
        assert_job_json(job)
        assert job["status"] == "cancelled"


# -- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [(30, 30.0), (2.5, 2.5), (0.25, 0.25), (MAX_TIMEOUT.total_seconds(), 604800.0)],
)
def test_enqueue_with_a_timeout(srv: JobsServer, timeout: float, seconds: float) -> None:
    job = srv.new_job("t", timeout=timeout)
    assert_job_json(job)
    assert job["timeout"] == seconds
    assert get(srv, job["id"])["timeout"] == seconds
    assert store_of(srv).get(job["id"]).timeout == timedelta(seconds=seconds)


def test_enqueue_without_a_timeout_has_none(srv: JobsServer) -> None:
    assert srv.new_job("t")["timeout"] is None
    assert srv.new_job("t", timeout=None)["timeout"] is None  # null: as if absent
    assert srv.count() == 2


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param("30", id="numeric-string"),
        pytest.param("30s", id="duration-string"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param([30], id="list"),
        pytest.param({"seconds": 30}, id="object"),
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(MAX_TIMEOUT.total_seconds() + 0.001, id="over-7-days"),
        pytest.param(2**63, id="beyond-int64"),
        pytest.param(b'{"topic": "t", "timeout": 1' + b"0" * 400 + b"}", id="int-beyond-float"),
        pytest.param(b'{"topic": "t", "timeout": 1e400}', id="infinity"),
        pytest.param(b'{"topic": "t", "timeout": NaN}', id="nan"),
    ],
)
def test_invalid_timeout_is_400_and_writes_nothing(srv: JobsServer, timeout: Any) -> None:
    # bytes: a whole body, as no client library would encode it
    response = srv.enqueue(
        timeout if isinstance(timeout, bytes) else {"topic": "t", "timeout": timeout}
    )
    assert_field_error(response, "timeout", BAD_TIMEOUT)
    assert response.json()["message"] == "Failed to enqueue the job."
    assert srv.count() == 0


def test_a_bad_timeout_is_reported_with_the_other_bad_fields(srv: JobsServer) -> None:
    response = srv.enqueue({"topic": "", "timeout": "soon", "priority": 99})
    assert_error(response, 400, "Failed to enqueue the job.")
    assert set(response.json()["data"]) == {"topic", "priority", "timeout"}
    assert srv.count() == 0


def test_a_bad_timeout_is_reported_with_a_topic_not_allowed(
    make_server: Callable[..., JobsServer],
) -> None:
    """With ``allowed_topics`` the route checks the body itself: the timeout too."""
    srv = make_server(jobs.Config(auto_start=False, allowed_topics=("a",)), accounts=("super",))
    response = srv.enqueue({"topic": "b", "timeout": -5})
    assert_error(response, 400, "Failed to enqueue the job.")
    data = response.json()["data"]
    assert data["topic"]["code"] == "validation_topic_not_allowed"
    assert data["timeout"]["code"] == BAD_TIMEOUT
    assert srv.count() == 0
    assert srv.new_job("a", timeout=10)["timeout"] == 10.0


def test_an_attempt_past_its_timeout_fails_and_is_recorded(
    make_server: Callable[..., JobsServer],
) -> None:
    def setup(store: jobs.JobStore) -> None:
        @store.handler("slow")
        async def slow(job: jobs.Job) -> None:
            await asyncio.sleep(30)

    srv = make_server(
        jobs.Config(poll_interval=0.2, shutdown_timeout=5, max_retries=0),
        accounts=("super",),
        setup=setup,
    )
    job = srv.new_job("slow", timeout=0.2)
    failed = base._wait_for_status(srv, job["id"], "failed")
    assert failed["timeout"] == 0.2
    assert "timed out" in (failed["last_error"] or "")
    assert [(error["attempt"], "timed out" in error["error"]) for error in failed["errors"]] == [
        (1, True)
    ]
    assert failed["attempted_at"] is not None
    assert failed["first_attempted_at"] == failed["attempted_at"]  # one attempt
    assert failed["finished_at"] is not None


# -- statistics ----------------------------------------------------------------------------


def test_stats_count_cancelled_jobs_and_orphaned_queues(srv: JobsServer) -> None:
    ids = [srv.new_job("t", queue=queue)["id"] for queue in ("default", "default", "mail")]
    cancel(srv, ids[0])
    stats = srv.http.get("/api/jobs/stats", headers=srv.su).json()
    assert (stats["pending"], stats["cancelled"], stats["total"]) == (2, 1, 3)
    assert stats["success_rate"] == 0.0  # cancelled jobs count neither way
    assert stats["orphaned_queues"] == {"default": 1, "mail": 1}  # the shared server runs none
    cancel(srv, ids[2])
    stats = srv.http.get("/api/jobs/stats", headers=srv.su).json()
    assert stats["orphaned_queues"] == {"default": 1}  # pending jobs only


def test_stats_leave_out_queues_a_running_worker_works_on(
    make_server: Callable[..., JobsServer],
) -> None:
    config = jobs.Config(poll_interval=0.05, shutdown_timeout=5)
    srv = make_server(config, accounts=("super",))
    srv.new_job("nobody")  # in default, which this server works on
    srv.new_job("nobody", queue="mail")

    def stats() -> dict[str, Any]:
        body: dict[str, Any] = srv.http.get("/api/jobs/stats", headers=srv.su).json()
        return body

    wait_until(lambda: stats()["orphaned_queues"] == {"mail": 1}, 20, "the worker's row")
    assert stats()["orphaned_topics"] == {"nobody": 2}
