"""Named queues in the jobs HTTP API, over real HTTP, on a real SQLite file and on PostgreSQL.

The ``queue`` of an enqueue and of a list filter, ``GET /api/jobs/queues``, ``POST
/api/jobs/queues/{name}/pause`` and ``.../resume`` (all under ``manage_rule``), and the
``orphaned_topics`` of ``GET /api/jobs/stats``. The servers, clients and assertions are
those of ``test_jobs_http.py``: most tests share its one server per database (dispatcher
off, so statuses stay as written); here ``_jobs`` *and* the queue state are emptied before
each test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import test_jobs_http as base
from test_jobs_http import (
    MSG_401,
    MSG_403,
    USER_EMAIL,
    JobsServer,
    assert_error,
    assert_field_error,
    assert_job_json,
)

from jobs_support import wait_until
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.limits import MAX_QUEUE_LENGTH

# test_jobs_http's fixtures: one shared server per database, a server of one's own.
_clean_env = base._clean_env
shared = base.shared
make_server = base.make_server

QUEUE_KEYS = {"name", "paused", "pending", "processing", "concurrency", "global_limit"}
BAD_QUEUE = "validation_invalid_queue"
MSG_BAD_QUEUE = "Invalid queue name."
QUEUE_ENDPOINTS = [
    ("GET", "/api/jobs/queues"),
    ("POST", "/api/jobs/queues/mail/pause"),
    ("POST", "/api/jobs/queues/mail/resume"),
]


@pytest.fixture
def srv(shared: JobsServer) -> JobsServer:
    """The shared server with no job and no queue state (nothing paused)."""
    shared.app.db.execute("DELETE FROM _jobs")
    shared.app.db.execute("DELETE FROM _jobs_queues")
    return shared


def store_of(server: JobsServer) -> jobs.JobStore:
    store = jobs.get_job_store(server.app)
    assert store is not None
    return store


def queues(server: JobsServer, who: str = "super") -> dict[str, dict[str, Any]]:
    """``GET /api/jobs/queues`` as ``name -> queue``, checking its shape and its order."""
    response = server.http.get("/api/jobs/queues", headers=server.headers(who))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items"}
    names = [item["name"] for item in body["items"]]
    assert names == sorted(names)
    for item in body["items"]:
        assert set(item) == QUEUE_KEYS
    return {item["name"]: item for item in body["items"]}


def switch(server: JobsServer, name: str, action: str, who: str | None = "super") -> httpx.Response:
    return server.http.post(f"/api/jobs/queues/{name}/{action}", headers=server.headers(who))


def paused_in_store(server: JobsServer) -> dict[str, bool]:
    return {queue.name: queue.paused for queue in store_of(server).queues()}


# -- enqueue into a queue ------------------------------------------------------------------


def test_enqueue_with_a_queue(srv: JobsServer) -> None:
    job = srv.new_job("t", {"n": 1}, queue="mail")
    assert_job_json(job)
    assert job["queue"] == "mail"
    assert store_of(srv).get(job["id"]).queue == "mail"
    fetched = srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su)
    assert fetched.json() == job

    longest = "q" * MAX_QUEUE_LENGTH
    assert srv.new_job("t", queue=longest)["queue"] == longest
    assert srv.new_job("t", queue="a-b_c.9")["queue"] == "a-b_c.9"
    assert srv.new_job("t")["queue"] == "default"
    assert srv.new_job("t", queue=None)["queue"] == "default"  # null: as if absent
    assert srv.count() == 5


@pytest.mark.parametrize(
    "queue",
    [
        pytest.param(7, id="int"),
        pytest.param(1.5, id="float"),
        pytest.param(True, id="bool"),
        pytest.param(["mail"], id="list"),
        pytest.param({"name": "mail"}, id="object"),
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param("mail/urgent", id="slash"),
        pytest.param("mail:1", id="colon"),
        pytest.param("courriel-é", id="non-ascii"),
        pytest.param("mail\u0000", id="nul"),
        pytest.param(b'{"topic": "t", "queue": "\\ud800"}', id="lone-surrogate"),
        pytest.param("q" * (MAX_QUEUE_LENGTH + 1), id="too-long"),
    ],
)
def test_invalid_queue_is_400_and_writes_nothing(srv: JobsServer, queue: Any) -> None:
    # bytes: a whole body, as no client library would encode it
    response = srv.enqueue(queue if isinstance(queue, bytes) else {"topic": "t", "queue": queue})
    assert_field_error(response, "queue", BAD_QUEUE)
    assert response.json()["message"] == "Failed to enqueue the job."
    assert srv.count() == 0


def test_a_bad_queue_is_reported_with_the_other_bad_fields(srv: JobsServer) -> None:
    response = srv.enqueue({"topic": "", "queue": 5, "priority": -1})
    data = assert_error(response, 400, "Failed to enqueue the job.")
    assert {"topic", "queue", "priority"} <= set(data)
    assert data["queue"]["code"] == BAD_QUEUE
    assert srv.count() == 0


def test_a_bad_queue_is_reported_with_allowed_topics(
    make_server: Callable[..., JobsServer],
) -> None:
    """With ``allowed_topics`` the route checks the body itself: the queue too."""
    srv = make_server(jobs.Config(auto_start=False, allowed_topics=("a",)), accounts=("super",))
    response = srv.enqueue({"topic": "b", "queue": "no spaces", "run_at": "soon"})
    data = assert_error(response, 400, "Failed to enqueue the job.")
    assert data["topic"]["code"] == "validation_topic_not_allowed"
    assert data["queue"]["code"] == BAD_QUEUE
    assert data["run_at"]["code"] == "validation_invalid_datetime"
    assert_field_error(srv.enqueue({"topic": "a", "queue": ["x"]}), "queue", BAD_QUEUE)
    assert srv.count() == 0
    assert srv.new_job("a", queue="mail")["queue"] == "mail"


# -- the list filter -----------------------------------------------------------------------


def test_list_filters_by_queue(srv: JobsServer) -> None:
    placed = [("a", "mail"), ("a", "default"), ("b", "mail"), ("a", "reports"), ("b", "mail")]
    ids = [srv.new_job(topic, queue=queue)["id"] for topic, queue in placed]

    def page(**params: Any) -> dict[str, Any]:
        response = srv.http.get("/api/jobs", params=params, headers=srv.su)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        for item in body["items"]:
            assert_job_json(item)
        return body

    mail = page(queue="mail")
    assert [job["id"] for job in mail["items"]] == [ids[4], ids[2], ids[0]]  # newest first
    assert mail["total"] == 3
    assert all(job["queue"] == "mail" for job in mail["items"])
    assert [job["id"] for job in page(queue="default")["items"]] == [ids[1]]
    assert [job["id"] for job in page(queue="mail", topic="b")["items"]] == [ids[4], ids[2]]
    assert [job["id"] for job in page(queue="mail", limit=1, offset=1)["items"]] == [ids[2]]
    srv.set_status(ids[2], "failed")
    assert [job["id"] for job in page(queue="mail", status="failed")["items"]] == [ids[2]]
    assert page(queue="nowhere")["total"] == 0
    assert page(queue="")["total"] == 5  # blank = absent


@pytest.mark.parametrize(
    "query",  # as sent, percent-encoded
    [
        pytest.param("a%20b", id="space"),
        pytest.param("mail%2Fx", id="slash"),
        pytest.param("%00", id="nul"),
        pytest.param("%ED%A0%80", id="surrogate-bytes"),
        pytest.param("%C3%A9", id="non-ascii"),
        pytest.param("q" * (MAX_QUEUE_LENGTH + 1), id="too-long"),
    ],
)
def test_invalid_queue_filter_is_400(srv: JobsServer, query: str) -> None:
    srv.new_job("t")
    response = srv.http.get(f"/api/jobs?queue={query}", headers=srv.su)
    assert_field_error(response, "queue", BAD_QUEUE)
    assert response.json()["message"] == "Invalid query parameters."


# -- listing, pausing and resuming queues --------------------------------------------------


def test_queues_lists_the_worked_the_used_and_the_paused_ones(srv: JobsServer) -> None:
    workers = store_of(srv).config.workers
    assert queues(srv) == {
        "default": {
            "name": "default", "paused": False, "pending": 0, "processing": 0,
            "concurrency": workers, "global_limit": None,
        },
    }  # fmt: skip
    ids = [srv.new_job("t", queue=queue)["id"] for queue in ("mail", "mail", "mail", "default")]
    srv.set_status(ids[0], "processing")
    srv.set_status(ids[1], "completed")  # neither pending nor processing: not counted
    listed = queues(srv)
    assert list(listed) == ["default", "mail"]
    assert listed["mail"] == {
        "name": "mail", "paused": False, "pending": 1, "processing": 1, "concurrency": 0,
        "global_limit": None,
    }  # fmt: skip
    assert (listed["default"]["pending"], listed["default"]["processing"]) == (1, 0)
    assert listed == {queue.name: queue.to_json() for queue in store_of(srv).queues()}


def test_queues_show_this_servers_slots_and_global_limits(
    make_server: Callable[..., JobsServer],
) -> None:
    srv = make_server(
        jobs.Config(auto_start=False, queues={"default": 2, "mail": 3}, queue_limits={"mail": 1}),
        accounts=("super",),
    )
    listed = queues(srv)
    assert list(listed) == ["default", "mail"]
    assert (listed["default"]["concurrency"], listed["default"]["global_limit"]) == (2, None)
    assert (listed["mail"]["concurrency"], listed["mail"]["global_limit"]) == (3, 1)


def test_pause_then_resume(srv: JobsServer) -> None:
    srv.new_job("t", queue="mail")
    paused = switch(srv, "mail", "pause")
    assert paused.status_code == 200, paused.text
    assert paused.json() == {
        "name": "mail", "paused": True, "pending": 1, "processing": 0, "concurrency": 0,
        "global_limit": None,
    }  # fmt: skip
    assert paused_in_store(srv) == {"default": False, "mail": True}
    assert queues(srv)["mail"]["paused"] is True
    again = switch(srv, "mail", "pause")  # pausing a paused queue changes nothing
    assert again.status_code == 200, again.text
    assert again.json() == paused.json()
    assert srv.new_job("t", queue="mail")["status"] == "pending"  # enqueues go on

    resumed = switch(srv, "mail", "resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json() == {**paused.json(), "paused": False, "pending": 2}
    assert paused_in_store(srv) == {"default": False, "mail": False}
    assert queues(srv)["mail"]["paused"] is False
    assert switch(srv, "mail", "resume").json()["paused"] is False


def test_a_queue_without_jobs_can_be_paused_and_is_listed(srv: JobsServer) -> None:
    response = switch(srv, "later", "pause")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "later", "paused": True, "pending": 0, "processing": 0, "concurrency": 0,
        "global_limit": None,
    }  # fmt: skip
    assert list(queues(srv)) == ["default", "later"]
    never_paused = switch(srv, "other", "resume")
    assert never_paused.status_code == 200, never_paused.text
    assert never_paused.json()["paused"] is False


@pytest.mark.parametrize("action", ["pause", "resume"])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a%20b", id="space"),
        pytest.param("mail%3A1", id="colon"),
        pytest.param("%C3%A9", id="non-ascii"),
        pytest.param("%00", id="nul"),
        pytest.param("%ED%A0%80", id="surrogate-bytes"),
        pytest.param("q" * (MAX_QUEUE_LENGTH + 1), id="too-long"),
    ],
)
def test_invalid_queue_name_is_400_and_writes_nothing(
    srv: JobsServer, name: str, action: str
) -> None:
    response = switch(srv, name, action)
    data = assert_error(response, 400, MSG_BAD_QUEUE)
    assert set(data) == {"queue"}
    assert data["queue"]["code"] == BAD_QUEUE
    assert paused_in_store(srv) == {"default": False}


def test_queues_is_not_taken_for_a_job_id(srv: JobsServer) -> None:
    job = srv.new_job("t", queue="mail")
    assert "mail" in queues(srv)
    fetched = srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su)
    assert fetched.json()["id"] == job["id"]
    # A job that happened to be called "queues" could not be fetched, but ids are UUIDs.
    assert_error(srv.http.delete("/api/jobs/queues", headers=srv.su), 404)


# -- the manage rule -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), QUEUE_ENDPOINTS)
def test_queue_endpoints_need_a_token_and_the_manage_rule(
    srv: JobsServer, method: str, path: str
) -> None:
    """Default rules (superusers only): a guest gets 401, a user 403, a superuser 200."""
    assert_error(srv.http.request(method, path), 401, MSG_401)
    assert_error(srv.http.request(method, path, headers={"Authorization": "nope"}), 401, MSG_401)
    assert_error(srv.http.request(method, path, headers=srv.user), 403, MSG_403)
    assert paused_in_store(srv) == {"default": False}  # nothing written
    response = srv.http.request(method, path, headers=srv.su)
    assert response.status_code == 200, response.text


def test_a_bad_name_without_a_token_is_401_not_400(srv: JobsServer) -> None:
    assert_error(switch(srv, "a%20b", "pause", who=None), 401, MSG_401)
    assert_error(switch(srv, "a%20b", "pause", who="user"), 403, MSG_403)


def test_a_manage_rule_that_admits_a_user(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(
        jobs.Config(auto_start=False, manage_rule=f'@request.auth.email = "{USER_EMAIL}"'),
        accounts=("user",),
    )
    assert_error(switch(srv, "mail", "pause", who=None), 401, MSG_401)
    assert paused_in_store(srv) == {"default": False}
    paused = switch(srv, "mail", "pause", who="user")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert queues(srv, who="user")["mail"]["paused"] is True
    assert switch(srv, "mail", "resume", who="user").json()["paused"] is False
    assert paused_in_store(srv) == {"default": False, "mail": False}


def test_a_manage_rule_that_admits_no_user(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(jobs.Config(auto_start=False, manage_rule='@request.auth.email = "x"'))
    for method, path in QUEUE_ENDPOINTS:
        assert_error(srv.http.request(method, path, headers=srv.user), 403, MSG_403)
    assert paused_in_store(srv) == {"default": False}
    assert switch(srv, "mail", "pause").json()["paused"] is True  # superusers pass


# -- a paused queue is not worked on -------------------------------------------------------


def test_a_queue_paused_over_http_stops_being_worked_on(
    make_server: Callable[..., JobsServer],
) -> None:
    config = jobs.Config(poll_interval=0.05, queues={"default": 2, "mail": 2}, shutdown_timeout=5)
    srv = make_server(config, setup=lambda store: store.register("t", lambda job: None))
    assert switch(srv, "mail", "pause").json()["paused"] is True
    held = srv.new_job("t", queue="mail")
    passing = srv.new_job("t")  # same topic, the default queue: not paused
    wait_until(lambda: srv.db_status(passing["id"]) == "completed", 20, "the default job")
    assert srv.db_status(held["id"]) == "pending"
    assert queues(srv)["mail"]["pending"] == 1

    assert switch(srv, "mail", "resume").json()["paused"] is False
    wait_until(lambda: srv.db_status(held["id"]) == "completed", 20, "the resumed job")


# -- orphaned topics in the statistics -----------------------------------------------------


def test_stats_report_pending_jobs_of_topics_no_worker_handles(srv: JobsServer) -> None:
    def orphaned() -> dict[str, int]:
        response = srv.http.get("/api/jobs/stats", headers=srv.su)
        assert response.status_code == 200, response.text
        value: dict[str, int] = response.json()["orphaned_topics"]
        return value

    assert orphaned() == {}
    ids = [srv.new_job(topic)["id"] for topic in ("nobody", "nobody", "nobody", "other")]
    assert orphaned() == {"nobody": 3, "other": 1}  # the shared server runs no worker
    srv.set_status(ids[0], "completed")
    srv.set_status(ids[1], "processing")
    srv.set_status(ids[3], "failed")
    assert orphaned() == {"nobody": 1}  # pending jobs only


def test_stats_leave_out_topics_a_running_worker_handles(
    make_server: Callable[..., JobsServer],
) -> None:
    config = jobs.Config(poll_interval=0.05, shutdown_timeout=5)
    srv = make_server(config, setup=lambda store: store.register("handled", lambda job: None))
    srv.new_job("handled", delay=3600)  # pending for an hour, with a handler
    srv.new_job("unhandled")
    srv.new_job("unhandled", queue="mail")

    def stats() -> dict[str, Any]:
        body: dict[str, Any] = srv.http.get("/api/jobs/stats", headers=srv.su).json()
        return body

    wait_until(lambda: stats()["orphaned_topics"] == {"unhandled": 2}, 20, "the worker's row")
    assert stats()["pending"] == 3
