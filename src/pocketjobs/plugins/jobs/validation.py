"""The one validation path of the jobs plugin's input.

The store calls these checks for every call from Python and, through it, for every HTTP
request (the routes only turn wire values, such as an RFC 3339 string, into Python ones).
Each check raises an error of :mod:`~pocketjobs.plugins.jobs.errors` naming the field at
fault, and each bound comes from :mod:`~pocketjobs.plugins.jobs.limits`.

Text that no database can store is refused alike everywhere: a NUL character
(PostgreSQL's text and JSON types cannot hold one) and a lone surrogate such as
``"\\ud800"`` (it is not Unicode text; neither database driver can encode it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from pocketjobs.plugins.jobs.errors import (
    InvalidJobOptions,
    InvalidPayload,
    InvalidTopic,
    JobsError,
    PayloadTooLarge,
)
from pocketjobs.plugins.jobs.job import DEFAULT_QUEUE, JOB_STATUSES, JobFilter
from pocketjobs.plugins.jobs.limits import (
    MAX_DELAY,
    MAX_JSON_DEPTH,
    MAX_OFFSET,
    MAX_PRIORITY,
    MAX_QUEUE_LENGTH,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT,
    MAX_TOPIC_LENGTH,
    MAX_UNIQUE_KEY_LENGTH,
    MIN_TIMEOUT,
)

__all__ = [
    "QUEUE_NAME_PATTERN",
    "EnqueueSpec",
    "check_enqueue",
    "check_filter",
    "check_job_id",
    "check_max_retries",
    "check_payloads",
    "check_priority",
    "check_queue",
    "check_schedule",
    "check_small_int",
    "check_timeout",
    "check_topic",
    "check_unique_keys",
    "is_storable_text",
    "serialize_payload",
    "to_millis",
]

# A JSON \u0000 escape (not preceded by an escaped backslash).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# JSON strings, and the brackets outside them (for the nesting depth).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
T = TypeVar("T")


def is_storable_text(text: str) -> bool:
    """Whether ``text`` can be stored as text on every database: valid Unicode (no lone
    surrogate) and no NUL character."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def to_millis(moment: datetime) -> datetime:
    """``moment`` truncated to milliseconds, the precision stored on every database."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def check_topic(topic: object, allowed: Sequence[str] = ()) -> str:
    """``topic`` if it is a valid topic name (and in ``allowed``, when that is not empty);
    else :class:`InvalidTopic`."""
    if topic is None or topic == "":
        raise InvalidTopic("topic is required", code="validation_required")
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidTopic("topic must be a non-empty string")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(
            f"topic must be at most {MAX_TOPIC_LENGTH} characters",
            code="validation_length_out_of_range",
        )
    if not is_storable_text(topic):
        raise InvalidTopic("topic must be valid text without NUL characters or lone surrogates")
    if allowed and topic not in allowed:
        raise InvalidTopic("this topic is not allowed", code="validation_topic_not_allowed")
    return topic


def check_job_id(job_id: object) -> bool:
    """Whether ``job_id`` could name a stored job (no database holds an id that is not a
    string of storable text; such an id names no job)."""
    return isinstance(job_id, str) and is_storable_text(job_id)


def _too_deep(text: str) -> bool:
    """Whether the JSON ``text`` nests arrays and objects deeper than ``MAX_JSON_DEPTH``."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False  # cannot be that deep: the common case costs two C-speed counts
    depth = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def serialize_payload(payload: Any, max_size: int) -> str:
    """The JSON text stored for ``payload``; raises :class:`InvalidPayload` (not
    JSON-serializable, NaN or infinity, nested deeper than ``MAX_JSON_DEPTH``, a NUL or
    a lone surrogate in a string) or :class:`PayloadTooLarge` (over ``max_size`` bytes)."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InvalidPayload(
            f"payload is nested deeper than {MAX_JSON_DEPTH} levels", code="validation_too_deep"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"payload is not JSON-serializable: {exc}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidPayload("payload strings must not contain the NUL character (\\u0000)")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidPayload(
            "payload strings must be valid Unicode text (no lone surrogates)"
        ) from None
    if size > max_size:
        raise PayloadTooLarge(f"payload is {size} bytes of JSON; the limit is {max_size}")
    if _too_deep(text):
        raise InvalidPayload(
            f"payload is nested deeper than {MAX_JSON_DEPTH} levels", code="validation_too_deep"
        )
    return text


def check_payloads(payloads: object) -> Sequence[Any]:
    """``payloads`` if it is a sequence of payloads (not a string); else
    :class:`InvalidPayload`."""
    if isinstance(payloads, str | bytes) or not isinstance(payloads, Sequence):
        raise InvalidPayload("payloads must be a list of payloads")
    return payloads


def check_schedule(now: datetime, run_at: object, delay: object) -> datetime:
    """When a job enqueued at ``now`` is due: ``run_at`` (an aware datetime), ``now +
    delay`` (a timedelta or seconds, from zero to ``MAX_DELAY``), or ``now``; in UTC,
    truncated to milliseconds. Raises :class:`InvalidJobOptions`."""
    if run_at is not None and delay is not None:
        raise InvalidJobOptions(
            "give run_at or delay, not both", field="delay", code="validation_conflict"
        )
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidJobOptions(
                "run_at must be a datetime", field="run_at", code="validation_invalid_datetime"
            )
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidJobOptions(
                "run_at must be timezone-aware", field="run_at", code="validation_invalid_datetime"
            )
        try:
            return to_millis(run_at.astimezone(UTC))
        except OverflowError:
            raise InvalidJobOptions(
                "run_at is out of range", field="run_at", code="validation_invalid_datetime"
            ) from None
    if delay is None:
        return now
    if isinstance(delay, bool) or not isinstance(delay, timedelta | int | float):
        raise InvalidJobOptions(
            "delay must be a timedelta or a number of seconds",
            field="delay",
            code="validation_invalid_duration",
        )
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else _seconds(delay)
    if not 0 <= seconds <= MAX_DELAY.total_seconds():  # also rejects NaN
        raise InvalidJobOptions(
            f"delay must be from zero to {MAX_DELAY.days} days",
            field="delay",
            code="validation_invalid_duration",
        )
    return to_millis(now + timedelta(seconds=seconds))


def _seconds(number: float) -> float:
    """``number`` as a float; an int too large for one is infinite (out of every range)."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def check_small_int(value: object, field: str, highest: int) -> int | None:
    """``value`` (``None`` stays ``None``) if it is an int from 0 to ``highest``; else
    :class:`InvalidJobOptions` naming ``field``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= highest:
        raise InvalidJobOptions(
            f"{field} must be an integer from 0 to {highest}",
            field=field,
            code="validation_invalid_number",
        )
    return value


def check_max_retries(max_retries: object, default: int) -> int:
    """``max_retries`` (``default`` for ``None``) if it is an int from 0 to
    ``MAX_RETRIES_LIMIT``; else :class:`InvalidJobOptions`."""
    checked = check_small_int(max_retries, "max_retries", MAX_RETRIES_LIMIT)
    return default if checked is None else checked


def check_priority(priority: object) -> int:
    """``priority`` (0 for ``None``) if it is an int from 0 (first) to ``MAX_PRIORITY``;
    else :class:`InvalidJobOptions`."""
    checked = check_small_int(priority, "priority", MAX_PRIORITY)
    return 0 if checked is None else checked


def check_timeout(timeout: object) -> timedelta | None:
    """``timeout`` (a ``timedelta`` or a number of seconds; ``None`` stays ``None``) as a
    ``timedelta`` in whole milliseconds (what both databases store) if it is from
    ``MIN_TIMEOUT`` to ``MAX_TIMEOUT``; else :class:`InvalidJobOptions`."""
    if timeout is None:
        return None
    wait: timedelta | None = None
    if isinstance(timeout, timedelta):
        wait = timeout
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
        seconds = _seconds(timeout)
        if 0 < seconds <= MAX_TIMEOUT.total_seconds():  # also refuses NaN
            wait = timedelta(seconds=seconds)
    if wait is not None:
        wait = timedelta(milliseconds=round(wait / timedelta(milliseconds=1)))
    if wait is None or not MIN_TIMEOUT <= wait <= MAX_TIMEOUT:
        raise InvalidJobOptions(
            f"timeout must be from {MIN_TIMEOUT.total_seconds():g} seconds to"
            f" {MAX_TIMEOUT.days} days (seconds or a timedelta)",
            field="timeout",
            code="validation_invalid_number",
        )
    return wait


# Not only dots: "." and ".." cannot be a URL path segment (clients resolve them away).
QUEUE_NAME_PATTERN = rf"(?!\.+$)[A-Za-z0-9_.-]{{1,{MAX_QUEUE_LENGTH}}}"
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)


def check_queue(queue: object) -> str:
    """``queue`` (``"default"`` for ``None``) if it is a queue name: 1 to
    ``MAX_QUEUE_LENGTH`` letters, digits, ``_``, ``-`` or ``.``, not only dots (safe in a
    URL path and an env list); else :class:`InvalidJobOptions`."""
    if queue is None:
        return DEFAULT_QUEUE
    if not isinstance(queue, str) or _QUEUE_NAME.fullmatch(queue) is None:
        raise InvalidJobOptions(
            f"queue must be 1 to {MAX_QUEUE_LENGTH} letters, digits, '_', '-' or '.' (not only"
            " dots)",
            field="queue",
            code="validation_invalid_queue",
        )
    return queue


def check_unique_keys(keys: object, count: int) -> list[str | None]:
    """``keys`` (one per job, ``None`` for no key; all ``None`` when ``keys`` is) if each
    key is a non-empty string of storable text of at most ``MAX_UNIQUE_KEY_LENGTH``
    characters; else :class:`InvalidJobOptions`."""
    if keys is None:
        return [None] * count
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence) or len(keys) != count:
        raise InvalidJobOptions(
            "unique_keys must be a list with one key (or None) per payload",
            field="unique_key",
            code="validation_invalid_unique_key",
        )
    for key in keys:
        if key is not None and (
            not isinstance(key, str)
            or not key
            or len(key) > MAX_UNIQUE_KEY_LENGTH
            or not is_storable_text(key)
        ):
            raise InvalidJobOptions(
                f"a unique key must be a non-empty string of at most {MAX_UNIQUE_KEY_LENGTH}"
                " characters of valid text",
                field="unique_key",
                code="validation_invalid_unique_key",
            )
    return list(keys)


def check_filter(job_filter: JobFilter) -> JobFilter:
    """``job_filter`` if its fields are valid; else :class:`InvalidJobOptions`."""
    if job_filter.status is not None and job_filter.status not in JOB_STATUSES:
        raise InvalidJobOptions(
            f"status must be one of {', '.join(JOB_STATUSES)}",
            field="status",
            code="validation_invalid_status",
        )
    if job_filter.topic is not None and (
        not isinstance(job_filter.topic, str) or not is_storable_text(job_filter.topic)
    ):
        raise InvalidJobOptions(
            "topic must be a string of valid text without NUL characters",
            field="topic",
            code="validation_invalid_topic",
        )
    if job_filter.queue is not None:
        check_queue(job_filter.queue)  # no queue has a bad name (and a NUL fails in SQL)
    for name, lowest in (("limit", 0), ("offset", 0)):
        value = getattr(job_filter, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidJobOptions(
                f"{name} must be an integer", field=name, code="validation_invalid_number"
            )
        if not lowest <= value <= MAX_OFFSET:
            raise InvalidJobOptions(
                f"{name} must be from {lowest} to {MAX_OFFSET}",
                field=name,
                code="validation_out_of_range",
            )
    return job_filter


@dataclass(frozen=True, slots=True)
class EnqueueSpec:
    """A validated enqueue: the jobs' topic, due time, retries and payloads' JSON texts."""

    topic: str
    due: datetime
    max_retries: int
    payload_texts: list[str]
    priority: int
    unique_keys: list[str | None]
    queue: str
    timeout: timedelta | None


class _Collector:
    """Runs checks, keeping each one's error instead of stopping at the first."""

    def __init__(self, errors: Sequence[JobsError] = ()) -> None:
        self.errors: list[JobsError] = list(errors)

    def check(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except JobsError as exc:
            self.errors.append(exc)
            return None

    def raise_errors(self) -> None:
        """Raise the first error, the others attached as its ``related``."""
        if self.errors:
            first, *rest = self.errors
            first.related = rest
            raise first


def check_enqueue(
    topic: object,
    payloads: object,
    run_at: object,
    delay: object,
    max_retries: object,
    *,
    now: datetime,
    default_max_retries: int,
    max_size: int,
    allowed: Sequence[str] = (),
    known: Sequence[JobsError] = (),
    priority: object = None,
    unique_keys: object = None,
    queue: object = None,
    timeout: object = None,
) -> EnqueueSpec:
    """Validate an enqueue of one job per payload at ``now`` (``allowed``: the topics
    allowed, all when empty). Raises the error of the first bad field, with the errors of
    every other bad field as its ``related``; ``known`` errors, found before (e.g. values
    that did not convert from the wire: pass ``None`` for those), come first."""
    collector = _Collector(known)
    checked_topic = collector.check(lambda: check_topic(topic, allowed))
    due = collector.check(lambda: check_schedule(now, run_at, delay))
    retries = collector.check(lambda: check_max_retries(max_retries, default_max_retries))
    checked_priority = collector.check(lambda: check_priority(priority))
    checked_queue = collector.check(lambda: check_queue(queue))
    checked_timeout = collector.check(lambda: check_timeout(timeout))
    texts = collector.check(
        lambda: [serialize_payload(payload, max_size) for payload in check_payloads(payloads)]
    )
    keys = collector.check(lambda: check_unique_keys(unique_keys, len(texts or ())))
    collector.raise_errors()  # so every check returned its value
    return EnqueueSpec(
        cast(str, checked_topic), cast(datetime, due), cast(int, retries), cast("list[str]", texts),
        cast(int, checked_priority), cast("list[str | None]", keys), cast(str, checked_queue),
        checked_timeout,
    )  # fmt: skip
