"""The jobs plugin's exceptions. Each carries the HTTP status it maps to, and an error about
one input names that input's ``field`` and a machine-readable ``code``, so the HTTP layer
converts every one of them the same way::

    JobsError                                                              status
     ├── JobNotFound              no job with that id                         404
     ├── JobCannotDelete          a processing job (cancel it first)          400
     ├── JobCannotRequeue         only failed or cancelled jobs               400
     ├── JobCannotCancel          a completed or failed job                   400
     ├── InvalidTopic             empty, too long, not valid text, not allowed 400  field topic
     ├── InvalidPayload           not JSON-serializable, too deep, bad text   400  field payload
     │    └── PayloadTooLarge     JSON longer than max_payload_size            400  field payload
     ├── InvalidJobOptions        bad run_at / delay / max_retries / filter   400  field named
     ├── ScheduleNotFound         no schedule with that name                  404
     ├── TopicAlreadyRegistered   a handler for that topic exists             (not over HTTP)
     ├── ScheduleAlreadyRegistered a schedule of that name exists here        (not over HTTP)
     ├── InvalidHandler           not callable with one Job, bad options      (not over HTTP)
     └── PluginAlreadyRegistered  the plugin is already registered on the app (not over HTTP)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "InvalidHandler",
    "InvalidJobOptions",
    "InvalidPayload",
    "InvalidTopic",
    "JobCannotCancel",
    "JobCannotDelete",
    "JobCannotRequeue",
    "JobNotFound",
    "JobsError",
    "PayloadTooLarge",
    "PluginAlreadyRegistered",
    "ScheduleAlreadyRegistered",
    "ScheduleNotFound",
    "TopicAlreadyRegistered",
]


class JobsError(Exception):
    """Base class of every jobs plugin error.

    ``status`` is the HTTP status the error maps to. ``field`` names the input at fault
    (``None`` when the error is not about one input) and ``code`` says what is wrong with
    it (``validation_required``, ``validation_invalid_topic``, ...).
    """

    status: ClassVar[int] = 400
    #: The field and code of an instance that does not name its own.
    default_field: ClassVar[str | None] = None
    default_code: ClassVar[str] = "validation_invalid_value"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.field = field if field is not None else self.default_field
        self.code = code if code is not None else self.default_code
        #: Errors about other fields found together with this one (validation reports
        #: every bad field of a call at once; this error is the first of them).
        self.related: list[JobsError] = []


class JobNotFound(JobsError):
    """No job has the given id."""

    status = 404


class JobCannotDelete(JobsError):
    """The job is processing: a running job cannot be deleted (cancel it first)."""


class JobCannotRequeue(JobsError):
    """The job is not failed or cancelled (or its unique key is taken again)."""


class JobCannotCancel(JobsError):
    """The job finished (completed or failed): there is nothing to cancel."""


class InvalidTopic(JobsError, ValueError):
    """The topic is missing, empty, longer than the limit, not valid Unicode text (a NUL
    or a lone surrogate), or not in ``allowed_topics``."""

    default_field = "topic"
    default_code = "validation_invalid_topic"


class InvalidPayload(JobsError, ValueError):
    """The payload cannot be stored as JSON: not serializable, nested too deep, or holding
    text no database can store (a NUL, a lone surrogate)."""

    default_field = "payload"
    default_code = "validation_invalid_payload"


class PayloadTooLarge(InvalidPayload):
    """The payload's JSON is longer than ``max_payload_size`` bytes."""

    default_code = "validation_too_large"


class InvalidJobOptions(JobsError, ValueError):
    """An option is invalid (``run_at``, ``delay``, ``max_retries``, or a list filter's
    ``status``, ``topic``, ``limit``, ``offset``); ``field`` names it."""


class ScheduleNotFound(JobsError):
    """No schedule has that name."""

    status = 404


class ScheduleAlreadyRegistered(JobsError):
    """This process has a schedule of that name already (``store.periodic``, or a
    handler's ``cron=``)."""

    status = 409


class TopicAlreadyRegistered(JobsError):
    """A handler is already registered for the topic."""

    status = 409


class InvalidHandler(JobsError, TypeError):
    """A handler cannot be registered: it is not callable with one argument (the job), or
    one of its options is not what it must be."""

    status = 500


class PluginAlreadyRegistered(JobsError):
    """The jobs plugin is already registered on this app."""

    status = 409
