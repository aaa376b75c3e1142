"""The jobs plugin embedded in a Starlette or FastAPI app (``jobs.asgi``, ``jobs.lifespan``).

Two hosts, each served by uvicorn over real HTTP on SQLite:

* a plain Starlette app, in-process, with the kernel app mounted under ``/admin/queue``:
  the kernel's routes and error shapes through the mount, the dispatcher started and
  stopped by the lifespan, a user's lifespan composed with it, the dashboard's redirect
  and security headers under the prefix;
* the FastAPI example (``examples/fastapi/main.py``), run as a real uvicorn subprocess:
  its own routes, a job enqueued by its route and one through the mounted jobs API, both
  run by the embedded dispatcher, a graceful shutdown that lets a running job finish, and
  the mounted dashboard in Chromium (Playwright, as ``test_jobs_dashboard.py`` does),
  which must ask for nothing outside ``/jobs/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import jobs_support
from dashboard_support import CHROMIUM_ARGS, assert_security_headers
from pocketjobs import App
from pocketjobs.apis import ServeAborted
from pocketjobs.core import BootstrapEvent, ServeEvent, TerminateEvent
from pocketjobs.plugins import jobs
from pocketjobs.tools.hook import Handler
from support import REPO_ROOT, AppProcess, ProcessError, child_env, free_port, run_cli

EMAIL = "embed-admin@example.com"
PASSWORD = "embed-admin-password-1"
PREFIX = "/admin/queue"
FASTAPI_EXAMPLE = REPO_ROOT / "examples" / "fastapi" / "main.py"
#: Chromium logs a failed sign-in (a 400 from the auth route) as a console error.
BAD_LOGIN_LOG = "the server responded with a status of 400"

T = TypeVar("T")

pytestmark = pytest.mark.timeout(240)


def wait_until(predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """``jobs_support.wait_until`` with the longer wait a browser test needs."""
    return jobs_support.wait_until(predicate, timeout, what)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is the kernel's JSON error with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def check_mounted_dashboard(http: httpx.Client, prefix: str) -> None:
    """The dashboard under ``prefix``: the page, every asset it references (resolved
    against the page's URL, as a browser does), all with the security headers, and the
    trailing-slash redirect staying under the prefix."""
    page = http.get(f"{prefix}/_/jobs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert_security_headers(page)
    assert "<script>" not in page.text  # no inline script: the CSP would refuse it
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(refs) == 3, refs
    for ref in refs:
        path = urlsplit(urljoin(str(page.url), ref)).path
        assert path.startswith(f"{prefix}/_/jobs/assets/"), (ref, path)
        asset = http.get(path)
        assert asset.status_code == 200, path
        assert asset.content
        assert_security_headers(asset)
    slash = http.get(f"{prefix}/_/jobs/", follow_redirects=False)
    assert slash.status_code == 308
    assert slash.headers["location"] == f"{prefix}/_/jobs"
    assert_security_headers(slash)
    assert_error(http.get(f"{prefix}/_/jobs/assets/index.html"), 404)


# -- a plain Starlette host, in-process ---------------------------------------------------


class HostServer:
    """``asgi`` served by uvicorn with its lifespan on, on a free port, in a thread."""

    def __init__(self, asgi: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            asgi, host="127.0.0.1", port=self.port, lifespan="on", log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="host-server", daemon=True)

    def __enter__(self) -> HostServer:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), what="startup")
        assert self._server.started, "the host app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(60)
        assert not self._thread.is_alive(), "the host app did not stop"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)


class Recorder:
    """What the test's hooks and lifespan saw, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []


@pytest.fixture
def kernel(tmp_path: Path, clean_jobs_env: None) -> Iterator[tuple[App, jobs.JobStore]]:
    app = App(data_dir=tmp_path / "pb_data")
    store = jobs.must_register(app, jobs.Config(workers=2, poll_interval=0.2, max_retries=0))
    yield app, store
    if app.is_bootstrapped():
        app.terminate()


def test_a_starlette_app_mounts_the_jobs_api_and_runs_the_dispatcher(
    kernel: tuple[App, jobs.JobStore],
) -> None:
    app, store = kernel
    seen = Recorder()
    done = threading.Event()

    @store.handler("report:build")
    def build(job: jobs.Job) -> None:
        done.set()

    def on_serve(event: ServeEvent) -> None:
        # As under ``serve``: the database is open when the on_serve chain runs.
        seen.events.append(f"serve bootstrapped={app.is_bootstrapped()}")
        event.next()

    app.on_serve.bind(Handler(fn=on_serve, id="testEmbeddedServe"))
    threads: dict[str, str] = {}

    def on_bootstrap(event: BootstrapEvent) -> None:
        threads["bootstrap"] = threading.current_thread().name
        event.next()

    def on_terminate(event: TerminateEvent) -> None:
        threads["terminate"] = threading.current_thread().name
        event.next()

    app.on_bootstrap.bind(Handler(fn=on_bootstrap, id="testEmbeddedBootstrap"))
    app.on_terminate.bind(Handler(fn=on_terminate, id="testEmbeddedTerminate"))

    @asynccontextmanager
    async def own_lifespan(host: Starlette) -> AsyncIterator[dict[str, str]]:
        seen.events.append(f"own start running={store.is_running()}")
        yield {"greeting": "hello"}
        seen.events.append(f"own end running={store.is_running()}")

    async def home(request: Request) -> JSONResponse:
        threads["loop"] = threading.current_thread().name
        return JSONResponse({"home": True, "greeting": request.state.greeting})

    async def signup(request: Request) -> JSONResponse:
        job = await store.aenqueue("report:build", {"by": "host"})
        return JSONResponse({"job": job.id}, status_code=202)

    host = Starlette(
        routes=[
            Route("/", home),
            Route("/signup", signup, methods=["POST"]),
            Mount(PREFIX, jobs.asgi(store)),
        ],
        lifespan=jobs.lifespan(app, own_lifespan),
    )
    assert not app.is_bootstrapped()
    with HostServer(host) as server, server.client() as http:
        # Bootstrapped before the user's lifespan, the mount prepared at startup.
        assert seen.events == ["serve bootstrapped=True", "own start running=True"]
        assert http.get("/").json() == {"home": True, "greeting": "hello"}
        assert http.get(f"{PREFIX}/api/health").status_code == 200
        assert http.get("/api/health").status_code == 404  # only under the prefix

        # The jobs API's error shapes through the mount.
        assert_error(http.post(f"{PREFIX}/api/jobs/enqueue", json={"topic": "x"}), 401)
        assert_error(http.get(f"{PREFIX}/api/jobs"), 401)
        app.auth.upsert_superuser(EMAIL, PASSWORD)
        bad_login = http.post(
            f"{PREFIX}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": "wrong-password"},
        )
        assert_error(bad_login, 400)
        login = http.post(
            f"{PREFIX}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": login.json()["token"]}
        missing = assert_error(http.get(f"{PREFIX}/api/jobs/no-such-job", headers=auth), 404)
        assert missing["message"] == "The requested job wasn't found."
        invalid = assert_error(
            http.post(f"{PREFIX}/api/jobs/enqueue", json={"topic": ""}, headers=auth), 400
        )
        assert "topic" in invalid["data"]
        assert_error(http.get(f"{PREFIX}/api/no-such-route"), 404)
        assert_error(http.delete(f"{PREFIX}/api/health"), 405)

        # Enqueued through the mount and through the host's own route; both run here.
        enqueued = http.post(
            f"{PREFIX}/api/jobs/enqueue", json={"topic": "report:build"}, headers=auth
        )
        assert enqueued.status_code == 200, enqueued.text
        from_host = http.post("/signup")
        assert from_host.status_code == 202
        for job_id in (enqueued.json()["id"], from_host.json()["job"]):

            def completed(job_id: str = job_id) -> bool:
                response = http.get(f"{PREFIX}/api/jobs/{job_id}", headers=auth)
                return response.json()["status"] == "completed"

            wait_until(completed, what=f"job {job_id} to complete")
        assert done.is_set()
        stats = http.get(f"{PREFIX}/api/jobs/stats", headers=auth).json()
        assert stats["completed"] == 2

        check_mounted_dashboard(http, PREFIX)

    # The host's shutdown ended the user's lifespan first, then terminated the app.
    assert seen.events[-1] == "own end running=True"
    assert not app.is_bootstrapped()
    assert not store.is_running()
    assert jobs.get_job_store(app) is None  # the plugin forgot the terminated app
    # Bootstrap and terminate block: they ran off the event loop's thread.
    assert threads["loop"] == "host-server"
    assert threads["bootstrap"] != threads["loop"]
    assert threads["terminate"] != threads["loop"]


def test_the_mount_answers_503_while_the_app_is_not_running(
    kernel: tuple[App, jobs.JobStore],
) -> None:
    app, store = kernel
    host = Starlette(routes=[Mount("/jobs", jobs.asgi(store))])  # no jobs.lifespan
    with HostServer(host) as server, server.client() as http:
        body = assert_error(http.get("/jobs/api/health"), 503)
        assert body["message"] == "The service is not running."
        assert_error(http.get("/jobs/_/jobs"), 503)
        # Once the app is bootstrapped (here by the program itself), the mount serves it.
        app.bootstrap()
        assert http.get("/jobs/api/health").status_code == 200
        check_mounted_dashboard(http, "/jobs")
        app.terminate()
        assert_error(http.get("/jobs/api/health"), 503)


def test_a_stopped_serve_chain_fails_the_startup_and_terminates(
    kernel: tuple[App, jobs.JobStore],
) -> None:
    app, store = kernel
    app.on_serve.bind(Handler(fn=lambda event: None, id="testStopsTheChain"))  # no next()
    host = Starlette(routes=[Mount("/jobs", jobs.asgi(store))])
    own_started = False

    @asynccontextmanager
    async def own_lifespan(host: Starlette) -> AsyncIterator[None]:
        nonlocal own_started
        own_started = True
        yield

    async def start_host() -> None:
        async with jobs.lifespan(store, own_lifespan)(host):
            raise AssertionError("the host started")

    with pytest.raises(ServeAborted):
        asyncio.run(start_host())
    assert not own_started
    assert not app.is_bootstrapped()
    assert not store.is_running()


# -- the FastAPI example, as a uvicorn subprocess -----------------------------------------


class ExampleServer(AppProcess):
    """``uvicorn main:api`` on a free port, for a copy of the FastAPI example."""

    def __init__(self, app_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable, "-m", "uvicorn", "main:api", "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        log_path = app_dir / "uvicorn.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=app_dir,
                env=example_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        super().__init__(process, argv, log_path)

    def wait_until_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            while True:
                if self.returncode is not None:
                    raise ProcessError(f"uvicorn exited before it was healthy\n{self.describe()}")
                try:
                    if http.get(f"{self.base_url}/jobs/api/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ProcessError(f"not healthy within {timeout} s\n{self.describe()}")
                time.sleep(0.05)


def example_env() -> dict[str, str]:
    """The subprocess's environment: this checkout's code first on ``PYTHONPATH``."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    for name in list(env):
        if name.startswith("PB_JOBS_"):
            del env[name]
    return env


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ExampleServer]:
    """The FastAPI example copied into a temporary directory (so its ``pb_data`` is there),
    with a superuser created by its command line, served by uvicorn."""
    pytest.importorskip("fastapi")
    app_dir = tmp_path / "example"
    app_dir.mkdir()
    script = app_dir / "main.py"
    shutil.copy(FASTAPI_EXAMPLE, script)
    created = run_cli("superuser", "upsert", EMAIL, PASSWORD, script=script, env=example_env())
    assert created.returncode == 0, created.stderr
    assert (app_dir / "pb_data" / "data.db").is_file()
    for attempt in range(3):
        server = ExampleServer(app_dir)
        try:
            server.wait_until_healthy()
            break
        except ProcessError:
            server.stop()
            # The free port may have been taken in between: try another one.
            if attempt == 2 or "address already in use" not in server.log_text().lower():
                raise
    try:
        yield server
    finally:
        server.stop()


def job_status(data_db: Path, job_id: str) -> str:
    with sqlite3.connect(data_db) as db:
        row = db.execute("SELECT status FROM _jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None, job_id
    status: str = row[0]
    return status


def test_the_fastapi_example_embeds_the_jobs_api_dispatcher_and_dashboard(
    example: ExampleServer,
) -> None:
    base = example.base_url
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/").json() == {"app": "signups", "jobs": "/jobs/_/jobs"}
        docs = http.get("/openapi.json").json()  # FastAPI's own, of the app's routes
        assert "/signups" in docs["paths"]

        assert_error(http.post("/jobs/api/jobs/enqueue", json={"topic": "welcome:send"}), 401)
        login = http.post(
            "/jobs/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": login.json()["token"]}
        assert_error(http.get("/jobs/api/jobs/no-such-job", headers=auth), 404)

        # One job from the app's own route (store.aenqueue), one through the mounted API.
        signup = http.post("/signups", json={"email": "ada@example.com"})
        assert signup.status_code == 202, signup.text
        assert signup.json()["status"] == "pending"
        enqueued = http.post(
            "/jobs/api/jobs/enqueue",
            json={"topic": "welcome:send", "payload": {"email": "bob@example.com"}},
            headers=auth,
        )
        assert enqueued.status_code == 200, enqueued.text
        job_ids = [signup.json()["job"], enqueued.json()["id"]]
        for job_id in job_ids:

            def completed(job_id: str = job_id) -> dict[str, Any] | None:
                job: dict[str, Any] = http.get(f"/jobs/api/jobs/{job_id}", headers=auth).json()
                return job if job["status"] == "completed" else None

            job = wait_until(completed, what=f"job {job_id} to complete")
            # Run by the dispatcher inside the uvicorn process (node host:pid:id).
            assert f":{example.pid}:" in job["attempted_by"]
        example.wait_for_log("welcome mail sent to ada@example.com")
        example.wait_for_log("welcome mail sent to bob@example.com")

        check_mounted_dashboard(http, "/jobs")
        show_in_browser(base, job_ids)

        # SIGTERM: uvicorn shuts down, the lifespan terminates the app, and the
        # dispatcher lets the job that is running finish first.
        slow = http.post("/signups", json={"email": "eve@example.com", "seconds": 1.5})
        slow_id = slow.json()["job"]

        def processing() -> bool:
            job = http.get(f"/jobs/api/jobs/{slow_id}", headers=auth).json()
            return job["status"] == "processing"

        wait_until(processing, what="the slow job to start")
    # uvicorn shuts down, then raises the signal it caught again: -SIGTERM, not a kill.
    assert example.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM), example.describe()
    log = example.log_text()
    assert "Application shutdown complete" in log
    assert "welcome mail sent to eve@example.com" in log
    assert "event=worker.stopped" in log
    assert log.index("welcome mail sent to eve@example.com") < log.index("event=worker.stopped")
    assert job_status(example.log_path.parent / "pb_data" / "data.db", slow_id) == "completed"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"embedded dashboard browser test cannot run and CI is set: {reason}")
    pytest.skip(f"embedded dashboard NOT checked in a browser: {reason}")


def show_in_browser(base_url: str, job_ids: list[str]) -> None:
    """Log in to the dashboard under ``/jobs`` and see the jobs, completed; every request
    the page makes stays under ``/jobs/`` on its own origin."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the `playwright` package is not installed (pip install playwright)")
    chromium = os.environ.get("PB_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        _unavailable(f"no Chromium at {chromium} (apt-get install chromium)")
    origin = urlsplit(base_url).netloc
    requested: list[str] = []
    astray: list[str] = []
    console_errors: list[str] = []
    expected_errors: list[str] = []

    def guard(route: Any) -> None:
        url = urlsplit(route.request.url)
        requested.append(url.path)
        if url.netloc == origin and url.path.startswith("/jobs/"):
            route.continue_()
        else:
            astray.append(route.request.url)
            route.abort()

    def on_console(message: Any) -> None:
        if message.type == "error" and not any(e in message.text for e in expected_errors):
            console_errors.append(message.text)

    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            _unavailable(f"Chromium at {chromium} does not start under Playwright: {exc}")
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.route("**/*", guard)
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda exc: console_errors.append(f"page error: {exc}"))
            expect.set_options(timeout=15_000)

            page.goto(f"{base_url}/jobs/_/jobs/")  # redirected to /jobs/_/jobs
            assert urlsplit(page.url).path == "/jobs/_/jobs"
            expect(page.locator("#login")).to_be_visible()
            # The stylesheet applied (it came from under the prefix).
            assert page.evaluate("getComputedStyle(document.body).margin") == "0px"

            page.fill("#email", EMAIL)
            page.fill("#password", "wrong-password")
            expected_errors.append(BAD_LOGIN_LOG)
            page.click("#login-submit")
            expect(page.locator("#banner")).to_contain_text("Failed to authenticate")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            expect(page.locator("#dashboard")).to_be_visible()
            expect(page.locator("#who")).to_have_text(EMAIL)
            expected_errors.remove(BAD_LOGIN_LOG)

            expect(page.locator('[data-stat="completed"] .value')).to_have_text("2")
            for job_id in job_ids:
                row = page.locator(f'#rows tr[data-id="{job_id}"]')
                expect(row).to_contain_text("welcome:send")
                expect(row.locator(".badge")).to_have_text("completed")
            page.locator(f'#rows tr[data-id="{job_ids[0]}"]').click()
            expect(page.locator("#d-id")).to_have_text(job_ids[0])
            expect(page.locator("#d-payload")).to_contain_text('"email": "ada@example.com"')
        finally:
            browser.close()

    assert not astray, f"the page requested outside /jobs/: {astray}"
    assert not console_errors, f"console errors: {console_errors}"
    # It did use the mounted routes: the assets, the sign-in and the jobs API.
    for path in (
        "/jobs/_/jobs/assets/app.js",
        "/jobs/_/jobs/assets/style.css",
        "/jobs/api/collections/_superusers/auth-with-password",
        "/jobs/api/jobs/stats",
        "/jobs/api/jobs",
        f"/jobs/api/jobs/{job_ids[0]}",
    ):
        assert path in requested, (path, requested)
