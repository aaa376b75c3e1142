"""Request authentication, rule enforcement, and the PocketBase-compatible auth routes.

A request authenticates with ``Authorization: <token>`` (a ``Bearer `` prefix is accepted).
A missing or invalid token makes the request a guest's, as in PocketBase; endpoints that
need a record answer 401 then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pocketjobs.apis.body import read_json
from pocketjobs.apis.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    field_error,
)
from pocketjobs.apis.rules import RequestInfo, Rule
from pocketjobs.core.auth import SUPERUSERS, USERS, AuthError, AuthRecord, ValidationError

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = ["auth_routes", "authorize", "get_app", "request_auth", "request_info", "require_auth"]

_AUTH_STATE_KEY = "pb_auth"
_UNSET = object()


def get_app(request: Request) -> BaseApp:
    """The app (a :class:`~pocketjobs.core.BaseApp`) serving this request."""
    app: BaseApp = request.app.state.pb_app
    return app


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return header


async def request_auth(request: Request) -> AuthRecord | None:
    """The record the request's token belongs to, or ``None`` (cached per request)."""
    cached = request.scope.get(_AUTH_STATE_KEY, _UNSET)
    if cached is not _UNSET:
        return cast("AuthRecord | None", cached)
    token = _bearer_token(request)
    record = None
    if token:
        auth = get_app(request).auth
        # A token verified seconds ago needs no database read, so no thread either.
        record = auth.cached_token(token) or await run_in_threadpool(auth.verify_token, token)
    request.scope[_AUTH_STATE_KEY] = record
    return record


async def require_auth(request: Request, *collections: str) -> AuthRecord:
    """The request's record; 401 without a valid token, 403 if not in ``collections``."""
    record = await request_auth(request)
    if record is None:
        raise UnauthorizedError()
    if collections and record.collection_name not in collections:
        raise ForbiddenError()
    return record


def request_info(request: Request, auth: AuthRecord | None, body: Any = None) -> RequestInfo:
    """What a rule may see of the request (``@request.*``)."""
    return RequestInfo(
        auth=auth.to_json() if auth is not None else None,
        body=body,
        query=dict(request.query_params),
        headers=dict(request.headers),
        method=request.method,
    )


async def authorize(request: Request, rule: Rule | None, body: Any = None) -> AuthRecord | None:
    """Enforce an access rule; return the request's record (``None`` for a permitted guest).

    Superusers pass every rule. ``rule=None`` means superusers only. A rule that evaluates
    false answers 401 to a guest (a token might help) and 403 to an authenticated record.
    """
    record = await request_auth(request)
    if record is not None and record.is_superuser:
        return record
    if rule is not None and rule.evaluate(request_info(request, record, body)):
        return record
    if record is None:
        raise UnauthorizedError()
    raise ForbiddenError()


def _collection(request: Request) -> str:
    name = request.path_params["collection"]
    if name not in (SUPERUSERS, USERS):
        raise NotFoundError("Missing or invalid collection context.")
    return str(name)


def _auth_response(app: BaseApp, record: AuthRecord) -> JSONResponse:
    return JSONResponse({"token": app.auth.new_token(record), "record": record.to_json()})


def _validation_data(exc: ValidationError) -> dict[str, Any]:
    return {name: field_error(code, message) for name, (code, message) in exc.errors.items()}


async def auth_with_password(request: Request) -> JSONResponse:
    """``POST /api/collections/{collection}/auth-with-password`` ``{identity, password}``."""
    collection = _collection(request)
    body = await read_json(request)
    identity, password = body.get("identity"), body.get("password")
    errors = {
        name: field_error("validation_required", "Cannot be blank.")
        for name, value in (("identity", identity), ("password", password))
        if not isinstance(value, str) or not value
    }
    if errors:
        raise BadRequestError("Failed to authenticate.", errors)
    app = get_app(request)
    record = await run_in_threadpool(app.auth.authenticate, collection, identity, password)
    if record is None:
        raise BadRequestError("Failed to authenticate.")
    try:
        return await run_in_threadpool(_auth_response, app, record)
    except AuthError:  # deleted by another process in between
        raise BadRequestError("Failed to authenticate.") from None


async def auth_refresh(request: Request) -> JSONResponse:
    """``POST /api/collections/{collection}/auth-refresh``: a fresh token for the caller."""
    collection = _collection(request)
    record = await require_auth(request, collection)
    try:
        return await run_in_threadpool(_auth_response, get_app(request), record)
    except AuthError:  # deleted since its token was verified (by another process)
        raise UnauthorizedError() from None


async def create_record(request: Request) -> JSONResponse:
    """``POST /api/collections/{collection}/records``: sign up a user (public) or create a
    superuser (superusers only) from ``{email, password, passwordConfirm}``."""
    collection = _collection(request)
    if collection == SUPERUSERS:
        await require_auth(request, SUPERUSERS)
    body = await read_json(request)
    email, password = body.get("email"), body.get("password")
    confirm = body.get("passwordConfirm")
    if not isinstance(confirm, str):
        confirm = ""
    app = get_app(request)
    try:
        record = await run_in_threadpool(
            app.auth.create,
            collection,
            email if isinstance(email, str) else "",
            password if isinstance(password, str) else "",
            confirm,
        )
    except ValidationError as exc:
        raise BadRequestError("Failed to create record.", _validation_data(exc)) from None
    return JSONResponse(record.to_json())


def auth_routes() -> list[Route]:
    """The kernel's auth endpoints."""
    base = "/api/collections/{collection}"
    return [
        Route(f"{base}/auth-with-password", auth_with_password, methods=["POST"]),
        Route(f"{base}/auth-refresh", auth_refresh, methods=["POST"]),
        Route(f"{base}/records", create_record, methods=["POST"]),
    ]
