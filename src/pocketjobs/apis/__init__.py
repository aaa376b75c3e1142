"""HTTP: the Starlette ASGI app, PocketBase-style errors, request auth and access rules,
rate limits, the client IP (trusted proxies) and the access log."""

from pocketjobs.apis.accesslog import ACCESS_LOGGER, AccessLogMiddleware
from pocketjobs.apis.auth import authorize, get_app, request_auth, request_info, require_auth
from pocketjobs.apis.body import read_body, read_json
from pocketjobs.apis.clientip import TrustedProxies, client_ip
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
from pocketjobs.apis.ratelimit import (
    DEFAULT_RATE_LIMITS,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitRule,
    parse_rate_limits,
)
from pocketjobs.apis.rules import RequestInfo, Rule, RuleSyntaxError, compile_rule
from pocketjobs.apis.server import (
    ServeAborted,
    create_asgi_app,
    http_settings,
    parse_origins,
    prepare_serve,
    run_http_server,
)

__all__ = [
    "ACCESS_LOGGER",
    "DEFAULT_RATE_LIMITS",
    "AccessLogMiddleware",
    "ApiError",
    "BadRequestError",
    "ForbiddenError",
    "NotFoundError",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RateLimiter",
    "RequestInfo",
    "Rule",
    "RuleSyntaxError",
    "ServeAborted",
    "TooLargeError",
    "TrustedProxies",
    "UnauthorizedError",
    "authorize",
    "client_ip",
    "compile_rule",
    "create_asgi_app",
    "error_response",
    "field_error",
    "get_app",
    "http_settings",
    "parse_origins",
    "parse_rate_limits",
    "prepare_serve",
    "read_body",
    "read_json",
    "request_auth",
    "request_info",
    "require_auth",
    "run_http_server",
]
