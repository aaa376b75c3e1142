"""The example app: ``python examples/base/main.py serve`` serves http://127.0.0.1:8090.

It registers the jobs plugin with two demo handlers: ``demo:echo`` (a plain function,
run on a worker thread) and ``demo:sleep`` (an ``async def``, run on the event loop).
Data lives next to this file in ``pb_data/`` (SQLite) unless ``--dir`` or ``--db`` /
``PB_DATABASE_URL`` says otherwise. Add worker processes with
``python examples/base/main.py worker`` (on PostgreSQL, on as many machines as you like).
"""

import asyncio
from pathlib import Path

from pocketjobs import App
from pocketjobs.plugins import jobs

app = App(data_dir=Path(__file__).resolve().parent / "pb_data")
store = jobs.must_register(app, jobs.Config(workers=10))


@store.handler("demo:echo")
def echo(job: jobs.Job) -> None:
    """Log the payload. Raise to see retries: enqueue ``{"fail": true}``."""
    app.logger.info("demo:echo job %s payload=%r", job.id, job.payload)
    if isinstance(job.payload, dict) and job.payload.get("fail"):
        raise RuntimeError("demo:echo was asked to fail")


@store.handler("demo:sleep")
async def sleep(job: jobs.Job) -> None:
    """Wait ``payload["seconds"]`` (default 1) without blocking a thread."""
    seconds = job.payload.get("seconds", 1) if isinstance(job.payload, dict) else 1
    await asyncio.sleep(float(seconds))
    app.logger.info("demo:sleep job %s slept %ss", job.id, seconds)


if __name__ == "__main__":
    app.start()
