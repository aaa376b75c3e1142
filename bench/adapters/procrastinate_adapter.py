"""procrastinate (PostgreSQL only): ``PsycopgConnector``, an ``async def`` no-op task,
a worker process running ``app.run_worker_async(concurrency=10)`` (LISTEN/NOTIFY on, the
default). Producer: ``task.defer_async`` per job, ``task.batch_defer_async`` for bulk
when the installed version has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench.adapters.base import Adapter
from bench.common import POSTGRES, Unsupported, record, worker_ready_and_wait

TASK_NAME = "noop"
QUEUE = "bench"


def _make_app(url: str) -> tuple[Any, Any]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=TASK_NAME, queue=QUEUE)
    async def noop(n: int) -> None:
        record(n)

    return app, noop


class Procrastinate(Adapter):
    key = "procrastinate"
    library = "procrastinate"
    label = "procrastinate (concurrency 10)"
    db = POSTGRES
    is_async = True
    notes = (
        "procrastinate: PsycopgConnector, async no-op task, run_worker_async(concurrency=10) "
        "with its defaults (listen_notify on, jobs kept after completion).",
    )

    async def asetup(self) -> None:
        assert self.ctx.pg_url is not None
        self.app, self.task = _make_app(self.ctx.pg_url)
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def ateardown(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            await app.close_async()

    async def aenqueue_one(self, number: int) -> None:
        await self.task.defer_async(n=number)

    async def aenqueue_chunk(self, numbers: Sequence[int]) -> None:
        batch = getattr(self.task, "batch_defer_async", None)
        if batch is None:
            raise Unsupported("this procrastinate version has no batch_defer")
        await batch(*({"n": n} for n in numbers))

    def remaining(self) -> int:
        return self.ctx.count_sql(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )

    @classmethod
    def worker_main(cls, spec: dict[str, Any]) -> None:
        asyncio.run(cls._worker(spec))

    @classmethod
    async def _worker(cls, spec: dict[str, Any]) -> None:
        app, _ = _make_app(spec["pg_url"])
        async with app.open_async():
            await asyncio.get_running_loop().run_in_executor(None, worker_ready_and_wait, spec)
            # Installs its own SIGINT/SIGTERM handlers (graceful stop).
            await app.run_worker_async(queues=[QUEUE], concurrency=spec["concurrency"], wait=True)


ADAPTERS: list[type[Adapter]] = [Procrastinate]
