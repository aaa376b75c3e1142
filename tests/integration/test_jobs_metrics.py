"""Prometheus metrics (``metrics.py``, ``exporter.py``) on both databases.

A known workload runs in-process and ``GET /api/jobs/metrics`` is scraped over real HTTP
and parsed with ``prometheus_client``'s text parser: exact counters, histogram counts and
gauges. Then the rule (401/403/200), the gauges of running and waiting jobs, their bounded
query plan under a large backlog, metrics turned off, and ``worker``/``serve --metrics``
as real subprocesses.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from conftest import LiveServer
from jobs_support import Harness, Node, harness_fixture, wait_until
from pocketjobs import App
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.drivers import QueueCounts, driver_for
from support import clear_jobs_env, free_port, login, run_app, run_cli, run_process

harness = harness_fixture

SUPER_EMAIL, SUPER_PASSWORD = "root@example.com", "super-secret-1"
USER_EMAIL, USER_PASSWORD = "alice@example.com", "alice-password"
METRICS = "/api/jobs/metrics"
COUNTERS = ("enqueued", "completed", "failed", "retried", "cancelled", "snoozed")

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


# -- helpers -------------------------------------------------------------------------------


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: name -> sorted labels -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_queue_topic(samples: Samples, name: str, **extra: str) -> dict[tuple[str, str], float]:
    """The samples of ``name`` (with the ``extra`` labels) as ``(queue, topic) -> value``."""
    found: dict[tuple[str, str], float] = {}
    for labels, value in samples.get(name, {}).items():
        label = dict(labels)
        if all(label.get(key) == wanted for key, wanted in extra.items()):
            found[(label["queue"], label["topic"])] = value
    return found


def gauges(samples: Samples) -> dict[tuple[str, str], float]:
    """``pocketjobs_jobs`` as ``(queue, status) -> value``."""
    return {
        (dict(labels)["queue"], dict(labels)["status"]): value
        for labels, value in samples.get("pocketjobs_jobs", {}).items()
    }


def counters(samples: Samples) -> dict[str, dict[tuple[str, str], float]]:
    """Every job counter (``enqueued``, ...) as ``(queue, topic) -> value``, empty ones left
    out."""
    found = {name: by_queue_topic(samples, f"pocketjobs_jobs_{name}_total") for name in COUNTERS}
    return {name: values for name, values in found.items() if values}


@dataclass
class Served:
    """A node's app on a live server, with a superuser's and a user's token."""

    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def scrape(self, who: str | None = "super", **headers: str) -> httpx.Response:
        if who is not None:
            headers["Authorization"] = self.tokens[who]
        return self.http.get(METRICS, headers=headers)

    def samples(self) -> Samples:
        response = self.scrape()
        assert response.status_code == 200, response.text
        return parse(response.text)


@contextlib.contextmanager
def served(node: Node) -> Iterator[Served]:
    """Serve ``node``'s app (its config must have ``http_enabled``) with two accounts."""
    node.app.auth.upsert_superuser(SUPER_EMAIL, SUPER_PASSWORD)
    node.app.auth.create("users", USER_EMAIL, USER_PASSWORD, USER_PASSWORD)
    live = LiveServer(node.app)
    live.start()
    try:
        with httpx.Client(base_url=live.base_url, timeout=30) as http:
            server = Served(http)
            server.tokens["super"] = login(http, "_superusers", SUPER_EMAIL, SUPER_PASSWORD)
            server.tokens["user"] = login(http, "users", USER_EMAIL, USER_PASSWORD)
            yield server
    finally:
        live.stop()


class _RollBack(Exception):
    pass


# -- a known workload, scraped over HTTP ---------------------------------------------------


def test_a_known_workload_is_counted_exactly(harness: Harness) -> None:
    """6 completed, 2 retried twice then failed (queue ``mail``), 2 snoozed once then
    completed, 3 pending jobs cancelled (a duplicate and a rolled-back enqueue not
    counted), 2 delayed jobs left pending."""
    napped: set[str] = set()

    def nap(job: jobs.Job) -> None:
        if job.id not in napped:
            napped.add(job.id)
            raise jobs.Snooze(0.05)

    def flaky(job: jobs.Job) -> None:
        raise RuntimeError("always")

    node = harness.node(
        auto_start=False, http_enabled=True, max_retries=2, queues={"default": 4, "mail": 2}
    )
    store = node.store
    store.register("ok", lambda job: None)
    store.register("flaky", flaky, queue="mail")
    store.register("nap", nap)
    store.enqueue_many("ok", list(range(6)))
    store.enqueue_many("ok", ["later", "later"], delay=3600)
    store.enqueue_many("flaky", [1, 2])
    store.enqueue_many("nap", [1, 2])
    unhandled = store.enqueue_many("unhandled", [1, 2, 3], unique_keys=["a", "a", "b"])
    assert [job.duplicate for job in unhandled] == [False, True, False]
    unhandled.append(store.enqueue("unhandled", 4))
    with contextlib.suppress(_RollBack), node.app.db.transaction() as tx:
        store.enqueue("ok", "rolled back", tx=tx)
        raise _RollBack
    for job in unhandled:
        assert store.cancel(job.id).status == "cancelled"
    store.cancel(unhandled[0].id)  # cancelled already: not counted again
    store.start()
    wait_until(
        lambda: (stats := store.stats()).completed == 8 and stats.failed == 2,
        20,
        "the workload to finish",
    )
    store.stop()  # hands the last events to the hooks

    with served(node) as server:
        response = server.scrape()
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse(response.text)
        assert counters(samples) == {
            "enqueued": {
                ("default", "ok"): 8,
                ("mail", "flaky"): 2,
                ("default", "nap"): 2,
                ("default", "unhandled"): 3,
            },
            "completed": {("default", "ok"): 6, ("default", "nap"): 2},
            "failed": {("mail", "flaky"): 2},
            "retried": {("mail", "flaky"): 4},
            "cancelled": {("default", "unhandled"): 3},
            "snoozed": {("default", "nap"): 2},
        }
        attempts = {("default", "ok"): 6, ("mail", "flaky"): 6, ("default", "nap"): 4}
        for histogram in ("pocketjobs_job_run_seconds", "pocketjobs_job_queue_wait_seconds"):
            assert by_queue_topic(samples, f"{histogram}_count") == attempts, histogram
            assert by_queue_topic(samples, f"{histogram}_bucket", le="+Inf") == attempts
            assert all(value >= 0 for value in by_queue_topic(samples, f"{histogram}_sum").values())
        assert gauges(samples) == {
            ("default", "pending"): 2,
            ("default", "processing"): 0,
            ("mail", "pending"): 0,
            ("mail", "processing"): 0,
        }
        # A scraper that asks for OpenMetrics gets it.
        response = server.scrape(accept="application/openmetrics-text; version=1.0.0")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        families = {family.name: family for family in openmetrics_families(response.text)}
        (completed,) = [
            sample
            for sample in families["pocketjobs_jobs_completed"].samples
            if sample.name.endswith("_total") and sample.labels["topic"] == "ok"
        ]
        assert completed.value == 6


def test_the_queue_wait_runs_from_due_to_claimed(harness: Harness) -> None:
    node = harness.node(auto_start=False)
    node.store.register("ok", lambda job: None)
    late = node.store.enqueue("ok", run_at=now_utc() - timedelta(minutes=2))
    node.store.start()
    node.wait_status(late.id, "completed")
    node.store.stop()
    metrics = node.store.metrics
    assert metrics is not None
    samples = parse(metrics.render(None)[0].decode())
    name = "pocketjobs_job_queue_wait_seconds"
    key = ("default", "ok")
    assert 120 <= by_queue_topic(samples, f"{name}_sum")[key] < 150
    assert by_queue_topic(samples, f"{name}_bucket", le="60.0")[key] == 0
    assert by_queue_topic(samples, f"{name}_bucket", le="300.0")[key] == 1
    assert by_queue_topic(samples, "pocketjobs_job_run_seconds_bucket", le="1.0")[key] == 1


def test_each_app_has_its_own_registry(harness: Harness) -> None:
    first = harness.node(auto_start=False)
    second = harness.node(auto_start=False)
    first.store.enqueue_many("t", [1, 2, 3])
    assert first.store.metrics is not None
    assert second.store.metrics is not None
    assert first.store.metrics.registry is not second.store.metrics.registry
    one = parse(first.store.metrics.render(None)[0].decode())
    other = parse(second.store.metrics.render(None)[0].decode())
    assert counters(one) == {"enqueued": {("default", "t"): 3}}
    assert counters(other) == {}
    # Both read the one database for the gauges.
    assert gauges(one)[("default", "pending")] == gauges(other)[("default", "pending")] == 3


# -- the gauges ----------------------------------------------------------------------------


def test_gauges_count_running_and_waiting_jobs_now(harness: Harness) -> None:
    gate = harness.gate()
    started = threading.Semaphore(0)

    def hold(job: jobs.Job) -> None:
        started.release()
        gate.wait(30)

    node = harness.node(auto_start=False, queues={"mail": 2, "quiet": 1})
    node.store.register("hold", hold, queue="mail")
    node.store.enqueue_many("hold", list(range(5)))
    node.store.enqueue_many("elsewhere", list(range(4)), queue="other")
    node.store.start()
    for _ in range(2):
        assert started.acquire(timeout=10)
    metrics = node.store.metrics
    assert metrics is not None
    samples = parse(metrics.render(None)[0].decode())
    assert gauges(samples) == {
        ("mail", "pending"): 3,
        ("mail", "processing"): 2,
        ("other", "pending"): 4,  # no one works on it here: it has jobs
        ("other", "processing"): 0,
        ("quiet", "pending"): 0,  # worked on here: reported, empty
        ("quiet", "processing"): 0,
    }
    metrics.pending_cap = 2  # counted up to the cap
    capped = gauges(parse(metrics.render(None)[0].decode()))
    assert (capped[("mail", "pending")], capped[("other", "pending")]) == (2, 2)
    assert capped[("mail", "processing")] == 2
    gate.set()


def test_a_database_that_cannot_be_read_leaves_out_the_gauges_only(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    node = harness.node(auto_start=False)
    node.store.enqueue("t")
    metrics = node.store.metrics
    assert metrics is not None
    node.app.db.execute("ALTER TABLE _jobs RENAME TO _jobs_away")
    try:
        samples = parse(metrics.render(None)[0].decode())
    finally:
        node.app.db.execute("ALTER TABLE _jobs_away RENAME TO _jobs")
    assert gauges(samples) == {}
    assert counters(samples) == {"enqueued": {("default", "t"): 1}}
    assert "jobs metrics: could not count the jobs per queue" in caplog.text


FINISHED = 20_000
BACKLOG_QUEUES = ("q0", "q1", "q2")
BACKLOG_PER_QUEUE = 10_000
CAP = 1_000


@pytest.fixture
def backlog(data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A young table analyzed with 100 pending jobs per queue, then 20,000 finished jobs
    and a backlog of 30,000 pending jobs in three queues: statistics that lag a burst of
    enqueues (they say every job is pending, so a sequential scan looks cheap)."""
    clear_jobs_env(monkeypatch)
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.must_register(app, jobs.Config(auto_start=False))
    app.bootstrap()
    old = now_utc() - timedelta(hours=1)
    for queue in BACKLOG_QUEUES:
        store.enqueue_many("t", list(range(100)), run_at=old, queue=queue)
    app.db.execute("ANALYZE _jobs" if app.is_postgres() else "ANALYZE")
    store.enqueue_many("done", list(range(FINISHED)), run_at=old)
    app.db.execute("UPDATE _jobs SET status = 'completed' WHERE topic = 'done'")
    for queue in BACKLOG_QUEUES:
        for start in range(100, BACKLOG_PER_QUEUE, 5_000):
            count = min(5_000, BACKLOG_PER_QUEUE - start)
            store.enqueue_many("t", list(range(count)), run_at=old, queue=queue)
    yield app
    app.terminate()


def test_the_gauge_query_reads_at_most_the_cap_per_queue(backlog: App) -> None:
    """The pending count per queue stops at the cap whatever the backlog (its scan of
    idx_jobs_pending reads at most ``CAP`` entries per queue, never a bitmap of the queue's
    whole range nor the table); the processing count reads idx_jobs_locked."""
    app = backlog
    driver = driver_for(app.db)
    counts = driver.jobs_count_by_queue(app.db, pending_cap=CAP)
    assert counts == {queue: QueueCounts(CAP, 0) for queue in BACKLOG_QUEUES}
    plan = driver.count_by_queue_plan(app.db, pending_cap=CAP)
    if not app.is_postgres():
        assert "SEARCH p USING INDEX idx_jobs_pending (queue=?)" in plan, plan
        assert "SCAN _jobs USING INDEX idx_jobs_locked" in plan, plan
        # No scan of the table itself: every read of _jobs (as _jobs, j or p) is in an index.
        assert not [line for line in plan.splitlines() if re.fullmatch(r"SCAN (_jobs|j|p)", line)]
        return
    assert "Seq Scan" not in plan, plan
    assert "Bitmap" not in plan, plan
    count_scans = [line for line in plan.splitlines() if "on _jobs p " in line]
    assert len(count_scans) == 1, plan
    (scan,) = count_scans
    assert "idx_jobs_pending" in scan, plan
    rows = int(re.search(r"rows=(\d+)", scan).group(1))  # type: ignore[union-attr]
    loops = int(re.search(r"loops=(\d+)", scan).group(1))  # type: ignore[union-attr]
    assert rows <= CAP, plan  # per loop: one per queue
    assert loops == len(BACKLOG_QUEUES), plan
    # The loose scan finds each queue with one probe of the index.
    probes = [line for line in plan.splitlines() if "on _jobs j " in line]
    assert probes, plan
    assert all(int(re.search(r"rows=(\d+)", line).group(1)) <= 1 for line in probes), plan  # type: ignore[union-attr]
    assert "idx_jobs_locked" in plan, plan


# -- the rule and the switch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "guest", "user"),
    [(None, 401, 403), ("", 401, 403), ('@request.auth.id != ""', 401, 200), ("true", 200, 200)],
)
def test_the_metrics_rule_guards_the_endpoint(
    harness: Harness, rule: str | None, guest: int, user: int
) -> None:
    node = harness.node(auto_start=False, http_enabled=True, metrics_rule=rule)
    with served(node) as server:
        responses = {who: server.scrape(who) for who in (None, "user", "super")}
        assert {who: r.status_code for who, r in responses.items()} == {
            None: guest,
            "user": user,
            "super": 200,
        }
        for response in responses.values():
            if response.status_code == 200:
                assert "pocketjobs_jobs{" in response.text
            else:
                assert response.json()["status"] == response.status_code
                assert "pocketjobs" not in response.text


def test_a_rule_on_a_header_lets_a_scraper_in_without_a_token(harness: Harness) -> None:
    rule = '@request.headers.x_metrics_key = "s3cret"'  # the manual's example
    node = harness.node(auto_start=False, http_enabled=True, metrics_rule=rule)
    with served(node) as server:
        assert server.scrape(None).status_code == 401
        assert server.scrape("user").status_code == 403
        assert server.http.get(METRICS, headers={"X-Metrics-Key": "wrong"}).status_code == 401
        response = server.http.get(METRICS, headers={"X-Metrics-Key": "s3cret"})
        assert response.status_code == 200, response.text
        assert "pocketjobs_jobs{" in response.text


def test_metrics_off_bind_no_hook_and_hide_the_endpoint(harness: Harness) -> None:
    node = harness.node(auto_start=False, http_enabled=True, metrics=False)
    assert node.store.metrics is None
    assert node.store.on_job_start.length() == 0
    assert node.store.on_job_done.length() == 0
    with served(node) as server:
        response = server.scrape()
        assert response.status_code == 404
        assert response.json()["message"] == "The jobs metrics are off."


def test_metrics_bind_no_hook_and_count_past_a_hook_that_stops_the_chain(
    harness: Harness,
) -> None:
    """The metrics count ended attempts on the events thread, not through a hook: none is
    bound, and a done hook that never calls ``e.next()`` cannot keep one from being
    counted."""
    node = harness.node(auto_start=False)
    metrics = node.store.metrics
    assert metrics is not None
    assert (node.store.on_job_start.length(), node.store.on_job_done.length()) == (0, 0)
    seen: list[str] = []
    node.store.on_job_done.bind_func(lambda e: seen.append(e.job.id))  # no e.next()
    node.store.register("ok", lambda job: None)
    job = node.store.enqueue("ok")
    node.store.start()
    node.wait_status(job.id, "completed")
    node.store.stop()  # hands the last events to the hooks
    assert seen == [job.id]
    samples = parse(metrics.render(None)[0].decode())
    assert by_queue_topic(samples, "pocketjobs_jobs_completed_total") == {("default", "ok"): 1}


# -- worker and serve --metrics ------------------------------------------------------------


def test_worker_serves_its_metrics(data_dir: Path, db_url: str | None) -> None:
    """``worker --metrics`` (the example app): the attempts it ran and the gauges, at
    ``/metrics`` without a token; the address is free again once it stopped."""
    app = App(data_dir=data_dir, database_url=db_url)
    store = jobs.client(app)
    app.bootstrap()
    try:
        ids = [store.enqueue("demo:echo", {"n": n}).id for n in range(5)]
        ids.append(store.enqueue("demo:echo", {"fail": True}, max_retries=0).id)
        store.enqueue("nobody", queue="elsewhere")
        port = free_port()
        with run_process(
            "worker", "--metrics", f"127.0.0.1:{port}", data_dir=data_dir, db_url=db_url,
            ready_log="Worker started",
        ) as worker:  # fmt: skip
            assert f"Jobs metrics served at http://127.0.0.1:{port}/metrics" in worker.log_text()
            url = f"http://127.0.0.1:{port}/metrics"

            def scraped() -> Samples | None:
                samples = parse(httpx.get(url, timeout=10).text)
                found = counters(samples)
                done = found.get("completed", {}).get(("default", "demo:echo"))
                # Counters count attempts as they end; the gauges read the database, which
                # has the outcomes once the completer's batch is written, a moment later.
                settled = gauges(samples).get(("default", "processing")) == 0
                return samples if done == 5 and found.get("failed") and settled else None

            samples = wait_until(scraped, 20, "the worker's counters and settled outcomes")
            assert counters(samples) == {
                "completed": {("default", "demo:echo"): 5},
                "failed": {("default", "demo:echo"): 1},
            }  # the client enqueued: not this process
            assert by_queue_topic(samples, "pocketjobs_job_run_seconds_count") == {
                ("default", "demo:echo"): 6
            }
            assert gauges(samples) == {
                ("default", "pending"): 0,
                ("default", "processing"): 0,
                ("elsewhere", "pending"): 1,
                ("elsewhere", "processing"): 0,
            }
            assert {store.get(job_id).status for job_id in ids} == {"completed", "failed"}
            worker.stop_cleanly()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            sock.bind(("127.0.0.1", port))  # no one listens there any more
    finally:
        app.terminate()


def test_serve_exposes_the_metrics_on_both_addresses(data_dir: Path, db_url: str | None) -> None:
    port = free_port()
    with run_app("--metrics", f"127.0.0.1:{port}", data_dir=data_dir, db_url=db_url) as server:
        exported = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert exported.status_code == 200
        assert "pocketjobs_jobs_enqueued_total" in exported.text
        with server.client() as http:
            assert http.get(METRICS).status_code == 401  # the app's own address needs the rule
        server.stop_cleanly()


@pytest.mark.parametrize(
    "address", ["9108", "127.0.0.1", ":9108", "127.0.0.1:0", "127.0.0.1:70000", "host.invalid:9108"]
)
def test_worker_refuses_a_bad_metrics_address(address: str, data_dir: Path) -> None:
    result = run_cli("worker", "--metrics", address, data_dir=data_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "--metrics" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (data_dir / "data.db").exists()  # refused before anything started


def test_worker_refuses_a_taken_metrics_address(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("worker", "--metrics", f"127.0.0.1:{port}", data_dir=data_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: --metrics 127.0.0.1:{port}: cannot listen there")
    assert "Traceback" not in result.stderr


def test_worker_refuses_metrics_when_they_are_off(data_dir: Path) -> None:
    result = run_cli(
        "worker", "--metrics", f"127.0.0.1:{free_port()}", data_dir=data_dir,
        env={"PB_JOBS_METRICS": "0"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the jobs metrics are off" in result.stderr
