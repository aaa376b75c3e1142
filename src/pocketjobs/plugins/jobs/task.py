"""Typed tasks: a handler and the way to enqueue its jobs in one object.

::

    @store.task("email:send", max_retries=5)
    def send_email(job: jobs.Job) -> None:
        message = job.unmarshal_payload(Email)
        ...

    send_email.enqueue(Email(to="a@example.com"), delay=60)   # -> Job
    await send_email.aenqueue(Email(to="b@example.com"))

A payload may be a dataclass instance or a pydantic model: it is stored as its JSON
object, and ``job.unmarshal_payload(Email)`` builds it again in the handler.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pocketjobs.plugins.jobs.executor import JobHandler
from pocketjobs.plugins.jobs.job import Job

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.store import JobStore

__all__ = ["Task", "to_payload"]


def to_payload(value: Any) -> Any:
    """``value`` as a JSON-ready payload: a dataclass instance as its fields (recursively),
    a pydantic model as its JSON-mode dump, anything else unchanged."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return value


class Task:
    """A registered handler of ``topic``; calling the task calls the handler."""

    def __init__(self, store: JobStore, topic: str, fn: JobHandler) -> None:
        self.store = store
        self.topic = topic
        self.fn = fn

    def __call__(self, job: Job) -> Any:
        return self.fn(job)

    def enqueue(self, payload: Any = None, **options: Any) -> Job:
        """:meth:`JobStore.enqueue` of this task's topic (the same options)."""
        return self.store.enqueue(self.topic, to_payload(payload), **options)

    async def aenqueue(self, payload: Any = None, **options: Any) -> Job:
        """Awaitable :meth:`enqueue`."""
        return await self.store.aenqueue(self.topic, to_payload(payload), **options)

    def enqueue_many(self, payloads: list[Any], **options: Any) -> list[Job]:
        """:meth:`JobStore.enqueue_many` of this task's topic (the same options)."""
        return self.store.enqueue_many(self.topic, [to_payload(p) for p in payloads], **options)

    def __repr__(self) -> str:
        return f"<Task {self.topic!r} {getattr(self.fn, '__qualname__', self.fn)!r}>"
