"""The jobs dashboard at ``/_/jobs`` (SPEC §4.8), driven by a real browser.

Playwright's Python package drives Debian's Chromium (``/usr/bin/chromium``, or
``$PB_TEST_CHROMIUM``): browsers cannot be downloaded here, so ``playwright install`` is
never needed. ``chromium.launch`` starts it headless with a fresh temporary profile
(user-data dir) each time. Without Playwright or Chromium the browser test is skipped with
a loud reason, except when ``CI`` is ``true``/``1``: then it fails.

The app is served in-process (``LiveServer``) on SQLite with the plugin and the dashboard.
The page may only talk to the server it came from: every other request is aborted and
reported, and the test fails on any console error. The browser runs in
``America/New_York`` (``BROWSER_TZ``), so the times the page shows are checked exactly.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

import jobs_support
from conftest import LiveServer
from dashboard_support import CHROMIUM_ARGS, assert_security_headers
from pocketjobs import App
from pocketjobs.core import ServeEvent
from pocketjobs.core.times import format_time
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import dashboard
from pocketjobs.tools.hook import Handler
from support import REPO_ROOT

EMAIL = "dash-admin@example.com"
PASSWORD = "dash-admin-password-1"
ARTIFACTS = REPO_ROOT / "test-artifacts"
#: Chromium logs every non-2xx fetch as a console error; these are expected while the
#: test provokes them (the log may arrive after the page has shown the result).
BAD_LOGIN_LOG = "the server responded with a status of 400"
BAD_TOKEN_LOG = "the server responded with a status of 401"
NOT_FOUND_LOG = "the server responded with a status of 404"
#: The browser's time zone (not the machine's): the page shows times in it.
BROWSER_TZ = "America/New_York"
#: The cron expression of the test's schedule (see ``served``).
SCHEDULE_CRON = "0 7 29 2 *"
#: A schedule no process registers any more; its name is shown as text, never as HTML.
GONE_SCHEDULE = "old report <img src=x onerror=alert(1)>"

T = TypeVar("T")

pytestmark = pytest.mark.timeout(240)

#: While set, the ``flaky`` handler fails the jobs whose payload asks for it.
FAIL = threading.Event()


def flaky(job: jobs.Job) -> None:
    if FAIL.is_set() and isinstance(job.payload, dict) and job.payload.get("fail"):
        raise RuntimeError("boom: the flaky handler failed on purpose")


def hang(job: jobs.Job) -> None:
    job.cancel_requested.wait(60)  # runs until it is cancelled


def wait_until(predicate: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """``jobs_support.wait_until`` with the longer wait a browser test needs."""
    return jobs_support.wait_until(predicate, timeout, what)


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> NoReturn:
    if _is_ci():
        pytest.fail(f"dashboard browser test cannot run and CI is set: {reason}", pytrace=False)
    pytest.skip(
        f"dashboard browser test SKIPPED (the dashboard is NOT checked in a browser): {reason}"
    )


def _chromium() -> str:
    path = os.environ.get("PB_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        _unavailable(f"no Chromium at {path} (apt-get install chromium)")
    return path


def _bind_dashboard_once(event: ServeEvent) -> None:
    # Once the plugin binds the dashboard itself, this leaves its route alone.
    event.next()
    if not any(getattr(route, "path", "") == "/_/jobs" for route in event.router.routes):
        dashboard.bind_dashboard(event.router)


def _local(moment: datetime) -> str:
    """``moment`` as the page shows it: the browser's local time."""
    return moment.astimezone(ZoneInfo(BROWSER_TZ)).strftime("%Y-%m-%d %H:%M:%S")


def _seed_gone_schedule(app: App, name: str, last_job_id: str) -> None:
    """A schedule row as a process that registered it and stopped leaves it (SQLite):
    not seen for long, so inactive."""
    long_ago = format_time(datetime(2025, 1, 8, 12, 0, tzinfo=UTC))
    app.db.execute(
        "INSERT INTO _jobs_schedules (name, topic, cron, tz, catch_up, queue, payload,"
        " next_run, created, seen, last_run, last_job_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, "flaky", "15 3 * * 1", "UTC", "last", "mail", "{}", long_ago, long_ago,
         long_ago, long_ago, last_job_id),
    )  # fmt: skip


class Served:
    def __init__(self, app: App, store: jobs.JobStore, server: LiveServer) -> None:
        self.app, self.store, self.server = app, store, server
        self.base_url = server.base_url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    saved_url = os.environ.pop("PB_DATABASE_URL", None)
    app = App(data_dir=tmp_path_factory.mktemp("dashboard") / "pb_data")
    store = jobs.must_register(
        app, jobs.Config(workers=2, poll_interval=0.2, max_retries=0, http_enabled=True)
    )
    store.register("flaky", flaky)
    store.register("hang", hang)
    # Registered before the store starts, its first maintenance round writes it (one
    # registered later waits for the next round, up to 10 s). 07:00 on 29 February in
    # Paris: no slot of it runs during the test to change the counts it checks.
    store.periodic(SCHEDULE_CRON, "reports:daily", {"x": 1}, tz="Europe/Paris")
    app.on_serve.bind(Handler(fn=_bind_dashboard_once, id="testDashboard"))
    app.bootstrap()
    app.auth.upsert_superuser(EMAIL, PASSWORD)
    server = LiveServer(app)
    server.start()
    try:
        yield Served(app, store, server)
    finally:
        server.stop()
        app.terminate()
        if saved_url is not None:
            os.environ["PB_DATABASE_URL"] = saved_url


def test_page_and_assets_are_served_with_safe_headers(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        page = http.get("/_/jobs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe" not in csp
        assert_security_headers(page)
        # Every asset the page references is served from the package, on this origin; the
        # references are relative to the page, so that it works under any prefix too.
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert refs
        for ref in refs:
            assert not ref.startswith(("/", "http:", "https:")), ref
            path = urlsplit(urljoin(str(page.url), ref)).path
            assert path.startswith("/_/jobs/assets/"), ref
            asset = http.get(path)
            assert asset.status_code == 200, ref
            assert asset.content
            assert_security_headers(asset)
        assert "javascript" in http.get("/_/jobs/assets/app.js").headers["content-type"]
        assert http.get("/_/jobs/assets/favicon.svg").headers["content-type"] == "image/svg+xml"
        assert http.get("/_/jobs/assets/style.css").headers["content-type"].startswith("text/css")

        etag = page.headers["etag"]
        assert http.get("/_/jobs", headers={"If-None-Match": etag}).status_code == 304

        slash = http.get("/_/jobs/", follow_redirects=False)
        assert slash.status_code in (301, 302, 307, 308)
        assert urlsplit(slash.headers["location"]).path == "/_/jobs"
        assert_security_headers(slash)

        missing = http.get("/_/jobs/assets/../plugin.py")
        assert missing.status_code == 404
        missing = http.get("/_/jobs/assets/index.html")
        assert missing.status_code == 404
        assert missing.json()["status"] == 404


def test_static_files_are_all_package_data() -> None:
    # pyproject ships only .html/.css/.js files as package data: anything else in static/
    # would work from a checkout and be missing from an installed wheel.
    static = Path(dashboard.__file__).parent / "static"
    names = {path.name for path in static.iterdir()}
    assert names == {"index.html", *dashboard.ASSETS}
    assert all(Path(name).suffix in {".html", ".css", ".js"} for name in names)
    total = sum((static / name).stat().st_size for name in names)
    # 30 KB until cancel, the cancelled status and the attempt history came (~2.4 KB);
    # 34 KB until the schedules came (~3.2 KB).
    assert total < 38 * 1024, f"the dashboard grew to {total} bytes"


def test_dashboard_in_a_browser(served: Served) -> None:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the `playwright` package is not installed (pip install playwright)")
    chromium = _chromium()
    store, base_url = served.store, served.base_url
    origin = urlsplit(base_url).netloc

    FAIL.set()
    failing = store.enqueue("flaky", {"fail": True, "to": "someone@example.com", "n": [1, 2]})
    waiting = store.enqueue("unhandled.topic", {"note": "<b>not HTML</b>"})
    store.pause_queue("mail")  # a queue no worker here works on, paused: listed all the same
    parked = store.enqueue("flaky", {"n": 3}, queue="mail")  # so nothing here will run it
    wait_until(lambda: store.get(failing.id).status == "failed", what="the flaky job to fail")
    assert "boom" in (store.get(failing.id).last_error or "")

    console_errors: list[str] = []
    expected_errors: list[str] = []  # substrings of console errors the current step provokes

    failed_responses: list[str] = []  # to tell which request a console error was about

    def on_response(response: Any) -> None:
        if response.status >= 400:
            failed_responses.append(
                f"{response.status} {response.request.method} {urlsplit(response.url).path}"
            )

    def on_console(message: Any) -> None:
        if message.type == "error" and not any(e in message.text for e in expected_errors):
            console_errors.append(message.text)

    foreign: list[str] = []
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            _unavailable(f"Chromium at {chromium} does not start under Playwright: {exc}")
        try:
            context = browser.new_context(
                viewport={"width": 1440, "height": 900}, timezone_id=BROWSER_TZ
            )

            def guard(route: Any) -> None:
                if urlsplit(route.request.url).netloc == origin:
                    route.continue_()
                else:
                    foreign.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("console", on_console)
            page.on("response", on_response)
            page.on("pageerror", lambda exc: console_errors.append(f"page error: {exc}"))
            page.on("dialog", lambda dialog: dialog.accept())
            expect.set_options(timeout=15_000)

            # The app has a schedule: until the empty list is seen, the page is told none.
            def no_schedules(route: Any) -> None:
                route.fulfill(json={"items": []})

            page.route("**/api/jobs/schedules", no_schedules)

            # -- login: a wrong password shows the API's message, the right one gets in
            page.goto(f"{base_url}/_/jobs")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#dashboard")).to_be_hidden()
            page.fill("#email", EMAIL)
            page.fill("#password", "wrong-password")
            expected_errors.append(BAD_LOGIN_LOG)
            page.click("#login-submit")
            expect(page.locator("#banner")).to_contain_text("Failed to authenticate")
            expect(page.locator("#login")).to_be_visible()

            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            expect(page.locator("#dashboard")).to_be_visible()
            expect(page.locator("#banner")).to_be_hidden()
            expect(page.locator("#who")).to_have_text(EMAIL)
            expected_errors.remove(BAD_LOGIN_LOG)
            assert page.evaluate("localStorage.getItem('pocketjobs.jobs.token')")
            empty_schedules = page.locator("#schedule-rows tr.empty")
            expect(empty_schedules).to_contain_text("No schedules")
            expect(page.locator("#schedule-rows tr")).to_have_count(1)
            page.unroute("**/api/jobs/schedules", no_schedules)
            page.click("#refresh")
            expect(empty_schedules).to_have_count(0)  # the real one is listed

            # -- stats cards and the list
            expect(page.locator('[data-stat="failed"] .value')).to_have_text("1")
            expect(page.locator('[data-stat="pending"] .value')).to_have_text("2")
            expect(page.locator('[data-stat="cancelled"] .value')).to_have_text("0")
            expect(page.locator('[data-stat="total"] .value')).to_have_text("3")
            expect(page.locator('[data-stat="success_rate"] .value')).to_have_text("0.0%")
            failed_row = page.locator(f'#rows tr[data-id="{failing.id}"]')
            waiting_row = page.locator(f'#rows tr[data-id="{waiting.id}"]')
            expect(failed_row).to_be_visible()
            expect(waiting_row).to_be_visible()
            parked_row = page.locator(f'#rows tr[data-id="{parked.id}"]')
            expect(parked_row).to_contain_text("mail")
            expect(page.locator("#range")).to_have_text("1\u20133 of 3")
            expect(failed_row).to_contain_text("default")  # the job's queue

            # -- a topic no worker handles, and a queue none works on, are pointed out
            orphan = page.locator('#orphans li[data-topic="unhandled.topic"]')
            expect(orphan).to_have_text(
                "Topic unhandled.topic: 1 pending job, no worker handles it"
            )
            orphan_queue = page.locator('#orphans li[data-queue="mail"]')
            expect(orphan_queue).to_have_text("Queue mail: 1 pending job, no worker works on it")
            expect(page.locator("#orphans li")).to_have_count(2)

            # -- the queues: state, counts, this server's slots; pause and resume
            default_queue = page.locator('#queue-rows tr[data-queue="default"]')
            mail_queue = page.locator('#queue-rows tr[data-queue="mail"]')
            expect(page.locator("#queue-rows tr")).to_have_count(2)
            expect(default_queue.locator("td")).to_have_text(
                ["default", "active", "1", "0", "2", "—", "Pause"]
            )
            expect(mail_queue.locator("td")).to_have_text(
                ["mail", "paused", "1", "0", "0", "—", "Resume"]
            )
            default_queue.locator("button").click()  # the confirmation is accepted
            expect(default_queue.locator(".badge")).to_have_text("paused")
            expect(default_queue.locator("button")).to_have_text("Resume")
            assert {q.name: q.paused for q in store.queues()} == {"default": True, "mail": True}
            mail_queue.locator("button").click()
            expect(mail_queue.locator(".badge")).to_have_text("active")
            expect(mail_queue.locator("button")).to_have_text("Pause")
            default_queue.locator("button").click()
            expect(default_queue.locator(".badge")).to_have_text("active")
            assert {q.name: q.paused for q in store.queues()} == {"default": False, "mail": False}

            # -- schedules: the app's, active (its dispatcher wrote it), with its cron, time
            # zone and next run in the browser's time
            _seed_gone_schedule(served.app, GONE_SCHEDULE, failing.id)
            page.click("#refresh")  # rather than wait for the live refresh
            scheduled = page.locator('#schedule-rows tr[data-schedule="reports:daily"]')
            expect(scheduled.locator(".badge")).to_have_text("active")
            info = next(s for s in store.schedules() if s.name == "reports:daily")
            assert (info.active, info.here) == (True, True)
            expect(scheduled.locator("td")).to_have_text(
                ["reports:daily", "reports:daily", f"{SCHEDULE_CRON} Europe/Paris",
                 _local(info.next_run), "—", "skip", "default", "active", ""]
            )  # fmt: skip
            next_run = scheduled.locator("td").nth(3).locator("time")
            expect(next_run).to_have_attribute("datetime", format_time(info.next_run))
            expect(scheduled).not_to_have_class("inactive")
            expect(scheduled.locator("button")).to_have_count(0)  # nothing to delete
            # one that no process registers any more: greyed, its last job one click away
            gone = page.locator("#schedule-rows tr.inactive")
            expect(gone).to_have_count(1)
            expect(page.locator("#schedule-rows tr")).to_have_count(2)
            expect(gone.locator("td").first).to_have_text(GONE_SCHEDULE)
            assert gone.locator("img").count() == 0
            expect(gone.locator(".badge")).to_have_text("inactive")
            expect(gone.locator("td").nth(4)).to_have_text(
                f"{_local(datetime(2025, 1, 8, 12, 0, tzinfo=UTC))} Job"
            )
            gone.locator("button[data-job]").click()
            expect(page.locator("#d-id")).to_have_text(failing.id)
            expect(page.locator("#d-status")).to_have_text("failed")
            gone.locator('button[data-action="delete"]').click()  # the confirmation is accepted
            expect(gone).to_have_count(0)
            expect(scheduled).to_be_visible()
            assert [s.name for s in store.schedules()] == ["reports:daily"]

            page.select_option("#status", "failed")
            expect(waiting_row).to_have_count(0)
            expect(failed_row).to_contain_text("flaky")
            expect(failed_row.locator(".badge")).to_have_text("failed")
            expect(page.locator("#range")).to_have_text("1\u20131 of 1")

            page.fill("#topic", "no-such-topic")
            expect(page.locator("#rows tr.empty")).to_contain_text("No jobs match")
            page.fill("#topic", "flaky")
            expect(failed_row).to_be_visible()

            # -- details: full id, payload pretty-printed, the traceback
            failed_row.click()
            details = page.locator("#details")
            expect(details).to_be_visible()
            expect(page.locator("#d-id")).to_have_text(failing.id)
            expect(page.locator("#d-topic")).to_have_text("flaky")
            expect(page.locator("#d-queue")).to_have_text("default")
            expect(page.locator("#d-status")).to_have_text("failed")
            expect(page.locator("#d-retries")).to_have_text("0 of 0")
            payload = page.locator("#d-payload").text_content() or ""
            assert '"to": "someone@example.com"' in payload
            assert "\n" in payload
            error_text = page.locator("#d-error")
            expect(error_text).to_contain_text("Traceback (most recent call last)")
            expect(error_text).to_contain_text("RuntimeError: boom")
            expect(page.locator("#requeue")).to_be_visible()
            expect(page.locator("#delete")).to_be_visible()
            expect(page.locator("#cancel")).to_be_hidden()
            # the attempt history: where and when it ran, each failed attempt as text
            expect(page.locator("#d-attempted_by")).to_contain_text(f":{os.getpid()}:")
            for key in ("first_attempted_at", "attempted_at", "finished_at"):
                expect(page.locator(f"#d-{key}")).not_to_have_text("—")
            expect(page.locator("#d-cancel_requested_at")).to_have_text("—")
            expect(page.locator("#d-timeout")).to_have_text("—")
            attempt_errors = page.locator("#d-errors li")
            expect(attempt_errors).to_have_count(1)
            expect(attempt_errors).to_contain_text("attempt 1")
            expect(attempt_errors.locator("pre")).to_contain_text("RuntimeError: boom")

            # -- requeue: the handler succeeds now; live refresh shows it completed
            FAIL.clear()
            page.click("#requeue")
            expect(page.locator("#d-status")).to_have_text("completed")
            expect(page.locator("#requeue")).to_be_hidden()
            expect(page.locator("#delete")).to_be_visible()  # any job but a processing one
            expect(page.locator('[data-stat="completed"] .value')).to_have_text("1")
            expect(page.locator('[data-stat="failed"] .value')).to_have_text("0")
            expect(failed_row).to_have_count(0)  # the list still shows failed jobs only
            assert store.get(failing.id).status == "completed"
            expect(attempt_errors).to_have_count(1)  # the history outlives the requeue

            # -- delete the pending job (shown as text, never as HTML)
            page.fill("#topic", "")
            page.select_option("#status", "pending")
            expect(waiting_row).to_be_visible()

            # -- cancel a pending job: it is cancelled at once, and may be requeued or deleted
            parked_row.click()
            expect(page.locator("#d-id")).to_have_text(parked.id)
            expect(page.locator("#d-errors li")).to_have_text(["—"])
            expect(page.locator("#requeue")).to_be_hidden()
            page.click("#cancel")
            expect(page.locator("#d-status")).to_have_text("cancelled")
            expect(page.locator("#d-status .badge")).to_have_class("badge badge-cancelled")
            expect(page.locator("#d-finished_at")).not_to_have_text("—")
            expect(page.locator("#cancel")).to_be_hidden()
            expect(page.locator("#requeue")).to_be_visible()
            expect(page.locator("#delete")).to_be_visible()
            expect(page.locator('[data-stat="cancelled"] .value')).to_have_text("1")
            expect(parked_row).to_have_count(0)  # not pending any more
            expect(orphan_queue).to_have_count(0)
            assert store.get(parked.id).status == "cancelled"
            page.select_option("#status", "cancelled")
            expect(parked_row.locator(".badge")).to_have_text("cancelled")
            expect(waiting_row).to_have_count(0)
            page.select_option("#status", "pending")
            expect(waiting_row).to_be_visible()
            waiting_row.click()
            expect(page.locator("#d-id")).to_have_text(waiting.id)
            expect(page.locator("#d-payload")).to_contain_text('"note": "<b>not HTML</b>"')
            assert page.locator("#d-payload b").count() == 0
            expect(page.locator("#d-error")).to_have_text("—")
            expect(page.locator("#requeue")).to_be_hidden()
            page.click("#delete")
            expect(details).to_be_hidden()
            expect(waiting_row).to_have_count(0)
            expect(page.locator("#rows tr.empty")).to_be_visible()
            expect(page.locator('[data-stat="total"] .value')).to_have_text("2")
            expect(page.locator("#orphans")).to_be_hidden()  # no pending job of it is left
            with pytest.raises(jobs.JobNotFound):
                store.get(waiting.id)

            # -- cancel a running job: asked to stop, then cancelled by its worker
            running = store.enqueue("hang", {"until": "cancelled"})
            wait_until(lambda: store.get(running.id).status == "processing", what="it to run")
            page.select_option("#status", "processing")
            running_row = page.locator(f'#rows tr[data-id="{running.id}"]')
            running_row.click()
            expect(page.locator("#d-status")).to_have_text("processing")
            expect(page.locator("#cancel")).to_be_visible()
            expect(page.locator("#delete")).to_be_hidden()
            page.click("#cancel")
            expect(page.locator("#d-cancel_requested_at")).not_to_have_text("—")
            expect(page.locator("#d-status")).to_have_text("cancelled")  # the live refresh
            expect(page.locator("#cancel")).to_be_hidden()
            expect(page.locator('[data-stat="cancelled"] .value')).to_have_text("2")
            assert store.get(running.id).status == "cancelled"

            # -- a picture of the final state, with the completed job's details open
            page.locator('[data-stat="total"]').click()
            expect(page.locator("#status")).to_have_value("")
            failed_row.click()
            expect(page.locator("#d-status")).to_have_text("completed")
            expect(page.locator("#banner")).to_be_hidden()  # notices go away by themselves
            page.evaluate("window.scrollTo(0, 0)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # -- a rejected token sends the browser back to the login form (a refresh under
            # way may meet the token first and sign out, hiding #refresh: so no click, which
            # waits for it to be visible, but the event)
            expected_errors.append(BAD_TOKEN_LOG)
            page.evaluate("localStorage.setItem('pocketjobs.jobs.token', 'not-a-token')")
            page.locator("#refresh").dispatch_event("click")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#banner")).to_contain_text("sign in again")

            # -- logging out forgets the token
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            expect(page.locator("#dashboard")).to_be_visible()
            page.click("#logout")
            expect(page.locator("#login")).to_be_visible()
            assert page.evaluate("localStorage.getItem('pocketjobs.jobs.token')") is None
        finally:
            browser.close()

    assert not foreign, f"the page requested other origins: {foreign}"
    # A live refresh under way when the pending job is deleted may ask for its details
    # once more: the page takes the 404 (the panel closes), but Chromium logs it.
    for _ in range(failed_responses.count(f"404 GET /api/jobs/{waiting.id}")):
        found = next((e for e in console_errors if NOT_FOUND_LOG in e), None)
        if found is not None:
            console_errors.remove(found)
    assert not console_errors, f"console errors: {console_errors} ({failed_responses=})"
