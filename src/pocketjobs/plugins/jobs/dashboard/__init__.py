"""The jobs dashboard: a small static web page at ``/_/jobs`` (SPEC §4.8).

The page (``static/index.html``, ``app.js``, ``style.css``) ships inside the package and
makes no request outside its own origin: it logs a superuser in with the kernel's
``POST /api/collections/_superusers/auth-with-password``, keeps the token in the browser's
``localStorage`` and uses nothing but the jobs HTTP API (``/api/jobs...``).

::

    GET /_/jobs                 the page (Cache-Control: no-cache, a strict CSP)
    GET /_/jobs/                redirect to /_/jobs
    GET /_/jobs/assets/{name}   app.js, style.css, favicon.svg (ETag, no-cache)

Every URL the page uses is relative to where it is served, so it works under any prefix
(``host.mount("/jobs", jobs.asgi(store))`` serves it at ``/jobs/_/jobs``, and its API at
``/jobs/api/...``), also behind a proxy that strips a prefix; only the redirect of
``/_/jobs/`` uses the ASGI ``root_path``. Every response carries the same security
headers (:data:`SECURITY_HEADERS`). The files are read once, when
:func:`bind_dashboard` runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router

from pocketjobs.apis import NotFoundError

__all__ = [
    "ASSETS",
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_PATH",
    "FAVICON",
    "SECURITY_HEADERS",
    "bind_dashboard",
]

DASHBOARD_PATH = "/_/jobs"

#: The page may load its own scripts, styles and images and talk to its own origin only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: The files (in ``static/``) served under ``/_/jobs/assets/``, with their media types.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: The icon lives here, not in ``static/``: only .html/.css/.js files ship as package data.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="7" fill="#4f46e5"/>'
    b'<path d="M9 10h14M9 16h14M9 22h9" stroke="#fff" stroke-width="3" stroke-linecap="round"/>'
    b"</svg>"
)

#: On the page and on every asset: no framing, no sniffing, no referrer.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_COMMON_HEADERS = {"Cache-Control": "no-cache", **SECURITY_HEADERS}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    media_type: str
    etag: str

    def response(self, request: Request) -> Response:
        headers = {**_COMMON_HEADERS, "ETag": self.etag}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else self.body
        response = Response(body, media_type=self.media_type, headers=headers)
        response.headers["Content-Length"] = str(len(self.body))
        return response


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _file(body: bytes, media_type: str) -> _File:
    return _File(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


def _load(name: str, media_type: str) -> _File:
    return _file(files(__name__).joinpath("static", name).read_bytes(), media_type)


def bind_dashboard(router: Router) -> None:
    """Add the dashboard's routes (the page and its assets) to ``router``."""
    page = _load("index.html", "text/html; charset=utf-8")
    assets = {name: _load(name, media_type) for name, media_type in ASSETS.items()}
    assets["favicon.svg"] = _file(FAVICON, "image/svg+xml")

    async def index(request: Request) -> Response:
        return page.response(request)

    async def index_slash(request: Request) -> Response:
        # Under a mount the page is at <root_path>/_/jobs.
        location = request.scope.get("root_path", "") + DASHBOARD_PATH
        return RedirectResponse(location, status_code=308, headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            raise NotFoundError()
        return found.response(request)

    router.add_route(DASHBOARD_PATH, index, methods=["GET", "HEAD"])
    router.add_route(f"{DASHBOARD_PATH}/", index_slash, methods=["GET", "HEAD"])
    router.add_route(f"{DASHBOARD_PATH}/assets/{{name}}", asset, methods=["GET", "HEAD"])
