"""The jobs plugin's configuration: a frozen :class:`Config`, env overrides and validation.

=======================  ==============================  ==========================================
field                    default                         env override
=======================  ==============================  ==========================================
``disabled``             ``False``                       ``PB_JOBS_DISABLED`` (bool)
``workers``              ``10``                          ``PB_JOBS_WORKERS`` (int)
``poll_interval``        1 s                             ``PB_JOBS_POLL_INTERVAL`` (duration)
``lock_duration``        5 min                           ``PB_JOBS_LOCK_DURATION`` (duration)
``batch_size``           ``100``                         ``PB_JOBS_BATCH_SIZE`` (int)
``max_retries``          ``3``                           ``PB_JOBS_MAX_RETRIES`` (int)
``max_payload_size``     1 MiB = ``1048576`` JSON bytes  ``PB_JOBS_MAX_PAYLOAD_SIZE`` (int)
``http_enabled``         ``True``                        ``PB_JOBS_HTTP_ENABLED`` (bool)
``enqueue_rule``         ``None`` (superusers only)      —
``manage_rule``          ``None`` (superusers only)      —
``allowed_topics``       ``()`` (all topics)             ``PB_JOBS_ALLOWED_TOPICS`` (comma list)
``auto_start``           ``True``                        ``PB_JOBS_AUTO_START`` (bool)
``backoff``              exponential with jitter         —
``shutdown_timeout``     30 s                            ``PB_JOBS_SHUTDOWN_TIMEOUT`` (duration)
``clock``                the system clock (aware UTC)    — (tests pass a controllable clock)
``max_backoff``          1 h                             ``PB_JOBS_MAX_BACKOFF`` (duration)
``queues``               ``None`` (``default``: workers)  ``PB_JOBS_QUEUES`` (``default:10,mail:2``)
``queue_limits``         ``{}`` (no global limit)        ``PB_JOBS_QUEUE_LIMITS`` (``mail:5``)
``default_timeout``      ``None`` (no timeout)           ``PB_JOBS_DEFAULT_TIMEOUT`` (duration)
``metrics``              ``True``                        ``PB_JOBS_METRICS`` (bool)
``metrics_rule``         ``None`` (superusers only)      —
``retention``            completed 1 day, failed and     ``PB_JOBS_RETENTION_COMPLETED``,
                         cancelled 7 days                ``..._FAILED``, ``..._CANCELLED``
                                                         (duration, or ``none``: kept for ever)
``prune_interval``       1 min                           ``PB_JOBS_PRUNE_INTERVAL`` (duration)
``listen``               ``True``                        ``PB_JOBS_LISTEN`` (bool)
``claim_poll_interval``  100 ms (when not listening)     ``PB_JOBS_CLAIM_POLL_INTERVAL`` (duration)
=======================  ==============================  ==========================================

Env values:

- *bool*: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (case-insensitive).
- *int*: decimal digits with an optional sign (``10``, ``+10``).
- *duration*: Go-style (``500ms``, ``1.5s``, ``1m30s``, ``2h45m``, ``10us``, ``100ns``) or
  plain seconds (``2``, ``2.5``); see :func:`parse_duration`.
- ``PB_JOBS_ALLOWED_TOPICS``: comma separated; items are stripped and empty items dropped, so
  a blank value means all topics (it clears a list given in code).
- ``PB_JOBS_QUEUES`` and ``PB_JOBS_QUEUE_LIMITS``: comma separated ``name:number`` items
  (see :func:`parse_queue_sizes`).

Queues: ``queues`` maps each queue this process works on to its number of worker slots
(its concurrency here); without it, the process works on the ``default`` queue alone with
``workers`` slots. ``queue_limits`` caps the jobs of a queue running at once across *all*
processes (give every process the same limits: each enforces the ones it has).

Retention (``retention.py``): finished jobs are deleted once older than their status's
:class:`Retention` (``None`` for a status keeps it for ever; ``retention=None`` keeps every
finished job). A ``PB_JOBS_RETENTION_*`` variable sets its status's field (on a
``retention=None`` config, the others are then kept for ever). ``prune_interval``: how often
the fleet prunes (one process per interval takes its turn).

Listening (``notifier.py``): with ``listen`` on, a dispatcher learns of other processes'
enqueues as they commit (PostgreSQL ``LISTEN``; SQLite watches the file's data version);
with it off (PostgreSQL behind a transaction-pooling proxy such as PgBouncer in
``pool_mode = transaction``, where ``LISTEN`` cannot work), it opens no listening
connection and an idle dispatcher claims every ``claim_poll_interval`` instead (and so
does a listening one whose notifications do not arrive). ``claim_poll_interval`` is not
used while listening.

Surrounding whitespace is ignored. A variable that is unset or empty leaves its field alone
(except ``PB_JOBS_ALLOWED_TOPICS``, as said). A value that does not parse raises
:class:`ConfigError` naming the variable and the value: a bad setting is never ignored.

:func:`resolve_config` is what ``register`` calls: defaults, then env, then validation.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from pocketjobs.core.times import now_utc
from pocketjobs.plugins.jobs.errors import InvalidJobOptions
from pocketjobs.plugins.jobs.job import DEFAULT_QUEUE
from pocketjobs.plugins.jobs.limits import MAX_RETRIES_LIMIT, MAX_RETRY_WAIT, MAX_TOPIC_LENGTH
from pocketjobs.plugins.jobs.retention import DEFAULT_RETENTION, FINISHED_STATUSES, Retention
from pocketjobs.plugins.jobs.validation import check_queue, check_timeout

__all__ = [
    "Config",
    "ConfigError",
    "apply_env",
    "default_backoff",
    "default_config",
    "parse_age",
    "parse_duration",
    "parse_queue_sizes",
    "resolve_config",
    "validate",
]


class ConfigError(ValueError):
    """A configuration value is invalid: a bad field, or an env variable that does not parse."""


def default_backoff(attempt: int) -> timedelta:
    """The delay before retry number ``attempt`` (1-based): exponential with jitter,
    ``15 s * 2 ** (attempt - 1) * j`` with ``j`` uniform in [0.75, 1.0].

    Retry 1 waits 11 to 15 s, retry 2 23 to 30 s, retry 3 45 to 60 s, retry 4 1.5 to 2 min;
    whatever the backoff says, no retry waits more than the config's ``max_backoff``
    (default 1 hour). The jitter spreads the retries of jobs that failed together (an
    outage) instead of retrying them all at once. Raises ``ValueError`` for ``attempt < 1``
    (there is no retry number 0).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt!r}")
    doublings = min(attempt - 1, 30)  # past a few doublings max_backoff decides anyway
    return timedelta(seconds=15 * 2**doublings * random.uniform(0.75, 1.0))


# Field groups, used by normalisation, validation and the typing test.
_DURATION_FIELDS = (
    "poll_interval", "lock_duration", "shutdown_timeout", "max_backoff", "prune_interval",
    "claim_poll_interval",
)  # fmt: skip
_BOOL_FIELDS = ("disabled", "http_enabled", "auto_start", "metrics", "listen")
_INT_FIELDS = ("workers", "batch_size", "max_retries", "max_payload_size")
_RULE_FIELDS = ("enqueue_rule", "manage_rule", "metrics_rule")
_QUEUE_FIELDS = ("queues", "queue_limits")


@dataclass(frozen=True, slots=True)
class Config:
    """The jobs plugin's settings (SPEC §4.2); immutable, resolved once by ``register``.

    Duration fields (``poll_interval``, ``lock_duration``, ``shutdown_timeout``) accept a
    :class:`~datetime.timedelta` or a number of seconds (``int``/``float``) and are always a
    ``timedelta`` after construction. ``allowed_topics`` accepts any iterable of ``str`` and
    is always a tuple after construction (duplicates dropped; a ``set`` is sorted, so equal
    sets give equal configs). Construction never raises on bad values: call :func:`validate`
    (or :func:`resolve_config`) to check them.

    Rules (``enqueue_rule``/``manage_rule``/``metrics_rule``): ``None`` and ``""`` both mean
    superusers only; ``"true"`` opens the endpoint to everyone. Their syntax is checked when
    the plugin compiles them, not here.

    Typing: the fields are annotated with the type they hold *after* construction
    (``timedelta``, ``tuple[str, ...]``), so ``config.poll_interval.total_seconds()``
    type-checks. The wider types the constructor accepts are declared by an ``__init__``
    signature that only type checkers see (under ``TYPE_CHECKING``); at run time the
    dataclass-generated ``__init__`` is used and ``__post_init__`` normalises. So
    ``Config(workers=5, poll_interval=0.5)`` passes ``mypy --strict``. (A test keeps that
    signature in step with the fields.) ``dataclasses.replace`` is checked by mypy against
    the field types, so pass it a ``timedelta`` for a duration.
    """

    disabled: bool = False
    workers: int = 10
    poll_interval: timedelta = timedelta(seconds=1)
    lock_duration: timedelta = timedelta(minutes=5)
    batch_size: int = 100
    max_retries: int = 3
    max_payload_size: int = 1024 * 1024
    http_enabled: bool = True
    enqueue_rule: str | None = None
    manage_rule: str | None = None
    allowed_topics: tuple[str, ...] = ()
    auto_start: bool = True
    backoff: Callable[[int], timedelta] = default_backoff
    shutdown_timeout: timedelta = timedelta(seconds=30)
    clock: Callable[[], datetime] = now_utc
    max_backoff: timedelta = timedelta(hours=1)
    queues: dict[str, int] | None = None
    queue_limits: dict[str, int] = dataclasses.field(default_factory=dict)
    default_timeout: timedelta | None = None
    #: Prometheus metrics (``metrics.py``): counters and histograms of the attempts this
    #: process ran, ``GET /api/jobs/metrics``, ``--metrics``. Off: nothing is counted.
    metrics: bool = True
    metrics_rule: str | None = None
    #: How long finished jobs are kept (``retention.py``); ``None``: for ever.
    retention: Retention | None = DEFAULT_RETENTION
    prune_interval: timedelta = timedelta(minutes=1)
    #: Whether the dispatcher listens for other processes' enqueues (PostgreSQL
    #: ``LISTEN``, SQLite's data version). Off behind a transaction-pooling proxy: no
    #: listening connection, and idle dispatchers claim every ``claim_poll_interval``.
    listen: bool = True
    #: How often an idle dispatcher that does not listen claims (see ``listen``).
    claim_poll_interval: timedelta = timedelta(milliseconds=100)

    if TYPE_CHECKING:
        # What the constructor accepts; the run-time __init__ is the generated one.
        def __init__(
            self,
            disabled: bool = ...,
            workers: int = ...,
            poll_interval: timedelta | float = ...,
            lock_duration: timedelta | float = ...,
            batch_size: int = ...,
            max_retries: int = ...,
            max_payload_size: int = ...,
            http_enabled: bool = ...,
            enqueue_rule: str | None = ...,
            manage_rule: str | None = ...,
            allowed_topics: Iterable[str] = ...,
            auto_start: bool = ...,
            backoff: Callable[[int], timedelta] = ...,
            shutdown_timeout: timedelta | float = ...,
            clock: Callable[[], datetime] = ...,
            max_backoff: timedelta | float = ...,
            queues: Mapping[str, int] | None = ...,
            queue_limits: Mapping[str, int] = ...,
            default_timeout: timedelta | float | None = ...,
            metrics: bool = ...,
            metrics_rule: str | None = ...,
            retention: Retention | None = ...,
            prune_interval: timedelta | float = ...,
            listen: bool = ...,
            claim_poll_interval: timedelta | float = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        for name in (*_DURATION_FIELDS, "default_timeout"):
            object.__setattr__(self, name, _to_timedelta(getattr(self, name)))
        object.__setattr__(self, "allowed_topics", _to_topics(self.allowed_topics))
        for name in _QUEUE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Mapping):  # a copy: the frozen config is not changed later
                object.__setattr__(self, name, dict(value))

    def queue_sizes(self) -> dict[str, int]:
        """The queues this process works on and their worker slots: ``queues``, or the
        ``default`` queue with ``workers`` slots."""
        return dict(self.queues) if self.queues else {DEFAULT_QUEUE: self.workers}

    def __hash__(self) -> int:  # the queue mappings are dicts: hash the rest
        return hash(tuple(
            getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _QUEUE_FIELDS
        ))  # fmt: skip


def _to_timedelta(value: object) -> object:
    """``value`` as a timedelta when it is a finite number of seconds; else unchanged."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # inf, nan, out of timedelta's range
            return value
    return value


def _to_topics(value: object) -> object:
    """``value`` as a tuple of unique items when it is a non-string iterable; else unchanged.

    A bare string is left alone (and rejected by :func:`validate`): ``tuple("email")`` would
    silently allow the topics ``e``, ``m``, ``a``, ``i`` and ``l``.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value
    items: tuple[object, ...] = tuple(value)
    try:
        items = tuple(dict.fromkeys(items))
    except TypeError:  # an unhashable item; validate() reports it
        return items
    if isinstance(value, set | frozenset) and all(isinstance(item, str) for item in items):
        items = tuple(sorted(items, key=str))
    return items


def default_config() -> Config:
    """A :class:`Config` holding the defaults of SPEC §4.2."""
    return Config()


# --------------------------------------------------------------------------- durations

_UNIT_NANOSECONDS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 MICRO SIGN
    "\u03bcs": 1_000,  # U+03BC GREEK SMALL LETTER MU (Go accepts both)
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT = "|".join(sorted(_UNIT_NANOSECONDS, key=len, reverse=True))
_SEGMENT = re.compile(rf"({_NUMBER})({_UNIT})")
_GO_DURATION = re.compile(rf"\+?(?:{_NUMBER}(?:{_UNIT}))+")
_PLAIN_SECONDS = re.compile(rf"\+?({_NUMBER})")


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration (``300ms``, ``1.5s``, ``1m30s``, ``2h45m``) or plain seconds.

    Units: ``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``. A duration is one or more
    ``<number><unit>`` segments; each number may have a decimal part; a leading ``+`` is
    allowed, a sign anywhere else or a negative duration is not. A bare number (``2``,
    ``2.5``) is seconds. The result is exact, rounded to timedelta's microsecond resolution
    (half to even). Raises ``ValueError`` for anything else (empty text, ``abc``, ``5x``,
    ``-1s``, ``1m-30s``, ``s``) and for durations beyond timedelta's range.
    """
    plain = _PLAIN_SECONDS.fullmatch(text)
    if plain is not None:
        nanoseconds = Decimal(plain.group(1)) * _UNIT_NANOSECONDS["s"]
    elif _GO_DURATION.fullmatch(text) is not None:
        nanoseconds = sum(
            (Decimal(number) * _UNIT_NANOSECONDS[unit] for number, unit in _SEGMENT.findall(text)),
            Decimal(0),
        )
    else:
        raise ValueError(
            f"invalid duration {text!r}: expected seconds (2.5) or a Go-style duration "
            "(300ms, 1.5s, 1m30s, 2h45m; units ns, us, ms, s, m, h)"
        )
    microseconds = int((nanoseconds / 1000).to_integral_value())  # ROUND_HALF_EVEN
    try:
        return timedelta(microseconds=microseconds)
    except OverflowError:
        raise ValueError(f"duration out of range: {text!r}") from None


# --------------------------------------------------------------------------- env overrides

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r} (use 1/true/yes/on or 0/false/no/off)")


def _parse_int(text: str) -> int:
    if _INTEGER.fullmatch(text) is None:
        raise ValueError(f"invalid integer {text!r}")
    return int(text)


def _parse_env_duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(
            f"invalid duration {text!r} (use seconds like 2.5 or Go-style like 500ms, 1m30s)"
        ) from None


_FOREVER = frozenset({"none", "forever"})
_DAYS = re.compile(rf"\+?({_NUMBER})d")


def parse_age(text: str) -> timedelta:
    """A duration (see :func:`parse_duration`) or a number of days (``7d``, ``1.5d``), as
    retention's settings and ``jobs prune --older-than`` take it. Raises ``ValueError``."""
    days = _DAYS.fullmatch(text)
    try:
        return timedelta(days=float(days.group(1))) if days else parse_duration(text)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid duration {text!r} (e.g. 90s, 30m, 24h or 7d)") from None


def _parse_kept(text: str) -> timedelta | None:
    """A ``PB_JOBS_RETENTION_*`` value: :func:`parse_age`, or ``none``/``forever``."""
    if text.lower() in _FOREVER:
        return None
    try:
        return parse_age(text)
    except ValueError as exc:
        raise ValueError(f"{exc}, or none to keep finished jobs for ever") from None


def _parse_topics(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_queue_sizes(text: str, *, default: int | None = None) -> dict[str, int]:
    """``"default:10,mail:2"`` as ``{"default": 10, "mail": 2}``.

    Items are comma separated and stripped, empty ones dropped; each is ``name:number``,
    or a bare ``name`` when ``default`` is given (it takes that number). Names must be
    valid queue names. Raises ``ValueError`` for anything else (a name twice included)."""
    sizes: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, colon, number = (part.strip() for part in item.partition(":"))
        if not colon and default is None:
            raise ValueError(f"invalid queue item {item!r} (use name:number, e.g. mail:2)")
        try:
            check_queue(name)
        except InvalidJobOptions as exc:
            raise ValueError(f"invalid queue name {name!r}: {exc}") from None
        if name in sizes:
            raise ValueError(f"queue {name!r} is named twice")
        if not colon:
            sizes[name] = cast(int, default)
        elif _INTEGER.fullmatch(number) is None or int(number) < 1:
            raise ValueError(f"invalid number {number!r} for queue {name!r} (at least 1)")
        else:
            sizes[name] = int(number)
    return sizes


# (variable, field, parser); the order is the table's.
_ENV_OVERRIDES: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("PB_JOBS_DISABLED", "disabled", _parse_bool),
    ("PB_JOBS_WORKERS", "workers", _parse_int),
    ("PB_JOBS_POLL_INTERVAL", "poll_interval", _parse_env_duration),
    ("PB_JOBS_LOCK_DURATION", "lock_duration", _parse_env_duration),
    ("PB_JOBS_BATCH_SIZE", "batch_size", _parse_int),
    ("PB_JOBS_MAX_RETRIES", "max_retries", _parse_int),
    ("PB_JOBS_MAX_PAYLOAD_SIZE", "max_payload_size", _parse_int),
    ("PB_JOBS_HTTP_ENABLED", "http_enabled", _parse_bool),
    ("PB_JOBS_ALLOWED_TOPICS", "allowed_topics", _parse_topics),
    ("PB_JOBS_AUTO_START", "auto_start", _parse_bool),
    ("PB_JOBS_SHUTDOWN_TIMEOUT", "shutdown_timeout", _parse_env_duration),
    ("PB_JOBS_MAX_BACKOFF", "max_backoff", _parse_env_duration),
    ("PB_JOBS_QUEUES", "queues", parse_queue_sizes),
    ("PB_JOBS_QUEUE_LIMITS", "queue_limits", parse_queue_sizes),
    ("PB_JOBS_DEFAULT_TIMEOUT", "default_timeout", _parse_env_duration),
    ("PB_JOBS_METRICS", "metrics", _parse_bool),
    ("PB_JOBS_PRUNE_INTERVAL", "prune_interval", _parse_env_duration),
    ("PB_JOBS_LISTEN", "listen", _parse_bool),
    ("PB_JOBS_CLAIM_POLL_INTERVAL", "claim_poll_interval", _parse_env_duration),
)
# (variable, retention field): each sets one field of ``retention``.
_RETENTION_ENV: tuple[tuple[str, str], ...] = tuple(
    (f"PB_JOBS_RETENTION_{status.upper()}", status) for status in FINISHED_STATUSES
)
_BLANK_MEANS_DEFAULT = frozenset({"PB_JOBS_ALLOWED_TOPICS"})


def apply_env(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """A copy of ``config`` with the ``PB_JOBS_*`` overrides in ``environ`` applied.

    ``environ`` defaults to ``os.environ``. Env beats code. An unset or empty (blank)
    variable leaves its field alone, except ``PB_JOBS_ALLOWED_TOPICS``, where a blank value
    means all topics. Every variable present is parsed, even when ``PB_JOBS_DISABLED`` is
    on. Raises :class:`ConfigError` naming the variable and the value when one does not
    parse, e.g. ``PB_JOBS_WORKERS: invalid integer 'ten'``. Values are not range-checked
    here; that is :func:`validate`'s job.
    """
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for variable, field_name, parse in _ENV_OVERRIDES:
        raw = env.get(variable)
        if raw is None:
            continue
        text = raw.strip()
        if not text and variable not in _BLANK_MEANS_DEFAULT:
            continue
        try:
            changes[field_name] = parse(text)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from exc
    kept: dict[str, timedelta | None] = {}
    for variable, status in _RETENTION_ENV:
        text = env.get(variable, "").strip()
        if text:
            try:
                kept[status] = _parse_kept(text)
            except ValueError as exc:
                raise ConfigError(f"{variable}: {exc}") from exc
    if kept:
        base = config.retention if isinstance(config.retention, Retention) else None
        if base is None:
            base = Retention(completed=None, failed=None, cancelled=None)
        changes["retention"] = dataclasses.replace(base, **kept)
    if not changes:
        return config
    return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------- validation


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _problems(config: Config) -> list[str]:
    """Every problem with ``config``, in field order; empty when it is valid."""
    problems: list[str] = []
    for name in _BOOL_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, bool):
            problems.append(f"{name} must be a bool, got {_describe(value)}")
    minimums = {"workers": 1, "batch_size": 1, "max_retries": 0, "max_payload_size": 1}
    for name in _INT_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name} must be an int, got {_describe(value)}")
        elif value < minimums[name]:
            problems.append(f"{name} must be at least {minimums[name]}, got {value}")
        elif name == "max_retries" and value > MAX_RETRIES_LIMIT:
            problems.append(f"max_retries must be at most {MAX_RETRIES_LIMIT}, got {value}")
    for name in _DURATION_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, timedelta):
            problems.append(
                f"{name} must be a timedelta or a finite number of seconds, got {_describe(value)}"
            )
        elif name == "shutdown_timeout" and value < timedelta(0):
            problems.append(f"{name} must not be negative, got {value}")
        elif name == "max_backoff" and value > MAX_RETRY_WAIT:
            problems.append(f"{name} must be at most {MAX_RETRY_WAIT.days} days, got {value}")
        elif name != "shutdown_timeout" and value <= timedelta(0):
            problems.append(f"{name} must be positive, got {value}")
    for name in _RULE_FIELDS:
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name} must be a str or None, got {_describe(value)}")
    problems.extend(_topic_problems(config.allowed_topics))
    for name in _QUEUE_FIELDS:
        problems.extend(_queue_problems(name, getattr(config, name)))
    if config.default_timeout is not None:
        try:
            check_timeout(config.default_timeout)
        except InvalidJobOptions as exc:
            problems.append(
                f"default_timeout: {exc} or None, got {_describe(config.default_timeout)}"
            )
    if config.retention is not None:
        if isinstance(config.retention, Retention):
            problems.extend(config.retention.problems())
        else:
            problems.append(f"retention must be a Retention or None, got "
                            f"{_describe(config.retention)}")  # fmt: skip
    if not callable(config.backoff):
        problems.append(
            f"backoff must be a callable (attempt: int) -> timedelta, "
            f"got {_describe(config.backoff)}"
        )
    if not callable(config.clock):
        problems.append(f"clock must be a callable () -> datetime, got {_describe(config.clock)}")
    return problems


def _topic_problems(topics: object) -> list[str]:
    if not isinstance(topics, tuple):
        return [f"allowed_topics must be an iterable of topic names, got {_describe(topics)}"]
    problems: list[str] = []
    for topic in topics:
        if not isinstance(topic, str):
            problems.append(f"allowed_topics: a topic must be a str, got {_describe(topic)}")
        elif not topic:
            problems.append("allowed_topics: a topic must not be empty")
        elif len(topic) > MAX_TOPIC_LENGTH:
            problems.append(
                f"allowed_topics: topic {topic[:20]!r}... is {len(topic)} characters long "
                f"(at most {MAX_TOPIC_LENGTH})"
            )
    return problems


def _queue_problems(field: str, sizes: object) -> list[str]:
    if sizes is None and field == "queues":
        return []
    if not isinstance(sizes, dict):
        return [f"{field} must be a mapping of queue names to numbers, got {_describe(sizes)}"]
    if field == "queues" and not sizes:
        return ["queues must name at least one queue (or be None: the default queue)"]
    problems: list[str] = []
    for name, number in sizes.items():
        try:
            check_queue(name)
        except InvalidJobOptions as exc:
            problems.append(f"{field}: {name!r}: {exc}")
            continue
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            problems.append(f"{field}: {name!r} must map to an int of at least 1, got "
                            f"{_describe(number)}")  # fmt: skip
    return problems


def validate(config: Config) -> Config:
    """Check every field of ``config`` and return it unchanged.

    Raises :class:`ConfigError` listing every problem (``; `` separated): a bool field that
    is not a ``bool``; an int field that is not an ``int`` (``bool`` is not accepted);
    ``workers < 1``, ``batch_size < 1``, ``max_retries < 0``, ``max_payload_size < 1``;
    ``poll_interval <= 0``, ``claim_poll_interval <= 0``, ``lock_duration <= 0``,
    ``shutdown_timeout < 0`` or a duration that is not a timedelta; a rule that is
    neither ``str`` nor ``None``; an ``allowed_topics`` entry that is not a string, is
    empty or is longer than 255 characters; a ``backoff`` or ``clock`` that is not
    callable; ``queues`` or ``queue_limits`` that are not a mapping of valid queue names
    to ints of at least 1 (``queues`` may be ``None``, not empty). Rule syntax is not checked here.
    """
    problems = _problems(config)
    if problems:
        raise ConfigError("invalid jobs config: " + "; ".join(problems))
    return config


def resolve_config(config: Config | None, environ: Mapping[str, str] | None = None) -> Config:
    """The config ``register`` runs with: defaults, then env overrides, then validation.

    1. ``config``, or :func:`default_config` when it is ``None``;
    2. :func:`apply_env` with ``environ`` (default ``os.environ``): env beats code;
    3. when the result is disabled, it is returned as is (``register`` then returns
       ``None``): a disabled plugin's other settings are not validated;
    4. otherwise :func:`validate`.

    Zero or missing values are not replaced by defaults (unlike the seed): a bad value is
    an error. Raises :class:`ConfigError`.
    """
    resolved = apply_env(config if config is not None else default_config(), environ)
    if resolved.disabled is True:  # a non-bool ``disabled`` is reported by validate()
        return resolved
    return validate(resolved)
