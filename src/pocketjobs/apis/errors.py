"""API errors in PocketBase's JSON shape, and the one place exceptions become responses.

Every error response is ``{"status": <int>, "message": <str>, "data": {...}}``; ``data``
holds per-field errors (``{"email": {"code": "...", "message": "..."}}``) where relevant.
Unexpected exceptions are logged with their traceback and answered with a generic 500:
never a stack trace to a client. The tree::

    ApiError(status, message, data)
     ├── BadRequestError      400
     ├── UnauthorizedError    401
     ├── ForbiddenError       403
     ├── NotFoundError        404
     └── TooLargeError        413

Plugins raise these from their endpoints (converting their own exceptions in one place).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ApiError",
    "BadRequestError",
    "CatchAllMiddleware",
    "ForbiddenError",
    "NotFoundError",
    "TooLargeError",
    "UnauthorizedError",
    "error_response",
    "exception_handlers",
    "field_error",
]

logger = logging.getLogger("pocketjobs.apis")

DEFAULT_MESSAGES: Mapping[int, str] = {
    400: "Something went wrong while processing your request.",
    401: "The request requires valid record authorization token.",
    403: "The authorized record is not allowed to perform this action.",
    404: "The requested resource wasn't found.",
    405: "Method not allowed.",
    413: "The request body is too large.",
    500: "Something went wrong while processing your request.",
}


class ApiError(Exception):
    """An error meant for the client: status, message and per-field ``data``."""

    status = 400

    def __init__(
        self,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        self.message = message or DEFAULT_MESSAGES.get(self.status, "Request failed.")
        self.data: dict[str, Any] = dict(data or {})
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        """The PocketBase error body."""
        return {"status": self.status, "message": self.message, "data": self.data}


class BadRequestError(ApiError):
    """400: the request is malformed or fails validation."""

    status = 400


class UnauthorizedError(ApiError):
    """401: a valid auth token is required."""

    status = 401


class ForbiddenError(ApiError):
    """403: the authenticated record may not do this."""

    status = 403


class NotFoundError(ApiError):
    """404: no such resource."""

    status = 404


class TooLargeError(ApiError):
    """413: the request body exceeds the allowed size."""

    status = 413


def field_error(code: str, message: str) -> dict[str, str]:
    """One entry of an error's ``data``: ``{"code": ..., "message": ...}``."""
    return {"code": code, "message": message}


def error_response(
    status: int, message: str | None = None, data: Mapping[str, Any] | None = None
) -> Response:
    """A JSON error response in PocketBase's shape."""
    return JSONResponse(ApiError(message, data, status=status).to_json(), status_code=status)


async def _handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code < 400:  # e.g. 304: not an error, pass it through bodiless
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = DEFAULT_MESSAGES.get(exc.status_code)
    if message is None:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    """The Starlette ``exception_handlers`` for :class:`ApiError` and HTTP errors."""
    return {ApiError: _handle_api_error, HTTPException: _handle_http_exception}


class CatchAllMiddleware:
    """Answers an unexpected exception with a logged, generic 500 in the error shape.

    Installed inside Starlette's own error middleware so that nothing but our JSON reaches
    the client, and the traceback is logged once, here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:  # the client left before its body arrived: nobody to answer
            logger.debug("client left during %s %s", scope.get("method"), scope.get("path"))
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:  # too late for a clean answer; let the server drop it
                raise
            await error_response(500)(scope, receive, send)
