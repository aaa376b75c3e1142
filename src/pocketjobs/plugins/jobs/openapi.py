"""The OpenAPI 3.1 document of the jobs HTTP API, served at ``/api/jobs/openapi.json``."""

from __future__ import annotations

from typing import Any

from pocketjobs.plugins.jobs.job import JOB_STATUSES
from pocketjobs.plugins.jobs.limits import (
    MAX_LIST_LIMIT,
    MAX_OFFSET,
    MAX_PRIORITY,
    MAX_QUEUE_LENGTH,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT,
    MAX_TOPIC_LENGTH,
    MAX_UNIQUE_KEY_LENGTH,
    MIN_TIMEOUT,
)
from pocketjobs.plugins.jobs.presence import WORKER_TIMEOUT
from pocketjobs.plugins.jobs.schedules import CATCH_UP, SYNC_INTERVAL
from pocketjobs.plugins.jobs.validation import QUEUE_NAME_PATTERN

__all__ = ["openapi_document"]

_TIME = {"type": "string", "format": "date-time", "examples": ["2025-01-08T12:00:00.000Z"]}
_ERROR = {"$ref": "#/components/schemas/Error"}
_PRIORITY = {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY}
_QUEUE = {
    "type": "string",
    "pattern": f"^{QUEUE_NAME_PATTERN}$",
    "minLength": 1,
    "maxLength": MAX_QUEUE_LENGTH,
    "examples": ["default", "mail"],
}
_COUNT = {"type": "integer", "minimum": 0}
_TIME_OR_NULL = {"oneOf": [_TIME, {"type": "null"}]}
_ATTEMPT_ERROR = {
    "type": "object",
    "required": ["at", "attempt", "error"],
    "additionalProperties": False,
    "properties": {
        "at": _TIME,
        "attempt": {"type": "integer", "minimum": 1},
        "error": {"type": "string"},
    },
}
_PER_NAME = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ok(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_AUTH_ERRORS = {
    "401": _error_response("A valid auth token is required."),
    "403": _error_response("The authenticated record is not allowed to do this."),
}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The job's id (a UUIDv7).",
}
_QUEUE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": _QUEUE,
    "description": "The queue's name.",
}
_SCHEDULE_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TOPIC_LENGTH,
    "examples": ["reports:daily"],
}
_SCHEDULE_NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": _SCHEDULE_NAME,
    "description": "The schedule's name (percent-encoded).",
}
_SCHEDULE_SCHEMA = {
    "type": "object",
    "required": [
        "name", "topic", "cron", "tz", "catch_up", "queue", "payload", "next_run", "last_run",
        "last_job_id", "active", "here",
    ],
    "additionalProperties": False,
    "properties": {
        "name": {
            **_SCHEDULE_NAME,
            "description": "Identifies the schedule across processes (by default its topic).",
        },
        "topic": {"type": "string", "minLength": 1, "maxLength": MAX_TOPIC_LENGTH},
        "cron": {
            "type": "string",
            "minLength": 1,
            "description": "Five fields (minute hour day-of-month month day-of-week) or an "
            "alias such as @daily, in the schedule's time zone.",
            "examples": ["*/5 * * * *", "0 7 * * 1-5", "@daily"],
        },
        "tz": {
            "type": "string",
            "minLength": 1,
            "description": "The IANA time zone the cron expression is read in.",
            "examples": ["UTC", "Europe/Paris"],
        },
        "catch_up": {
            "type": "string",
            "enum": list(CATCH_UP),
            "description": "Slots missed while no process ran: skip them all, or run the "
            "last of them once.",
        },
        "queue": {**_QUEUE, "description": "The queue its jobs go to."},
        "payload": {"description": "Each of its jobs' JSON payload (any JSON value)."},
        "next_run": {**_TIME, "description": "Its next slot."},
        "last_run": {
            **_TIME_OR_NULL,
            "description": "The last slot it enqueued a job for (null: none yet).",
        },
        "last_job_id": {
            "type": ["string", "null"],
            "description": "The job it enqueued for that slot (it may since have been "
            "deleted or pruned).",
        },
        "active": {
            "type": "boolean",
            "description": "A running process registers it (it was written in the last "
            f"{WORKER_TIMEOUT.total_seconds():.0f} seconds). One that no process registers "
            "any more stays listed, inactive, until it is deleted.",
        },
        "here": {
            "type": "boolean",
            "description": "The process that answered registers it.",
        },
    },
}  # fmt: skip
_DELETED = {
    "description": "Deleted.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["ok"],
                "properties": {"ok": {"const": True}},
            }
        }
    },
}
_QUEUE_SCHEMA = {
    "type": "object",
    "required": ["name", "paused", "pending", "processing", "concurrency", "global_limit"],
    "additionalProperties": False,
    "properties": {
        "name": _QUEUE,
        "paused": {
            "type": "boolean",
            "description": "No job of the queue is claimed, in any process.",
        },
        "pending": _COUNT,
        "processing": _COUNT,
        "concurrency": {
            "type": "integer",
            "minimum": 0,
            "description": "Worker slots this server gives the queue (0: it does not work on it).",
        },
        "global_limit": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "The most jobs of the queue running at once in all processes "
            "(null: no limit), as this server's config says.",
        },
    },
}


def _queue_switch(verb: str, operation_id: str, effect: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{verb} a queue",
            "description": effect,
            "operationId": operation_id,
            "parameters": [_QUEUE_NAME],
            "responses": {
                "200": _ok("The queue.", "Queue"),
                "400": _error_response("Invalid queue name."),
                **_AUTH_ERRORS,
            },
        }
    }


def openapi_document(max_payload_size: int) -> dict[str, Any]:
    """The document, with the configured payload limit in the descriptions."""
    job = {
        "type": "object",
        "required": [
            "id", "topic", "payload", "status", "run_at", "locked_until", "retries",
            "max_retries", "last_error", "created", "updated", "priority", "unique_key",
            "queue", "attempted_at", "first_attempted_at", "attempted_by", "finished_at",
            "errors", "timeout", "cancel_requested_at", "duplicate",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "topic": {"type": "string", "minLength": 1, "maxLength": MAX_TOPIC_LENGTH},
            "payload": {"description": "The job's JSON payload (any JSON value)."},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "run_at": _TIME,
            "locked_until": _TIME_OR_NULL,
            "retries": {"type": "integer", "minimum": 0},
            "max_retries": {"type": "integer", "minimum": 0},
            "last_error": {"type": ["string", "null"]},
            "created": _TIME,
            "updated": _TIME,
            "priority": _PRIORITY,
            "unique_key": {"type": ["string", "null"]},
            "queue": _QUEUE,
            "attempted_at": {**_TIME_OR_NULL, "description": "When its latest attempt started."},
            "first_attempted_at": {
                **_TIME_OR_NULL,
                "description": "When its first attempt started.",
            },
            "attempted_by": {
                "type": ["string", "null"],
                "description": "The node of its latest attempt: host:pid:node-id.",
                "examples": ["web-1:4242:0190a8b2-0000-7000-8000-000000000000"],
            },
            "finished_at": {
                **_TIME_OR_NULL,
                "description": "When it completed, failed for good or was cancelled.",
            },
            "errors": {
                "type": "array",
                "items": _ATTEMPT_ERROR,
                "description": "Its failed attempts, oldest first (the latest 25).",
            },
            "timeout": {
                "type": ["number", "null"],
                "minimum": MIN_TIMEOUT.total_seconds(),
                "description": "Seconds one attempt may run (null: the handler's default, "
                "else the server's).",
            },
            "cancel_requested_at": {
                **_TIME_OR_NULL,
                "description": "When a cancel of the running job was asked for (it stops and "
                "becomes cancelled).",
            },
            "duplicate": {
                "type": "boolean",
                "description": "On an enqueue: the job existed (its unique key was taken) "
                "and nothing was inserted.",
            },
        },
    }  # fmt: skip
    enqueue_body = {
        "type": "object",
        "required": ["topic"],
        "additionalProperties": False,
        "properties": {
            "topic": {"type": "string", "minLength": 1, "maxLength": MAX_TOPIC_LENGTH},
            "payload": {
                "description": f"Any JSON value, at most {max_payload_size} bytes of JSON.",
            },
            "run_at": {**_TIME, "description": "When to run (RFC 3339 with a timezone)."},
            "delay": {
                "oneOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "examples": ["30s", "1m30s"]},
                ],
                "description": "Seconds (or a duration like 1m30s) from now; not with run_at.",
            },
            "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES_LIMIT},
            "priority": {**_PRIORITY, "description": "0 (the default) runs first, 9 last."},
            "unique_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_UNIQUE_KEY_LENGTH,
                "description": "While a job of this topic with this key is pending or "
                "processing, that job is returned (duplicate: true) instead of a new one.",
            },
            "queue": {
                **_QUEUE,
                "description": "The named queue the job waits in (default: the topic "
                "handler's queue, else default).",
            },
            "timeout": {
                "type": "number",
                "minimum": MIN_TIMEOUT.total_seconds() / 2,  # whole ms: 0.0005 rounds to 1 ms
                "maximum": MAX_TIMEOUT.total_seconds(),
                "description": "Seconds one attempt may run (default: the topic handler's, "
                "else the server's default_timeout).",
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pocketjobs jobs API",
            "version": "1.0.0",
            "description": "Enqueue, inspect and manage background jobs. Superusers pass "
            "every rule; other callers need the app's enqueue_rule / manage_rule to allow them.",
        },
        "components": {
            "securitySchemes": {
                "authToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "The token from auth-with-password (a Bearer prefix is "
                    "accepted).",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["status", "message", "data"],
                    "properties": {
                        "status": {"type": "integer"},
                        "message": {"type": "string"},
                        "data": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["code", "message"],
                                "properties": {
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Job": job,
                "JobList": {
                    "type": "object",
                    "required": ["items", "total", "limit", "offset"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                        "total": {"type": "integer", "minimum": 0},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                        "offset": {"type": "integer", "minimum": 0},
                    },
                },
                "JobStats": {
                    "type": "object",
                    "required": [
                        "pending",
                        "processing",
                        "completed",
                        "failed",
                        "cancelled",
                        "total",
                        "success_rate",
                        "orphaned_topics",
                        "orphaned_queues",
                    ],
                    "properties": {
                        "pending": _COUNT,
                        "processing": _COUNT,
                        "completed": _COUNT,
                        "failed": _COUNT,
                        "cancelled": _COUNT,
                        "total": _COUNT,
                        "success_rate": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "completed / (completed + failed); cancelled jobs "
                            "count neither way.",
                        },
                        "orphaned_topics": {
                            **_PER_NAME,
                            "description": "Pending jobs per topic that no running worker "
                            "(in any process) handles.",
                        },
                        "orphaned_queues": {
                            **_PER_NAME,
                            "description": "Pending jobs per queue that no running worker "
                            "(in any process) works on.",
                        },
                    },
                },
                "Queue": _QUEUE_SCHEMA,
                "QueueList": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}}
                    },
                },
                "Schedule": _SCHEDULE_SCHEMA,
                "ScheduleList": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Schedule"},
                        }
                    },
                },
                "EnqueueRequest": enqueue_body,
            },
        },
        "security": [{"authToken": []}],
        "paths": {
            "/api/jobs/enqueue": {
                "post": {
                    "summary": "Enqueue a job",
                    "operationId": "enqueueJob",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EnqueueRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("The new job.", "Job"),
                        "400": _error_response("Invalid input (see data for field errors)."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs": {
                "get": {
                    "summary": "List jobs, newest first",
                    "operationId": "listJobs",
                    "parameters": [
                        {"name": "topic", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                        },
                        {"name": "queue", "in": "query", "schema": _QUEUE},
                        {
                            "name": "limit",
                            "in": "query",
                            "description": f"Page size (default 20, capped at {MAX_LIST_LIMIT}).",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                        },
                    ],
                    "responses": {
                        "200": _ok("A page of jobs.", "JobList"),
                        "400": _error_response("Invalid query parameters."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/stats": {
                "get": {
                    "summary": "Job counts per status",
                    "operationId": "jobStats",
                    "responses": {"200": _ok("The statistics.", "JobStats"), **_AUTH_ERRORS},
                }
            },
            "/api/jobs/queues": {
                "get": {
                    "summary": "List the queues",
                    "description": "The queues this server works on, those with pending or "
                    "processing jobs, and those ever paused; by name.",
                    "operationId": "listQueues",
                    "responses": {"200": _ok("The queues.", "QueueList"), **_AUTH_ERRORS},
                }
            },
            "/api/jobs/queues/{name}/pause": _queue_switch(
                "Pause",
                "pauseQueue",
                "Stop claiming the queue's jobs in every process (running jobs finish; "
                "enqueues go on).",
            ),
            "/api/jobs/queues/{name}/resume": _queue_switch(
                "Resume", "resumeQueue", "Claim the queue's jobs again, in every process."
            ),
            "/api/jobs/schedules": {
                "get": {
                    "summary": "List the schedules",
                    "description": "The periodic jobs' schedules, by name: those the running "
                    "processes registered (in the database) and this server's own, each "
                    "with its next slot, the last slot it enqueued a job for, and whether a "
                    "running process registers it.",
                    "operationId": "listSchedules",
                    "responses": {"200": _ok("The schedules.", "ScheduleList"), **_AUTH_ERRORS},
                }
            },
            "/api/jobs/schedules/{name}": {
                "delete": {
                    "summary": "Delete a schedule",
                    "description": "Forget a schedule in the database: meant for one that no "
                    "process registers any more (inactive). A running process that registers "
                    f"it writes it again within {SYNC_INTERVAL.total_seconds():.0f} seconds. "
                    "Its jobs are left alone.",
                    "operationId": "deleteSchedule",
                    "parameters": [_SCHEDULE_NAME_PARAM],
                    "responses": {
                        "200": _DELETED,
                        "404": _error_response("No such schedule."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "Get a job",
                    "operationId": "getJob",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("The job.", "Job"),
                        "404": _error_response("No such job."),
                        **_AUTH_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Delete a job that is not processing",
                    "description": "Any job but a processing one (pending, completed, failed "
                    "or cancelled) is deleted; cancel a processing job first.",
                    "operationId": "deleteJob",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _DELETED,
                        "400": _error_response("The job is processing."),
                        "404": _error_response("No such job."),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a job",
                    "description": "A pending job becomes cancelled at once. A processing one "
                    "is asked to stop wherever it runs: it is returned still processing, with "
                    "cancel_requested_at set, and becomes cancelled (never retried) when its "
                    "worker stops it. Cancelling a cancelled job changes nothing.",
                    "operationId": "cancelJob",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("The job.", "Job"),
                        "400": _error_response("The job completed or failed."),
                        "404": _error_response("No such job."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{job_id}/requeue": {
                "post": {
                    "summary": "Requeue a failed or cancelled job",
                    "description": "It becomes pending, due now, with its retries reset (its "
                    "attempt history is kept).",
                    "operationId": "requeueJob",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("The requeued job.", "Job"),
                        "400": _error_response(
                            "The job is neither failed nor cancelled, or another pending or "
                            "processing job holds its unique key."
                        ),
                        "404": _error_response("No such job."),
                        **_AUTH_ERRORS,
                    },
                }
            },
        },
    }
