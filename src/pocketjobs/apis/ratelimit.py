"""Rate limit rules, PocketBase style: at most ``max_requests`` per ``duration`` seconds per
client IP, for the requests a rule's label matches; over the limit, a 429.

A label is one of:

* an exact path, ``/api/jobs/enqueue``, optionally after a method, ``POST /api/jobs/enqueue``;
* a path prefix ending in ``/``, ``/api/`` or ``GET /api/jobs/``;
* a tag of the kernel's collection endpoints, ``COLLECTION:ACTION`` or ``*:ACTION`` for
  every collection: ``auth`` and ``authWithPassword`` (``auth-with-password``),
  ``authRefresh`` (``auth-refresh``), ``create`` (``POST .../records``, the sign-up).

A request is counted against one rule, the most specific that matches it: an exact path
(with its method before without), then a collection's tag, then a ``*:`` tag (for
``auth-with-password``, ``authWithPassword`` before ``auth``), then the longest prefix
(with its method before without). Each rule keeps its own budget per client IP, shared by
every request it matches: ``*:auth`` counts the password logins of one address to all
collections together. The client IP is :func:`~pocketjobs.apis.client_ip`'s, so behind a
reverse proxy configure ``serve --trusted-proxy`` or every client shares the proxy's budget.

Counting uses fixed windows: a client's window opens with its first counted request and
lasts ``duration`` seconds; a request beyond ``max_requests`` in it is refused with
``429 Too Many Requests`` in the kernel's error shape and a ``Retry-After`` header (the
whole seconds left in the window); nothing else is done for it (its body is not read).
A refused request does not count. The counters live in memory, per process: with several
``serve`` processes behind a load balancer each one counts on its own. Windows that
ended are dropped as requests arrive, and each rule keeps at most ``max_clients`` addresses
(the oldest windows are dropped first), so memory stays bounded.

Configuration: ``app.rate_limits`` (:class:`RateLimitRule` values, or ``(label,
max_requests, duration)`` tuples; ``None`` or empty turns rate limiting off), set before
``serve``; the ``PB_RATE_LIMITS`` environment variable, when set, replaces it::

    PB_RATE_LIMITS='*:auth=5/60, POST /api/jobs/enqueue=100/1'   # LABEL=MAX/SECONDS, ...
    PB_RATE_LIMITS=off                                          # no rate limits

The defaults (:data:`DEFAULT_RATE_LIMITS`) guard the auth endpoints only.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from pocketjobs.apis.clientip import TrustedProxies
from pocketjobs.apis.errors import error_response
from pocketjobs.core.app import DEFAULT_RATE_LIMITS as _DEFAULT_SPECS

if TYPE_CHECKING:
    from pocketjobs.core import BaseApp

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "RATE_LIMITS_ENV",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RateLimiter",
    "parse_rate_limits",
    "rate_limit_rules",
]

#: The environment variable that replaces ``app.rate_limits`` (see the module docstring).
RATE_LIMITS_ENV: Final = "PB_RATE_LIMITS"
#: The message of a refused request's 429 (PocketBase's).
TOO_MANY_REQUESTS: Final = "Too Many Requests."
#: The tags a label may name, per kernel endpoint: ``(method, last path segment)`` of
#: ``/api/collections/{collection}/...`` → its tags, most specific first (PocketBase's).
_ENDPOINT_TAGS: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("POST", "auth-with-password"): ("authWithPassword", "auth"),
    ("POST", "auth-refresh"): ("authRefresh",),
    ("POST", "records"): ("create",),
}
_TAGS: Final = frozenset(tag for tags in _ENDPOINT_TAGS.values() for tag in tags)
_COLLECTIONS_PREFIX: Final = "/api/collections/"
_TAG_LABEL: Final = re.compile(r"(\*|[A-Za-z0-9_]+):([A-Za-z]+)")
_PATH_LABEL: Final = re.compile(r"(?:([A-Z]+) )?(/\S*)")
_OFF_WORDS: Final = frozenset({"off", "none", "0", "false"})


class _RuleFields(NamedTuple):
    label: str
    max_requests: int
    duration: float


class RateLimitRule(_RuleFields):
    """At most ``max_requests`` requests per ``duration`` seconds per client IP for the
    requests ``label`` matches (see the module docstring for labels).

    It is a named tuple ``(label, max_requests, duration)``. Raises ``ValueError`` for a
    label that does not parse, ``max_requests`` below 1 or a ``duration`` that is not a
    positive number of seconds.
    """

    __slots__ = ()

    def __new__(cls, label: str, max_requests: int, duration: float) -> RateLimitRule:
        if not isinstance(label, str) or _label_kind(label.strip()) is None:
            raise ValueError(
                f"invalid rate limit label {label!r}: expected a path (/api/health), a "
                "prefix ending in / (/api/), either after a method (POST /api/...), or a "
                f"tag COLLECTION:ACTION or *:ACTION with ACTION one of {', '.join(sorted(_TAGS))}"
            )
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
            raise ValueError(
                f"invalid max_requests {max_requests!r} for rate limit {label!r}: "
                "expected a whole number of at least 1"
            )
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not math.isfinite(duration)
            or duration <= 0
        ):
            raise ValueError(
                f"invalid duration {duration!r} for rate limit {label!r}: "
                "expected a positive number of seconds"
            )
        return super().__new__(cls, label.strip(), max_requests, float(duration))

    def __str__(self) -> str:
        return f"{self.label}={self.max_requests}/{self.duration:g}"


def _label_kind(label: str) -> str | None:
    """``"tag"``, ``"exact"`` or ``"prefix"`` for a valid label, else ``None``."""
    tag = _TAG_LABEL.fullmatch(label)
    if tag is not None:
        return "tag" if tag.group(2) in _TAGS else None
    path = _PATH_LABEL.fullmatch(label)
    if path is None:
        return None
    return "prefix" if path.group(2).endswith("/") else "exact"


#: The rules the kernel starts with (``app.rate_limits``), per client IP: the password
#: logins of all collections together 10 per minute, token refreshes 30 per minute, and
#: record creation (the sign-up) 20 per minute. See :data:`pocketjobs.core.app.DEFAULT_RATE_LIMITS`.
DEFAULT_RATE_LIMITS: Final[tuple[RateLimitRule, ...]] = tuple(
    RateLimitRule(*spec) for spec in _DEFAULT_SPECS
)


def parse_rate_limits(text: str, *, source: str = RATE_LIMITS_ENV) -> list[RateLimitRule]:
    """``LABEL=MAX/SECONDS`` rules, comma separated (``*:auth=5/60,/api/=300/10``) → rules;
    ``off`` (or ``none``, ``0``, ``false``) → none. Raises ``ValueError`` naming ``source``."""
    if text.strip().lower() in _OFF_WORDS:
        return []
    rules: list[RateLimitRule] = []
    for item in text.split(","):
        if not item.strip():
            continue
        label, eq, limit = item.rpartition("=")
        max_text, slash, duration_text = limit.partition("/")
        try:
            if not eq or not slash:
                raise ValueError(f"expected LABEL=MAX/SECONDS, got {item.strip()!r}")
            try:
                max_requests = int(max_text.strip())
                duration = float(duration_text.strip())
            except ValueError:
                raise ValueError(
                    f"expected LABEL=MAX/SECONDS with whole MAX and numeric SECONDS, "
                    f"got {item.strip()!r}"
                ) from None
            rules.append(RateLimitRule(label, max_requests, duration))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    if not rules:
        raise ValueError(f"{source}: no rule given (use LABEL=MAX/SECONDS, ... or off)")
    return rules


def rate_limit_rules(app: BaseApp, environ: Mapping[str, str] | None = None) -> list[RateLimitRule]:
    """The rules ``serve`` enforces for ``app``: ``PB_RATE_LIMITS`` of ``environ`` (default
    ``os.environ``) when set, else ``app.rate_limits``; ``[]`` means none. Raises
    ``ValueError`` for a bad rule."""
    env = os.environ if environ is None else environ
    text = env.get(RATE_LIMITS_ENV, "")
    if text.strip():
        return parse_rate_limits(text)
    specs = app.rate_limits or ()
    if isinstance(specs, str | bytes):
        raise ValueError("rate_limits: expected a list of rules, not a string")
    rules: list[RateLimitRule] = []
    for spec in specs:
        if isinstance(spec, RateLimitRule):
            rules.append(spec)
        elif isinstance(spec, tuple) and len(spec) == 3:
            rules.append(RateLimitRule(*spec))
        else:
            raise ValueError(
                f"rate_limits: invalid rule {spec!r}: expected a RateLimitRule or a "
                "(label, max_requests, duration) tuple"
            )
    return rules


class RateLimiter:
    """The counters of a set of rules (see the module docstring): :meth:`match` finds the
    rule of a request, :meth:`consume` counts it. Not thread-safe: one event loop uses it.

    Raises ``ValueError`` when two rules have the same label.
    """

    def __init__(self, rules: Iterable[RateLimitRule], *, max_clients: int = 100_000) -> None:
        self.rules: tuple[RateLimitRule, ...] = tuple(rules)
        self.max_clients = max_clients
        self._exact: dict[tuple[str, str], int] = {}
        self._prefix: dict[tuple[str, str], int] = {}
        self._tags: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            kind = _label_kind(rule.label)
            if kind == "tag":
                if rule.label in self._tags:
                    raise ValueError(f"duplicate rate limit label {rule.label!r}")
                self._tags[rule.label] = index
                continue
            method, _, path = rule.label.rpartition(" ")
            table = self._exact if kind == "exact" else self._prefix
            if (method, path) in table:
                raise ValueError(f"duplicate rate limit label {rule.label!r}")
            table[(method, path)] = index
        self._longest_prefix = max((len(path) for _, path in self._prefix), default=0)
        # Per rule: client IP → [window start, count], ordered by window start (a window
        # that ends is deleted, a new one appended), so the expired ones are at the front.
        self._windows: tuple[dict[str, list[float]], ...] = tuple({} for _ in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, method: str, path: str) -> int | None:
        """The index (in :attr:`rules`) of the rule that counts ``method path``, or ``None``.

        A request no rule can match costs a few dictionary lookups, never a scan."""
        if self._exact:
            index = self._exact.get((method, path))
            if index is None:
                index = self._exact.get(("", path))
            if index is not None:
                return index
        if self._tags and path.startswith(_COLLECTIONS_PREFIX):
            collection, sep, action = path[len(_COLLECTIONS_PREFIX) :].partition("/")
            tags = _ENDPOINT_TAGS.get((method, action)) if sep and collection else None
            if tags:
                for owner in (collection, "*"):
                    for tag in tags:
                        index = self._tags.get(f"{owner}:{tag}")
                        if index is not None:
                            return index
        if self._prefix:
            # The prefixes of the path, longest first: up to each "/" (no longer than the
            # longest prefix rule).
            end = min(len(path), self._longest_prefix)
            while (slash := path.rfind("/", 0, end)) >= 0:
                prefix = path[: slash + 1]
                index = self._prefix.get((method, prefix))
                if index is None:
                    index = self._prefix.get(("", prefix))
                if index is not None:
                    return index
                end = slash
        return None

    def consume(self, index: int, client: str, now: float) -> float:
        """Count a request of ``client`` against rule ``index`` at ``now`` (monotonic
        seconds). Returns ``0.0`` if it is allowed, else the seconds until the client's
        window ends (it is refused, and not counted)."""
        duration = self.rules[index].duration
        windows = self._windows[index]
        # Drop the windows that ended; they are at the front (see __init__).
        while windows:
            oldest = next(iter(windows))
            if windows[oldest][0] + duration > now:
                break
            del windows[oldest]
        window = windows.get(client)  # a window still here has not ended
        if window is None:
            if len(windows) >= self.max_clients:
                del windows[next(iter(windows))]
            windows[client] = [now, 1.0]
            return 0.0
        if window[1] < self.rules[index].max_requests:
            window[1] += 1
            return 0.0
        return window[0] + duration - now

    def tracked_clients(self, index: int) -> int:
        """How many client windows rule ``index`` holds (memory use; for tests)."""
        return len(self._windows[index])


class RateLimitMiddleware:
    """ASGI middleware that answers 429 (with ``Retry-After``) to a request over its rule's
    limit, before anything else handles it; other requests pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            index = self.limiter.match(scope["method"], scope["path"])
            if index is not None:
                wait = self.limiter.consume(index, self.proxies.client_ip(scope), self.clock())
                if wait > 0:
                    response = error_response(429, TOO_MANY_REQUESTS)
                    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
