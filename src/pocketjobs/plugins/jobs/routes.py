"""The jobs HTTP API under ``/api/jobs``, guarded by the plugin's access rules.

=================================  ==============  ==================================
method and path                    rule            success
=================================  ==============  ==================================
``POST /api/jobs/enqueue``         enqueue_rule    200 the job
``GET /api/jobs``                  manage_rule     200 ``{items, total, limit, offset}``
``GET /api/jobs/stats``            manage_rule     200 the statistics
``GET /api/jobs/{id}``             manage_rule     200 the job
``POST /api/jobs/{id}/requeue``    manage_rule     200 the job
``DELETE /api/jobs/{id}``          manage_rule     200 ``{"ok": true}``
``GET /api/jobs/openapi.json``     public          200 the OpenAPI 3.1 document
=================================  ==============  ==================================

Superusers pass every rule; a rule of ``None`` or ``""`` admits superusers only. Without a
valid token where one is needed → 401; a rule that says no → 403. Bad input → 400 with
per-field errors in ``data``; nothing is written on any error. Handlers use the store's
awaitable twins, so the event loop never blocks on the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse

from pocketjobs.apis import (
    ApiError,
    BadRequestError,
    NotFoundError,
    TooLargeError,
    authorize,
    field_error,
    read_json,
)
from pocketjobs.core import ServeEvent
from pocketjobs.core.times import parse_time
from pocketjobs.plugins.jobs.config import parse_duration
from pocketjobs.plugins.jobs.errors import (
    InvalidJobOptions,
    InvalidPayload,
    InvalidTopic,
    JobCannotDelete,
    JobCannotRequeue,
    JobNotFound,
    JobsError,
    PayloadTooLarge,
)
from pocketjobs.plugins.jobs.job import JOB_STATUSES, JobFilter, JobStatus
from pocketjobs.plugins.jobs.openapi import openapi_document
from pocketjobs.plugins.jobs.store import MAX_DELAY, MAX_RETRIES_LIMIT, MAX_TOPIC_LENGTH

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.plugin import JobsPlugin

__all__ = ["MAX_LIST_LIMIT", "bind_routes", "to_api_error"]

MAX_LIST_LIMIT = 500
MAX_OFFSET = 1_000_000_000
# Room for the envelope around the payload (topic, run_at, ...) in an enqueue body.
_BODY_OVERHEAD = 64 * 1024
_ENQUEUE_FIELDS = frozenset({"topic", "payload", "run_at", "delay", "max_retries"})


def to_api_error(exc: JobsError) -> ApiError:
    """The one table from the plugin's errors to HTTP errors."""
    if isinstance(exc, JobNotFound):
        return NotFoundError("The requested job wasn't found.")
    if isinstance(exc, JobCannotDelete | JobCannotRequeue):
        return BadRequestError(str(exc))
    if isinstance(exc, PayloadTooLarge):
        return BadRequestError(
            "The payload is too large.", {"payload": field_error("validation_too_large", str(exc))}
        )
    if isinstance(exc, InvalidPayload):
        return BadRequestError(
            "Invalid payload.", {"payload": field_error("validation_invalid_payload", str(exc))}
        )
    if isinstance(exc, InvalidTopic):
        return BadRequestError(
            "Invalid topic.", {"topic": field_error("validation_invalid_topic", str(exc))}
        )
    if isinstance(exc, InvalidJobOptions):
        return BadRequestError(str(exc))
    return BadRequestError(str(exc))


def _invalid(message: str, errors: Mapping[str, tuple[str, str]]) -> BadRequestError:
    return BadRequestError(
        message, {name: field_error(code, text) for name, (code, text) in errors.items()}
    )


def _parse_enqueue(body: dict[str, Any], allowed_topics: tuple[str, ...]) -> dict[str, Any]:
    """Validate an enqueue body; return the keyword arguments for ``aenqueue``."""
    errors: dict[str, tuple[str, str]] = {}
    unknown = sorted(set(body) - _ENQUEUE_FIELDS)
    if unknown:
        errors["body"] = ("validation_unknown_fields", f"Unknown fields: {', '.join(unknown)}.")
    topic = body.get("topic")
    if topic is None or topic == "":
        errors["topic"] = ("validation_required", "Cannot be blank.")
    elif not isinstance(topic, str) or not topic.strip():
        errors["topic"] = ("validation_invalid_topic", "Must be a non-empty string.")
    elif len(topic) > MAX_TOPIC_LENGTH:
        errors["topic"] = (
            "validation_length_out_of_range",
            f"Must be at most {MAX_TOPIC_LENGTH} characters.",
        )
    elif allowed_topics and topic not in allowed_topics:
        errors["topic"] = ("validation_topic_not_allowed", "This topic is not allowed.")

    run_at: datetime | None = None
    if body.get("run_at") is not None:
        value = body["run_at"]
        try:
            if not isinstance(value, str):
                raise ValueError
            run_at = parse_time(value)
        except ValueError:
            errors["run_at"] = (
                "validation_invalid_datetime",
                "Must be an RFC 3339 date-time with a timezone, e.g. 2025-01-08T12:00:00Z.",
            )

    delay: timedelta | None = None
    if body.get("delay") is not None:
        value = body["delay"]
        try:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int | float):
                if not math.isfinite(value):
                    raise ValueError
                delay = timedelta(seconds=value)
            elif isinstance(value, str):
                delay = parse_duration(value)
            else:
                raise ValueError
            if not timedelta(0) <= delay <= MAX_DELAY:
                raise ValueError
        except (ValueError, OverflowError):
            errors["delay"] = (
                "validation_invalid_duration",
                'Must be a non-negative number of seconds or a duration such as "1m30s", '
                "at most 100 years.",
            )
    if run_at is not None and delay is not None:
        errors["delay"] = ("validation_conflict", "Give run_at or delay, not both.")

    max_retries = body.get("max_retries")
    if max_retries is not None and (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not 0 <= max_retries <= MAX_RETRIES_LIMIT
    ):
        errors["max_retries"] = (
            "validation_invalid_number",
            f"Must be an integer from 0 to {MAX_RETRIES_LIMIT}.",
        )
    if errors:
        raise _invalid("Failed to enqueue the job.", errors)
    return {
        "topic": topic,
        "payload": body.get("payload"),
        "run_at": run_at,
        "delay": delay,
        "max_retries": max_retries,
    }


def _parse_filter(query: Mapping[str, str]) -> JobFilter:
    errors: dict[str, tuple[str, str]] = {}
    numbers: dict[str, int] = {"limit": 20, "offset": 0}
    lowest = {"limit": 1, "offset": 0}
    for name in numbers:
        text = query.get(name)
        if text is None or text == "":
            continue
        if not text.isdigit() or not text.isascii() or len(text) > 12:
            errors[name] = ("validation_invalid_number", "Must be a non-negative integer.")
            continue
        numbers[name] = int(text)
        if not lowest[name] <= numbers[name] <= MAX_OFFSET:
            errors[name] = (
                "validation_out_of_range",
                f"Must be from {lowest[name]} to {MAX_OFFSET}.",
            )
    if "\x00" in query.get("topic", ""):
        errors["topic"] = ("validation_invalid_topic", "Must not contain the NUL character.")
    status = query.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        errors["status"] = (
            "validation_invalid_status",
            f"Must be one of {', '.join(JOB_STATUSES)}.",
        )
    if errors:
        raise _invalid("Invalid query parameters.", errors)
    return JobFilter(
        topic=query.get("topic") or None,
        status=cast("JobStatus | None", status),
        limit=min(numbers["limit"], MAX_LIST_LIMIT),
        offset=numbers["offset"],
    )


def bind_routes(event: ServeEvent, plugin: JobsPlugin) -> None:
    """Bind the jobs API on the serve event's router."""
    store = plugin.store
    max_body = plugin.config.max_payload_size + _BODY_OVERHEAD

    async def enqueue(request: Request) -> JSONResponse:
        if plugin.enqueue_rule is None:  # superusers only: no need to read the body first
            await authorize(request, None)
        try:
            body = await read_json(request, max_bytes=max_body)
        except TooLargeError:
            raise _invalid(
                "The payload is too large.",
                {"payload": ("validation_too_large", f"The body exceeds {max_body} bytes.")},
            ) from None
        if plugin.enqueue_rule is not None:
            await authorize(request, plugin.enqueue_rule, body)
        options = _parse_enqueue(body, plugin.config.allowed_topics)
        job = await store.aenqueue(**options)
        return JSONResponse(job.to_json())

    async def list_jobs(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        page = await store.alist(_parse_filter(request.query_params))
        return JSONResponse(page.to_json())

    async def stats(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        return JSONResponse((await store.astats()).to_json())

    async def get_job(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        job = await store.aget(request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def requeue(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        job = await store.arequeue(request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def delete(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        await store.adelete(request.path_params["job_id"])
        return JSONResponse({"ok": True})

    document = openapi_document(plugin.config.max_payload_size)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

    async def handle_jobs_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, JobsError)
        error = to_api_error(exc)
        return JSONResponse(error.to_json(), status_code=error.status)

    # The plugin's errors become HTTP errors in one place, for every route below.
    event.asgi.add_exception_handler(JobsError, handle_jobs_error)
    router = event.router
    router.add_route("/api/jobs/enqueue", enqueue, methods=["POST"])
    router.add_route("/api/jobs", list_jobs, methods=["GET"])
    router.add_route("/api/jobs/stats", stats, methods=["GET"])
    router.add_route("/api/jobs/openapi.json", openapi, methods=["GET"])
    router.add_route("/api/jobs/{job_id}", get_job, methods=["GET"])
    router.add_route("/api/jobs/{job_id}", delete, methods=["DELETE"])
    router.add_route("/api/jobs/{job_id}/requeue", requeue, methods=["POST"])
