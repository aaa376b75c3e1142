"""The retry policy, as pure functions: whether and when a failed attempt runs again, and
the error text recorded for it."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import datetime, timedelta

from pocketjobs.plugins.jobs.job import Job
from pocketjobs.plugins.jobs.limits import MAX_DELAY, MAX_ERROR_LENGTH, MAX_RETRY_WAIT

__all__ = [
    "LOCK_EXPIRED_ERROR",
    "BackoffError",
    "Discard",
    "JobCancelled",
    "Snooze",
    "error_summary",
    "error_text",
    "retry_at",
    "storable_text",
    "will_retry",
]

#: The ``last_error`` of a job recovered from a worker that stopped responding.
LOCK_EXPIRED_ERROR = "lock expired: the worker running this job stopped responding"


class BackoffError(Exception):
    """The backoff function raised or returned something other than a ``timedelta``."""


class Snooze(Exception):
    """Raised by a handler: run this job again after ``seconds`` (a number or a
    ``timedelta``, from zero to the longest delay), without counting this attempt: its
    retries and ``last_error`` stay as they were."""

    def __init__(self, seconds: float | timedelta) -> None:
        wait = seconds if isinstance(seconds, timedelta) else None
        if wait is None:
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(f"Snooze takes seconds or a timedelta, not {seconds!r}")
            if not 0 <= seconds <= MAX_DELAY.total_seconds():  # also refuses NaN
                raise ValueError(f"Snooze seconds must be from 0 to {MAX_DELAY.days} days")
            wait = timedelta(seconds=seconds)
        elif not timedelta(0) <= wait <= MAX_DELAY:
            raise ValueError(f"Snooze must be from 0 to {MAX_DELAY.days} days")
        super().__init__(f"snoozed for {wait.total_seconds():g}s")
        self.wait = wait


class Discard(Exception):
    """Raised by a handler: fail this job now, without a retry; ``last_error`` holds
    ``reason``."""

    def __init__(self, reason: str = "discarded by its handler") -> None:
        super().__init__(reason)
        self.reason = reason


class JobCancelled(Exception):
    """Raised by :meth:`Job.raise_if_cancelled` in a handler whose running attempt was
    asked to stop (the job was cancelled, or the attempt timed out). The attempt's outcome
    is already decided (cancelled, or failed by its timeout): letting this propagate just
    ends the handler sooner."""


def will_retry(job: Job) -> bool:
    """Whether a failed attempt of ``job`` (as claimed) is followed by another."""
    return job.retries < job.max_retries


def retry_at(
    backoff: Callable[[int], timedelta],
    job: Job,
    now: datetime,
    max_wait: timedelta = MAX_RETRY_WAIT,
) -> datetime:
    """When the next attempt of ``job``, which failed at ``now``, is due:
    ``now + backoff(retries + 1)``, clamped to zero..``max_wait``.

    Raises :class:`BackoffError` (chaining the cause) when ``backoff`` raises or returns
    something else than a ``timedelta``; the caller decides what to do then."""
    attempt = job.retries + 1
    try:
        wait = backoff(attempt)
    except Exception as exc:
        raise BackoffError(f"backoff({attempt}) raised {exc!r}") from exc
    if not isinstance(wait, timedelta):
        raise BackoffError(f"backoff({attempt}) returned {wait!r}, not a timedelta")
    return now + min(max(wait, timedelta(0)), max_wait)


def error_text(exc: BaseException) -> str:
    """The ``last_error`` stored for ``exc``: its traceback, at most ``MAX_ERROR_LENGTH``
    characters (the middle of a longer one is cut), NUL characters escaped (PostgreSQL
    cannot store them; escaped alike on both databases) and lone surrogates replaced."""
    return storable_text("".join(traceback.format_exception(exc)).strip())


def storable_text(text: str) -> str:
    """``text`` as ``last_error`` stores it: NUL characters escaped, lone surrogates
    replaced, at most ``MAX_ERROR_LENGTH`` characters (the middle of a longer one cut)."""
    text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode(errors="backslashreplace").decode()
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH // 2] + "\n...\n" + text[-MAX_ERROR_LENGTH // 2 :]
    return text


def error_summary(exc: BaseException) -> str:
    """The first line of ``exc`` as a log line shows it: ``ValueError: bad input``."""
    message = str(exc).strip().splitlines()
    name = type(exc).__qualname__
    return f"{name}: {message[0]}" if message else name
