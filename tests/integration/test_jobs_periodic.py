"""Periodic jobs: one job per cron slot across stores and processes, daylight-saving
changes, missed slots (skip or last), validation, listing (Python, CLI and HTTP).

The clock is driven (``ManualClock``); each step waits for every dispatcher to have
handled it (the schedule's stored next run is past the clock), so no slot is missed by
a slow test machine and none is enqueued twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fleet_support import Fleet, assert_exactly_once, enqueuer
from jobs_support import Harness, ManualClock, Node, fast_config, harness_fixture, wait_until
from pocketjobs.plugins import jobs
from support import run_cli

harness = harness_fixture

PARIS = ZoneInfo("Europe/Paris")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def paris(job: jobs.Job) -> str:
    return slot_of(job).astimezone(PARIS).strftime("%H:%M")


def slot_of(job: jobs.Job) -> datetime:
    """The slot a schedule's job is for, from its unique key (its run_at moves on a retry)."""
    assert job.unique_key is not None
    return datetime.strptime(job.unique_key[-17:], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)


def slot_jobs(node: Node, topic: str) -> list[jobs.Job]:
    page = node.store.list(jobs.JobFilter(topic=topic, limit=500))
    return sorted(page.items, key=slot_of)


def stored_next_run(node: Node, name: str) -> datetime | None:
    rows = {row.name: row for row in node.store.schedules()}
    row = rows.get(name)
    return row.next_run if row is not None and not (row.here and not row.active) else None


def walk(
    clock: ManualClock,
    nodes: Sequence[Node],
    names: Sequence[str],
    until: datetime,
    step: timedelta,
) -> None:
    """Move the clock to ``until`` in ``step`` s; after each step wait until every
    schedule's stored next run is past the clock (its due slot was handled)."""
    while clock() < until:
        now = clock.advance(step)
        for node in nodes:
            node.store._wake(None)
        for name in names:
            wait_until(
                lambda n=name, t=now: (due := stored_next_run(nodes[0], n)) is not None and due > t,
                what=f"schedule {name} to pass {now}",
            )


def periodic_node(harness: Harness, clock: ManualClock, **overrides: object) -> Node:
    # Locks outlast the clock's steps: no job is rescued (and retried) as the clock jumps.
    settings: dict[str, object] = {"lock_duration": 3600, **overrides}
    return harness.node(fast_config(clock=clock, retention=None, **settings))


def test_three_stores_enqueue_one_job_per_slot(harness: Harness) -> None:
    clock = ManualClock(utc("2026-05-04T09:58:30"))
    nodes = []
    for index in range(3):
        node = periodic_node(harness, clock)
        node.store.periodic("* * * * *", "report", {"n": 1})
        if index == 0:
            node.store.register("report", lambda job: None)
        node.store.start()
        nodes.append(node)
    wait_until(lambda: stored_next_run(nodes[0], "report"), what="the schedule's row")
    walk(clock, nodes, ["report"], utc("2026-05-04T10:03:30"), timedelta(seconds=10))
    runs = [slot_of(job) for job in slot_jobs(nodes[0], "report")]
    assert runs == [utc(f"2026-05-04T{t}") for t in ("09:59", "10:00", "10:01", "10:02", "10:03")]
    for job in slot_jobs(nodes[0], "report"):
        assert job.payload == {"n": 1}
        assert job.unique_key == f"schedule:report:{slot_of(job):%Y-%m-%dT%H:%MZ}"
        assert job.run_at == slot_of(job)  # due at its slot
    wait_until(lambda: all(j.status == "completed" for j in slot_jobs(nodes[0], "report")))
    (info,) = nodes[0].store.schedules()
    assert info.last_run == utc("2026-05-04T10:03")
    assert info.last_job_id == slot_jobs(nodes[0], "report")[-1].id
    assert info.next_run == utc("2026-05-04T10:04")
    assert info.active
    assert info.here


def test_slots_follow_the_zone_when_clocks_go_back(harness: Harness) -> None:
    # 2026-10-25 in Paris: 03:00 summer time (01:00 UTC) becomes 02:00 winter time.
    clock = ManualClock(utc("2026-10-24T23:10"))  # 01:10 summer time
    node = periodic_node(harness, clock)
    node.store.periodic("*/30 1-3 * * *", "half", tz="Europe/Paris")
    node.store.periodic("30 2 * * *", "fixed", tz="Europe/Paris")
    node.store.start()
    wait_until(lambda: stored_next_run(node, "fixed"), what="the schedules' rows")
    walk(clock, [node], ["half", "fixed"], utc("2026-10-25T02:10"), timedelta(minutes=10))
    half = [slot_of(job) for job in slot_jobs(node, "half")]
    # Every 30 minutes of elapsed time, through both 02:00-03:00 hours.
    times = ("24T23:30", "25T00:00", "25T00:30", "25T01:00", "25T01:30", "25T02:00")
    assert half == [utc(f"2026-10-{t}") for t in times]
    local = ["01:30", "02:00", "02:30", "02:00", "02:30", "03:00"]
    assert [paris(job) for job in slot_jobs(node, "half")] == local
    # A fixed time in the repeated hour runs once, the first time (summer time).
    assert [slot_of(job) for job in slot_jobs(node, "fixed")] == [utc("2026-10-25T00:30")]


def test_slots_follow_the_zone_when_clocks_go_forward(harness: Harness) -> None:
    # 2026-03-29 in Paris: 02:00 winter time (01:00 UTC) becomes 03:00 summer time.
    clock = ManualClock(utc("2026-03-28T23:50"))  # 00:50 winter time
    node = periodic_node(harness, clock)
    node.store.periodic("30 2 * * *", "fixed", tz="Europe/Paris")
    node.store.periodic("0 * * * *", "hourly", tz="Europe/Paris")
    node.store.start()
    wait_until(lambda: stored_next_run(node, "fixed"), what="the schedules' rows")
    walk(clock, [node], ["fixed", "hourly"], utc("2026-03-29T02:10"), timedelta(minutes=10))
    # 02:30 does not exist that day: it runs at the first minute after the gap, 03:00.
    assert [slot_of(job) for job in slot_jobs(node, "fixed")] == [utc("2026-03-29T01:00")]
    # Hourly: 01:00 winter time, then 03:00 and 04:00 summer time; no 02:00.
    assert [paris(job) for job in slot_jobs(node, "hourly")] == ["01:00", "03:00", "04:00"]


@pytest.mark.parametrize("catch_up", ["skip", "last"])
def test_slots_missed_while_nothing_ran(
    harness: Harness, catch_up: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(utc("2026-05-04T09:58:30"))
    first = periodic_node(harness, clock)
    first.store.periodic("*/5 * * * *", "digest", catch_up=catch_up)  # type: ignore[arg-type]
    first.store.start()
    wait_until(lambda: stored_next_run(first, "digest"), what="the schedule's row")
    walk(clock, [first], ["digest"], utc("2026-05-04T10:00:30"), timedelta(seconds=30))
    assert [slot_of(job) for job in slot_jobs(first, "digest")] == [utc("2026-05-04T10:00")]
    first.app.terminate()

    clock.advance(timedelta(hours=1, minutes=2))  # 11:02:30: 10:05 ... 11:00 were missed
    caplog.set_level(logging.WARNING, logger="pocketjobs")
    second = periodic_node(harness, clock)
    second.store.periodic("*/5 * * * *", "digest", catch_up=catch_up)  # type: ignore[arg-type]
    second.store.start()
    wait_until(
        lambda: (due := stored_next_run(second, "digest")) is not None and due > clock(),
        what="the missed slots to be handled",
    )
    runs = [slot_of(job) for job in slot_jobs(second, "digest")]
    if catch_up == "skip":
        assert runs == [utc("2026-05-04T10:00")]
    else:
        assert runs == [utc("2026-05-04T10:00"), utc("2026-05-04T11:00")]
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    missed = [f["missed"] for f in fields if f.get("event") == "jobs.schedule_missed"]
    assert missed == [12 if catch_up == "skip" else 11]  # 10:05 ... 11:00
    assert stored_next_run(second, "digest") == utc("2026-05-04T11:05")


def test_a_late_slot_within_a_minute_is_on_time(harness: Harness) -> None:
    clock = ManualClock(utc("2026-05-04T09:59:50"))
    node = periodic_node(harness, clock, auto_start=False)
    node.store.periodic("* * * * *", "tick")
    node.store.start()
    wait_until(lambda: stored_next_run(node, "tick"), what="the schedule's row")
    node.store.stop()
    clock.advance(55)  # 10:00:45: the 10:00 slot is 45 s late
    node.store.start()
    wait_until(lambda: slot_jobs(node, "tick"), what="the late slot's job")
    assert [slot_of(job) for job in slot_jobs(node, "tick")] == [utc("2026-05-04T10:00")]


def test_handler_cron_registers_a_schedule_named_after_its_topic(harness: Harness) -> None:
    clock = ManualClock(utc("2026-05-04T06:59:00"))
    node = periodic_node(harness, clock, queues={"reports": 1})
    ran: list[jobs.Job] = []

    @node.store.handler("reports:daily", cron="0 7 * * *", tz="Europe/Paris", queue="reports")
    def daily(job: jobs.Job) -> None:
        ran.append(job)

    node.store.start()
    (info,) = node.store.schedules()
    assert (info.name, info.topic, info.cron, info.tz, info.queue) == (
        "reports:daily", "reports:daily", "0 7 * * *", "Europe/Paris", "reports"
    )  # fmt: skip
    assert info.next_run == utc("2026-05-05T05:00")  # 07:00 summer time, tomorrow
    clock.advance(utc("2026-05-05T05:00:10") - clock())
    node.store._wake(None)
    wait_until(lambda: ran, what="the daily job to run")
    assert ran[0].queue == "reports"
    assert ran[0].payload is None


def test_bad_schedules_are_refused_and_register_nothing(harness: Harness) -> None:
    node = periodic_node(harness, ManualClock(), auto_start=False)
    store = node.store
    cases: list[tuple[dict[str, object], str]] = [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 0 * * * *"}, "cron"),  # seconds are not a field here
        ({"cron": "0 0 30 2 *"}, "cron"),  # no such day
        ({"cron": "* * */20 * 1L"}, "cron"),  # no match within 50 years
        ({"cron": 5}, "cron"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": ""}, "tz"),
        ({"catch_up": "all"}, "catch_up"),
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "n" * 256}, "name"),
        ({"priority": 12}, "priority"),
        ({"queue": "bad queue!"}, "queue"),
        ({"payload": {1, 2}}, "payload"),
    ]
    for changes, field in cases:
        args: dict[str, object] = {"cron": "*/5 * * * *", "topic": "t", **changes}
        with pytest.raises(jobs.JobsError) as caught:
            store.periodic(**args)  # type: ignore[arg-type]
        assert caught.value.field == field, changes
    with pytest.raises(jobs.InvalidTopic):
        store.periodic("* * * * *", "")
    assert store.schedules() == []
    store.periodic("@hourly", "t")
    with pytest.raises(jobs.ScheduleAlreadyRegistered):
        store.periodic("@daily", "t")
    store.periodic("@daily", "t", name="t:daily")
    with pytest.raises(jobs.ScheduleAlreadyRegistered):
        store.register("t:daily", lambda job: None, cron="@daily")
    assert "t:daily" not in store.topics()  # the handler was not registered either
    with pytest.raises(jobs.InvalidJobOptions):
        store.register("u", lambda job: None, cron="every day")
    with pytest.raises(jobs.InvalidJobOptions, match="give cron"):
        store.register("u", lambda job: None, tz="Europe/Paris")
    assert "u" not in store.topics()
    assert [s.name for s in store.schedules()] == ["t", "t:daily"]


def test_a_changed_cron_restarts_the_schedule(harness: Harness) -> None:
    clock = ManualClock(utc("2026-05-04T09:58:30"))
    first = periodic_node(harness, clock)
    first.store.periodic("0 * * * *", "job")
    first.store.start()
    wait_until(lambda: stored_next_run(first, "job") == utc("2026-05-04T10:00"))
    first.app.terminate()
    second = periodic_node(harness, clock)
    second.store.periodic("*/15 * * * *", "job", {"v": 2})
    second.store.start()
    wait_until(lambda: second.store.schedules()[0].cron == "*/15 * * * *", what="the new cron")
    assert stored_next_run(second, "job") == utc("2026-05-04T10:00")
    clock.advance(timedelta(minutes=2))  # 10:00:30
    second.store._wake(None)
    wait_until(lambda: stored_next_run(second, "job") == utc("2026-05-04T10:15"))
    (info,) = second.store.schedules()
    assert (info.cron, info.payload) == ("*/15 * * * *", {"v": 2})
    assert [job.payload for job in slot_jobs(second, "job")] == [{"v": 2}]


def test_deleting_a_schedule(harness: Harness) -> None:
    clock = ManualClock(utc("2026-05-04T09:58:30"))
    node = periodic_node(harness, clock)
    node.store.periodic("* * * * *", "gone")
    node.store.start()
    wait_until(lambda: stored_next_run(node, "gone"), what="the schedule's row")
    node.app.terminate()
    reader = periodic_node(harness, clock, auto_start=False)
    clock.advance(timedelta(minutes=2))  # the row is no longer seen by a running process
    (info,) = reader.store.schedules()
    assert (info.name, info.active, info.here) == ("gone", False, False)
    reader.store.delete_schedule("gone")
    assert reader.store.schedules() == []
    with pytest.raises(jobs.ScheduleNotFound):
        reader.store.delete_schedule("gone")


# -- the CLI and the HTTP API ------------------------------------------------------------


def test_jobs_schedules_on_the_cli(harness: Harness, data_dir: Path, db_url: str | None) -> None:
    clock = ManualClock(utc("2026-05-04T09:58:30"))
    node = periodic_node(harness, clock)
    node.store.periodic("*/5 * * * *", "digest", tz="Europe/Paris", catch_up="last")
    node.store.start()
    wait_until(lambda: stored_next_run(node, "digest"), what="the schedule's row")
    result = run_cli("jobs", "schedules", data_dir=data_dir, db_url=db_url)
    assert result.returncode == 0, result.stderr
    header, _, row = result.stdout.splitlines()[:3]
    assert header.split()[:4] == ["name", "topic", "cron", "tz"]
    assert row.split()[:8] == ["digest", "digest", "*/5", "*", "*", "*", "*", "Europe/Paris"]
    assert "2026-05-04T10:00:00.000Z" in row
    assert "last" in row


def test_schedules_over_http(harness: Harness, data_dir: Path, db_url: str | None) -> None:
    from test_jobs_http import JobsServer, start_server  # the live server of the HTTP tests

    clock = ManualClock(utc("2026-05-04T09:58:30"))
    node = periodic_node(harness, clock)
    node.store.periodic("*/5 * * * *", "digest", {"to": "ops"}, tz="Europe/Paris")
    node.store.periodic("@daily", "digest", name="reports/daily")  # a slash in its name
    node.store.start()
    wait_until(lambda: stored_next_run(node, "reports/daily"), what="the schedules' rows")
    config = fast_config(auto_start=False, http_enabled=True, clock=clock)
    server: JobsServer = start_server(data_dir, db_url, config)
    try:
        assert server.http.get("/api/jobs/schedules").status_code == 401
        response = server.http.get("/api/jobs/schedules", headers=server.su)
        assert response.status_code == 200, response.text
        item, slashed = response.json()["items"]
        assert slashed["name"] == "reports/daily"
        assert item == {
            "name": "digest", "topic": "digest", "cron": "*/5 * * * *", "tz": "Europe/Paris",
            "catch_up": "skip", "queue": "default", "payload": {"to": "ops"},
            "next_run": "2026-05-04T10:00:00.000Z", "last_run": None, "last_job_id": None,
            "active": True, "here": False,
        }  # fmt: skip
        missing = server.http.delete("/api/jobs/schedules/nope", headers=server.su)
        assert missing.status_code == 404
        assert missing.json()["message"] == "The requested schedule wasn't found."
        for odd in ("%00", "a%00b", "x" * 300):  # no schedule can have such a name: 404
            response = server.http.delete(f"/api/jobs/schedules/{odd}", headers=server.su)
            assert response.status_code == 404, response.text
        deleted = server.http.delete("/api/jobs/schedules/digest", headers=server.su)
        assert deleted.status_code == 200
        assert deleted.json() == {"ok": True}
        slash = server.http.delete("/api/jobs/schedules/reports%2Fdaily", headers=server.su)
        assert slash.status_code == 200, slash.text
        assert server.http.get("/api/jobs/schedules", headers=server.su).json() == {"items": []}
    finally:
        server.close()


# -- processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_three_processes_enqueue_one_job_per_slot(data_dir: Path, db_url: str | None) -> None:
    """Three worker processes with the same schedule, on a clock 30 times faster than the
    wall's (one simulated clock: the same start in each), for 3+ minutes of that time:
    exactly one job per slot, each run once."""
    speed = 30.0
    start = utc("2026-05-04T09:59:40")
    with enqueuer(data_dir, db_url) as (app, store):
        wall = time.time() + 3.0  # the simulated start: once the processes are up
        env = {
            "PB_TEST_CLOCK_START": start.isoformat(), "PB_TEST_CLOCK_WALL": repr(wall),
            "PB_TEST_CLOCK_SPEED": repr(speed), "PB_TEST_CRON": "* * * * *",
            "PB_JOBS_POLL_INTERVAL": "0.05",
        }  # fmt: skip
        with Fleet(data_dir, db_url, env=env) as fleet:
            for _ in range(3):
                fleet.start()
            end = start + timedelta(minutes=3, seconds=40)  # 09:59:40 -> 10:03:20
            time.sleep(max(0.0, wall + (end - start).total_seconds() / speed - time.time()))
            wait_until(
                lambda: all(job.status == "completed" for job in slot_jobs_of(store)),
                what="the slots' jobs to complete",
            )
        # From the first slot after the first process's start (its clock starts up to a
        # minute and a half before 09:59:40) to 10:03, each minute once.
        runs = [slot_of(job) for job in slot_jobs_of(store)]
        assert runs, "no slot was enqueued"
        first = runs[0]
        assert first <= utc("2026-05-04T10:00"), runs
        minutes = int((utc("2026-05-04T10:03") - first).total_seconds() // 60)
        assert runs == [first + timedelta(minutes=n) for n in range(minutes + 1)]
        assert_exactly_once(app, len(runs))


def slot_jobs_of(store: jobs.JobStore) -> list[jobs.Job]:
    items = store.list(jobs.JobFilter(topic="record", limit=500)).items
    return sorted(items, key=slot_of)
