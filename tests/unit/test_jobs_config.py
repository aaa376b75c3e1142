"""Unit tests for pocketjobs.plugins.jobs.config (SPEC §4.2: Config, env overrides, validation)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import config as config_module
from pocketjobs.plugins.jobs.config import (
    Config,
    ConfigError,
    apply_env,
    default_backoff,
    default_config,
    parse_duration,
    resolve_config,
    validate,
)

# --------------------------------------------------------------------------- defaults

SPEC_DEFAULTS: dict[str, Any] = {
    "disabled": False,
    "workers": 10,
    "poll_interval": timedelta(seconds=1),
    "lock_duration": timedelta(minutes=5),
    "batch_size": 100,  # SPEC §4.2 says 10; issue 15 made it 100 (claims sized by handler speed)
    "max_retries": 3,
    "max_payload_size": 1048576,
    "http_enabled": True,
    "enqueue_rule": None,
    "manage_rule": None,
    "allowed_topics": (),
    "auto_start": True,
    "backoff": default_backoff,
    "shutdown_timeout": timedelta(seconds=30),
    "clock": now_utc,
    "max_backoff": timedelta(hours=1),
    "queues": None,
    "queue_limits": {},
    "default_timeout": None,
    "metrics": True,
    "metrics_rule": None,
    "retention": jobs.Retention(
        completed=timedelta(days=1), failed=timedelta(days=7), cancelled=timedelta(days=7)
    ),
    "prune_interval": timedelta(minutes=1),
    "listen": True,
    "claim_poll_interval": timedelta(milliseconds=100),
}


def test_public_surface() -> None:
    assert sorted(config_module.__all__) == [
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
    for name in config_module.__all__:
        assert hasattr(config_module, name)


def test_fields_and_defaults_match_spec() -> None:
    config = default_config()
    assert [field.name for field in dataclasses.fields(Config)] == list(SPEC_DEFAULTS)
    assert {name: getattr(config, name) for name in SPEC_DEFAULTS} == SPEC_DEFAULTS
    assert config == Config()


def test_defaults_are_valid() -> None:
    assert validate(default_config()) == default_config()


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 1000])
def test_default_backoff_is_exponential_with_jitter(attempt: int) -> None:
    full = timedelta(seconds=15 * 2 ** min(attempt - 1, 30))
    waits = {default_backoff(attempt) for _ in range(50)}
    assert all(0.75 * full <= wait <= full for wait in waits)
    assert len(waits) > 1, "no jitter"


@pytest.mark.parametrize("attempt", [0, -1])
def test_default_backoff_rejects_attempts_below_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt must be at least 1"):
        default_backoff(attempt)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------- construction


def test_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 5  # type: ignore[misc]


def test_slots() -> None:
    config = Config()
    assert not hasattr(config, "__dict__")


def test_equal_configs_hash_equal() -> None:
    assert hash(Config(workers=3, allowed_topics=["a"])) == hash(
        Config(workers=3, allowed_topics=("a",))
    )


@pytest.mark.parametrize("name", ["poll_interval", "lock_duration", "shutdown_timeout"])
@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        (2, timedelta(seconds=2)),
        (0.5, timedelta(milliseconds=500)),
        (0, timedelta(0)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
)
def test_durations_are_normalised_to_timedelta(
    name: str, given_value: float | timedelta, expected: timedelta
) -> None:
    changes: dict[str, Any] = {name: given_value}
    config = Config(**changes)
    value = getattr(config, name)
    assert isinstance(value, timedelta)
    assert value == expected


def test_numbers_and_timedeltas_give_equal_configs() -> None:
    assert Config(poll_interval=1, lock_duration=300.0, shutdown_timeout=30) == Config()


@pytest.mark.parametrize("bad", [True, "1s", float("nan"), float("inf"), None])
def test_unconvertible_durations_are_kept_for_validate(bad: object) -> None:
    config = Config(poll_interval=bad)  # type: ignore[arg-type]
    assert config.poll_interval is bad
    with pytest.raises(ConfigError, match="poll_interval must be a timedelta"):
        validate(config)


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        (["a", "b"], ("a", "b")),
        (("b", "a"), ("b", "a")),
        ({"b", "a", "c"}, ("a", "b", "c")),
        (frozenset({"z", "y"}), ("y", "z")),
        (["a", "b", "a"], ("a", "b")),
        (iter(["x"]), ("x",)),
        ({"k": 1}, ("k",)),
        ([], ()),
    ],
)
def test_allowed_topics_normalised_to_tuple(given_value: Any, expected: tuple[str, ...]) -> None:
    assert Config(allowed_topics=given_value).allowed_topics == expected


def test_allowed_topics_as_bare_string_is_not_split() -> None:
    config = Config(allowed_topics="email")
    assert config.allowed_topics == "email"  # type: ignore[comparison-overlap]
    with pytest.raises(ConfigError, match="allowed_topics must be an iterable of topic names"):
        validate(config)


def test_replace_renormalises() -> None:
    config = dataclasses.replace(Config(), poll_interval=3, allowed_topics=["t"])  # type: ignore[arg-type]
    assert config.poll_interval == timedelta(seconds=3)
    assert config.allowed_topics == ("t",)


def test_typing_only_init_signature_matches_the_fields() -> None:
    """The ``__init__`` declared for type checkers lists every field, in order, with a
    default, and widens only the duration fields and ``allowed_topics``."""
    tree = ast.parse(inspect.getsource(config_module))
    (config_class,) = (
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Config"
    )
    (init,) = (
        statement
        for block in config_class.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        if isinstance(statement, ast.FunctionDef) and statement.name == "__init__"
    )
    params = init.args.args[1:]
    assert not init.args.kwonlyargs
    assert len(init.args.defaults) == len(params)
    fields = dataclasses.fields(Config)
    assert [param.arg for param in params] == [field.name for field in fields]
    widened = {
        "poll_interval": "timedelta | float",
        "lock_duration": "timedelta | float",
        "shutdown_timeout": "timedelta | float",
        "max_backoff": "timedelta | float",
        "allowed_topics": "Iterable[str]",
        "queues": "Mapping[str, int] | None",
        "queue_limits": "Mapping[str, int]",
        "default_timeout": "timedelta | float | None",
        "prune_interval": "timedelta | float",
        "claim_poll_interval": "timedelta | float",
    }
    for param, field in zip(params, fields, strict=True):
        assert param.annotation is not None
        assert ast.unparse(param.annotation) == widened.get(field.name, field.type)


# --------------------------------------------------------------------------- parse_duration

GOOD_DURATIONS = [
    ("300ms", timedelta(milliseconds=300)),
    ("1.5s", timedelta(seconds=1.5)),
    ("2s", timedelta(seconds=2)),
    ("1m30s", timedelta(minutes=1, seconds=30)),
    ("1h", timedelta(hours=1)),
    ("2h45m", timedelta(hours=2, minutes=45)),
    ("10us", timedelta(microseconds=10)),
    ("10\u00b5s", timedelta(microseconds=10)),  # U+00B5 MICRO SIGN
    ("10\u03bcs", timedelta(microseconds=10)),  # U+03BC GREEK SMALL LETTER MU
    ("100ns", timedelta(0)),  # below timedelta's resolution: rounds to 0
    ("1500ns", timedelta(microseconds=2)),  # half to even
    ("2500ns", timedelta(microseconds=2)),
    ("1h2m3s4ms5us", timedelta(hours=1, minutes=2, seconds=3, milliseconds=4, microseconds=5)),
    ("1.5h", timedelta(minutes=90)),
    ("0.5m", timedelta(seconds=30)),
    (".5s", timedelta(milliseconds=500)),
    ("1.s", timedelta(seconds=1)),
    ("90m", timedelta(minutes=90)),
    ("1s1s", timedelta(seconds=2)),
    ("+2s", timedelta(seconds=2)),
    ("0s", timedelta(0)),
    ("0", timedelta(0)),
    ("2", timedelta(seconds=2)),
    ("2.5", timedelta(seconds=2.5)),
    ("+2.5", timedelta(seconds=2.5)),
    ("0.000001", timedelta(microseconds=1)),
    ("1.1s", timedelta(seconds=1, microseconds=100_000)),  # exact, no float error
]

BAD_DURATIONS = [
    "",
    " ",
    "abc",
    "5x",
    "-1s",
    "-1",
    "1m-30s",
    "s",
    ".",
    ".s",
    "1 s",
    " 1s",
    "1s ",
    "1S",
    "1e3",
    "1e3s",
    "++1s",
    "1m+30s",
    "1,5s",
    "1_000s",
    "nan",
    "inf",
    "1d",
    "1sec",
    "1.2.3s",
    "99999999999999999h",  # beyond timedelta's range
]


@pytest.mark.parametrize(("text", "expected"), GOOD_DURATIONS)
def test_parse_duration_good(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_parse_duration_bad(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_duration_error_message_is_clear() -> None:
    with pytest.raises(ValueError, match=r"invalid duration '5x'.*units ns, us, ms, s, m, h"):
        parse_duration("5x")


def _go_format(hours: int, minutes: int, seconds: int, milliseconds: int) -> str:
    parts = [
        f"{value}{unit}"
        for value, unit in (
            (hours, "h"),
            (minutes, "m"),
            (seconds, "s"),
            (milliseconds, "ms"),
        )
        if value
    ]
    return "".join(parts) or "0s"


@given(
    hours=st.integers(0, 10_000),
    minutes=st.integers(0, 10_000),
    seconds=st.integers(0, 100_000),
    milliseconds=st.integers(0, 100_000),
)
def test_parse_duration_round_trip(
    hours: int, minutes: int, seconds: int, milliseconds: int
) -> None:
    text = _go_format(hours, minutes, seconds, milliseconds)
    expected = timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds)
    assert parse_duration(text) == expected


@given(seconds=st.integers(0, 10**9), microseconds=st.integers(0, 999_999))
def test_parse_duration_decimal_seconds_round_trip(seconds: int, microseconds: int) -> None:
    expected = timedelta(seconds=seconds, microseconds=microseconds)
    assert parse_duration(f"{seconds}.{microseconds:06d}s") == expected
    assert parse_duration(f"{seconds}.{microseconds:06d}") == expected


@given(st.text(alphabet="0123456789.+-hmsunµ ", max_size=12))
def test_parse_duration_returns_non_negative_or_raises_value_error(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValueError:
        return
    assert result >= timedelta(0)


# --------------------------------------------------------------------------- apply_env

TRUE_SPELLINGS = ["1", "true", "TRUE", "True", "yes", "YES", "on", "On", " true ", "\tyes\n"]
FALSE_SPELLINGS = ["0", "false", "FALSE", "False", "no", "NO", "off", "Off", " off ", "\n0\t"]
BOOL_VARIABLES = [
    ("PB_JOBS_DISABLED", "disabled"),
    ("PB_JOBS_HTTP_ENABLED", "http_enabled"),
    ("PB_JOBS_AUTO_START", "auto_start"),
    ("PB_JOBS_METRICS", "metrics"),
    ("PB_JOBS_LISTEN", "listen"),
]
INT_VARIABLES = [
    ("PB_JOBS_WORKERS", "workers"),
    ("PB_JOBS_BATCH_SIZE", "batch_size"),
    ("PB_JOBS_MAX_RETRIES", "max_retries"),
    ("PB_JOBS_MAX_PAYLOAD_SIZE", "max_payload_size"),
]
DURATION_VARIABLES = [
    ("PB_JOBS_POLL_INTERVAL", "poll_interval"),
    ("PB_JOBS_LOCK_DURATION", "lock_duration"),
    ("PB_JOBS_SHUTDOWN_TIMEOUT", "shutdown_timeout"),
    ("PB_JOBS_PRUNE_INTERVAL", "prune_interval"),
    ("PB_JOBS_MAX_BACKOFF", "max_backoff"),
    ("PB_JOBS_CLAIM_POLL_INTERVAL", "claim_poll_interval"),
]
ALL_VARIABLES = [
    *BOOL_VARIABLES,
    *INT_VARIABLES,
    *DURATION_VARIABLES,
    ("PB_JOBS_ALLOWED_TOPICS", "allowed_topics"),
]


@pytest.mark.parametrize(("variable", "name"), BOOL_VARIABLES)
@pytest.mark.parametrize("text", TRUE_SPELLINGS)
def test_env_bool_true(variable: str, name: str, text: str) -> None:
    changes: dict[str, Any] = {name: False}
    start = dataclasses.replace(Config(), **changes)
    assert getattr(apply_env(start, {variable: text}), name) is True


@pytest.mark.parametrize(("variable", "name"), BOOL_VARIABLES)
@pytest.mark.parametrize("text", FALSE_SPELLINGS)
def test_env_bool_false(variable: str, name: str, text: str) -> None:
    changes: dict[str, Any] = {name: True}
    start = dataclasses.replace(Config(), **changes)
    assert getattr(apply_env(start, {variable: text}), name) is False


@pytest.mark.parametrize(("variable", "name"), INT_VARIABLES)
@pytest.mark.parametrize(("text", "expected"), [("7", 7), ("+42", 42), (" 1000 ", 1000)])
def test_env_int(variable: str, name: str, text: str, expected: int) -> None:
    assert getattr(apply_env(Config(), {variable: text}), name) == expected


def test_env_int_negative_parses_and_validate_rejects() -> None:
    config = apply_env(Config(), {"PB_JOBS_MAX_RETRIES": "-1"})
    assert config.max_retries == -1
    with pytest.raises(ConfigError, match="max_retries must be at least 0, got -1"):
        validate(config)


def test_max_retries_has_an_upper_bound() -> None:
    assert validate(Config(max_retries=1000)).max_retries == 1000
    with pytest.raises(ConfigError, match="max_retries must be at most 1000, got 1001"):
        validate(Config(max_retries=1001))


@pytest.mark.parametrize(("variable", "name"), DURATION_VARIABLES)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("2s", timedelta(seconds=2)),
        ("1m30s", timedelta(seconds=90)),
        ("2.5", timedelta(seconds=2.5)),
        ("7", timedelta(seconds=7)),
        (" 1h ", timedelta(hours=1)),
    ],
)
def test_env_duration(variable: str, name: str, text: str, expected: timedelta) -> None:
    assert getattr(apply_env(Config(), {variable: text}), name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email", ("email",)),
        ("a,b,c", ("a", "b", "c")),
        (" a , b ,c ", ("a", "b", "c")),
        ("a,,b,", ("a", "b")),
        ("a,b,a", ("a", "b")),
        ("email:send, sms:send", ("email:send", "sms:send")),
    ],
)
def test_env_allowed_topics(text: str, expected: tuple[str, ...]) -> None:
    config = apply_env(Config(allowed_topics=["from_code"]), {"PB_JOBS_ALLOWED_TOPICS": text})
    assert config.allowed_topics == expected


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_env_blank_allowed_topics_means_all(text: str) -> None:
    config = apply_env(Config(allowed_topics=["from_code"]), {"PB_JOBS_ALLOWED_TOPICS": text})
    assert config.allowed_topics == ()


@pytest.mark.parametrize(
    ("variable", "name"), [pair for pair in ALL_VARIABLES if pair[0] != "PB_JOBS_ALLOWED_TOPICS"]
)
@pytest.mark.parametrize("text", ["", "   "])
def test_env_empty_leaves_field_alone(variable: str, name: str, text: str) -> None:
    start = Config(
        disabled=True,
        workers=3,
        poll_interval=4,
        lock_duration=5,
        batch_size=6,
        max_retries=7,
        max_payload_size=8,
        http_enabled=False,
        auto_start=False,
        shutdown_timeout=9,
    )
    assert getattr(apply_env(start, {variable: text}), name) == getattr(start, name)


def test_env_unset_leaves_config_alone() -> None:
    start = Config(workers=3, allowed_topics=["a"])
    assert apply_env(start, {}) == start
    assert apply_env(start, {"UNRELATED": "x", "PB_JOBS_UNKNOWN": "1"}) == start


def test_env_all_variables_at_once() -> None:
    environ = {
        "PB_JOBS_DISABLED": "yes",
        "PB_JOBS_WORKERS": "4",
        "PB_JOBS_POLL_INTERVAL": "250ms",
        "PB_JOBS_LOCK_DURATION": "10m",
        "PB_JOBS_BATCH_SIZE": "2",
        "PB_JOBS_MAX_RETRIES": "0",
        "PB_JOBS_MAX_PAYLOAD_SIZE": "2048",
        "PB_JOBS_HTTP_ENABLED": "off",
        "PB_JOBS_ALLOWED_TOPICS": "a,b",
        "PB_JOBS_AUTO_START": "false",
        "PB_JOBS_SHUTDOWN_TIMEOUT": "1m",
        "PB_JOBS_MAX_BACKOFF": "2h",
        "PB_JOBS_METRICS": "0",
        "PB_JOBS_PRUNE_INTERVAL": "5m",
        "PB_JOBS_LISTEN": "false",
        "PB_JOBS_CLAIM_POLL_INTERVAL": "50ms",
    }
    rule_backoff = Config(enqueue_rule="true", manage_rule="", backoff=lambda n: timedelta(n))
    config = apply_env(rule_backoff, environ)
    assert config == dataclasses.replace(
        rule_backoff,
        disabled=True,
        workers=4,
        poll_interval=timedelta(milliseconds=250),
        lock_duration=timedelta(minutes=10),
        batch_size=2,
        max_retries=0,
        max_payload_size=2048,
        http_enabled=False,
        allowed_topics=("a", "b"),
        auto_start=False,
        shutdown_timeout=timedelta(minutes=1),
        prune_interval=timedelta(minutes=5),
        max_backoff=timedelta(hours=2),
        metrics=False,
        listen=False,
        claim_poll_interval=timedelta(milliseconds=50),
    )
    # fields without an env variable keep the code's values
    assert config.enqueue_rule == "true"
    assert config.manage_rule == ""
    assert config.backoff is rule_backoff.backoff
    assert {variable for variable, _ in ALL_VARIABLES} == set(environ)


def test_env_returns_a_new_config_and_leaves_the_input_alone() -> None:
    start = Config()
    changed = apply_env(start, {"PB_JOBS_WORKERS": "2"})
    assert changed.workers == 2
    assert start.workers == 10


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_JOBS_WORKERS", "17")
    monkeypatch.setenv("PB_JOBS_POLL_INTERVAL", "3s")
    config = apply_env(Config())
    assert config.workers == 17
    assert config.poll_interval == timedelta(seconds=3)
    assert resolve_config(None).workers == 17


def test_bad_env_message_example_from_brief() -> None:
    with pytest.raises(ConfigError, match=r"^PB_JOBS_WORKERS: invalid integer 'ten'$"):
        apply_env(Config(), {"PB_JOBS_WORKERS": "ten"})


@pytest.mark.parametrize(("variable", "name"), BOOL_VARIABLES)
@pytest.mark.parametrize("text", ["maybe", "2", "y", "n", "t", "enabled", "-1", "tru e"])
def test_bad_env_bool_names_variable(variable: str, name: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}: invalid boolean '{text}'"):
        apply_env(Config(), {variable: text})


@pytest.mark.parametrize(("variable", "name"), INT_VARIABLES)
@pytest.mark.parametrize("text", ["ten", "1.5", "1e3", "0x10", "1_000", "1 000", "--1", "5s"])
def test_bad_env_int_names_variable(variable: str, name: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}: invalid integer '{text}'$"):
        apply_env(Config(), {variable: text})


@pytest.mark.parametrize(("variable", "name"), DURATION_VARIABLES)
@pytest.mark.parametrize("text", ["abc", "5x", "-1s", "1m-30s", "s", "1d", "-2"])
def test_bad_env_duration_names_variable(variable: str, name: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}: invalid duration '{text}'"):
        apply_env(Config(), {variable: text})


def test_bad_env_error_chains_the_cause() -> None:
    with pytest.raises(ConfigError) as info:
        apply_env(Config(), {"PB_JOBS_AUTO_START": "maybe"})
    assert isinstance(info.value.__cause__, ValueError)


def test_bad_env_raises_even_when_disabled() -> None:
    # A bad setting is never ignored, even on a disabled plugin.
    with pytest.raises(ConfigError, match="PB_JOBS_WORKERS"):
        resolve_config(None, {"PB_JOBS_DISABLED": "1", "PB_JOBS_WORKERS": "ten"})


# --------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"workers": -5}, "workers must be at least 1, got -5"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"max_retries": -1}, "max_retries must be at least 0, got -1"),
        ({"max_payload_size": 0}, "max_payload_size must be at least 1, got 0"),
        ({"poll_interval": 0}, "poll_interval must be positive"),
        ({"poll_interval": -1}, "poll_interval must be positive"),
        ({"lock_duration": timedelta(0)}, "lock_duration must be positive"),
        ({"lock_duration": -0.5}, "lock_duration must be positive"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must not be negative"),
        ({"allowed_topics": [""]}, "allowed_topics: a topic must not be empty"),
        ({"allowed_topics": ["a" * 256]}, "is 256 characters long \\(at most 255\\)"),
        ({"allowed_topics": ["ok", 5]}, "allowed_topics: a topic must be a str, got 5"),
        ({"allowed_topics": 5}, "allowed_topics must be an iterable of topic names"),
        ({"allowed_topics": [["a"]]}, "allowed_topics: a topic must be a str, got \\['a'\\]"),
        ({"backoff": 5}, "backoff must be a callable"),
        ({"backoff": None}, "backoff must be a callable"),
        ({"enqueue_rule": 1}, "enqueue_rule must be a str or None, got 1"),
        ({"manage_rule": True}, "manage_rule must be a str or None, got True"),
        ({"disabled": 1}, "disabled must be a bool, got 1 \\(int\\)"),
        ({"http_enabled": "yes"}, "http_enabled must be a bool"),
        ({"auto_start": None}, "auto_start must be a bool"),
        ({"workers": True}, "workers must be an int, got True \\(bool\\)"),
        ({"workers": 2.0}, "workers must be an int, got 2.0 \\(float\\)"),
        ({"batch_size": "10"}, "batch_size must be an int"),
        ({"max_retries": False}, "max_retries must be an int"),
        ({"max_payload_size": 1.5}, "max_payload_size must be an int"),
        ({"shutdown_timeout": "30s"}, "shutdown_timeout must be a timedelta"),
    ],
)
def test_validate_rejects(changes: dict[str, Any], message: str) -> None:
    config = Config(**changes)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_validate_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        validate(Config(workers=0, batch_size=0, poll_interval=0))
    text = str(info.value)
    assert text.startswith("invalid jobs config: ")
    for part in ("workers", "batch_size", "poll_interval"):
        assert part in text
    assert text.count(";") == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"max_retries": 0},
        {"shutdown_timeout": 0},
        {"workers": 1, "batch_size": 1, "max_payload_size": 1},
        {"poll_interval": 0.001, "lock_duration": timedelta(microseconds=1)},
        {"allowed_topics": ["a" * 255, "email:send"]},
        {"enqueue_rule": "", "manage_rule": "@request.auth.id != ''"},
        {"enqueue_rule": "true"},
        {"enqueue_rule": "this is not ( a valid rule"},  # syntax is the plugin's business
        {"backoff": lambda attempt: timedelta(seconds=attempt)},
        {"disabled": True},
    ],
)
def test_validate_accepts(changes: dict[str, Any]) -> None:
    config = Config(**changes)
    assert validate(config) is config


# --------------------------------------------------------------------------- resolve_config


def test_resolve_none_gives_defaults() -> None:
    assert resolve_config(None, {}) == default_config()


def test_resolve_keeps_code_values_without_env() -> None:
    config = Config(workers=3, poll_interval=0.25)
    assert resolve_config(config, {}) == config


def test_resolve_env_overrides_code() -> None:
    config = Config(workers=3, poll_interval=0.25, allowed_topics=["a"])
    resolved = resolve_config(
        config,
        {"PB_JOBS_WORKERS": "8", "PB_JOBS_POLL_INTERVAL": "2s", "PB_JOBS_ALLOWED_TOPICS": ""},
    )
    assert resolved.workers == 8
    assert resolved.poll_interval == timedelta(seconds=2)
    assert resolved.allowed_topics == ()


def test_resolve_validates_after_env() -> None:
    # env fixes a bad code value ...
    assert resolve_config(Config(workers=0), {"PB_JOBS_WORKERS": "2"}).workers == 2
    # ... and a bad env value is caught by validation
    with pytest.raises(ConfigError, match="workers must be at least 1, got 0"):
        resolve_config(Config(workers=2), {"PB_JOBS_WORKERS": "0"})


def test_resolve_rejects_invalid_code_config() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_config(Config(batch_size=0), {})


def test_resolve_disabled_via_env_skips_validation() -> None:
    bad = Config(workers=0, poll_interval=-1, allowed_topics=[""])
    resolved = resolve_config(bad, {"PB_JOBS_DISABLED": "true"})
    assert resolved.disabled is True
    assert resolved.workers == 0


def test_resolve_disabled_in_code_skips_validation() -> None:
    assert resolve_config(Config(disabled=True, workers=0), {}).disabled is True


def test_resolve_env_can_enable_a_disabled_config() -> None:
    resolved = resolve_config(Config(disabled=True), {"PB_JOBS_DISABLED": "0"})
    assert resolved.disabled is False


def test_resolve_env_enabling_validates() -> None:
    with pytest.raises(ConfigError, match="workers"):
        resolve_config(Config(disabled=True, workers=0), {"PB_JOBS_DISABLED": "off"})


def test_resolve_non_bool_disabled_is_validated_not_taken_as_true() -> None:
    with pytest.raises(ConfigError, match="disabled must be a bool"):
        resolve_config(Config(disabled="no"), {})  # type: ignore[arg-type]


def test_resolve_raises_value_error_for_register() -> None:
    # SPEC §4.1: bad values -> a clear ValueError
    with pytest.raises(ValueError, match="max_payload_size"):
        resolve_config(None, {"PB_JOBS_MAX_PAYLOAD_SIZE": "0"})


# --------------------------------------------------------------------------- queues


def test_queue_sizes_default_to_the_default_queue_with_workers() -> None:
    assert Config(workers=4).queue_sizes() == {"default": 4}
    assert Config(workers=4, queues={"mail": 2, "default": 3}).queue_sizes() == {
        "mail": 2,
        "default": 3,
    }


def test_queue_mappings_are_copied_and_the_config_stays_hashable() -> None:
    sizes = {"default": 2}
    config = Config(queues=sizes, queue_limits={"mail": 5})
    sizes["other"] = 1
    assert config.queues == {"default": 2}
    assert hash(config) == hash(Config(queues={"default": 2}, queue_limits={"mail": 5}))


def test_queues_from_the_environment() -> None:
    env = {"PB_JOBS_QUEUES": " default:10, mail:2 ,", "PB_JOBS_QUEUE_LIMITS": "mail:5"}
    config = resolve_config(None, env)
    assert config.queues == {"default": 10, "mail": 2}
    assert config.queue_limits == {"mail": 5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mail", "use name:number"),
        ("mail:0", "at least 1"),
        ("mail:two", "invalid number"),
        ("bad name:2", "invalid queue name"),
        ("mail:1,mail:2", "named twice"),
    ],
)
def test_bad_queue_env_values_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"PB_JOBS_QUEUES: .*{message}"):
        resolve_config(None, {"PB_JOBS_QUEUES": text})


def test_parse_queue_sizes_takes_bare_names_with_a_default() -> None:
    from pocketjobs.plugins.jobs.config import parse_queue_sizes

    assert parse_queue_sizes("mail,default:3", default=7) == {"mail": 7, "default": 3}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"queues": {}}, "queues must name at least one queue"),
        ({"queues": {"default": 0}}, "must map to an int of at least 1"),
        ({"queues": {"a b": 1}}, "queue must be 1 to 64"),
        ({"queues": ["default"]}, "queues must be a mapping"),
        ({"queue_limits": {"mail": True}}, "must map to an int of at least 1"),
    ],
)
def test_bad_queue_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(Config(**changes))  # type: ignore[arg-type]


def test_default_timeout_from_code_and_environment() -> None:
    assert Config(default_timeout=1.5).default_timeout == timedelta(seconds=1.5)
    assert resolve_config(None, {"PB_JOBS_DEFAULT_TIMEOUT": "2m"}).default_timeout == timedelta(
        minutes=2
    )
    with pytest.raises(ConfigError, match="default_timeout"):
        validate(Config(default_timeout=0))
    with pytest.raises(ConfigError, match="default_timeout"):
        validate(Config(default_timeout=timedelta(days=30)))


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)), ("7d", timedelta(days=7)),
     ("1.5d", timedelta(hours=36)), ("3600", timedelta(hours=1)), ("none", None),
     ("Forever", None)],
)  # fmt: skip
def test_env_retention_sets_its_status(text: str, expected: timedelta | None) -> None:
    config = apply_env(Config(), {"PB_JOBS_RETENTION_FAILED": f" {text} "})
    assert config.retention == jobs.Retention(failed=expected)
    assert validate(config) is config


def test_env_retention_on_a_config_that_keeps_everything() -> None:
    config = apply_env(Config(retention=None), {"PB_JOBS_RETENTION_COMPLETED": "2h"})
    assert config.retention == jobs.Retention(timedelta(hours=2), None, None)


@pytest.mark.parametrize("text", ["abc", "-1h", "7 days", "d", "0x10"])
def test_env_retention_that_does_not_parse_names_the_variable(text: str) -> None:
    expected = f"PB_JOBS_RETENTION_CANCELLED: invalid duration {text!r}"
    with pytest.raises(ConfigError, match=expected):
        apply_env(Config(), {"PB_JOBS_RETENTION_CANCELLED": text})


def test_retention_numbers_are_seconds_and_bad_values_are_reported() -> None:
    assert jobs.Retention(completed=60).completed == timedelta(minutes=1)
    assert validate(Config(retention=None)).retention is None
    bad = [jobs.Retention(completed=0), jobs.Retention(failed=-5),
           jobs.Retention(cancelled="7d")]  # type: ignore[arg-type]  # fmt: skip
    for retention in bad:
        with pytest.raises(ConfigError, match="retention"):
            validate(Config(retention=retention))
    with pytest.raises(ConfigError, match="retention must be a Retention or None"):
        validate(Config(retention={"completed": 60}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prune_interval must be positive"):
        validate(Config(prune_interval=0))


def test_retention_cutoffs_leave_out_the_statuses_kept_for_ever() -> None:
    now = now_utc()
    cutoffs = jobs.Retention(completed=timedelta(hours=1), failed=None).cutoffs(now)
    assert cutoffs == {"completed": now - timedelta(hours=1), "cancelled": now - timedelta(days=7)}
