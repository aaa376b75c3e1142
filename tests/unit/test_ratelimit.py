"""Rate limit rules, their matching and counting (time passed in), and the client IP."""

from __future__ import annotations

from typing import Any

import pytest

from pocketjobs.apis import (
    DEFAULT_RATE_LIMITS,
    RateLimiter,
    RateLimitRule,
    TrustedProxies,
    parse_rate_limits,
)
from pocketjobs.apis.ratelimit import rate_limit_rules
from pocketjobs.core import BaseApp

# -- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        "/api/health",
        "POST /api/jobs/enqueue",
        "/api/",
        "GET /api/jobs/",
        "/",
        "*:auth",
        "users:authWithPassword",
        "_superusers:authRefresh",
        "*:create",
    ],
)
def test_valid_labels(label: str) -> None:
    rule = RateLimitRule(label, 5, 10)
    assert rule == (label, 5, 10.0)
    assert rule.label == label
    assert str(rule) == f"{label}=5/10"


@pytest.mark.parametrize(
    "label",
    ["", "api/health", "post /api/", "POST  /api/", "/api/ x", "*:list", "users:", ":auth",
     "my-coll:auth", "*:auth:x", 7],
)  # fmt: skip
def test_invalid_labels_raise(label: Any) -> None:
    with pytest.raises(ValueError, match="invalid rate limit label"):
        RateLimitRule(label, 5, 10)


@pytest.mark.parametrize("max_requests", [0, -1, 1.5, True, "3"])
def test_invalid_max_requests_raise(max_requests: Any) -> None:
    with pytest.raises(ValueError, match="invalid max_requests"):
        RateLimitRule("/api/", max_requests, 10)


@pytest.mark.parametrize("duration", [0, -1, float("inf"), float("nan"), True, "10"])
def test_invalid_durations_raise(duration: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        RateLimitRule("/api/", 1, duration)


def test_defaults_guard_the_auth_endpoints_only() -> None:
    assert {rule.label for rule in DEFAULT_RATE_LIMITS} == {"*:auth", "*:authRefresh", "*:create"}
    assert tuple(BaseApp().rate_limits or ()) == DEFAULT_RATE_LIMITS
    limiter = RateLimiter(DEFAULT_RATE_LIMITS)
    assert limiter.match("GET", "/api/health") is None
    assert limiter.match("POST", "/api/jobs/enqueue") is None
    assert limiter.match("GET", "/api/collections/users/records") is None
    for path, label in [
        ("/api/collections/users/auth-with-password", "*:auth"),
        ("/api/collections/_superusers/auth-with-password", "*:auth"),
        ("/api/collections/users/auth-refresh", "*:authRefresh"),
        ("/api/collections/users/records", "*:create"),
    ]:
        index = limiter.match("POST", path)
        assert index is not None, path
        assert limiter.rules[index].label == label


def test_parse_rate_limits() -> None:
    rules = parse_rate_limits(" *:auth=5/60 , POST /api/jobs/enqueue=100/0.5,")
    assert rules == [("*:auth", 5, 60.0), ("POST /api/jobs/enqueue", 100, 0.5)]
    for off in ("off", "OFF", "none", "0", "false"):
        assert parse_rate_limits(off) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*:auth", "expected LABEL=MAX/SECONDS"),
        ("*:auth=5", "expected LABEL=MAX/SECONDS"),
        ("*:auth=five/60", "whole MAX and numeric SECONDS"),
        ("*:auth=5/soon", "whole MAX and numeric SECONDS"),
        ("*:nope=5/60", "invalid rate limit label"),
        ("*:auth=0/60", "invalid max_requests"),
        (",", "no rule given"),
    ],
)
def test_parse_rate_limits_errors_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^PB_RATE_LIMITS: .*{message}"):
        parse_rate_limits(text)


def test_the_environment_replaces_the_app_setting() -> None:
    app = BaseApp()
    assert rate_limit_rules(app, {}) == list(DEFAULT_RATE_LIMITS)
    assert rate_limit_rules(app, {"PB_RATE_LIMITS": "/api/=3/1"}) == [("/api/", 3, 1.0)]
    assert rate_limit_rules(app, {"PB_RATE_LIMITS": "off"}) == []
    assert rate_limit_rules(app, {"PB_RATE_LIMITS": "  "}) == list(DEFAULT_RATE_LIMITS)
    app.rate_limits = [("/api/", 3, 1), RateLimitRule("*:auth", 1, 5)]
    assert rate_limit_rules(app, {}) == [("/api/", 3, 1.0), ("*:auth", 1, 5.0)]
    for disabled in (None, []):
        app.rate_limits = disabled
        assert rate_limit_rules(app, {}) == []


@pytest.mark.parametrize("setting", [[("/api/", 0, 1)], [("/api/", 1)], ["/api/=1/1"], "/api/"])
def test_a_bad_app_setting_raises(setting: Any) -> None:
    app = BaseApp()
    app.rate_limits = setting
    with pytest.raises(ValueError, match=r"rate limit|rate_limits"):
        rate_limit_rules(app, {})


def test_duplicate_labels_raise() -> None:
    with pytest.raises(ValueError, match="duplicate rate limit label"):
        RateLimiter([RateLimitRule("/api/", 1, 1), RateLimitRule("/api/", 2, 2)])


# -- matching ----------------------------------------------------------------------------


def _label(limiter: RateLimiter, method: str, path: str) -> str | None:
    index = limiter.match(method, path)
    return None if index is None else limiter.rules[index].label


def test_the_most_specific_rule_wins() -> None:
    limiter = RateLimiter(
        RateLimitRule(label, 1, 1)
        for label in [
            "/",
            "/api/",
            "POST /api/",
            "/api/jobs/",
            "GET /api/jobs/",
            "/api/jobs/stats",
            "DELETE /api/jobs/stats",
            "*:auth",
            "users:auth",
            "*:authWithPassword",
            "*:create",
            "POST /api/collections/_superusers/records",
        ]
    )
    cases = [
        ("GET", "/", "/"),
        ("GET", "/favicon.ico", "/"),
        ("GET", "/api", "/"),
        ("GET", "/api/", "/api/"),
        ("GET", "/api/health", "/api/"),
        ("POST", "/api/health", "POST /api/"),
        ("POST", "/api/jobs/enqueue", "/api/jobs/"),
        ("GET", "/api/jobs/x/y", "GET /api/jobs/"),
        ("GET", "/api/jobs/stats", "/api/jobs/stats"),
        ("DELETE", "/api/jobs/stats", "DELETE /api/jobs/stats"),
        # a collection's tag before *:, and authWithPassword before auth
        ("POST", "/api/collections/users/auth-with-password", "users:auth"),
        ("POST", "/api/collections/_superusers/auth-with-password", "*:authWithPassword"),
        ("POST", "/api/collections/users/records", "*:create"),
        # an exact path before a tag
        ("POST", "/api/collections/_superusers/records", "POST /api/collections/_superusers/"
         "records"),
        # tags are for the endpoint's method only; otherwise the prefixes apply
        ("GET", "/api/collections/users/records", "/api/"),
        ("POST", "/api/collections/users/auth-refresh", "POST /api/"),
        ("POST", "/api/collections/users/records/abc", "POST /api/"),
    ]  # fmt: skip
    for method, path, label in cases:
        assert _label(limiter, method, path) == label, (method, path)


def test_no_rule_matches_outside_the_rules() -> None:
    limiter = RateLimiter([RateLimitRule("/api/jobs/", 1, 1), RateLimitRule("/x", 1, 1)])
    for path in ("/", "/api/", "/api/jobs", "/api/health", "/x/", "/xy"):
        assert limiter.match("GET", path) is None, path
    assert not RateLimiter([])


# -- counting ----------------------------------------------------------------------------


def test_a_fixed_window_per_client() -> None:
    limiter = RateLimiter([RateLimitRule("/api/", 3, 10)])
    assert [limiter.consume(0, "a", 100.0 + i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.consume(0, "a", 103.0) == pytest.approx(7.0)  # refused: 7 s left
    assert limiter.consume(0, "a", 109.5) == pytest.approx(0.5)
    assert limiter.consume(0, "b", 109.5) == 0.0  # another client has its own budget
    assert limiter.consume(0, "a", 110.0) == 0.0  # a new window
    assert limiter.consume(0, "a", 110.0) == 0.0
    assert limiter.consume(0, "a", 110.0) == 0.0
    assert limiter.consume(0, "a", 110.0) == pytest.approx(10.0)


def test_rules_count_separately() -> None:
    limiter = RateLimiter([RateLimitRule("/a/", 1, 10), RateLimitRule("/b/", 1, 10)])
    assert limiter.consume(0, "ip", 0.0) == 0.0
    assert limiter.consume(1, "ip", 0.0) == 0.0
    assert limiter.consume(0, "ip", 1.0) > 0
    assert limiter.consume(1, "ip", 1.0) > 0


def test_ended_windows_are_dropped() -> None:
    limiter = RateLimiter([RateLimitRule("/api/", 5, 10)])
    for i in range(1000):
        limiter.consume(0, f"10.0.{i // 256}.{i % 256}", float(i) / 100)  # 1,000 in 10 s
    assert limiter.tracked_clients(0) == 1000
    limiter.consume(0, "192.0.2.1", 15.0)  # the 501 opened by 5.0 have ended by now
    assert limiter.tracked_clients(0) == 499 + 1
    limiter.consume(0, "192.0.2.1", 100.0)
    assert limiter.tracked_clients(0) == 1


def test_the_clients_per_rule_are_capped() -> None:
    limiter = RateLimiter([RateLimitRule("/api/", 1, 3600)], max_clients=100)
    for i in range(250):
        limiter.consume(0, f"client-{i}", float(i))
    assert limiter.tracked_clients(0) == 100
    assert limiter.consume(0, "client-249", 300.0) > 0  # the newest are kept
    assert limiter.consume(0, "client-0", 300.0) == 0.0  # the oldest was dropped


# -- the client IP -----------------------------------------------------------------------


def _scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": None if peer is None else (peer, 5000),
        "headers": [(name.encode(), value.encode()) for name, value in headers],
    }


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    proxies = TrustedProxies()
    assert not proxies
    scope = _scope("127.0.0.1", ("x-forwarded-for", "198.51.100.1"), ("x-real-ip", "192.0.2.2"))
    assert proxies.client_ip(scope) == "127.0.0.1"
    assert TrustedProxies().client_ip(_scope(None)) == ""


def test_an_untrusted_peer_cannot_forward() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    scope = _scope("192.0.2.9", ("x-forwarded-for", "198.51.100.1"))
    assert proxies.client_ip(scope) == "192.0.2.9"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ([("x-forwarded-for", "198.51.100.1")], "198.51.100.1"),
        # the right-most untrusted address: what is left of it is the client's own claim
        ([("x-forwarded-for", "203.0.113.66, 198.51.100.1, 10.1.2.3")], "198.51.100.1"),
        ([("x-forwarded-for", "203.0.113.66"), ("x-forwarded-for", "198.51.100.1")],
         "198.51.100.1"),
        ([("x-forwarded-for", "10.0.0.2, 10.0.0.3")], "10.0.0.2"),  # all proxies
        ([("x-forwarded-for", "198.51.100.1:4711")], "198.51.100.1"),
        ([("x-forwarded-for", "[2001:db8::1]:443")], "2001:db8::1"),
        ([("x-forwarded-for", "2001:DB8::1")], "2001:db8::1"),
        ([("x-forwarded-for", "198.51.100.1, unknown")], "10.0.0.1"),  # garbage: the peer
        ([("x-forwarded-for", "unknown, 10.0.0.7")], "10.0.0.7"),
        ([("x-real-ip", "198.51.100.5")], "198.51.100.5"),
        ([("x-real-ip", "nonsense")], "10.0.0.1"),
        ([("x-real-ip", "198.51.100.5"), ("x-forwarded-for", "198.51.100.1")], "198.51.100.1"),
        ([], "10.0.0.1"),
    ],
)  # fmt: skip
def test_a_trusted_peer_forwards(headers: list[tuple[str, str]], client: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    assert proxies.client_ip(_scope("10.0.0.1", *headers)) == client


def test_the_client_ip_is_resolved_once_per_request() -> None:
    proxies = TrustedProxies(["127.0.0.1"])
    scope = _scope("127.0.0.1", ("x-forwarded-for", "198.51.100.1"))
    assert proxies.client_ip(scope) == "198.51.100.1"
    scope["headers"] = []
    assert proxies.client_ip(scope) == "198.51.100.1"


@pytest.mark.parametrize("value", ["nonsense", "10.0.0.0/33", "", 5])
def test_bad_trusted_proxies_raise(value: Any) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy"):
        TrustedProxies([value])


def test_the_app_settings_are_read_and_validated_together() -> None:
    from pocketjobs.apis import http_settings

    app = BaseApp()
    settings = http_settings(app)
    assert settings.cors_origins == ("*",)
    assert settings.access_log is True
    assert not settings.trusted_proxies
    assert settings.rate_limiter.rules == DEFAULT_RATE_LIMITS
    app.trusted_proxies = "10.0.0.1, 10.0.0.0/8"  # one string, comma separated, works too
    app.cors_origins = "https://a.example, https://b.example:8443"
    assert len(http_settings(app).trusted_proxies.networks) == 2
    assert http_settings(app).cors_origins == ("https://a.example", "https://b.example:8443")
