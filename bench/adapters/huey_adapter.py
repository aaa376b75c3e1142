"""huey with ``SqliteHuey`` (SQLite only): a consumer process made with
``huey.create_consumer(workers=10, worker_type=...)`` -- what ``huey_consumer -w 10 -k
thread|process`` runs -- with the consumer's default polling (initial delay 0.1 s,
backoff 1.15, max delay 10 s). Producer: calling the task (one enqueue per call); huey has
no bulk enqueue. ``SqliteHuey`` defaults: WAL, SQLite's default ``synchronous``
(``fsync=None``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.adapters.base import BURNDOWN, STEADY, WAKEUP, Adapter
from bench.common import SQLITE, record, worker_ready_and_wait

TASK_NAME = "noop"


def _noop(n: int) -> None:
    record(n)


def _make_huey(tmp: str | Path) -> tuple[Any, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey(name="bench", filename=str(Path(tmp) / "huey.db"))
    task = huey.task(name=TASK_NAME)(_noop)
    return huey, task


class _HueyBase(Adapter):
    library = "huey"
    db = SQLITE
    worker_type: ClassVar[str]

    def setup(self) -> None:
        self.huey, self.task = _make_huey(self.ctx.tmp)

    def teardown(self) -> None:
        huey = getattr(self, "huey", None)
        if huey is not None:
            with contextlib.suppress(Exception):
                huey.storage.close()

    def enqueue_one(self, number: int) -> None:
        self.task(number)

    def fill(self, numbers: Sequence[int]) -> None:
        # Untimed set-up only: the same task messages through a producer whose connection
        # skips fsync (huey has no bulk API, and at the default synchronous=FULL filling
        # 10,000 jobs one commit each would cost seconds per measurement).
        from huey import SqliteHuey

        fast = SqliteHuey(name="bench", filename=str(self.ctx.tmp / "huey.db"), fsync=False)
        task = fast.task(name=TASK_NAME)(_noop)
        try:
            for n in numbers:
                task(n)
        finally:
            fast.storage.close()

    def remaining(self) -> int:
        # Dequeued tasks leave the table before they run; the recorder covers the tail.
        return self.ctx.count_sql("SELECT count(*) FROM task", self.ctx.tmp / "huey.db")

    def worker_spec(self) -> dict[str, Any]:
        return {**super().worker_spec(), "worker_type": self.worker_type}

    @classmethod
    def worker_main(cls, spec: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.WARNING)
        huey, _ = _make_huey(spec["tmp"])
        consumer = huey.create_consumer(
            workers=spec["concurrency"], worker_type=spec["worker_type"], periodic=False
        )
        worker_ready_and_wait(spec)
        consumer.run()  # installs its own signal handlers; SIGTERM stops it


class HueyThreads(_HueyBase):
    key = "huey-thread"
    label = "huey SqliteHuey (10 threads)"
    worker_type = "thread"
    notes = (
        "huey: SqliteHuey defaults (WAL, SQLite's default synchronous=FULL), consumer made "
        "with create_consumer(workers=10, worker_type=thread|process) and its default polling "
        "(initial delay 0.1 s, backoff 1.15, max delay 10 s); no bulk enqueue API. Enqueue "
        "is measured once (the worker type does not change the producer).",
    )


class HueyProcesses(_HueyBase):
    key = "huey-process"
    label = "huey SqliteHuey (10 processes)"
    worker_type = "process"
    workloads = (BURNDOWN, STEADY, WAKEUP)


ADAPTERS: list[type[Adapter]] = [HueyThreads, HueyProcesses]
