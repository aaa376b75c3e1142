# ruff: noqa: RUF001 - labels use the multiplication sign on purpose
"""pgqueuer (PostgreSQL only), in two configurations:

* its tuned setup, as in pgqueuer's own benchmark tool: the asyncpg driver, 5 queue
  managers (one connection each) in one worker process, dequeue batch 10;
* the same with dequeue batch 100, the claim size of pocketjobs' default (burn-down
  only);
* psycopg (async) with one queue manager, batch 10.

Producer: ``Queries.enqueue(entrypoint, payload)`` one call per job, and the list form
for bulk. The no-op entrypoint is ``async def`` (pgqueuer's natural handler).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any, ClassVar

from bench.adapters.base import BURNDOWN, Adapter
from bench.common import POSTGRES, record, worker_ready_and_wait

ENTRYPOINT = "noop"


async def _driver(kind: str, url: str) -> Any:
    if kind == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        return AsyncpgDriver(await asyncpg.connect(url))
    import psycopg
    from pgqueuer.db import PsycopgDriver

    return PsycopgDriver(await psycopg.AsyncConnection.connect(url, autocommit=True))


class _PgqueuerBase(Adapter):
    library = "pgqueuer"
    db = POSTGRES
    is_async = True
    driver_kind: ClassVar[str]
    managers: ClassVar[int]
    batch_size: ClassVar[int] = 10
    notes = (
        "pgqueuer: async no-op entrypoint; QueueManager.run(batch_size=10) with no "
        "max_concurrent_tasks (pgqueuer's default: in-flight jobs are bounded by what each "
        "manager dequeues, not by a pool of 10). Producer on the same driver as the workers.",
    )

    async def asetup(self) -> None:
        from pgqueuer.queries import Queries

        assert self.ctx.pg_url is not None
        self._pg_driver = await _driver(self.driver_kind, self.ctx.pg_url)
        self.queries = Queries(self._pg_driver)
        await self.queries.install()

    async def ateardown(self) -> None:
        driver = getattr(self, "_pg_driver", None)
        if driver is None:
            return
        conn = getattr(driver, "_connection", None) or getattr(driver, "connection", None)
        if conn is not None:
            await conn.close()

    async def aenqueue_one(self, number: int) -> None:
        await self.queries.enqueue(ENTRYPOINT, str(number).encode())

    async def aenqueue_chunk(self, numbers: Sequence[int]) -> None:
        await self.queries.enqueue(
            [ENTRYPOINT] * len(numbers),
            [str(n).encode() for n in numbers],
            [0] * len(numbers),
        )

    def remaining(self) -> int:
        return self.ctx.count_sql("SELECT count(*) FROM pgqueuer")

    def worker_spec(self) -> dict[str, Any]:
        return {
            **super().worker_spec(),
            "driver": self.driver_kind,
            "managers": self.managers,
            "batch_size": self.batch_size,
        }

    @classmethod
    def worker_main(cls, spec: dict[str, Any]) -> None:
        asyncio.run(cls._worker(spec))

    @classmethod
    async def _worker(cls, spec: dict[str, Any]) -> None:
        from pgqueuer.models import Job
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        managers = []
        for _ in range(spec["managers"]):
            qm = QueueManager(Queries(await _driver(spec["driver"], spec["pg_url"])))

            @qm.entrypoint(ENTRYPOINT)
            async def noop(job: Job) -> None:
                record(int(job.payload or b"0"))

            managers.append(qm)
        loop = asyncio.get_running_loop()

        def shutdown() -> None:
            for qm in managers:
                qm.shutdown.set()

        loop.add_signal_handler(signal.SIGTERM, shutdown)
        loop.add_signal_handler(signal.SIGINT, shutdown)
        await loop.run_in_executor(None, worker_ready_and_wait, spec)
        await asyncio.gather(*(qm.run(batch_size=spec["batch_size"]) for qm in managers))


class PgqueuerTuned(_PgqueuerBase):
    key = "pgqueuer-asyncpg"
    label = "pgqueuer (asyncpg, 5 managers × batch 10)"
    driver_kind = "asyncpg"
    managers = 5


class PgqueuerTunedBatch100(PgqueuerTuned):
    key = "pgqueuer-asyncpg-batch100"
    label = "pgqueuer (asyncpg, 5 managers × batch 100)"
    batch_size = 100
    workloads = (BURNDOWN,)
    notes = (
        "pgqueuer (asyncpg, 5 managers × batch 100): dequeues of up to 100 jobs, as large "
        "as pocketjobs' default claims (pgqueuer then runs up to 500 jobs at once: its "
        "in-flight jobs are what its managers dequeued).",
    )


class PgqueuerPsycopg(_PgqueuerBase):
    key = "pgqueuer-psycopg"
    label = "pgqueuer (psycopg, 1 manager × batch 10)"
    driver_kind = "psycopg"
    managers = 1
    notes = ()


ADAPTERS: list[type[Adapter]] = [PgqueuerTuned, PgqueuerTunedBatch100, PgqueuerPsycopg]
