"""A FastAPI app with the job queue inside it: ``uvicorn main:api --app-dir examples/fastapi``
serves http://127.0.0.1:8000.

* ``GET /`` and ``POST /signups`` are the app's own routes. A sign-up enqueues a
  ``welcome:send`` job with ``store.aenqueue`` and answers at once; the dispatcher of this
  process runs it (an ``async def`` handler, on the dispatcher's own event loop).
* ``/jobs`` is the jobs plugin mounted: the jobs API (``/jobs/api/jobs/...``), the auth
  routes it needs (``/jobs/api/collections/_superusers/auth-with-password``) and the
  dashboard at http://127.0.0.1:8000/jobs/_/jobs.
* ``jobs.lifespan(app, lifespan)`` bootstraps the app when FastAPI starts (the database
  opens, the dispatcher starts), then runs this app's own ``lifespan``; on shutdown, the
  other way round, and the dispatcher waits for the running jobs.

Data lives next to this file in ``pb_data/`` (SQLite) unless ``PB_DATABASE_URL`` says
otherwise. The same file is the app's command line: create the superuser who logs in to
the dashboard with ``python examples/fastapi/main.py superuser upsert EMAIL PASSWORD``, and
add worker processes with ``python examples/fastapi/main.py worker``.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from pocketjobs import App
from pocketjobs.core import configure_logging
from pocketjobs.plugins import jobs

configure_logging()  # the app's log lines on stderr, next to uvicorn's
app = App(data_dir=Path(__file__).resolve().parent / "pb_data")
store = jobs.must_register(app, jobs.Config(workers=4))


@store.handler("welcome:send", max_retries=5)
async def send_welcome(job: jobs.Job) -> None:
    """Send the welcome mail of a sign-up (here: wait a little and log it)."""
    await asyncio.sleep(float(job.payload.get("seconds", 0.2)))
    app.logger.info("welcome mail sent to %s (job %s)", job.payload["email"], job.id)


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # Runs once the app has bootstrapped: the database and the store are ready here.
    app.logger.info("signups API up, %d jobs pending", (await store.astats()).pending)
    yield


api = FastAPI(title="Signups", lifespan=jobs.lifespan(app, lifespan))
api.mount("/jobs", jobs.asgi(store))


class Signup(BaseModel):
    email: str
    seconds: float = 0.2  # how long the welcome mail takes (to watch it on the dashboard)


@api.get("/")
async def index() -> dict[str, str]:
    return {"app": "signups", "jobs": "/jobs/_/jobs"}


@api.post("/signups", status_code=202)
async def sign_up(signup: Signup) -> dict[str, str]:
    job = await store.aenqueue("welcome:send", {"email": signup.email, "seconds": signup.seconds})
    return {"email": signup.email, "job": job.id, "status": job.status}


if __name__ == "__main__":
    app.start()  # superuser upsert, worker, jobs stats, serve (without FastAPI's routes)
