"""PocketBase's own JavaScript SDK (npm ``pocketbase``) against the jobs HTTP API.

The app runs as a real ``serve`` subprocess (an app script written to the test's tmp dir,
registering the plugin with ``enqueue_rule='@request.auth.id != ""'``, which cannot be
set by env). ``tests/js/sdk_jobs.mjs`` signs up a user, logs in as the user and as a
superuser, calls ``pb.send('/api/jobs/...')`` and reports what it saw as JSON.

Same policy as test_js_sdk.py (whose helpers it uses): without node/npm the test is
skipped loudly, or fails when ``CI`` is set; ``npm ci`` installs the SDK on first use.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import test_js_sdk

from support import run_app, run_cli

JS_DIR = test_js_sdk.JS_DIR
SCRIPT = JS_DIR / "sdk_jobs.mjs"
EMAIL = "sdk-jobs-admin@example.com"
PASSWORD = "sdk-jobs-admin-password-1"
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MSG_401 = "The request requires valid record authorization token."
MSG_403 = "The authorized record is not allowed to perform this action."

APP_SCRIPT = textwrap.dedent(
    """
    from pocketjobs import App
    from pocketjobs.plugins import jobs

    app = App()
    store = jobs.must_register(
        app,
        jobs.Config(
            enqueue_rule='@request.auth.id != ""',
            allowed_topics=("sdk:echo", "sdk:other"),
            poll_interval=0.2,
            shutdown_timeout=5,
        ),
    )


    @store.handler("sdk:echo")
    def echo(job: jobs.Job) -> None:
        if isinstance(job.payload, dict) and job.payload.get("fail"):
            raise RuntimeError("sdk:echo was asked to fail")


    if __name__ == "__main__":
        app.start()
    """
)

pytestmark = pytest.mark.timeout(300)
node = test_js_sdk.node  # the shared fixture: node, with the SDK installed in tests/js


def _assert_api_error(
    error: dict[str, Any], status: int, message: str | None = None
) -> dict[str, Any]:
    assert error["isClientResponseError"] is True
    assert error["status"] == status, error
    assert isinstance(error["message"], str)
    assert error["message"]
    if message is not None:
        assert error["message"] == message, error
    data: dict[str, Any] = error["data"]
    assert isinstance(data, dict)
    return data


def test_pocketbase_js_sdk_jobs_api(
    node: str, tmp_path: Path, data_dir: Path, db_url: str | None
) -> None:
    script = tmp_path / "sdk_jobs_app.py"
    script.write_text(APP_SCRIPT)
    created = run_cli(
        "superuser", "upsert", EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url, script=script
    )
    assert created.returncode == 0, created.stderr

    with run_app(data_dir=data_dir, db_url=db_url, script=script) as server:
        out = test_js_sdk.run_node_script(node, SCRIPT, server.base_url, EMAIL, PASSWORD)
        server.stop_cleanly()
    assert "unhandled error" not in server.log_text(), server.log_text()  # no 500 anywhere

    # a user may enqueue (enqueue_rule) but not manage (manage_rule None: superusers only)
    assert out["userIsSuperuser"] is False
    job = out["userJob"]
    assert job["topic"] == "sdk:echo"
    assert job["payload"] == {"from": "user", "n": 1}
    assert job["status"] == "pending"
    assert TIME_RE.match(job["run_at"])
    for key in ("userStats", "userList", "userGet", "userQueues", "userPause", "userCancel"):
        _assert_api_error(out[key], 403, MSG_403)
    data = _assert_api_error(out["userNotAllowedTopic"], 400)
    assert data["topic"]["code"] == "validation_topic_not_allowed"
    data = _assert_api_error(out["userEmptyTopic"], 400, "Failed to enqueue the job.")
    assert data["topic"]["code"] == "validation_required"
    data = _assert_api_error(out["userBadRunAt"], 400)
    assert data["run_at"]["code"] == "validation_invalid_datetime"

    # a guest: 401 where a rule needs a record; the OpenAPI document is public
    _assert_api_error(out["guestEnqueue"], 401, MSG_401)
    _assert_api_error(out["guestStats"], 401, MSG_401)
    _assert_api_error(out["guestResume"], 401, MSG_401)
    _assert_api_error(out["guestCancel"], 401, MSG_401)
    assert out["openapi"]["openapi"].startswith("3.1")

    # a superuser passes every rule
    assert out["superIsSuperuser"] is True
    super_job = out["superJob"]
    assert super_job["run_at"] == "2099-01-08T12:00:00.000Z"
    assert super_job["max_retries"] == 7
    assert super_job["payload"] == {"from": "superuser", "list": [1, 2, 3]}
    assert out["userJobDone"]["status"] == "completed"
    assert out["failed"]["status"] == "failed"
    assert "sdk:echo was asked to fail" in out["failed"]["last_error"]
    assert out["stats"] == {
        "pending": 1, "processing": 0, "completed": 1, "failed": 1, "cancelled": 0, "total": 3,
        "success_rate": 0.5, "orphaned_topics": {"sdk:other": 1},  # no handler for it
        "orphaned_queues": {},  # the server works on "default"
    }  # fmt: skip
    assert out["list"]["total"] == 3
    assert out["list"]["limit"] == 2
    assert [item["id"] for item in out["list"]["items"]] == [out["failed"]["id"], super_job["id"]]
    assert [item["id"] for item in out["listEcho"]["items"]] == [job["id"]]
    assert out["get"] == super_job
    assert out["requeued"]["id"] == out["failed"]["id"]
    assert out["requeued"]["status"] == "pending"
    assert out["requeued"]["retries"] == 0
    message = f"job {super_job['id']} is pending; only failed or cancelled jobs can be requeued"
    _assert_api_error(out["requeueAgain"], 400, message)
    _assert_api_error(out["deleteUnknown"], 404, "The requested job wasn't found.")
    assert out["schedules"] == {"items": []}
    _assert_api_error(out["deleteUnknownSchedule"], 404, "The requested schedule wasn't found.")
    assert out["deleted"] == {"ok": True}
    _assert_api_error(out["getDeleted"], 404, "The requested job wasn't found.")
    data = _assert_api_error(out["badLimit"], 400, "Invalid query parameters.")
    assert data["limit"]["code"] == "validation_invalid_number"

    # named queues: enqueue into one, filter by it, list, pause and resume them
    queue_job = out["queueJob"]
    assert queue_job["queue"] == "mail"
    assert queue_job["timeout"] == 90
    data = _assert_api_error(out["badQueue"], 400, "Failed to enqueue the job.")
    assert data["queue"]["code"] == "validation_invalid_queue"
    assert [item["id"] for item in out["listMail"]["items"]] == [queue_job["id"]]
    mail = {
        "name": "mail", "paused": True, "pending": 1, "processing": 0, "concurrency": 0,
        "global_limit": None,
    }  # fmt: skip
    assert out["paused"] == mail
    assert [item["name"] for item in out["queues"]["items"]] == ["default", "mail"]
    assert out["queues"]["items"][1] == mail
    assert out["resumed"] == {**mail, "paused": False}
    data = _assert_api_error(out["badQueueName"], 400, "Invalid queue name.")
    assert data["queue"]["code"] == "validation_invalid_queue"

    # cancel: the pending mail job at once; a finished or unknown job is refused
    data = _assert_api_error(out["badTimeout"], 400, "Failed to enqueue the job.")
    assert data["timeout"]["code"] == "validation_invalid_number"
    assert out["statsBeforeCancel"]["orphaned_queues"] == {"mail": 1}  # no worker works on it
    cancelled = out["cancelled"]
    assert (cancelled["id"], cancelled["status"]) == (queue_job["id"], "cancelled")
    assert TIME_RE.match(cancelled["finished_at"])
    assert cancelled["timeout"] == 90
    assert out["cancelAgain"] == cancelled  # cancelling a cancelled job changes nothing
    message = f"job {job['id']} is completed: there is nothing to cancel"
    _assert_api_error(out["cancelCompleted"], 400, message)
    _assert_api_error(out["cancelUnknown"], 404, "The requested job wasn't found.")
    assert out["statsAfterCancel"]["cancelled"] == 1
    assert out["statsAfterCancel"]["orphaned_queues"] == {}
    assert [item["id"] for item in out["listCancelled"]["items"]] == [queue_job["id"]]
    requeued = out["requeueCancelled"]
    assert (requeued["status"], requeued["finished_at"]) == ("pending", None)
