"""Helpers for the jobs engine's tests: apps on the test's database, recorded handler
calls, a clock the test moves by hand.

Import them from any test module (``tests/`` is on ``sys.path``)::

    from jobs_support import Harness, ManualClock, Recorder, fast_config, wait_until

and take the ``harness`` fixture by adding ``harness = harness_fixture`` at module level.
Deadlines in :func:`wait_until` bound how long a test may wait for something that must
happen; they are not claims about speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pocketjobs import App
from pocketjobs.core.times import format_time, now_utc
from pocketjobs.plugins import jobs
from support import clear_jobs_env

__all__ = [
    "Call",
    "Handler",
    "Harness",
    "ManualClock",
    "Node",
    "Recorder",
    "fast_backoff",
    "fast_config",
    "harness_fixture",
    "wait_until",
]

T = TypeVar("T")
Handler = Callable[[jobs.Job], Any]


class ManualClock:
    """A clock that stands still until the test moves it (pass it as ``Config.clock``)."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:  # whole milliseconds, the precision every database stores
            start = now_utc()
            start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (seconds or a timedelta); the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def fast_backoff(attempt: int) -> timedelta:
    return timedelta(milliseconds=50)


def fast_config(**overrides: Any) -> jobs.Config:
    """A config with short timings; ``overrides`` replace any field."""
    settings: dict[str, Any] = {
        "workers": 4,
        "poll_interval": 0.1,
        "lock_duration": 1.0,
        "batch_size": 10,
        "max_retries": 3,
        "http_enabled": False,
        "backoff": fast_backoff,
        "shutdown_timeout": 5.0,
    }
    settings.update(overrides)
    return jobs.Config(**settings)


@dataclass(frozen=True)
class Call:
    """One handler invocation."""

    job_id: str
    who: str
    started: float  # time.monotonic()
    started_at: datetime  # wall clock, aware UTC
    thread: str
    has_loop: bool


class Recorder:
    """Thread-safe log of handler invocations and of how many run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.finished: list[str] = []
        self.active = 0
        self.max_active = 0

    def record(self, job: jobs.Job, who: str = "") -> Call:
        try:
            asyncio.get_running_loop()
            has_loop = True
        except RuntimeError:
            has_loop = False
        call = Call(
            job.id, who, time.monotonic(), now_utc(), threading.current_thread().name, has_loop
        )
        with self._lock:
            self.calls.append(call)
        return call

    @contextmanager
    def running(self, job: jobs.Job, who: str = "") -> Iterator[Call]:
        call = self.record(job, who)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            yield call
        finally:
            with self._lock:
                self.active -= 1
                self.finished.append(job.id)

    def count(self, job_id: str | None = None, who: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for c in self.calls
                if (job_id is None or c.job_id == job_id) and (who is None or c.who == who)
            )

    def for_job(self, job_id: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.job_id == job_id]

    def counter(self) -> Counter[str]:
        with self._lock:
            return Counter(c.job_id for c in self.calls)


@dataclass
class Node:
    """One app with the jobs plugin registered."""

    app: App
    store: jobs.JobStore

    def status(self, job_id: str) -> str:
        return self.store.get(job_id).status

    def locked_by(self, job_id: str) -> str | None:
        value: str | None = self.app.db.fetch_value(
            "SELECT locked_by FROM _jobs WHERE id = ?", (job_id,)
        )
        return value

    def db_time(self, moment: datetime) -> Any:
        """``moment`` as this database stores times (SQLite: fixed-width text)."""
        return moment if self.app.is_postgres() else format_time(moment)

    def expire_lock(self, job_id: str, now: datetime | None = None) -> None:
        """Make the job's lock expired a minute before ``now`` (default: the real now)."""
        moment = (now if now is not None else now_utc()) - timedelta(minutes=1)
        self.app.db.execute(
            "UPDATE _jobs SET locked_until = ? WHERE id = ?", (self.db_time(moment), job_id)
        )

    def locked_until(self, job_id: str) -> datetime | None:
        job = self.store.get(job_id)
        return job.locked_until

    def processing(self) -> int:
        return int(
            self.app.db.fetch_value("SELECT COUNT(*) FROM _jobs WHERE status = 'processing'")
        )

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the dispatcher sleeps with nothing to do."""
        dispatcher = self.store._dispatcher
        assert dispatcher is not None, "the dispatcher was never started"
        wait_until(dispatcher.idle, timeout, "the dispatcher to go idle")

    def wait_status(self, job_id: str, status: str, timeout: float = 10.0) -> jobs.Job:
        return wait_until(
            lambda: (job := self.store.get(job_id)).status == status and job,
            timeout,
            f"job {job_id} to be {status}",
        )


@dataclass
class Harness:
    """Builds apps on the test's database and terminates them all at the end."""

    data_dir: Path
    db_url: str | None
    nodes: list[Node] = field(default_factory=list)
    gates: list[threading.Event] = field(default_factory=list)

    def node(
        self,
        config: jobs.Config | None = None,
        handlers: Mapping[str, Handler] | None = None,
        **overrides: Any,
    ) -> Node:
        """A bootstrapped app (its dispatcher started unless ``auto_start=False``)."""
        app = App(data_dir=self.data_dir, database_url=self.db_url)
        store = jobs.must_register(app, config or fast_config(**overrides))
        for topic, fn in (handlers or {}).items():
            store.register(topic, fn)
        app.bootstrap()
        node = Node(app, store)
        self.nodes.append(node)
        return node

    def gate(self) -> threading.Event:
        """An event handlers may block on; set at teardown so nothing hangs."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for node in reversed(self.nodes):
            if node.app.is_bootstrapped():
                node.app.terminate()


@pytest.fixture
def harness_fixture(
    data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """A :class:`Harness` on the test's database (``PB_JOBS_*`` variables cleared)."""
    clear_jobs_env(monkeypatch)
    h = Harness(data_dir, db_url)
    try:
        yield h
    finally:
        h.close()
