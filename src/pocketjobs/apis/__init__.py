"""HTTP: the Starlette ASGI app, PocketBase-style errors, request auth and access rules."""

from pocketjobs.apis.auth import authorize, get_app, request_auth, request_info, require_auth
from pocketjobs.apis.body import read_body, read_json
from pocketjobs.apis.errors import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    TooLargeError,
    UnauthorizedError,
    error_response,
    field_error,
)
from pocketjobs.apis.rules import RequestInfo, Rule, RuleSyntaxError, compile_rule
from pocketjobs.apis.server import ServeAborted, create_asgi_app, prepare_serve, run_http_server

__all__ = [
    "ApiError",
    "BadRequestError",
    "ForbiddenError",
    "NotFoundError",
    "RequestInfo",
    "Rule",
    "RuleSyntaxError",
    "ServeAborted",
    "TooLargeError",
    "UnauthorizedError",
    "authorize",
    "compile_rule",
    "create_asgi_app",
    "error_response",
    "field_error",
    "get_app",
    "prepare_serve",
    "read_body",
    "read_json",
    "request_auth",
    "request_info",
    "require_auth",
    "run_http_server",
]
