"""The jobs plugin's exceptions. The HTTP layer maps them to statuses in one table.

::

    JobsError
     ├── JobNotFound              no job with that id                         (404)
     ├── JobCannotDelete          only pending or failed jobs can be deleted  (400)
     ├── JobCannotRequeue         only failed jobs can be requeued            (400)
     ├── InvalidTopic             empty, longer than 255 characters, not allowed (400)
     ├── InvalidPayload           not JSON-serializable                       (400)
     │    └── PayloadTooLarge     JSON longer than max_payload_size            (400)
     ├── InvalidJobOptions        bad run_at / delay / max_retries            (400)
     ├── TopicAlreadyRegistered   a handler for that topic exists
     └── PluginAlreadyRegistered  the plugin is already registered on the app
"""

from __future__ import annotations

__all__ = [
    "InvalidJobOptions",
    "InvalidPayload",
    "InvalidTopic",
    "JobCannotDelete",
    "JobCannotRequeue",
    "JobNotFound",
    "JobsError",
    "PayloadTooLarge",
    "PluginAlreadyRegistered",
    "TopicAlreadyRegistered",
]


class JobsError(Exception):
    """Base class of every jobs plugin error."""


class JobNotFound(JobsError):
    """No job has the given id."""


class JobCannotDelete(JobsError):
    """The job is processing or completed; only pending and failed jobs can be deleted."""


class JobCannotRequeue(JobsError):
    """The job has not failed; only failed jobs can be requeued."""


class InvalidTopic(JobsError, ValueError):
    """The topic is empty, longer than 255 characters, or not in ``allowed_topics``."""


class InvalidPayload(JobsError, ValueError):
    """The payload cannot be serialized to JSON."""


class PayloadTooLarge(InvalidPayload):
    """The payload's JSON is longer than ``max_payload_size`` bytes."""


class InvalidJobOptions(JobsError, ValueError):
    """``run_at``, ``delay`` or ``max_retries`` is invalid (naive datetime, both given, ...)."""


class TopicAlreadyRegistered(JobsError):
    """A handler is already registered for the topic."""


class PluginAlreadyRegistered(JobsError):
    """The jobs plugin is already registered on this app."""
