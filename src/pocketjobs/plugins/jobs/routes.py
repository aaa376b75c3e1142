"""The jobs HTTP API under ``/api/jobs``, guarded by the plugin's access rules.

=======================================  ==============  ====================================
method and path                          rule            success
=======================================  ==============  ====================================
``POST /api/jobs/enqueue``               enqueue_rule    200 the job
``GET /api/jobs``                        manage_rule     200 ``{items, total, limit, offset}``
``GET /api/jobs/stats``                  manage_rule     200 the statistics
``GET /api/jobs/queues``                 manage_rule     200 ``{items}``: every queue
``POST /api/jobs/queues/{name}/pause``   manage_rule     200 the queue
``POST /api/jobs/queues/{name}/resume``  manage_rule     200 the queue
``GET /api/jobs/{id}``                   manage_rule     200 the job
``POST /api/jobs/{id}/cancel``           manage_rule     200 the job
``POST /api/jobs/{id}/requeue``          manage_rule     200 the job
``DELETE /api/jobs/{id}``                manage_rule     200 ``{"ok": true}``
``GET /api/jobs/schedules``              manage_rule     200 ``{items}``: every schedule
``DELETE /api/jobs/schedules/{name}``    manage_rule     200 ``{"ok": true}``
``GET /api/jobs/openapi.json``           public          200 the OpenAPI 3.1 document
``GET /api/jobs/metrics``                metrics_rule    200 Prometheus text (``exporter.py``)
=======================================  ==============  ====================================

An enqueue body may name its ``queue`` and give a ``timeout`` (seconds an attempt may run);
``GET /api/jobs`` filters by ``topic``, ``status`` and ``queue``. The statistics include
``orphaned_topics`` and ``orphaned_queues`` (pending jobs per topic that no running worker
handles, per queue that none works on). Pausing or resuming a queue acts in every process.

Cancel makes a pending job ``cancelled`` at once and asks a processing one to stop wherever
it runs (the job comes back still ``processing``, with ``cancel_requested_at`` set; it
becomes ``cancelled`` when its worker stops it); a completed or failed job → 400. Requeue
takes a failed or cancelled job; delete any job but a processing one. The schedules are
the periodic jobs' (``schedules.py``), each with its ``next_run``, its last slot and job,
and whether a running process registers it (``active``); deleting one forgets a schedule
no process registers any more.

Superusers pass every rule; a rule of ``None`` or ``""`` admits superusers only. Without a
valid token where one is needed → 401; a rule that says no → 403. Bad input → 400 with
per-field errors in ``data``; nothing is written on any error. Handlers use the store's
awaitable twins, so the event loop never blocks on the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
from pocketjobs.plugins.jobs.errors import InvalidJobOptions, JobsError, ScheduleNotFound
from pocketjobs.plugins.jobs.exporter import METRICS_PATH, metrics_endpoint
from pocketjobs.plugins.jobs.job import JobFilter, JobStatus, QueueInfo
from pocketjobs.plugins.jobs.limits import MAX_DELAY, MAX_LIST_LIMIT, MAX_OFFSET
from pocketjobs.plugins.jobs.openapi import openapi_document
from pocketjobs.plugins.jobs.validation import check_enqueue

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.plugin import JobsPlugin

__all__ = ["bind_routes", "to_api_error"]

# Room for the envelope around the payload (topic, run_at, ...) in an enqueue body.
_BODY_OVERHEAD = 64 * 1024
_ENQUEUE_FIELDS = frozenset(
    {
        "topic", "payload", "run_at", "delay", "max_retries", "priority", "unique_key", "queue",
        "timeout",
    }
)  # fmt: skip
_NOT_FOUND = "The requested job wasn't found."
_NOT_FOUND_SCHEDULE = "The requested schedule wasn't found."
_ENQUEUE_FAILED = "Failed to enqueue the job."
_BAD_QUERY = "Invalid query parameters."
_BAD_QUEUE = "Invalid queue name."


def to_api_error(exc: JobsError, message: str | None = None) -> ApiError:
    """The plugin's error as an HTTP error: its own status; an error about one field puts
    that field's code and text in ``data`` under ``message`` (default: the error's text)."""
    if exc.status == 404:
        return NotFoundError(
            _NOT_FOUND_SCHEDULE if isinstance(exc, ScheduleNotFound) else _NOT_FOUND
        )
    if exc.field is None:
        return ApiError(str(exc), status=exc.status)
    data: dict[str, Any] = {}
    for error in (exc, *exc.related):
        if error.field is not None:
            data.setdefault(error.field, field_error(error.code, str(error)))
    return ApiError(message or str(exc), data, status=exc.status)


@contextmanager
def _converted(message: str) -> Iterator[None]:
    """Raise the plugin's errors of this block as HTTP errors headed ``message``."""
    try:
        yield
    except JobsError as exc:
        raise to_api_error(exc, message) from None


def _wire_run_at(value: Any) -> datetime:
    """An enqueue body's ``run_at``: an RFC 3339 string with a timezone."""
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_time(value)
    except ValueError:
        raise InvalidJobOptions(
            "Must be an RFC 3339 date-time with a timezone, e.g. 2025-01-08T12:00:00Z.",
            field="run_at",
            code="validation_invalid_datetime",
        ) from None


def _wire_delay(value: Any) -> Any:
    """An enqueue body's ``delay``: seconds as a number, or a duration such as ``"1m30s"``
    (made a timedelta here; any other value goes on to the store, which says what is
    wrong with it)."""
    if not isinstance(value, str):
        finite = isinstance(value, int | float) and not isinstance(value, bool)
        # Beyond MAX_DELAY the store refuses it (and a timedelta may not even hold it).
        convert = finite and abs(value) <= MAX_DELAY.total_seconds()
        return timedelta(seconds=value) if convert else value
    try:
        return parse_duration(value)
    except ValueError:
        raise InvalidJobOptions(
            'Must be a non-negative number of seconds or a duration such as "1m30s".',
            field="delay",
            code="validation_invalid_duration",
        ) from None


def _enqueue_options(body: dict[str, Any]) -> tuple[dict[str, Any], list[JobsError]]:
    """An enqueue body as the keyword arguments of ``aenqueue``, wire types converted (the
    store validates the values), and the errors of the values that did not convert."""
    errors: list[JobsError] = []
    unknown = sorted(set(body) - _ENQUEUE_FIELDS)
    if unknown:
        errors.append(
            InvalidJobOptions(
                f"Unknown fields: {', '.join(unknown)}.",
                field="body",
                code="validation_unknown_fields",
            )
        )
    options: dict[str, Any] = {
        "topic": body.get("topic"),
        "payload": body.get("payload"),
        "run_at": None,
        "delay": None,
        "max_retries": body.get("max_retries"),
        "priority": body.get("priority"),
        "unique_key": body.get("unique_key"),
        "queue": body.get("queue"),
        "timeout": body.get("timeout"),  # seconds: the store checks the type and the range
    }
    for name, convert in (("run_at", _wire_run_at), ("delay", _wire_delay)):
        if body.get(name) is not None:
            try:
                options[name] = convert(body[name])
            except JobsError as exc:
                errors.append(exc)
    return options, errors


def _query_number(query: Mapping[str, str], name: str, default: int, lowest: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise InvalidJobOptions(
            "Must be a non-negative integer.", field=name, code="validation_invalid_number"
        )
    value = int(text)
    if not lowest <= value <= MAX_OFFSET:
        raise InvalidJobOptions(
            f"Must be from {lowest} to {MAX_OFFSET}.", field=name, code="validation_out_of_range"
        )
    return value


def _list_filter(query: Mapping[str, str]) -> JobFilter:
    """A list query as a filter (``limit`` capped at ``MAX_LIST_LIMIT``; the store
    validates the rest)."""
    return JobFilter(
        topic=query.get("topic") or None,
        status=cast("JobStatus | None", query.get("status") or None),
        limit=min(_query_number(query, "limit", 20, 1), MAX_LIST_LIMIT),
        offset=_query_number(query, "offset", 0, 0),
        queue=query.get("queue") or None,
    )


def _queue_info(queues: list[QueueInfo], name: str) -> QueueInfo:
    """The queue named ``name`` among ``queues`` (a queue once paused or resumed has a
    state row, so the store lists it)."""
    return next(queue for queue in queues if queue.name == name)


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
            raise BadRequestError(
                "The payload is too large.",
                {
                    "payload": field_error(
                        "validation_too_large", f"The body exceeds {max_body} bytes."
                    )
                },
            ) from None
        if plugin.enqueue_rule is not None:
            await authorize(request, plugin.enqueue_rule, body)
        options, errors = _enqueue_options(body)
        config = plugin.config
        if errors or config.allowed_topics:  # what the store cannot see: report it all
            with _converted(_ENQUEUE_FAILED):
                unique_key = options["unique_key"]
                check_enqueue(
                    options["topic"], [options["payload"]], options["run_at"], options["delay"],
                    options["max_retries"], now=store.now(), known=errors,
                    priority=options["priority"], queue=options["queue"],
                    timeout=options["timeout"],
                    unique_keys=None if unique_key is None else [unique_key],
                    default_max_retries=config.max_retries, max_size=config.max_payload_size,
                    allowed=config.allowed_topics,
                )  # fmt: skip
        with _converted(_ENQUEUE_FAILED):
            job = await store.aenqueue(**options)
        return JSONResponse(job.to_json())

    async def list_jobs(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        with _converted(_BAD_QUERY):
            page = await store.alist(_list_filter(request.query_params))
        return JSONResponse(page.to_json())

    async def stats(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        return JSONResponse((await store.astats()).to_json())

    async def list_queues(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        return JSONResponse({"items": [queue.to_json() for queue in await store.aqueues()]})

    async def pause_queue(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        name = request.path_params["name"]
        with _converted(_BAD_QUEUE):
            await store.apause_queue(name)
        return JSONResponse(_queue_info(await store.aqueues(), name).to_json())

    async def resume_queue(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        name = request.path_params["name"]
        with _converted(_BAD_QUEUE):
            await store.aresume_queue(name)
        return JSONResponse(_queue_info(await store.aqueues(), name).to_json())

    async def get_job(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        job = await store.aget(request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def cancel(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        job = await store.acancel(request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def requeue(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        job = await store.arequeue(request.path_params["job_id"])
        return JSONResponse(job.to_json())

    async def delete(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        await store.adelete(request.path_params["job_id"])
        return JSONResponse({"ok": True})

    async def list_schedules(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        items = [schedule.to_dict() for schedule in await store.aschedules()]
        return JSONResponse({"items": items})

    async def delete_schedule(request: Request) -> JSONResponse:
        await authorize(request, plugin.manage_rule)
        await store.adelete_schedule(request.path_params["name"])
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
    router.add_route(METRICS_PATH, metrics_endpoint(plugin), methods=["GET"])  # metrics_rule
    # Before /api/jobs/{job_id}, which would take "queues" for a job id.
    router.add_route("/api/jobs/queues", list_queues, methods=["GET"])
    router.add_route("/api/jobs/queues/{name}/pause", pause_queue, methods=["POST"])
    router.add_route("/api/jobs/queues/{name}/resume", resume_queue, methods=["POST"])
    router.add_route("/api/jobs/schedules", list_schedules, methods=["GET"])
    # A name may hold a slash (a topic may): the rest of the path is the name.
    router.add_route("/api/jobs/schedules/{name:path}", delete_schedule, methods=["DELETE"])
    router.add_route("/api/jobs/{job_id}", get_job, methods=["GET"])
    router.add_route("/api/jobs/{job_id}", delete, methods=["DELETE"])
    router.add_route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"])
    router.add_route("/api/jobs/{job_id}/requeue", requeue, methods=["POST"])
