"""The retry policy's pure functions (retry.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pocketjobs.plugins.jobs import Job
from pocketjobs.plugins.jobs.limits import MAX_ERROR_LENGTH, MAX_RETRY_WAIT
from pocketjobs.plugins.jobs.retry import (
    BackoffError,
    error_summary,
    error_text,
    retry_at,
    will_retry,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job(retries: int, max_retries: int) -> Job:
    return Job("id", "t", None, "processing", NOW, NOW, retries, max_retries, None, NOW, NOW)


def test_will_retry_until_the_retries_are_used_up() -> None:
    assert will_retry(job(0, 1))
    assert not will_retry(job(1, 1))
    assert not will_retry(job(0, 0))


def test_retry_at_asks_the_backoff_for_the_next_attempt_number() -> None:
    asked: list[int] = []

    def backoff(attempt: int) -> timedelta:
        asked.append(attempt)
        return timedelta(seconds=attempt)

    assert retry_at(backoff, job(2, 5), NOW) == NOW + timedelta(seconds=3)
    assert asked == [3]


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (timedelta(seconds=-5), timedelta(0)),
        (timedelta(days=10_000), MAX_RETRY_WAIT),
        (timedelta(minutes=4), timedelta(minutes=4)),
    ],
)
def test_retry_at_clamps_the_wait(wait: timedelta, expected: timedelta) -> None:
    assert retry_at(lambda attempt: wait, job(0, 1), NOW) == NOW + expected


def test_a_backoff_that_fails_or_returns_nonsense_is_a_backoff_error() -> None:
    def broken(attempt: int) -> timedelta:
        raise RuntimeError("nope")

    with pytest.raises(BackoffError, match="nope"):
        retry_at(broken, job(0, 1), NOW)
    with pytest.raises(BackoffError, match="not a timedelta"):
        retry_at(lambda attempt: 5, job(0, 1), NOW)  # type: ignore[arg-type, return-value]


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_error_text_is_the_traceback() -> None:
    text = error_text(_raised(ValueError("boom")))
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("ValueError: boom")


def test_error_text_escapes_nul_and_lone_surrogates_and_is_bounded() -> None:
    text = error_text(_raised(ValueError("a\x00b \ud800 é")))
    assert "a\\x00b" in text
    assert "\x00" not in text
    assert "\\ud800" in text
    assert "é" in text
    text.encode()  # storable
    long = error_text(_raised(ValueError("x" * (3 * MAX_ERROR_LENGTH))))
    assert len(long) <= MAX_ERROR_LENGTH + 5
    assert "\n...\n" in long


def test_error_summary_is_the_first_line() -> None:
    assert error_summary(ValueError("bad input\nmore detail")) == "ValueError: bad input"
    assert error_summary(KeyError()) == "KeyError"
