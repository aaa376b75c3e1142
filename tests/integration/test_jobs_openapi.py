"""The jobs API's OpenAPI document (``/api/jobs/openapi.json``) and the API against it.

1. The document is valid OpenAPI 3.1 (checked against the official meta-schema that
   schemathesis ships), its schemas are valid JSON Schema 2020-12, and real responses
   validate against them.
2. A bounded schemathesis 4 run (Python API: ``schemathesis.openapi.from_url`` and
   ``APIOperation.as_strategy`` under Hypothesis' ``@given``) against a live server on each
   database, with a superuser token: positive and negative cases for every operation, checks
   ``not_a_server_error``, ``response_schema_conformance``, ``status_code_conformance`` and
   ``content_type_conformance``. Runs are derandomized (the same cases every time). Every
   bug the fuzzing once found stays pinned by a fixed case (``FUZZ_REGRESSION_CASES``).
   (``negative_data_rejection`` is not used: unknown query parameters are ignored, as in
   PocketBase, which it reports.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import DATABASES, LiveServer
from pgfixtures import temporary_database
from pocketjobs import App
from pocketjobs.core.times import format_time
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.openapi import openapi_document

SUPER_EMAIL, SUPER_PASSWORD = "root@example.com", "super-secret-1"
MAX_PAYLOAD = 4096
#: Cases per operation and mode; raise it for a deeper run, e.g. PB_TEST_SCHEMATHESIS_EXAMPLES=500.
MAX_EXAMPLES = int(os.environ.get("PB_TEST_SCHEMATHESIS_EXAMPLES", "50"))
#: PB_TEST_SCHEMATHESIS_RANDOM=1: new random cases on every run instead of the fixed ones.
DERANDOMIZE = os.environ.get("PB_TEST_SCHEMATHESIS_RANDOM", "").lower() not in {"1", "true"}
OPERATIONS = [
    "enqueueJob", "listJobs", "jobStats", "getJob", "deleteJob", "requeueJob", "cancelJob",
    "listQueues", "pauseQueue", "resumeQueue", "listSchedules", "deleteSchedule",
]  # fmt: skip
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]

pytestmark = pytest.mark.timeout(300)


def _clean_env(mp: pytest.MonkeyPatch) -> None:
    mp.delenv("PB_DATABASE_URL", raising=False)
    for name in list(os.environ):
        if name.startswith("PB_JOBS_"):
            mp.delenv(name)


# -- the document --------------------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    document = openapi_document(MAX_PAYLOAD)
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # the OpenAPI 3.1 meta-schema; raises jsonschema_rs.ValidationError
    ids = {op.ok().definition.raw.get("operationId") for op in schema.get_all_operations()}
    assert ids == set(OPERATIONS)
    for component in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(component)  # valid JSON Schema 2020-12
    assert str(MAX_PAYLOAD) in str(document)  # the configured limit is documented


def test_a_broken_document_is_rejected_by_the_same_check() -> None:
    """The validity check above can fail (guards against a check that accepts anything)."""
    document = openapi_document(MAX_PAYLOAD)
    del document["info"]
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(document).validate()


# -- a live server per database ------------------------------------------------------------


@dataclass
class Served:
    app: App
    live: LiveServer
    token: str

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.token}


def _serve(data_dir: Path, db_url: str | None) -> Served:
    app = App(data_dir, db_url)
    jobs.register(app, jobs.Config(auto_start=False, max_payload_size=MAX_PAYLOAD))
    app.bootstrap()
    live: LiveServer | None = None
    try:
        app.auth.upsert_superuser(SUPER_EMAIL, SUPER_PASSWORD)
        live = LiveServer(app)
        live.start()
        response = httpx.post(
            f"{live.base_url}/api/collections/_superusers/auth-with-password",
            json={"identity": SUPER_EMAIL, "password": SUPER_PASSWORD},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return Served(app, live, response.json()["token"])
    except BaseException:
        if live is not None:
            live.stop()
        app.terminate()
        raise


@pytest.fixture(scope="module", params=DATABASES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("jobs-openapi") / "pb_data"
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp)
        if request.param == "postgres":
            admin_url: str = request.getfixturevalue("postgres_server_url")
            with temporary_database(admin_url) as url:
                server = _serve(data_dir, url)
                try:
                    yield server
                finally:
                    server.live.stop()
                    server.app.terminate()
        else:
            server = _serve(data_dir, None)
            try:
                yield server
            finally:
                server.live.stop()
                server.app.terminate()


@pytest.fixture
def fresh(served: Served) -> Served:
    """``served`` with empty ``_jobs`` and ``_jobs_schedules`` tables."""
    served.app.db.execute("DELETE FROM _jobs")
    served.app.db.execute("DELETE FROM _jobs_schedules")
    return served


def test_served_document_matches_and_real_responses_validate(fresh: Served) -> None:
    with httpx.Client(base_url=fresh.base_url, timeout=30) as http:
        document = http.get("/api/jobs/openapi.json").json()
        assert document == openapi_document(MAX_PAYLOAD)
        components = {"components": document["components"]}

        def check(ref: str, instance: Any) -> None:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{ref}", **components}, validate_formats=True
            )
            validator.validate(instance)

        job = http.post(
            "/api/jobs/enqueue",
            json={"topic": "t", "payload": {"a": [1]}, "delay": "1m", "timeout": 2.5},
            headers=fresh.headers,
        ).json()
        check("Job", job)
        assert job["timeout"] == 2.5
        cancelled = http.post(f"/api/jobs/{job['id']}/cancel", headers=fresh.headers).json()
        check("Job", cancelled)
        assert cancelled["status"] == "cancelled"
        check("Error", http.post("/api/jobs/nope/cancel", headers=fresh.headers).json())
        _fail_with_history(fresh, job["id"])
        failed = http.get(f"/api/jobs/{job['id']}", headers=fresh.headers).json()
        check("Job", failed)
        assert [error["attempt"] for error in failed["errors"]] == [1, 2]
        check("Error", http.post(f"/api/jobs/{job['id']}/cancel", headers=fresh.headers).json())
        check("JobList", http.get("/api/jobs", headers=fresh.headers).json())
        http.post("/api/jobs/enqueue", json={"topic": "orphan"}, headers=fresh.headers)
        stats = http.get("/api/jobs/stats", headers=fresh.headers).json()
        check("JobStats", stats)
        assert stats["orphaned_topics"] == {"orphan": 1}  # pending, and no worker handles it
        assert stats["orphaned_queues"] == {"default": 1}  # and no worker works on its queue
        with pytest.raises(jsonschema_rs.ValidationError):
            check("JobStats", {**stats, "orphaned_queues": {"default": 0}})
        check("Queue", http.post("/api/jobs/queues/mail/pause", headers=fresh.headers).json())
        queues = http.get("/api/jobs/queues", headers=fresh.headers).json()
        check("QueueList", queues)
        assert [queue["name"] for queue in queues["items"]] == ["default", "mail"]
        check("Queue", http.post("/api/jobs/queues/mail/resume", headers=fresh.headers).json())
        check("Error", http.post("/api/jobs/queues/a%20b/pause", headers=fresh.headers).json())
        check("Error", http.get("/api/jobs/nope", headers=fresh.headers).json())
        check("Error", http.post("/api/jobs/enqueue", json={}, headers=fresh.headers).json())
        check("Error", http.get("/api/jobs/stats").json())
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Job", {**job, "status": "bogus"})
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Job", {**failed, "errors": [{"at": "yesterday", "attempt": 1, "error": "x"}]})
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Job", {**job, "timeout": "2.5"})


def _fail_with_history(server: Served, job_id: str) -> None:
    """Make the job failed after two attempts, each with its error (as a worker leaves it)."""
    store = jobs.get_job_store(server.app)
    assert store is not None
    store.requeue(job_id)
    at = "2025-01-08T12:00:00.000Z"
    errors = [{"at": at, "attempt": n, "error": f"boom {n}"} for n in (1, 2)]
    value = "CAST(? AS jsonb)" if server.app.is_postgres() else "?"
    server.app.db.execute(
        "UPDATE _jobs SET status = 'failed', last_error = 'boom 2', locked_until = run_at,"
        f" errors = {value} WHERE id = ?",
        (json.dumps(errors), job_id),
    )


def _seed_schedules(server: Served, *names: str) -> list[str]:
    """Rows of schedules that no process registers (inactive), each with a last run and
    job, as a dispatcher that has since stopped leaves them."""
    encode = (lambda t: t) if server.app.is_postgres() else format_time
    long_ago = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)
    for name in names:
        server.app.db.execute(
            "INSERT INTO _jobs_schedules (name, topic, cron, tz, catch_up, queue, payload,"
            " next_run, created, seen, last_run, last_job_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, "seed", "0 7 * * 1-5", "Europe/Paris", "last", "mail", '{"n": [1]}',
             encode(datetime(2025, 1, 9, 6, 0, tzinfo=UTC)), encode(long_ago),
             encode(long_ago), encode(datetime(2025, 1, 8, 6, 0, tzinfo=UTC)),
             "0194451c-5c00-7000-8000-000000000000"),
        )  # fmt: skip
    return list(names)


def test_listed_schedules_validate(fresh: Served) -> None:
    store = jobs.get_job_store(fresh.app)
    assert store is not None
    with httpx.Client(base_url=fresh.base_url, timeout=30, headers=fresh.headers) as http:
        components = {"components": http.get("/api/jobs/openapi.json").json()["components"]}

        def check(ref: str, instance: Any) -> None:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{ref}", **components}, validate_formats=True
            )
            validator.validate(instance)

        def listed() -> dict[str, Any]:
            response = http.get("/api/jobs/schedules")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            check("ScheduleList", body)
            return {item["name"]: item for item in body["items"]}

        assert listed() == {}
        store.periodic("*/5 * * * *", "reports:daily", {"x": 1}, tz="Europe/Paris", catch_up="last")
        registered = listed()["reports:daily"]  # this process's, not written yet
        check("Schedule", registered)
        assert (registered["active"], registered["here"]) == (False, True)
        assert (registered["cron"], registered["tz"]) == ("*/5 * * * *", "Europe/Paris")
        assert registered["last_run"] is registered["last_job_id"] is None
        assert registered["payload"] == {"x": 1}

        store.start()  # a dispatcher writes it within its first maintenance round
        try:
            deadline = time.monotonic() + 15
            while not (written := listed()["reports:daily"])["active"]:
                assert time.monotonic() < deadline, "the schedule was never written"
                time.sleep(0.05)
        finally:
            store.stop()
        check("Schedule", written)
        assert written["here"] is True
        assert written["next_run"] >= registered["next_run"]  # a slot may pass meanwhile
        assert written["queue"] == "default"

        _seed_schedules(fresh, "gone")
        gone = listed()["gone"]
        check("Schedule", gone)
        assert (gone["active"], gone["here"], gone["catch_up"]) == (False, False, "last")
        assert gone["last_run"] == "2025-01-08T06:00:00.000Z"
        assert gone["last_job_id"] == "0194451c-5c00-7000-8000-000000000000"
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Schedule", {**gone, "catch_up": "all"})
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Schedule", {key: value for key, value in gone.items() if key != "here"})
        with pytest.raises(jsonschema_rs.ValidationError):
            check("Schedule", {**gone, "next_run": None})

        deleted = http.delete("/api/jobs/schedules/gone")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"ok": True}
        assert "gone" not in listed()
        missing = http.delete("/api/jobs/schedules/gone")
        assert missing.status_code == 404
        check("Error", missing.json())
        assert missing.json()["message"] == "The requested schedule wasn't found."
        check("Error", httpx.get(f"{fresh.base_url}/api/jobs/schedules").json())


# -- schemathesis --------------------------------------------------------------------------


def _seeded_job_ids(server: Served) -> list[str]:
    """A job in each status, so get/delete/requeue also meet real ids."""
    store = jobs.get_job_store(server.app)
    assert store is not None
    ids = []
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        job = store.enqueue("seed", {"status": status})
        server.app.db.execute("UPDATE _jobs SET status = ? WHERE id = ?", (status, job.id))
        ids.append(job.id)
    return ids


def _schema(server: Served) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}/api/jobs/openapi.json")


def _run_schemathesis(
    server: Served, operation_id: str, mode: GenerationMode, headers: dict[str, str]
) -> int:
    """Fuzz one operation; return how many cases were sent (raises on a failed check)."""
    operation = _schema(server).find_operation_by_id(operation_id)
    strategy = operation.as_strategy(generation_mode=mode)
    if "{job_id}" in operation.path:
        real_ids = st.sampled_from(_seeded_job_ids(server))
        strategy = st.one_of(
            strategy,
            real_ids.flatmap(
                lambda job_id: operation.as_strategy(
                    generation_mode=mode, path_parameters={"job_id": job_id}
                )
            ),
        )
    if operation.path == "/api/jobs/schedules/{name}":
        names = ["seed-1", "seed two", "rapport·quotidien", "with/slash"]
        real_names = st.sampled_from(_seed_schedules(server, *names))
        strategy = st.one_of(
            strategy,
            real_names.flatmap(
                lambda name: operation.as_strategy(
                    generation_mode=mode, path_parameters={"name": name}
                )
            ),
        )
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
    return sent


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_schemathesis(fresh: Served, operation_id: str, mode: GenerationMode) -> None:
    sent = _run_schemathesis(fresh, operation_id, mode, fresh.headers)
    assert sent > 0


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_schemathesis_without_a_token(fresh: Served, operation_id: str) -> None:
    """Every operation answers a documented 401 to a guest."""
    sent = _run_schemathesis(fresh, operation_id, GenerationMode.POSITIVE, {})
    assert sent > 0


# -- what schemathesis once found: each case stays a regression test ------------------------

FUZZ_REGRESSION_CASES = [
    pytest.param(
        "enqueueJob", {"body": {"topic": "t", "run_at": "0288-07-12T08:13:55Z"}},
        id="run_at-year-below-1000",
    ),
    pytest.param(
        "enqueueJob", {"body": {"topic": "t", "run_at": "0001-01-01T00:00:00+00:30"}},
        id="run_at-overflows-in-utc",
    ),
    pytest.param(
        "enqueueJob", {"body": {"topic": "t", "max_retries": 2**63}},
        id="max_retries-beyond-int64",
    ),
    pytest.param(
        "listJobs", {"query": {"offset": 2**63}},
        id="offset-beyond-int64",
    ),
    pytest.param(
        "listJobs", {"query": {"topic": "\x00"}},
        id="topic-filter-with-nul",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("operation_id", "parts"), FUZZ_REGRESSION_CASES)
def test_schemathesis_regression_cases(
    fresh: Served, operation_id: str, parts: dict[str, Any]
) -> None:
    operation = _schema(fresh).find_operation_by_id(operation_id)
    case = operation.Case(**parts)
    case.call_and_validate(headers=fresh.headers, checks=CHECKS)
