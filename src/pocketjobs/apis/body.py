"""Reading request bodies: JSON with a size cap, refused early when Content-Length says so."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from pocketjobs.apis.errors import BadRequestError, TooLargeError

__all__ = ["DEFAULT_MAX_BODY", "read_body", "read_json"]

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
_INVALID_JSON = "Failed to load the submitted data due to invalid formatting."


async def read_body(request: Request, *, max_bytes: int = DEFAULT_MAX_BODY) -> bytes:
    """The raw body, at most ``max_bytes``: a larger declared ``Content-Length`` is refused
    before reading, and a body without one stops being read once it passes the cap."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequestError("Invalid Content-Length header.") from None
        if size > max_bytes:
            raise TooLargeError(f"The request body must be at most {max_bytes} bytes.")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise TooLargeError(f"The request body must be at most {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request, *, max_bytes: int = DEFAULT_MAX_BODY, require_object: bool = True
) -> Any:
    """The decoded JSON body (an object unless ``require_object`` is false).

    An empty body reads as ``{}``. Malformed JSON or a non-object → :class:`BadRequestError`;
    too large → :class:`TooLargeError`.
    """
    raw = await read_body(request, max_bytes=max_bytes)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        raise BadRequestError(_INVALID_JSON) from None
    if require_object and not isinstance(value, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return value
