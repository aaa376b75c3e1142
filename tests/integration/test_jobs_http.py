"""The jobs HTTP API (SPEC §4.7) over real HTTP, on a real SQLite file and on PostgreSQL.

Most tests share one server per database (``srv``: default rules, ``max_payload_size=1000``,
dispatcher off so statuses stay as written; ``_jobs`` is emptied before each test). Tests
that need other rules or settings start their own server on the test's database.
Statuses are set directly in ``_jobs`` where a test needs a processing/completed/failed job.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import DATABASES, LiveServer
from pgfixtures import temporary_database
from pocketjobs import App
from pocketjobs.core.times import now_utc, parse_time
from pocketjobs.plugins import jobs
from support import clear_jobs_env, login

SUPER_EMAIL, SUPER_PASSWORD = "root@example.com", "super-secret-1"
USER_EMAIL, USER_PASSWORD = "alice@example.com", "alice-password"
MAX_PAYLOAD = 1000
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
JOB_KEYS = {
    "id", "topic", "payload", "status", "run_at", "locked_until", "retries", "max_retries",
    "last_error", "created", "updated", "priority", "unique_key", "queue", "attempted_at",
    "first_attempted_at", "attempted_by", "finished_at", "errors", "timeout",
    "cancel_requested_at", "duplicate",
}  # fmt: skip
#: The job's optional times (``None`` or RFC 3339 with milliseconds).
OPTIONAL_TIMES = (
    "locked_until", "attempted_at", "first_attempted_at", "finished_at", "cancel_requested_at",
)  # fmt: skip
MSG_401 = "The request requires valid record authorization token."
MSG_403 = "The authorized record is not allowed to perform this action."
MSG_404_JOB = "The requested job wasn't found."
MSG_BAD_JSON = "Failed to load the submitted data due to invalid formatting."
MS = timedelta(milliseconds=1)
JSON = "application/json"
UNKNOWN_ID = "0190a8b2-0000-7000-8000-000000000000"


# -- helpers -------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> Any:
    """``response`` is an error in the kernel's shape; return its ``data``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "message", "data"}, body
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["data"], dict)
    assert "Traceback" not in response.text
    if message is not None:
        assert body["message"] == message
    return body["data"]


def assert_field_error(response: httpx.Response, name: str, code: str | None = None) -> None:
    """A 400 whose ``data`` names ``name`` (with ``code`` when given)."""
    data = assert_error(response, 400)
    assert name in data, data
    assert set(data[name]) == {"code", "message"}
    assert data[name]["message"]
    if code is not None:
        assert data[name]["code"] == code, data


def assert_job_json(job: dict[str, Any]) -> None:
    assert set(job) == JOB_KEYS
    assert UUID7_RE.match(job["id"]), job["id"]
    for name in ("run_at", "created", "updated"):
        assert TIME_RE.match(job[name]), (name, job[name])
    for name in OPTIONAL_TIMES:
        assert job[name] is None or TIME_RE.match(job[name]), (name, job[name])
    assert isinstance(job["errors"], list)


def at(text: str) -> datetime:
    return parse_time(text.replace("Z", "+00:00"))


@dataclass
class JobsServer:
    """An app with the jobs plugin served on a live server, and tokens to call it."""

    app: App
    live: LiveServer
    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": self.tokens[who]}

    @property
    def su(self) -> dict[str, str]:
        return self.headers("super")

    @property
    def user(self) -> dict[str, str]:
        return self.headers("user")

    def enqueue(self, body: Any, who: str | None = "super") -> httpx.Response:
        """POST ``body`` to ``/api/jobs/enqueue``: as JSON, or ``bytes`` sent as they are
        (JSON no client library would encode)."""
        if isinstance(body, bytes):
            headers = {**self.headers(who), "Content-Type": "application/json"}
            return self.http.post("/api/jobs/enqueue", content=body, headers=headers)
        return self.http.post("/api/jobs/enqueue", json=body, headers=self.headers(who))

    def new_job(self, topic: str = "t", payload: Any = None, **extra: Any) -> dict[str, Any]:
        response = self.enqueue({"topic": topic, "payload": payload, **extra})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def count(self) -> int:
        return int(self.app.db.fetch_value("SELECT COUNT(*) FROM _jobs"))

    def set_status(self, job_id: str, status: str) -> None:
        self.app.db.execute("UPDATE _jobs SET status = ? WHERE id = ?", (status, job_id))

    def db_status(self, job_id: str) -> str | None:
        value = self.app.db.fetch_value("SELECT status FROM _jobs WHERE id = ?", (job_id,))
        return None if value is None else str(value)

    def close(self) -> None:
        self.http.close()
        self.live.stop()
        if self.app.is_bootstrapped():
            self.app.terminate()


def start_server(
    data_dir: Path,
    db_url: str | None,
    config: jobs.Config | None,
    *,
    accounts: tuple[str, ...] = ("super", "user"),
    setup: Callable[[jobs.JobStore], None] | None = None,
) -> JobsServer:
    """Bootstrap an app (with the plugin unless ``config`` is None), create and log in the
    ``accounts`` (``super``/``user``), and serve it."""
    app = App(data_dir, db_url)
    if config is not None:
        store = jobs.register(app, config)
        if store is not None and setup is not None:
            setup(store)
    app.bootstrap()
    live: LiveServer | None = None
    try:
        if "super" in accounts:
            app.auth.upsert_superuser(SUPER_EMAIL, SUPER_PASSWORD)
        if "user" in accounts:
            app.auth.create("users", USER_EMAIL, USER_PASSWORD, USER_PASSWORD)
        live = LiveServer(app)
        live.start()
        server = JobsServer(app, live, httpx.Client(base_url=live.base_url, timeout=30))
        if "super" in accounts:
            server.tokens["super"] = login(server.http, "_superusers", SUPER_EMAIL, SUPER_PASSWORD)
        if "user" in accounts:
            server.tokens["user"] = login(server.http, "users", USER_EMAIL, USER_PASSWORD)
    except BaseException:
        if live is not None:
            live.stop()
        app.terminate()
        raise
    return server


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_jobs_env(monkeypatch)


@pytest.fixture(scope="module", params=DATABASES)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobsServer]:
    """One server per database for the module: default rules, small payload limit."""
    config = jobs.Config(auto_start=False, max_payload_size=MAX_PAYLOAD, shutdown_timeout=5)
    data_dir = tmp_path_factory.mktemp("jobs-http") / "pb_data"
    with pytest.MonkeyPatch.context() as mp:
        clear_jobs_env(mp)
        if request.param == "postgres":
            admin_url: str = request.getfixturevalue("postgres_server_url")
            with temporary_database(admin_url) as url:
                server = start_server(data_dir, url, config)
                try:
                    yield server
                finally:
                    server.close()
        else:
            server = start_server(data_dir, None, config)
            try:
                yield server
            finally:
                server.close()


@pytest.fixture
def srv(shared: JobsServer) -> JobsServer:
    """The shared server with an empty ``_jobs`` table."""
    shared.app.db.execute("DELETE FROM _jobs")
    return shared


@pytest.fixture
def make_server(data_dir: Path, db_url: str | None) -> Iterator[Callable[..., JobsServer]]:
    """Start a server with its own config on this test's database (one per test)."""
    started: list[JobsServer] = []

    def make(config: jobs.Config | None, **kwargs: Any) -> JobsServer:
        assert not started, "one server per test (it owns the test's database)"
        server = start_server(data_dir, db_url, config, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


def is_postgres(server: JobsServer) -> bool:
    return server.app.is_postgres()


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_returns_the_job_and_writes_it(srv: JobsServer) -> None:
    before = now_utc()
    payload = {"to": "bob@example.com", "tags": ["a", "b"], "n": 1.5, "ok": True, "x": None}
    response = srv.enqueue(
        {
            "topic": "email:send",
            "payload": payload,
            "run_at": "2025-01-08T14:00:00+02:00",
            "max_retries": 5,
        }
    )
    after = now_utc()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    job = response.json()
    assert_job_json(job)
    assert job["topic"] == "email:send"
    assert job["payload"] == payload
    assert job["status"] == "pending"
    assert job["run_at"] == "2025-01-08T12:00:00.000Z"
    assert job["locked_until"] is None
    assert job["retries"] == 0
    assert job["max_retries"] == 5
    assert job["last_error"] is None
    assert before - MS <= at(job["created"]) <= after
    assert job["updated"] == job["created"]

    assert srv.count() == 1
    store = jobs.get_job_store(srv.app)
    assert store is not None
    stored = store.get(job["id"])
    assert stored.to_json() == job
    fetched = srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == job


def test_enqueue_defaults_and_bearer_prefix(srv: JobsServer) -> None:
    before = now_utc()
    response = srv.http.post(
        "/api/jobs/enqueue",
        json={"topic": "t"},
        headers={"Authorization": f"Bearer {srv.tokens['super']}"},
    )
    after = now_utc()
    assert response.status_code == 200, response.text
    job = response.json()
    assert_job_json(job)
    assert job["payload"] is None
    assert job["max_retries"] == 3  # the config default
    assert before - MS <= at(job["run_at"]) <= after
    assert srv.count() == 1


@pytest.mark.parametrize(
    "payload",
    [None, 0, -7, 1.25, "text", "héllo ✓ 日本", True, [], [1, [2, [3]]], {}, {"a": {"b": [None]}}],
)
def test_any_json_payload_round_trips(srv: JobsServer, payload: Any) -> None:
    job = srv.new_job("t", payload)
    assert job["payload"] == payload
    fetched = srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su).json()
    assert fetched["payload"] == payload
    assert type(fetched["payload"]) is type(payload)


@pytest.mark.parametrize(
    ("delay", "seconds"), [(30, 30), (2.5, 2.5), ("1m30s", 90), ("500ms", 0.5), ("45", 45)]
)
def test_delay_sets_run_at(srv: JobsServer, delay: Any, seconds: float) -> None:
    before = now_utc()
    job = srv.new_job("t", delay=delay)
    after = now_utc()
    span = timedelta(seconds=seconds)
    assert before + span - MS <= at(job["run_at"]) <= after + span


@pytest.mark.parametrize(
    ("run_at", "expected"),
    [
        ("2025-01-08T12:00:00Z", "2025-01-08T12:00:00.000Z"),
        ("2025-01-08T12:00:00.123456Z", "2025-01-08T12:00:00.123Z"),
        ("2025-01-08T12:00:00+00:00", "2025-01-08T12:00:00.000Z"),
        ("2025-01-08T06:30:00-05:30", "2025-01-08T12:00:00.000Z"),
        ("2099-12-31T23:59:59.999Z", "2099-12-31T23:59:59.999Z"),
    ],
)
def test_run_at_is_normalised_to_utc_milliseconds(
    srv: JobsServer, run_at: str, expected: str
) -> None:
    assert srv.new_job("t", run_at=run_at)["run_at"] == expected


def test_max_retries_zero_and_topic_of_255_chars(srv: JobsServer) -> None:
    assert srv.new_job("t", max_retries=0)["max_retries"] == 0
    topic = "x" * 255
    assert srv.new_job(topic)["topic"] == topic
    assert srv.count() == 2


# -- list, stats, get ----------------------------------------------------------------------


def test_list_newest_first_with_paging_and_filters(srv: JobsServer) -> None:
    topics = ["a", "a", "b", "a", "b", "a", "c"]
    ids = [srv.new_job(topic, {"i": i})["id"] for i, topic in enumerate(topics)]
    newest_first = ids[::-1]
    srv.set_status(ids[0], "failed")
    srv.set_status(ids[2], "failed")
    srv.set_status(ids[3], "completed")

    def page(**params: Any) -> dict[str, Any]:
        response = srv.http.get("/api/jobs", params=params, headers=srv.su)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert set(body) == {"items", "total", "limit", "offset"}
        for item in body["items"]:
            assert_job_json(item)
        return body

    everything = page()
    assert [job["id"] for job in everything["items"]] == newest_first
    assert (everything["total"], everything["limit"], everything["offset"]) == (7, 20, 0)

    second = page(limit=2, offset=2)
    assert [job["id"] for job in second["items"]] == newest_first[2:4]
    assert (second["total"], second["limit"], second["offset"]) == (7, 2, 2)
    beyond = page(limit=5, offset=7)
    assert beyond["items"] == []
    assert beyond["total"] == 7

    by_topic = page(topic="a")
    assert [job["id"] for job in by_topic["items"]] == [ids[5], ids[3], ids[1], ids[0]]
    assert by_topic["total"] == 4
    failed = page(status="failed")
    assert [job["id"] for job in failed["items"]] == [ids[2], ids[0]]
    assert all(job["status"] == "failed" for job in failed["items"])
    both = page(topic="a", status="failed", limit=1)
    assert [job["id"] for job in both["items"]] == [ids[0]]
    assert (both["total"], both["limit"]) == (1, 1)
    assert page(topic="nope")["total"] == 0
    assert page(limit="", offset="", topic="", status="")["total"] == 7  # blank = absent

    capped = page(limit=10000)
    assert capped["limit"] == 500
    assert len(capped["items"]) == 7


def test_list_limit_is_capped_at_500(srv: JobsServer) -> None:
    store = jobs.get_job_store(srv.app)
    assert store is not None
    store.enqueue_many("bulk", [{"n": n} for n in range(510)])
    body = srv.http.get("/api/jobs", params={"limit": 10000}, headers=srv.su).json()
    assert body["limit"] == 500
    assert len(body["items"]) == 500
    assert body["total"] == 510
    rest = srv.http.get("/api/jobs", params={"limit": 500, "offset": 500}, headers=srv.su).json()
    assert len(rest["items"]) == 10
    seen = {job["payload"]["n"] for job in body["items"] + rest["items"]}
    assert seen == set(range(510))


def test_stats(srv: JobsServer) -> None:
    empty = srv.http.get("/api/jobs/stats", headers=srv.su)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "pending": 0, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0,
        "success_rate": 0.0, "orphaned_topics": {}, "orphaned_queues": {},
    }  # fmt: skip
    ids = [srv.new_job()["id"] for _ in range(8)]
    for job_id, status in zip(
        ids, ["processing", "completed", "completed", "completed", "failed", "cancelled"],
        strict=False,
    ):  # fmt: skip
        srv.set_status(job_id, status)
    stats = srv.http.get("/api/jobs/stats", headers=srv.su).json()
    assert stats == {
        "pending": 2, "processing": 1, "completed": 3, "failed": 1, "cancelled": 1, "total": 8,
        "success_rate": 0.75,  # cancelled jobs count neither way
        "orphaned_topics": {"t": 2}, "orphaned_queues": {"default": 2},  # the dispatcher is off
    }  # fmt: skip


# -- requeue -------------------------------------------------------------------------------


def test_requeue_a_failed_job(srv: JobsServer) -> None:
    job = srv.new_job("t", {"k": 1}, run_at="2099-01-01T00:00:00Z", max_retries=2)
    srv.app.db.execute(
        "UPDATE _jobs SET status = 'failed', retries = 2, last_error = 'boom' WHERE id = ?",
        (job["id"],),
    )
    before = now_utc()
    response = srv.http.post(f"/api/jobs/{job['id']}/requeue", headers=srv.su)
    after = now_utc()
    assert response.status_code == 200, response.text
    requeued = response.json()
    assert_job_json(requeued)
    assert requeued["id"] == job["id"]
    assert requeued["status"] == "pending"
    assert requeued["retries"] == 0
    assert requeued["max_retries"] == 2
    assert requeued["payload"] == {"k": 1}
    assert before - MS <= at(requeued["run_at"]) <= after
    assert srv.db_status(job["id"]) == "pending"
    assert srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su).json() == requeued


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_requeue_of_a_job_that_has_not_failed_is_400(srv: JobsServer, status: str) -> None:
    job = srv.new_job()
    srv.set_status(job["id"], status)
    response = srv.http.post(f"/api/jobs/{job['id']}/requeue", headers=srv.su)
    assert_error(
        response, 400, f"job {job['id']} is {status}; only failed or cancelled jobs can be requeued"
    )
    assert srv.db_status(job["id"]) == status


# -- delete --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "failed", "completed", "cancelled"])
def test_delete_a_job_that_is_not_running(srv: JobsServer, status: str) -> None:
    job = srv.new_job()
    keep = srv.new_job()
    srv.set_status(job["id"], status)
    response = srv.http.delete(f"/api/jobs/{job['id']}", headers=srv.su)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    assert srv.db_status(job["id"]) is None
    assert srv.db_status(keep["id"]) == "pending"
    assert_error(srv.http.get(f"/api/jobs/{job['id']}", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.delete(f"/api/jobs/{job['id']}", headers=srv.su), 404, MSG_404_JOB)


def test_delete_of_a_processing_job_is_400(srv: JobsServer) -> None:
    job = srv.new_job()
    srv.set_status(job["id"], "processing")
    response = srv.http.delete(f"/api/jobs/{job['id']}", headers=srv.su)
    assert_error(
        response,
        400,
        f"job {job['id']} is processing; a running job cannot be deleted (cancel it first)",
    )
    assert srv.db_status(job["id"]) == "processing"
    assert srv.count() == 1


@pytest.mark.parametrize("job_id", [UNKNOWN_ID, "not-a-uuid", "x" * 300])
def test_unknown_id_is_404(srv: JobsServer, job_id: str) -> None:
    srv.new_job()
    assert_error(srv.http.get(f"/api/jobs/{job_id}", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.post(f"/api/jobs/{job_id}/requeue", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.post(f"/api/jobs/{job_id}/cancel", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.delete(f"/api/jobs/{job_id}", headers=srv.su), 404, MSG_404_JOB)
    assert srv.count() == 1


# -- auth with the default rules (superusers only) -----------------------------------------

ENDPOINTS = [
    ("POST", "/api/jobs/enqueue"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/stats"),
    ("GET", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/requeue"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("DELETE", "/api/jobs/{id}"),
    ("GET", "/api/jobs/queues"),
    ("POST", "/api/jobs/queues/mail/pause"),
    ("POST", "/api/jobs/queues/mail/resume"),
]
MANAGE_ENDPOINTS = ENDPOINTS[1:]


def call(
    server: JobsServer, method: str, path: str, job_id: str, headers: dict[str, str]
) -> httpx.Response:
    body = {"topic": "t"} if path.endswith("enqueue") else None
    return server.http.request(method, path.format(id=job_id), json=body, headers=headers)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "garbage", "Bearer", "Bearer not.a.jwt", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA"],
)
def test_without_a_valid_token_every_endpoint_is_401(
    srv: JobsServer, authorization: str | None
) -> None:
    job = srv.new_job()
    srv.set_status(job["id"], "failed")
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in ENDPOINTS:
        response = call(srv, method, path, job["id"], headers)
        assert_error(response, 401, MSG_401)
    assert srv.count() == 1
    assert srv.db_status(job["id"]) == "failed"
    tampered = srv.tokens["super"][:-2] + ("AA" if srv.tokens["super"][-2:] != "AA" else "BB")
    assert_error(srv.http.get("/api/jobs", headers={"Authorization": tampered}), 401, MSG_401)


def test_user_token_is_403_with_the_default_rules(srv: JobsServer) -> None:
    job = srv.new_job()
    srv.set_status(job["id"], "failed")
    for method, path in ENDPOINTS:
        response = call(srv, method, path, job["id"], srv.user)
        assert_error(response, 403, MSG_403)
    assert srv.count() == 1
    assert srv.db_status(job["id"]) == "failed"


def test_openapi_document_is_public(srv: JobsServer) -> None:
    response = srv.http.get("/api/jobs/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/api/jobs/enqueue", "/api/jobs", "/api/jobs/stats", "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/requeue", "/api/jobs/{job_id}/cancel", "/api/jobs/queues",
        "/api/jobs/queues/{name}/pause", "/api/jobs/queues/{name}/resume",
        "/api/jobs/schedules", "/api/jobs/schedules/{name}",
    }  # fmt: skip
    with_token = srv.http.get("/api/jobs/openapi.json", headers=srv.user)
    assert with_token.json() == document


# -- validation: 400, the right field, and nothing written ---------------------------------

INVALID_ENQUEUE = [
    pytest.param(b'{"topic": "t", ', None, None, id="malformed-json"),
    pytest.param(b"\xff\xfe{}", None, None, id="not-utf8"),
    pytest.param(b'[{"topic": "t"}]', None, None, id="json-array"),
    pytest.param(b'"t"', None, None, id="json-string"),
    pytest.param(b"", "topic", "validation_required", id="empty-body"),
    pytest.param({"payload": 1}, "topic", "validation_required", id="missing-topic"),
    pytest.param({"topic": None}, "topic", "validation_required", id="null-topic"),
    pytest.param({"topic": ""}, "topic", "validation_required", id="empty-topic"),
    pytest.param({"topic": "   "}, "topic", "validation_invalid_topic", id="blank-topic"),
    pytest.param({"topic": "x" * 256}, "topic", "validation_length_out_of_range", id="topic-256"),
    pytest.param({"topic": 7}, "topic", "validation_invalid_topic", id="int-topic"),
    pytest.param({"topic": ["t"]}, "topic", "validation_invalid_topic", id="list-topic"),
    pytest.param({"topic": {"a": 1}}, "topic", "validation_invalid_topic", id="object-topic"),
    pytest.param({"topic": "t", "payload": "x" * MAX_PAYLOAD}, "payload",
                 "validation_too_large", id="payload-over-limit"),
    pytest.param({"topic": "t", "payload": "é" * (MAX_PAYLOAD // 2)}, "payload",
                 "validation_too_large", id="payload-over-limit-in-utf8-bytes"),
    pytest.param(b'{"topic": "t", "payload": NaN}', "payload", "validation_invalid_payload",
                 id="payload-nan"),
    pytest.param(b'{"topic": "\\ud800"}', "topic", "validation_invalid_topic",
                 id="topic-lone-surrogate"),
    pytest.param(b'{"topic": "t", "payload": "\\udfff"}', "payload",
                 "validation_invalid_payload", id="payload-lone-surrogate"),
    pytest.param(b'{"topic": "t", "payload": {"\\ud800": 1}}', "payload",
                 "validation_invalid_payload", id="payload-key-lone-surrogate"),
    pytest.param({"topic": "t", "run_at": "tomorrow"}, "run_at", "validation_invalid_datetime",
                 id="run_at-text"),
    pytest.param({"topic": "t", "run_at": "2025-01-08T12:00:00"}, "run_at",
                 "validation_invalid_datetime", id="run_at-naive"),
    pytest.param({"topic": "t", "run_at": "2025-01-08"}, "run_at",
                 "validation_invalid_datetime", id="run_at-date-only"),
    pytest.param({"topic": "t", "run_at": "2025-13-08T12:00:00Z"}, "run_at",
                 "validation_invalid_datetime", id="run_at-month-13"),
    pytest.param({"topic": "t", "run_at": 1736337600}, "run_at", "validation_invalid_datetime",
                 id="run_at-number"),
    pytest.param({"topic": "t", "run_at": "2025-01-08T12:00:00Z", "delay": 5}, "delay",
                 "validation_conflict", id="run_at-and-delay"),
    pytest.param({"topic": "t", "delay": -1}, "delay", "validation_invalid_duration",
                 id="delay-negative"),
    pytest.param({"topic": "t", "delay": "-5s"}, "delay", "validation_invalid_duration",
                 id="delay-negative-text"),
    pytest.param({"topic": "t", "delay": "soon"}, "delay", "validation_invalid_duration",
                 id="delay-text"),
    pytest.param({"topic": "t", "delay": True}, "delay", "validation_invalid_duration",
                 id="delay-bool"),
    pytest.param({"topic": "t", "delay": [1]}, "delay", "validation_invalid_duration",
                 id="delay-list"),
    pytest.param({"topic": "t", "max_retries": -1}, "max_retries", "validation_invalid_number",
                 id="max_retries-negative"),
    pytest.param({"topic": "t", "max_retries": 1.5}, "max_retries", "validation_invalid_number",
                 id="max_retries-float"),
    pytest.param({"topic": "t", "max_retries": "3"}, "max_retries", "validation_invalid_number",
                 id="max_retries-string"),
    pytest.param({"topic": "t", "max_retries": True}, "max_retries", "validation_invalid_number",
                 id="max_retries-bool"),
    pytest.param({"topic": "t", "urgency": 1}, "body", "validation_unknown_fields",
                 id="unknown-field"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "name", "code"), INVALID_ENQUEUE)
def test_invalid_enqueue_is_400_and_writes_nothing(
    srv: JobsServer, body: Any, name: str | None, code: str | None
) -> None:
    if isinstance(body, bytes):
        response = srv.http.post(
            "/api/jobs/enqueue",
            content=body,
            headers={**srv.su, "Content-Type": "application/json"},
        )
    else:
        response = srv.enqueue(body)
    if name is None:
        data = assert_error(response, 400)
        assert data == {}
    else:
        assert_field_error(response, name, code)
    assert srv.count() == 0


def test_malformed_json_message(srv: JobsServer) -> None:
    response = srv.http.post(
        "/api/jobs/enqueue",
        content=b"{nope",
        headers={**srv.su, "Content-Type": "application/json"},
    )
    assert_error(response, 400, MSG_BAD_JSON)
    array = srv.http.post("/api/jobs/enqueue", json=[1], headers=srv.su)
    assert_error(array, 400, "The request body must be a JSON object.")
    assert srv.count() == 0


def test_several_field_errors_at_once(srv: JobsServer) -> None:
    response = srv.enqueue({"topic": "", "run_at": "x", "max_retries": -1, "extra": 1})
    data = assert_error(response, 400, "Failed to enqueue the job.")
    assert {"topic", "run_at", "max_retries", "body"} <= set(data)
    assert srv.count() == 0


def test_payload_exactly_at_the_limit_is_accepted(srv: JobsServer) -> None:
    exact = "x" * (MAX_PAYLOAD - 2)  # the JSON string is quoted: exactly MAX_PAYLOAD bytes
    assert len(json.dumps(exact).encode()) == MAX_PAYLOAD
    assert srv.new_job("t", exact)["payload"] == exact
    assert_field_error(srv.enqueue({"topic": "t", "payload": exact + "x"}), "payload")
    assert srv.count() == 1


def _raw_http(base_url: str, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send ``request`` bytes as is; return the status and body of the response."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the response head: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the response body"
            body += chunk
        return status, body[:length]


def test_declared_content_length_over_the_limit_is_refused_before_reading(
    srv: JobsServer,
) -> None:
    """Content-Length says 50 MB; only 1 KB is ever sent, yet the answer comes at once."""
    prefix = b'{"topic": "t", "payload": "' + b"x" * 1024
    head = (
        "POST /api/jobs/enqueue HTTP/1.1\r\n"
        f"Host: {urlsplit(srv.live.base_url).netloc}\r\n"
        f"Authorization: {srv.tokens['super']}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, body = _raw_http(srv.live.base_url, head + prefix)
    assert time.monotonic() - started < 10  # (the socket timeout would have fired otherwise)
    assert status == 400, body
    error = json.loads(body)
    assert error["status"] == 400
    assert error["data"]["payload"]["code"] == "validation_too_large"
    assert srv.count() == 0


def test_chunked_body_over_the_limit_is_refused_while_streaming(srv: JobsServer) -> None:
    sent = 0

    def stream() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        nonlocal sent
        yield b'{"topic": "t", "payload": "'
        for _ in range(40):
            sent += 8192
            yield b"x" * 8192
        yield b'"}'

    response = srv.http.post(
        "/api/jobs/enqueue",
        content=stream(),
        headers={**srv.su, "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_field_error(response, "payload", "validation_too_large")
    assert srv.count() == 0


def test_chunked_body_within_the_limit_is_accepted(srv: JobsServer) -> None:
    def stream() -> Iterator[bytes]:
        yield b'{"topic": "t", '
        yield b'"payload": {"n": 1}}'

    response = srv.http.post(
        "/api/jobs/enqueue",
        content=stream(),
        headers={**srv.su, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == {"n": 1}
    assert srv.count() == 1


@pytest.mark.parametrize(
    ("params", "name", "code"),
    [
        ({"limit": "-1"}, "limit", "validation_invalid_number"),
        ({"limit": "abc"}, "limit", "validation_invalid_number"),
        ({"limit": "1.5"}, "limit", "validation_invalid_number"),
        ({"limit": "٣"}, "limit", "validation_invalid_number"),  # a non-ASCII digit
        ({"offset": "-5"}, "offset", "validation_invalid_number"),
        ({"offset": "x"}, "offset", "validation_invalid_number"),
        ({"status": "bogus"}, "status", "validation_invalid_status"),
        ({"status": "PENDING"}, "status", "validation_invalid_status"),
    ],
)
def test_invalid_list_query_is_400(
    srv: JobsServer, params: dict[str, str], name: str, code: str
) -> None:
    response = srv.http.get("/api/jobs", params=params, headers=srv.su)
    assert_field_error(response, name, code)
    assert response.json()["message"] == "Invalid query parameters."


# -- edge cases found by fuzzing ------------------------------------------------------------


def test_deeply_nested_json_is_400_not_500(srv: JobsServer) -> None:
    depth = 20000
    body = b'{"topic": "t", "payload": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) < MAX_PAYLOAD + 64 * 1024  # within the body cap: the parser is reached
    response = srv.enqueue(body)
    assert_error(response, 400)
    assert srv.count() == 0


@pytest.mark.parametrize("run_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_run_at_out_of_range_is_400_not_500(srv: JobsServer, run_at: str) -> None:
    assert_field_error(srv.enqueue({"topic": "t", "run_at": run_at}), "run_at")
    assert srv.count() == 0


def test_run_at_before_year_1000_is_rejected_or_round_trips(srv: JobsServer) -> None:
    response = srv.enqueue({"topic": "t", "run_at": "0999-12-31T00:00:00Z"})
    if response.status_code == 400:
        assert_field_error(response, "run_at")
        assert srv.count() == 0
    else:
        assert response.status_code == 200, response.text
        assert response.json()["run_at"] == "0999-12-31T00:00:00.000Z"
    listed = srv.http.get("/api/jobs", headers=srv.su)
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize("value", [2**31, 2**63])
def test_huge_max_retries_is_400_or_stored(srv: JobsServer, value: int) -> None:
    response = srv.enqueue({"topic": "t", "max_retries": value})
    if response.status_code == 400:
        assert_field_error(response, "max_retries")
        assert srv.count() == 0
    else:
        assert response.status_code == 200, response.text
        assert response.json()["max_retries"] == value


def test_huge_offset_is_400_or_an_empty_page(srv: JobsServer) -> None:
    response = srv.http.get("/api/jobs", params={"offset": str(2**63)}, headers=srv.su)
    if response.status_code == 400:
        assert_field_error(response, "offset")
    else:
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []


def test_huge_delay_string_names_the_delay_field(srv: JobsServer) -> None:
    assert_field_error(srv.enqueue({"topic": "t", "delay": "100000000h"}), "delay")
    assert srv.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"topic": "t", "delay": 9e14}',  # beyond a timedelta
        b'{"topic": "t", "delay": 1' + b"0" * 400 + b"}",  # beyond a float
        b'{"topic": "t", "delay": -1' + b"0" * 400 + b"}",
    ],
    ids=["beyond-timedelta", "int-beyond-float", "negative-int-beyond-float"],
)
def test_huge_delay_number_is_400_not_500(srv: JobsServer, body: bytes) -> None:
    response = srv.enqueue(body)
    assert_field_error(response, "delay", "validation_invalid_duration")
    assert srv.count() == 0


@pytest.mark.parametrize(
    "run_at", ["2025-W02-3T12:00:00Z", "20250108T120000Z", "2025-01-08T12:00Z"]
)
def test_run_at_that_is_not_rfc3339_is_400(srv: JobsServer, run_at: str) -> None:
    assert_field_error(srv.enqueue({"topic": "t", "run_at": run_at}), "run_at")
    assert srv.count() == 0


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"topic": "a\u0000b"}, "topic"),
        ({"topic": "t", "payload": {"k": "\u0000"}}, "payload"),
        ({"topic": "t", "payload": {"\u0000": 1}}, "payload"),
        ({"topic": "t", "payload": ["\\u0000 is fine when escaped", "\u0000"]}, "payload"),
    ],
    ids=["topic", "payload-value", "payload-key", "payload-after-escaped-backslash"],
)
def test_nul_characters_are_refused_on_every_database(
    srv: JobsServer, body: dict[str, Any], name: str
) -> None:
    """PostgreSQL cannot store U+0000 in text or JSONB; both databases refuse it alike."""
    assert_field_error(srv.enqueue(body), name)
    assert srv.count() == 0
    escaped = srv.new_job("t", {"k": "\\u0000"})  # a backslash, then the text u0000
    assert escaped["payload"] == {"k": "\\u0000"}


def test_lone_surrogates_in_ids_and_filters_are_a_clean_4xx(srv: JobsServer) -> None:
    for path in (
        "/api/jobs/%ED%A0%80",
        "/api/jobs/%ED%A0%80/requeue",
        "/api/jobs/%ED%A0%80/cancel",
    ):
        method = srv.http.get if path.endswith("%80") else srv.http.post
        assert_error(method(path, headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.delete("/api/jobs/%ED%A0%80", headers=srv.su), 404, MSG_404_JOB)
    listed = srv.http.get("/api/jobs?topic=%ED%A0%80", headers=srv.su)
    assert listed.status_code in (200, 400), listed.text


def test_nul_characters_in_ids_are_404(srv: JobsServer) -> None:
    assert_error(srv.http.get("/api/jobs/a%00b", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.post("/api/jobs/a%00b/requeue", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.post("/api/jobs/a%00b/cancel", headers=srv.su), 404, MSG_404_JOB)
    assert_error(srv.http.delete("/api/jobs/a%00b", headers=srv.su), 404, MSG_404_JOB)


def test_nul_character_in_the_list_topic_filter_is_400(srv: JobsServer) -> None:
    listed = srv.http.get("/api/jobs", params={"topic": "\u0000"}, headers=srv.su)
    assert_field_error(listed, "topic")


# -- rules ---------------------------------------------------------------------------------


def test_enqueue_rule_for_users_manage_rule_superusers_only(
    make_server: Callable[..., JobsServer],
) -> None:
    srv = make_server(
        jobs.Config(auto_start=False, manage_rule=None, enqueue_rule='@request.auth.id != ""')
    )
    response = srv.enqueue({"topic": "t", "payload": {"by": "user"}}, who="user")
    assert response.status_code == 200, response.text
    job = response.json()
    assert srv.count() == 1
    srv.set_status(job["id"], "failed")
    for method, path in MANAGE_ENDPOINTS:
        assert_error(call(srv, method, path, job["id"], srv.user), 403, MSG_403)
        assert_error(call(srv, method, path, job["id"], {}), 401, MSG_401)
    assert_error(srv.enqueue({"topic": "t"}, who=None), 401, MSG_401)
    assert srv.count() == 1
    assert srv.db_status(job["id"]) == "failed"
    # superusers pass every rule
    assert srv.http.get("/api/jobs", headers=srv.su).json()["total"] == 1
    assert srv.http.post(f"/api/jobs/{job['id']}/requeue", headers=srv.su).status_code == 200
    assert srv.enqueue({"topic": "t"}).status_code == 200


def test_enqueue_rule_on_the_body_topic(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(
        jobs.Config(
            auto_start=False,
            enqueue_rule='@request.body.topic = "email:send" && @request.auth.id != ""',
        )
    )
    ok = srv.enqueue({"topic": "email:send", "payload": {"to": "x@example.com"}}, who="user")
    assert ok.status_code == 200, ok.text
    assert ok.json()["topic"] == "email:send"
    assert_error(srv.enqueue({"topic": "other"}, who="user"), 403, MSG_403)
    assert_error(srv.enqueue({"topic": "email:send"}, who=None), 401, MSG_401)
    assert_error(srv.enqueue({"topic": "other"}, who=None), 401, MSG_401)
    assert srv.count() == 1
    assert srv.enqueue({"topic": "other"}).status_code == 200  # superuser
    assert srv.count() == 2


def test_public_enqueue_and_a_manage_rule(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(
        jobs.Config(
            auto_start=False,
            enqueue_rule="true",
            manage_rule=f'@request.auth.email = "{USER_EMAIL}"',
        ),
        accounts=("user",),
    )
    guest = srv.enqueue({"topic": "t", "payload": "from a guest"}, who=None)
    assert guest.status_code == 200, guest.text
    assert srv.enqueue({"topic": "t"}, who="user").status_code == 200
    assert srv.count() == 2
    assert_error(srv.http.get("/api/jobs"), 401, MSG_401)
    assert_error(srv.http.get("/api/jobs/stats"), 401, MSG_401)
    listed = srv.http.get("/api/jobs", headers=srv.user)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 2
    stats = srv.http.get("/api/jobs/stats", headers=srv.user).json()
    assert stats["pending"] == 2
    job_id = guest.json()["id"]
    assert srv.http.get(f"/api/jobs/{job_id}", headers=srv.user).json()["payload"] == (
        "from a guest"
    )
    assert srv.http.delete(f"/api/jobs/{job_id}", headers=srv.user).json() == {"ok": True}
    assert srv.count() == 1


def test_empty_enqueue_rule_means_superusers_only(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(jobs.Config(auto_start=False, enqueue_rule="", manage_rule=""))
    assert_error(srv.enqueue({"topic": "t"}, who="user"), 403, MSG_403)
    assert_error(srv.enqueue({"topic": "t"}, who=None), 401, MSG_401)
    assert_error(srv.http.get("/api/jobs/stats", headers=srv.user), 403, MSG_403)
    assert srv.count() == 0
    assert srv.enqueue({"topic": "t"}).status_code == 200
    assert srv.count() == 1


def test_allowed_topics(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(jobs.Config(auto_start=False, allowed_topics=("a", "b")), accounts=("super",))
    response = srv.enqueue({"topic": "c"})
    assert_field_error(response, "topic", "validation_topic_not_allowed")
    assert srv.count() == 0
    assert srv.enqueue({"topic": "a"}).status_code == 200
    assert srv.enqueue({"topic": "b"}).status_code == 200
    assert srv.count() == 2


def test_http_disabled_by_env_answers_404(
    make_server: Callable[..., JobsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_HTTP_ENABLED", "false")
    srv = make_server(jobs.Config(auto_start=False), accounts=("super",))
    store = jobs.get_job_store(srv.app)
    assert store is not None
    job = store.enqueue("t", {"n": 1})  # the plugin itself works
    for method, path in [*ENDPOINTS, ("GET", "/api/jobs/openapi.json")]:
        response = call(srv, method, path, job.id, srv.su)
        assert_error(response, 404)
    assert srv.count() == 1
    assert srv.http.get("/api/health").status_code == 200


def test_without_the_plugin_the_api_is_404(make_server: Callable[..., JobsServer]) -> None:
    srv = make_server(None, accounts=("super",))
    job_id = UNKNOWN_ID
    for method, path in [*ENDPOINTS, ("GET", "/api/jobs/openapi.json")]:
        assert_error(call(srv, method, path, job_id, srv.su), 404)
    assert srv.http.get("/api/health").status_code == 200


# -- jobs that really run ------------------------------------------------------------------


def _wait_for_status(srv: JobsServer, job_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = srv.http.get(f"/api/jobs/{job_id}", headers=srv.su).json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, f"job never became {status}: {job}"
        time.sleep(0.05)


def test_enqueued_job_runs_then_fails_is_requeued_and_completes(
    make_server: Callable[..., JobsServer],
) -> None:
    calls: list[Any] = []
    lock = threading.Lock()

    def setup(store: jobs.JobStore) -> None:
        @store.handler("work")
        def work(job: jobs.Job) -> None:
            with lock:
                calls.append(job.payload)
                first = len(calls) == 1
            if first:
                raise RuntimeError("first attempt fails")

    srv = make_server(
        jobs.Config(poll_interval=0.2, shutdown_timeout=5, max_retries=0),
        accounts=("super",),
        setup=setup,
    )
    job = srv.new_job("work", {"n": 42})
    failed = _wait_for_status(srv, job["id"], "failed")
    assert "first attempt fails" in failed["last_error"]
    assert failed["retries"] == 0
    assert calls == [{"n": 42}]
    assert_error(srv.http.post(f"/api/jobs/{job['id']}/requeue"), 401, MSG_401)
    requeued = srv.http.post(f"/api/jobs/{job['id']}/requeue", headers=srv.su)
    assert requeued.status_code == 200, requeued.text
    completed = _wait_for_status(srv, job["id"], "completed")
    assert calls == [{"n": 42}, {"n": 42}]
    assert completed["retries"] == 0
    stats = srv.http.get("/api/jobs/stats", headers=srv.su).json()
    assert (stats["completed"], stats["failed"], stats["success_rate"]) == (1, 0, 1.0)
    response = srv.http.delete(f"/api/jobs/{job['id']}", headers=srv.su)
    assert response.status_code == 200, response.text  # a completed job can be deleted
    assert srv.db_status(job["id"]) is None


# -- priorities and unique keys -------------------------------------------------------------


def test_enqueue_with_a_priority_and_a_unique_key(srv: JobsServer) -> None:
    first = srv.new_job("report", {"n": 1}, priority=3, unique_key="report:42")
    assert first["priority"] == 3
    assert first["unique_key"] == "report:42"
    assert first["duplicate"] is False
    again = srv.enqueue({"topic": "report", "payload": {"n": 2}, "unique_key": "report:42"})
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == first["id"]
    assert again.json()["payload"] == {"n": 1}
    assert srv.count() == 1
    fetched = srv.http.get(f"/api/jobs/{first['id']}", headers=srv.su).json()
    assert fetched["priority"] == 3
    assert fetched["duplicate"] is False


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"topic": "t", "priority": 10}, "priority"),
        ({"topic": "t", "priority": "high"}, "priority"),
        ({"topic": "t", "unique_key": ""}, "unique_key"),
        ({"topic": "t", "unique_key": 5}, "unique_key"),
        ({"topic": "t", "unique_key": "k" * 256}, "unique_key"),
    ],
)
def test_invalid_priority_or_unique_key_is_400(
    srv: JobsServer, body: dict[str, Any], name: str
) -> None:
    assert_field_error(srv.enqueue(body), name)
    assert srv.count() == 0
