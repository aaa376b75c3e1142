"""Job handlers as registered: the function and its per-topic options.

``@store.handler("email:send", queue="mail", priority=0, max_retries=5, backoff=...,
timeout=30)`` registers a function with defaults for that topic: ``queue``, ``priority``
and ``max_retries`` apply to jobs enqueued (in a process where the handler is registered)
without their own, ``backoff`` to its failed attempts and ``timeout`` to its attempts of
jobs enqueued without one. A function that cannot take one
``Job`` argument is refused when it is registered, not when its first job runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pocketjobs.plugins.jobs.errors import InvalidHandler
from pocketjobs.plugins.jobs.executor import JobHandler
from pocketjobs.plugins.jobs.limits import MAX_PRIORITY, MAX_RETRIES_LIMIT
from pocketjobs.plugins.jobs.validation import check_queue, check_small_int, check_timeout

__all__ = ["HandlerOptions", "check_handler"]


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """A topic's defaults: ``None`` means the enqueue's, else the config's."""

    priority: int | None = None
    max_retries: int | None = None
    backoff: Callable[[int], timedelta] | None = None
    queue: str | None = None
    timeout: timedelta | None = None

    @classmethod
    def checked(
        cls,
        priority: Any = None,
        max_retries: Any = None,
        backoff: Any = None,
        queue: Any = None,
        timeout: Any = None,
    ) -> HandlerOptions:
        """Options from a registration's arguments; raises
        :class:`~pocketjobs.plugins.jobs.errors.InvalidJobOptions` for a bad priority,
        ``max_retries`` (0 to ``MAX_RETRIES_LIMIT``), queue name or timeout and
        :class:`InvalidHandler` for a backoff that is not callable."""
        if backoff is not None and not callable(backoff):
            raise InvalidHandler("backoff must be a callable (attempt: int) -> timedelta")
        return cls(
            priority=check_small_int(priority, "priority", MAX_PRIORITY),
            max_retries=check_small_int(max_retries, "max_retries", MAX_RETRIES_LIMIT),
            backoff=backoff,
            queue=None if queue is None else check_queue(queue),
            timeout=check_timeout(timeout),
        )


def check_handler(fn: object) -> JobHandler:
    """``fn`` if it can be called with one positional argument (the job); else
    :class:`InvalidHandler` naming what is wrong."""
    if not callable(fn):
        raise InvalidHandler(f"a job handler must be callable, got {fn!r}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let them be
        return fn
    try:
        signature.bind(object())
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise InvalidHandler(
            f"a job handler is called with one argument, the job; {name}{signature} "
            f"cannot be ({exc})"
        ) from None
    return fn
