"""The job and the value types around it: filters, pages, statistics, ids."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar, cast

from pocketjobs.core.times import format_time

__all__ = [
    "DEFAULT_QUEUE",
    "JOB_STATUSES",
    "MAX_ERRORS_KEPT",
    "Job",
    "JobFilter",
    "JobList",
    "JobStats",
    "JobStatus",
    "QueueInfo",
    "build_job",
    "uuid7",
]

JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
JOB_STATUSES: Final[tuple[JobStatus, ...]] = (
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
)
#: The most recent attempt errors a job keeps (older ones are dropped).
MAX_ERRORS_KEPT: Final = 25
T = TypeVar("T")
#: The queue of a job enqueued without one (and of every job from before queues existed).
DEFAULT_QUEUE: Final = "default"


@dataclass(frozen=True, slots=True)
class Job:
    """One job as stored. ``payload`` is the decoded JSON; times are aware UTC."""

    id: str
    topic: str
    payload: Any
    status: JobStatus
    run_at: datetime
    locked_until: datetime | None
    retries: int
    max_retries: int
    last_error: str | None
    created: datetime
    updated: datetime
    #: 0 runs first, 9 last (among due jobs of the same topics).
    priority: int = 0
    #: While a job with this key and topic is pending or processing, no other is enqueued.
    unique_key: str | None = None
    #: The named queue the job waits in (each queue has its own worker slots).
    queue: str = DEFAULT_QUEUE
    #: When its latest attempt started (``None``: never attempted).
    attempted_at: datetime | None = None
    #: When its first attempt started.
    first_attempted_at: datetime | None = None
    #: The node of its latest attempt: ``host:pid:node-id`` (the node id is the worker's
    #: id in ``_jobs_workers``).
    attempted_by: str | None = None
    #: When it finished (completed, failed for good or cancelled).
    finished_at: datetime | None = None
    #: Its failed attempts, oldest first: ``{"at": RFC 3339, "attempt": n, "error": text}``
    #: (the latest :data:`MAX_ERRORS_KEPT`).
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: How long one attempt may run (``None``: the handler's default, else the config's).
    timeout: timedelta | None = None
    #: When a cancel of the running job was asked for (it stops, becomes ``cancelled``).
    cancel_requested_at: datetime | None = None
    #: Set on what ``enqueue`` returns when the job already existed (its ``unique_key``
    #: was taken): this is that job, and nothing was inserted.
    duplicate: bool = False
    _stop: threading.Event | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def cancel_requested(self) -> threading.Event:
        """Set when the running attempt should stop: the job was cancelled or its attempt
        timed out. A plain handler that runs long checks it (``is_set()``, or waits on
        it) or calls :meth:`raise_if_cancelled`; an async handler is cancelled instead."""
        stop = self._stop
        if stop is None:
            with _stop_lock:
                stop = self._stop
                if stop is None:
                    stop = threading.Event()
                    object.__setattr__(self, "_stop", stop)
        return stop

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~pocketjobs.plugins.jobs.JobCancelled` if the running attempt
        should stop (see :attr:`cancel_requested`)."""
        stop = self._stop
        if stop is not None and stop.is_set():
            from pocketjobs.plugins.jobs.retry import JobCancelled

            raise JobCancelled(f"job {self.id} was asked to stop")

    def unmarshal_payload(self, cls: type[T]) -> T:
        """Build ``cls`` (a dataclass, a pydantic model, or any class taking keyword
        arguments) from the payload object. Raises ``TypeError``/``ValueError`` when the
        payload does not fit."""
        validate = getattr(cls, "model_validate", None)  # pydantic v2
        if callable(validate):
            return cast(T, validate(self.payload))
        if not isinstance(self.payload, dict):
            raise TypeError(f"payload of job {self.id} is not a JSON object")
        if dataclasses.is_dataclass(cls):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = set(self.payload) - names
            if unknown:
                raise TypeError(f"unexpected payload fields for {cls.__name__}: {sorted(unknown)}")
        return cls(**self.payload)

    def to_json(self) -> dict[str, Any]:
        """The job as the HTTP API returns it (times RFC 3339 UTC with milliseconds)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "payload": self.payload,
            "status": self.status,
            "run_at": format_time(self.run_at),
            "locked_until": _time_or_none(self.locked_until),
            "retries": self.retries,
            "max_retries": self.max_retries,
            "last_error": self.last_error,
            "created": format_time(self.created),
            "updated": format_time(self.updated),
            "priority": self.priority,
            "unique_key": self.unique_key,
            "queue": self.queue,
            "attempted_at": _time_or_none(self.attempted_at),
            "first_attempted_at": _time_or_none(self.first_attempted_at),
            "attempted_by": self.attempted_by,
            "finished_at": _time_or_none(self.finished_at),
            "errors": self.errors,
            "timeout": self.timeout.total_seconds() if self.timeout is not None else None,
            "cancel_requested_at": _time_or_none(self.cancel_requested_at),
            "duplicate": self.duplicate,
        }


_stop_lock = threading.Lock()


def _job_builder() -> Callable[[Sequence[Any]], Job]:
    """:func:`build_job`: it fills a new Job through its slots' setters, which costs half
    of what the frozen dataclass's ``__init__`` does (``object.__setattr__`` by name, per
    field); what it uses is in its closure (no global lookups)."""
    fields = tuple(field.name for field in dataclasses.fields(Job))
    stored = fields.index("duplicate")  # the fields a row holds come first
    setters = tuple(getattr(Job, name).__set__ for name in fields)
    set_stored = setters[:stored]
    set_duplicate, set_stop = setters[stored:]
    new = object.__new__

    def build_job(values: Sequence[Any]) -> Job:
        """A :class:`Job` from its stored fields in field order (``id`` to
        ``cancel_requested_at``), already decoded: how a driver's decoding of a row ends
        (a claim decodes every job it takes)."""
        job: Job = new(Job)
        for setter, value in zip(set_stored, values, strict=True):
            setter(job, value)
        set_duplicate(job, False)
        set_stop(job, None)
        return job

    return build_job


build_job = _job_builder()


def _time_or_none(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What :meth:`JobStore.list` returns: optional topic/status, a page of ``limit`` items
    from ``offset``, newest first."""

    topic: str | None = None
    status: JobStatus | None = None
    limit: int = 20
    offset: int = 0
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class JobList:
    """One page of jobs and the total number matching the filter."""

    items: list[Job]
    total: int
    limit: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        """The page as the HTTP API returns it."""
        return {
            "items": [job.to_json() for job in self.items],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }


@dataclass(frozen=True, slots=True)
class JobStats:
    """Counts per status; ``success_rate`` = completed / (completed + failed), 0 if none
    (cancelled jobs count neither way)."""

    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    total: int
    success_rate: float
    #: Pending jobs per topic that no running worker (in any process) handles.
    orphaned_topics: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Pending jobs per queue that no running worker (in any process) works on.
    orphaned_queues: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_counts(
        cls,
        counts: dict[str, int],
        orphaned_topics: dict[str, int] | None = None,
        orphaned_queues: dict[str, int] | None = None,
    ) -> JobStats:
        """Statistics from a ``status -> count`` mapping (missing statuses count 0)."""
        pending, processing, completed, failed, cancelled = (counts.get(s, 0) for s in JOB_STATUSES)
        finished = completed + failed
        return cls(
            pending=pending,
            processing=processing,
            completed=completed,
            failed=failed,
            cancelled=cancelled,
            total=pending + processing + completed + failed + cancelled,
            success_rate=completed / finished if finished else 0.0,
            orphaned_topics=dict(orphaned_topics or {}),
            orphaned_queues=dict(orphaned_queues or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """The statistics as the HTTP API returns them."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A named queue: paused or not (in every process), its jobs now, the worker slots
    this process gives it (0: it does not work on it) and its global limit (``None``:
    none) as this process's config says."""

    name: str
    paused: bool
    pending: int
    processing: int
    concurrency: int
    global_limit: int | None

    def to_json(self) -> dict[str, Any]:
        """The queue as the HTTP API returns it."""
        return dataclasses.asdict(self)


_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)  # (milliseconds, 12-bit sequence) of the previous id
# Random bits from the OS, drawn 4 KiB at a time (one system call per 512 ids: a call per
# id cost a hot event loop a fifth of its time in the GIL hand-off around it).
_RANDOM_CHUNK = 4096
_uuid7_random = memoryview(b"")


def _forget_random() -> None:
    """A forked child must not reuse its parent's bits (same millisecond, same id)."""
    global _uuid7_random
    _uuid7_random = memoryview(b"")


os.register_at_fork(after_in_child=_forget_random)


def uuid7() -> str:
    """A UUIDv7 (RFC 9562) string: time ordered, and strictly increasing within a process
    (a 12-bit sequence in ``rand_a`` orders ids minted in the same millisecond)."""
    global _uuid7_last, _uuid7_random
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_seq = _uuid7_last
        if millis <= last_millis:
            millis, seq = last_millis, last_seq + 1
            if seq > 0xFFF:  # sequence exhausted: borrow the next millisecond
                millis, seq = millis + 1, 0
        else:
            seq = 0
        _uuid7_last = (millis, seq)
        if len(_uuid7_random) < 8:
            _uuid7_random = memoryview(os.urandom(_RANDOM_CHUNK))
        rand_b = int.from_bytes(_uuid7_random[:8]) & ((1 << 62) - 1)
        _uuid7_random = _uuid7_random[8:]
    value = (millis << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
