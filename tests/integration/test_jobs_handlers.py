"""Per-handler options, Snooze and Discard, and handlers refused at registration
(handlers.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pytest

from jobs_support import Harness, ManualClock, harness_fixture, wait_until
from pocketjobs.plugins import jobs

harness = harness_fixture


def test_handler_defaults_apply_and_an_enqueue_overrides_them(harness: Harness) -> None:
    node = harness.node(auto_start=False)

    @node.store.handler("mail", priority=1, max_retries=7)
    def mail(job: jobs.Job) -> None: ...

    default = node.store.enqueue("mail")
    assert (default.priority, default.max_retries) == (1, 7)
    own = node.store.enqueue("mail", priority=4, max_retries=0)
    assert (own.priority, own.max_retries) == (4, 0)
    stored = node.store.get(default.id)
    assert (stored.priority, stored.max_retries) == (1, 7)
    other = node.store.enqueue("other")  # no handler options: the config's defaults
    assert (other.priority, other.max_retries) == (0, node.store.config.max_retries)
    many = node.store.enqueue_many("mail", [1, 2])
    assert {(job.priority, job.max_retries) for job in many} == {(1, 7)}


def test_a_handler_backoff_replaces_the_config_one_within_max_backoff(harness: Harness) -> None:
    clock = ManualClock()
    asked: list[int] = []

    def backoff(attempt: int) -> timedelta:
        asked.append(attempt)
        return timedelta(days=2) if attempt > 1 else timedelta(minutes=3)

    def fail(job: jobs.Job) -> None:
        raise RuntimeError("down")

    node = harness.node(clock=clock, max_backoff=timedelta(hours=1))
    node.store.register("t", fail, backoff=backoff)
    job = node.store.enqueue("t", max_retries=3)
    wait_until(lambda: node.store.get(job.id).retries == 1, what="the first retry scheduled")
    assert node.store.get(job.id).run_at == clock() + timedelta(minutes=3)
    clock.advance(timedelta(minutes=3))
    wait_until(lambda: node.store.get(job.id).retries == 2, what="the second retry scheduled")
    # The backoff asked for two days; max_backoff caps it at an hour.
    assert node.store.get(job.id).run_at == clock() + timedelta(hours=1)
    assert asked == [1, 2]


def test_snooze_runs_the_job_later_without_counting_an_attempt(harness: Harness) -> None:
    clock = ManualClock()
    seen: list[int] = []

    def snoozy(job: jobs.Job) -> None:
        seen.append(job.retries)
        if len(seen) == 1:
            raise jobs.Snooze(90)

    node = harness.node(clock=clock, handlers={"t": snoozy})
    job = node.store.enqueue("t", max_retries=0)
    wait_until(
        lambda: (j := node.store.get(job.id)).status == "pending" and j.run_at > clock(),
        what="the snooze to be recorded",
    )
    snoozed = node.store.get(job.id)
    assert snoozed.run_at == clock() + timedelta(seconds=90)
    assert snoozed.retries == 0
    assert snoozed.last_error is None
    clock.advance(90)
    done = node.wait_status(job.id, "completed")
    assert done.retries == 0
    assert seen == [0, 0]


def test_discard_fails_the_job_now_without_a_retry(harness: Harness) -> None:
    calls: list[str] = []

    def discard(job: jobs.Job) -> None:
        calls.append(job.id)
        raise jobs.Discard("the account is closed")

    node = harness.node(handlers={"t": discard})
    job = node.store.enqueue("t", max_retries=5)
    failed = node.wait_status(job.id, "failed")
    assert failed.last_error == "Discarded: the account is closed"
    assert failed.retries == 0
    assert calls == [job.id]


@pytest.mark.parametrize("seconds", [-1, float("nan"), True, "5"])
def test_snooze_refuses_a_bad_wait(seconds: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        jobs.Snooze(seconds)


def _two_args(job: jobs.Job, extra: int) -> None: ...


def _no_args() -> None: ...


def _keyword_only(*, job: jobs.Job) -> None: ...


@pytest.mark.parametrize("fn", [_two_args, _no_args, _keyword_only, 42])
def test_a_handler_that_cannot_take_one_job_is_refused(harness: Harness, fn: Any) -> None:
    node = harness.node(auto_start=False)
    with pytest.raises(jobs.InvalidHandler):
        node.store.register("t", fn)
    assert "t" not in node.store.topics()


def _flexible(job: jobs.Job, extra: int = 1, *rest: Any, **options: Any) -> None: ...


async def _async_handler(job: jobs.Job) -> None: ...


class _Callable:
    def __call__(self, job: jobs.Job) -> None: ...


@pytest.mark.parametrize(
    "fn", [_flexible, _async_handler, _Callable(), functools.partial(_two_args, extra=2), print]
)
def test_handlers_that_take_one_job_are_accepted(harness: Harness, fn: Any) -> None:
    node = harness.node(auto_start=False)
    node.store.register("t", fn)
    assert node.store.topics() == ["t"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"priority": 10}, jobs.InvalidJobOptions),
        ({"max_retries": -1}, jobs.InvalidJobOptions),
        ({"backoff": 5}, jobs.InvalidHandler),
    ],
)
def test_bad_handler_options_are_refused(
    harness: Harness, options: dict[str, Any], error: type[Exception]
) -> None:
    node = harness.node(auto_start=False)
    with pytest.raises(error):
        node.store.register("t", lambda job: None, **options)
    assert node.store.topics() == []
