"""The jobs plugin: a durable, database-backed job queue for a pocketjobs app.

::

    from pocketjobs import App
    from pocketjobs.plugins import jobs

    app = App()
    store = jobs.must_register(app, jobs.Config(workers=10))

    @store.handler("send_email")
    def send_email(job: jobs.Job) -> None: ...

    app.start()

Or embedded in a Starlette or FastAPI app::

    api = FastAPI(lifespan=jobs.lifespan(app))
    api.mount("/jobs", jobs.asgi(store))

See this package's README.md for the full manual.
"""

from pocketjobs.plugins.jobs.config import Config, ConfigError, default_config
from pocketjobs.plugins.jobs.embedding import EmbeddedApp, asgi, lifespan
from pocketjobs.plugins.jobs.errors import (
    InvalidHandler,
    InvalidJobOptions,
    InvalidPayload,
    InvalidTopic,
    JobCannotCancel,
    JobCannotDelete,
    JobCannotRequeue,
    JobNotFound,
    JobsError,
    PayloadTooLarge,
    PluginAlreadyRegistered,
    ScheduleAlreadyRegistered,
    ScheduleNotFound,
    TopicAlreadyRegistered,
)
from pocketjobs.plugins.jobs.events import JobDoneEvent, JobOutcome, JobStartEvent
from pocketjobs.plugins.jobs.job import Job, JobFilter, JobList, JobStats, JobStatus, QueueInfo
from pocketjobs.plugins.jobs.metrics import JobMetrics
from pocketjobs.plugins.jobs.register import (
    PluginDisabled,
    client,
    get_job_store,
    must_register,
    register,
)
from pocketjobs.plugins.jobs.retention import Retention
from pocketjobs.plugins.jobs.retry import Discard, JobCancelled, Snooze
from pocketjobs.plugins.jobs.schedules import Schedule, ScheduleInfo
from pocketjobs.plugins.jobs.store import JobStore
from pocketjobs.plugins.jobs.task import Task

__all__ = [
    "Config",
    "ConfigError",
    "Discard",
    "EmbeddedApp",
    "InvalidHandler",
    "InvalidJobOptions",
    "InvalidPayload",
    "InvalidTopic",
    "Job",
    "JobCancelled",
    "JobCannotCancel",
    "JobCannotDelete",
    "JobCannotRequeue",
    "JobDoneEvent",
    "JobFilter",
    "JobList",
    "JobMetrics",
    "JobNotFound",
    "JobOutcome",
    "JobStartEvent",
    "JobStats",
    "JobStatus",
    "JobStore",
    "JobsError",
    "PayloadTooLarge",
    "PluginAlreadyRegistered",
    "PluginDisabled",
    "QueueInfo",
    "Retention",
    "Schedule",
    "ScheduleAlreadyRegistered",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Snooze",
    "Task",
    "TopicAlreadyRegistered",
    "asgi",
    "client",
    "default_config",
    "get_job_store",
    "lifespan",
    "must_register",
    "register",
]
