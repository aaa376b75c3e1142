"""Rate limits, CORS origins, the access log and trusted proxies, over real HTTP against
real servers (``serve`` subprocesses, or the app served in-process) on a SQLite file."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from conftest import LiveServer
from pocketjobs import App
from pocketjobs.apis import RateLimitRule, create_asgi_app
from pocketjobs.core import ServeEvent
from support import ServerProcess, run_app, run_cli

LOGIN = "/api/collections/users/auth-with-password"
SUPER_LOGIN = "/api/collections/_superusers/auth-with-password"
REFRESH = "/api/collections/users/auth-refresh"
SIGN_UP = "/api/collections/users/records"
#: The access log's line: Apache's combined format and the duration.
ACCESS_LINE = re.compile(
    r"pocketjobs\.access: (?P<ip>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" '
    r'"(?P<agent>(?:[^"\\]|\\.)*)" (?P<ms>\d+\.\d\d)ms$'
)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] == status
    return body


def assert_too_many(response: httpx.Response, max_wait: float) -> int:
    """A 429 in the kernel's error shape; returns its ``Retry-After`` (whole seconds)."""
    body = assert_error(response, 429)
    assert body == {"status": 429, "message": "Too Many Requests.", "data": {}}
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= max_wait
    return int(retry_after)


def bad_login(http: httpx.Client, path: str = LOGIN, **kwargs: Any) -> httpx.Response:
    """A login with no password: a quick 400 (no password hashing), still counted."""
    return http.post(path, json={"identity": "x@example.com"}, **kwargs)


def access_lines(server: ServerProcess) -> list[re.Match[str]]:
    lines = [line for line in server.log_text().splitlines() if "pocketjobs.access" in line]
    matches = [ACCESS_LINE.search(line) for line in lines]
    assert all(matches), lines
    return [match for match in matches if match is not None]


def wait_for_access_lines(server: ServerProcess, count: int, path: str = "") -> list[re.Match[str]]:
    """The access lines (of requests for ``path``, when given) once there are ``count``
    (a line is written just after its response is sent)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in access_lines(server) if path in line["request"]]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


@pytest.fixture
def sqlite_app(data_dir: Path, clean_jobs_env: None, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.delenv("PB_RATE_LIMITS", raising=False)
    return App(data_dir=data_dir)


@pytest.fixture
def serve_app(sqlite_app: App) -> Iterator[Callable[[], httpx.Client]]:
    """Bootstrap ``sqlite_app``, serve it in-process, and return a client factory."""
    servers: list[LiveServer] = []
    clients: list[httpx.Client] = []

    def start() -> httpx.Client:
        sqlite_app.bootstrap()
        server = LiveServer(sqlite_app)
        server.start()
        servers.append(server)
        client = httpx.Client(base_url=server.base_url, timeout=30)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()
    if sqlite_app.is_bootstrapped():
        sqlite_app.terminate()


# -- rate limits: the defaults -----------------------------------------------------------


def test_password_logins_are_limited_by_default(data_dir: Path) -> None:
    with run_app(data_dir=data_dir) as server, server.client() as http:
        for _ in range(10):  # the default *:auth rule: 10 a minute per client IP
            assert_error(bad_login(http), 400)
        # the eleventh, to either collection, is refused before its body is looked at
        assert_too_many(http.post(LOGIN, content=b"{not json"), 60)
        assert_too_many(bad_login(http, SUPER_LOGIN), 60)
        # other endpoints keep their own budgets
        assert http.get("/api/health").status_code == 200
        assert_error(http.post(REFRESH), 401)
        assert_error(http.post(SIGN_UP, json={}), 400)
        statuses = [line["status"] for line in wait_for_access_lines(server, 11, LOGIN)]
        assert statuses == ["400"] * 10 + ["429"]


def test_refresh_and_sign_up_are_limited_by_default(data_dir: Path) -> None:
    with run_app(data_dir=data_dir, env={"PB_RATE_LIMITS": ""}) as server, server.client() as h:
        for _ in range(30):
            assert_error(h.post(REFRESH), 401)
        assert_too_many(h.post(REFRESH), 60)
        for _ in range(20):
            assert_error(h.post(SIGN_UP, json={"email": "bad"}), 400)
        assert_too_many(h.post(SIGN_UP, json={"email": "bad"}), 60)
        assert_error(bad_login(h), 400)  # the logins' budget is untouched


# -- rate limits: configured -------------------------------------------------------------


def test_rules_per_path(sqlite_app: App, serve_app: Callable[[], httpx.Client]) -> None:
    calls: list[str] = []

    def bind(event: ServeEvent) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            calls.append(request.url.path)
            body = await request.body()
            return JSONResponse({"path": request.url.path, "size": len(body)})

        for path in ("/api/test/{name}", "/api/test/deep/{name}", "/api/other"):
            event.router.add_route(path, endpoint, methods=["GET", "POST"])
        event.next()

    sqlite_app.on_serve.bind_func(bind)
    sqlite_app.rate_limits = [
        RateLimitRule("GET /api/health", 3, 60),
        RateLimitRule("/api/test/", 2, 60),
        RateLimitRule("/api/test/deep/", 4, 60),
        ("POST /api/other", 1, 60),
    ]
    http = serve_app()

    for _ in range(3):
        assert http.get("/api/health").status_code == 200
    assert_too_many(http.get("/api/health"), 60)
    assert http.head("/api/health").status_code == 200  # the rule is for GET only

    # a prefix rule's budget is shared by the paths under it; the longest prefix wins
    assert http.get("/api/test/a").status_code == 200
    assert http.post("/api/test/b").status_code == 200
    assert_too_many(http.get("/api/test/a"), 60)
    for _ in range(4):
        assert http.get("/api/test/deep/x").status_code == 200
    assert_too_many(http.get("/api/test/deep/y"), 60)

    # a path with no rule is not limited; nor are the auth endpoints, the defaults replaced
    for _ in range(15):
        assert http.get("/api/other").status_code == 200
        assert_error(bad_login(http), 400)

    # a refused request does nothing else: its endpoint does not run, its body is not read
    assert http.post("/api/other").status_code == 200
    calls.clear()
    started = time.monotonic()
    refused = http.post("/api/other", content=b"x" * (8 << 20))
    assert_too_many(refused, 60)
    assert calls == []
    assert time.monotonic() - started < 10
    assert http.get("/api/other").status_code == 200  # the connection still serves


def test_retry_after_and_the_next_window(
    sqlite_app: App, serve_app: Callable[[], httpx.Client]
) -> None:
    sqlite_app.rate_limits = [RateLimitRule("*:auth", 2, 1)]
    http = serve_app()
    assert_error(bad_login(http), 400)
    assert_error(bad_login(http), 400)
    assert assert_too_many(bad_login(http), 1) == 1
    time.sleep(1.1)  # the window has ended
    assert_error(bad_login(http), 400)


def test_rate_limits_off(sqlite_app: App, serve_app: Callable[[], httpx.Client]) -> None:
    sqlite_app.rate_limits = None
    http = serve_app()
    for _ in range(25):
        assert_error(bad_login(http), 400)


def test_the_environment_sets_the_rules(data_dir: Path) -> None:
    env = {"PB_RATE_LIMITS": "GET /api/health=2/60"}
    with run_app(data_dir=data_dir, env=env) as server, server.client() as http:
        # run_app's readiness checks used part of the budget; it is spent by now
        statuses = {http.get("/api/health").status_code for _ in range(3)}
        assert statuses == {200, 429} or statuses == {429}
        for _ in range(12):
            assert_error(bad_login(http), 400)  # the defaults were replaced


# -- trusted proxies: the client IP ------------------------------------------------------


def test_forwarded_clients_are_limited_separately_behind_a_trusted_proxy(
    data_dir: Path,
) -> None:
    env = {"PB_RATE_LIMITS": "*:auth=2/60"}
    with (
        run_app("--trusted-proxy", "10.9.9.9,127.0.0.1", data_dir=data_dir, env=env) as server,
        server.client() as http,
    ):
        alice = {"X-Forwarded-For": "198.51.100.1"}
        bob = {"X-Forwarded-For": "198.51.100.2"}
        for _ in range(2):
            assert_error(bad_login(http, headers=alice), 400)
        assert_too_many(bad_login(http, headers=alice), 60)
        # alice cannot escape by claiming another address left of the one the proxy saw
        spoofed = {"X-Forwarded-For": "203.0.113.50, 198.51.100.1"}
        assert_too_many(bad_login(http, headers=spoofed), 60)
        assert_error(bad_login(http, headers=bob), 400)
        assert_error(bad_login(http, headers={"X-Real-IP": "198.51.100.3"}), 400)
        assert_error(bad_login(http), 400)  # the proxy's own requests: 127.0.0.1
        # the access log names the forwarded clients too
        logged = [line["ip"] for line in wait_for_access_lines(server, 7, LOGIN)]
        assert logged == ["198.51.100.1"] * 4 + ["198.51.100.2", "198.51.100.3", "127.0.0.1"]


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(data_dir: Path) -> None:
    env = {"PB_RATE_LIMITS": "*:auth=2/60"}
    with run_app(data_dir=data_dir, env=env) as server, server.client() as http:
        for address in ("198.51.100.1", "198.51.100.2"):
            assert_error(bad_login(http, headers={"X-Forwarded-For": address}), 400)
        assert_too_many(bad_login(http, headers={"X-Forwarded-For": "198.51.100.3"}), 60)
        assert_too_many(bad_login(http, headers={"X-Real-IP": "198.51.100.4"}), 60)
        lines = wait_for_access_lines(server, 4, LOGIN)
        assert [line["ip"] for line in lines] == ["127.0.0.1"] * 4


def test_an_untrusted_peer_cannot_forward(data_dir: Path) -> None:
    env = {"PB_RATE_LIMITS": "*:auth=1/60"}
    with (
        run_app("--trusted-proxy", "10.0.0.0/8", data_dir=data_dir, env=env) as server,
        server.client() as http,
    ):
        assert_error(bad_login(http, headers={"X-Forwarded-For": "198.51.100.1"}), 400)
        assert_too_many(bad_login(http, headers={"X-Forwarded-For": "198.51.100.2"}), 60)


# -- CORS --------------------------------------------------------------------------------


def test_cors_allows_any_origin_by_default(data_dir: Path) -> None:
    with run_app(data_dir=data_dir) as server, server.client() as http:
        response = http.get("/api/health", headers={"Origin": "https://anywhere.example"})
        assert response.headers["access-control-allow-origin"] == "*"


def test_cors_with_configured_origins(data_dir: Path) -> None:
    origins = "https://app.example.com, http://localhost:5173"
    with run_app("--origins", origins, data_dir=data_dir) as server, server.client() as http:
        for origin in ("https://app.example.com", "http://localhost:5173"):
            response = http.get("/api/health", headers={"Origin": origin})
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == origin
            assert "origin" in response.headers["vary"].lower()
        other = http.get("/api/health", headers={"Origin": "https://evil.example"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers

        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        allowed = http.options(LOGIN, headers={"Origin": "https://app.example.com", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = http.options(LOGIN, headers={"Origin": "https://evil.example", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


def test_cors_origins_from_the_app_setting(
    sqlite_app: App, serve_app: Callable[[], httpx.Client]
) -> None:
    sqlite_app.cors_origins = ["https://app.example.com"]
    sqlite_app.rate_limits = [RateLimitRule("*:auth", 1, 60)]
    http = serve_app()
    origin = {"Origin": "https://app.example.com"}
    assert_error(bad_login(http, headers=origin), 400)
    refused = bad_login(http, headers=origin)  # a browser can read the 429 too
    assert_too_many(refused, 60)
    assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
    # preflights are answered before the rate limiter: they do not count, nor get a 429
    for _ in range(3):
        preflight = http.options(LOGIN, headers={**origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200


# -- the access log ----------------------------------------------------------------------


def test_the_access_log_is_on_by_default(data_dir: Path) -> None:
    with run_app(data_dir=data_dir) as server, server.client() as http:
        http.get(
            "/api/health?probe=1",
            headers={"User-Agent": 'probe/1.0 "quoted"', "Referer": "https://ref.example/"},
        )
        assert_error(http.get("/api/missing"), 404)
        lines = wait_for_access_lines(server, 1, "/api/missing")
        lines = access_lines(server)
    health = next(line for line in lines if "probe=1" in line["request"])
    assert health["ip"] == "127.0.0.1"
    assert health["request"] == "GET /api/health?probe=1 HTTP/1.1"
    assert health["status"] == "200"
    assert int(health["bytes"]) == len(b'{"message":"API is healthy.","code":200,"data":{}}')
    assert health["referer"] == "https://ref.example/"
    assert health["agent"] == r"probe/1.0 \"quoted\""  # escaped: no forged fields
    assert time.strptime(health["time"], "%d/%b/%Y:%H:%M:%S +0000")
    missing = next(line for line in lines if "/api/missing" in line["request"])
    assert missing["status"] == "404"
    assert missing["referer"] == "-"


def test_the_access_log_as_json(data_dir: Path) -> None:
    with (
        run_app(data_dir=data_dir, env={"PB_LOG_FORMAT": "json"}) as server,
        server.client() as http,
    ):
        http.get("/api/health?probe=json", headers={"User-Agent": "probe/2"})
        deadline = time.monotonic() + 10
        while "probe=json" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = server.log_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "pocketjobs.access"]
    probe = next(r for r in access if r.get("uri") == "/api/health?probe=json")
    assert probe["level"] == "INFO"
    assert probe["message"].startswith("127.0.0.1 - - [")
    assert '"GET /api/health?probe=json HTTP/1.1" 200' in probe["message"]
    assert probe["client_ip"] == "127.0.0.1"
    assert probe["method"] == "GET"
    assert probe["protocol"] == "HTTP/1.1"
    assert probe["status"] == 200
    assert probe["bytes"] > 0
    assert probe["user_agent"] == "probe/2"
    assert "referer" not in probe
    assert probe["duration_ms"] >= 0


def test_no_access_log(data_dir: Path) -> None:
    with run_app("--no-access-log", data_dir=data_dir) as server, server.client() as http:
        for _ in range(3):
            assert http.get("/api/health").status_code == 200
        server.stop_cleanly()
    assert "pocketjobs.access" not in server.log_text()
    assert "Server started" in server.log_text()


def test_no_access_log_from_the_app_setting(
    sqlite_app: App, serve_app: Callable[[], httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pocketjobs.access")
    sqlite_app.access_log = False
    http = serve_app()
    assert http.get("/api/health").status_code == 200
    assert [r for r in caplog.records if r.name == "pocketjobs.access"] == []


# -- bad configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--trusted-proxy", "proxy.internal"], {}, "error: --trusted-proxy: invalid trusted"),
        (["--trusted-proxy", "10.0.0.1,"], {}, "error: --trusted-proxy: empty value"),
        (["--origins", "example.com"], {}, "error: --origins: invalid CORS origin 'example.com'"),
        (["--origins", "https://example.com/"], {}, "error: --origins: invalid CORS origin"),
        (["--origins", ","], {}, "error: --origins: no CORS origin given"),
        ([], {"PB_RATE_LIMITS": "*:auth"}, "error: PB_RATE_LIMITS: expected LABEL=MAX/SECONDS"),
        ([], {"PB_RATE_LIMITS": "*:signIn=1/1"}, "error: PB_RATE_LIMITS: invalid rate limit"),
        ([], {"PB_RATE_LIMITS": "/api/=1/0"}, "error: PB_RATE_LIMITS: invalid duration"),
    ],
)  # fmt: skip
def test_bad_serve_settings_exit_1_with_one_line(
    data_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli("serve", "--http", "127.0.0.1:1", *args, data_dir=data_dir, env=env)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message), lines
    assert not data_dir.exists()  # refused before the app bootstrapped


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("rate_limits", [("/api/", 0, 10)], "invalid max_requests"),
        ("rate_limits", [("nope", 1, 10)], "invalid rate limit label"),
        ("rate_limits", "*:auth=1/1", "not a string"),
        ("cors_origins", ["example.com"], "cors_origins: invalid CORS origin"),
        ("cors_origins", [], "cors_origins: no CORS origin"),
        ("trusted_proxies", ["10.0.0.0/40"], "trusted_proxies: invalid trusted proxy"),
    ],
)
def test_bad_app_settings_raise_value_error(
    sqlite_app: App, setting: str, value: object, message: str
) -> None:
    setattr(sqlite_app, setting, value)
    with pytest.raises(ValueError, match=message):
        create_asgi_app(sqlite_app)
    with pytest.raises(ValueError, match="invalid max_requests"):
        RateLimitRule("*:auth", 0, 10)
