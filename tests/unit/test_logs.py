"""The kernel's log lines (``pocketjobs.core.logs``): structured fields in the text format
(`` key=value``, quoted when needed) and the JSON one, and the PB_LOG_* variables."""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pocketjobs.core import JsonFormatter, TextFormatter, configure_logging, log_fields
from pocketjobs.core.logs import LogSettings, format_value, log_settings

# A text line: the layout, then ``key=value`` pairs (values bare or JSON strings).
_TEXT_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<rest>.*)$")
_PAIR = re.compile(r' (?P<key>\w+)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]+)')


def parse_pairs(text: str) -> dict[str, str]:
    """The trailing `` key=value`` pairs of a text line (quoted values decoded)."""
    pairs: dict[str, str] = {}
    for match in _PAIR.finditer(text):
        value = match["value"]
        pairs[match["key"]] = json.loads(value) if value.startswith('"') else value
    return pairs


_names = itertools.count(1)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A new logger of its own (a fresh name each test; its records still propagate)."""
    log = logging.getLogger(f"pocketjobs.test.logs.n{next(_names)}")
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def _capture(logger: logging.Logger, formatter: logging.Formatter) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return stream


# -- values in the text format ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("host:12:01a2-b3", "host:12:01a2-b3"),
        (3, "3"),
        (0.125, "0.125"),
        (True, "true"),
        (False, "false"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("tab\there", '"tab\\there"'),
        (datetime(2025, 1, 8, 12, 0, 0, 123456, tzinfo=UTC), "2025-01-08T12:00:00.123Z"),
        (timedelta(seconds=1.5), "1.5"),
    ],
)
def test_a_value_is_bare_when_it_is_one_word_and_quoted_otherwise(value: Any, shown: str) -> None:
    assert format_value(value) == shown


def test_a_quoted_value_reads_back_as_json() -> None:
    for text in ['a "b" = c', "x\\y z", "é ü", "\x00", " "]:
        shown = format_value(text)
        assert shown.startswith('"')
        assert json.loads(shown) == text


# -- the text format -----------------------------------------------------------------------


def test_text_lines_keep_the_layout_and_append_the_fields(logger: logging.Logger) -> None:
    stream = _capture(logger, TextFormatter())
    log_fields(
        logger, logging.WARNING, "job %s failed", "j1", event="job.failed", job_id="j1",
        attempt=2, error='ValueError: bad "card" = 4', retry_at=None,
    )  # fmt: skip
    line = stream.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    match = _TEXT_LINE.match(line.rstrip("\n"))
    assert match, line
    assert (match["level"], match["logger"]) == ("WARNING", logger.name)
    assert match["rest"].startswith("job j1 failed event=job.failed job_id=j1 attempt=2 error=")
    assert parse_pairs(match["rest"]) == {
        "event": "job.failed",
        "job_id": "j1",
        "attempt": "2",
        "error": 'ValueError: bad "card" = 4',
    }  # retry_at=None is left out


def test_a_text_line_without_fields_is_the_plain_layout(logger: logging.Logger) -> None:
    stream = _capture(logger, TextFormatter())
    logger.info("hello %s", "world")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \S+: hello world\n", stream.getvalue()
    )


def test_fields_go_on_the_first_line_before_the_traceback(logger: logging.Logger) -> None:
    stream = _capture(logger, TextFormatter())
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log_fields(logger, logging.ERROR, "it failed", exc_info=exc, job_id="j2")
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("it failed job_id=j2")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom"


def test_extra_fields_work_without_the_helper(logger: logging.Logger) -> None:
    stream = _capture(logger, TextFormatter())
    logger.info("plain call", extra={"fields": {"queue": "mail", "n": 1}})
    logger.info("not a mapping", extra={"fields": "ignored"})
    first, second = stream.getvalue().splitlines()
    assert first.endswith("plain call queue=mail n=1")
    assert second.endswith("not a mapping")


# -- the JSON format -----------------------------------------------------------------------


def test_json_lines_parse_and_carry_the_fields_as_keys(logger: logging.Logger) -> None:
    stream = _capture(logger, JsonFormatter())
    at = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)
    log_fields(
        logger, logging.INFO, "job %s snoozed", "j3", event="job.snoozed", job_id="j3",
        attempt=1, duration_ms=1.25, run_at=at, node="h:1:n", skipped=None, ok=True,
    )  # fmt: skip
    logger.debug('no fields, a quote " and a\nnewline')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    stamp = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": logger.name,
        "message": "job j3 snoozed",
        "event": "job.snoozed",
        "job_id": "j3",
        "attempt": 1,
        "duration_ms": 1.25,
        "run_at": "2025-01-08T12:00:00.000Z",
        "node": "h:1:n",
        "ok": True,
    }
    assert second["level"] == "DEBUG"
    assert second["message"] == 'no fields, a quote " and a\nnewline'
    assert set(second) == {"time", "level", "logger", "message"}


def test_json_error_holds_the_traceback(logger: logging.Logger) -> None:
    stream = _capture(logger, JsonFormatter())
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("lookup failed", extra={"fields": {"error": "summary"}})
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["error"].startswith("Traceback (most recent call last):")
    assert entry["error"].endswith("KeyError: 'missing'")


def test_json_fields_never_replace_the_line_keys(logger: logging.Logger) -> None:
    stream = _capture(logger, JsonFormatter())
    log_fields(logger, logging.INFO, "real", message="fake", level="fake", logger="x", n=1.0)
    log_fields(logger, logging.INFO, "odd values", nan=float("nan"), obj=object)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["message"], first["level"], first["logger"]) == ("real", "INFO", logger.name)
    assert first["n"] == 1.0
    assert second["nan"] == "nan"
    assert second["obj"] == "<class 'object'>"


def test_log_fields_makes_no_record_below_the_level(logger: logging.Logger) -> None:
    stream = _capture(logger, JsonFormatter())
    logger.setLevel(logging.INFO)
    log_fields(logger, logging.DEBUG, "hidden", job_id="j")
    assert stream.getvalue() == ""


def test_records_name_the_caller_of_log_fields(logger: logging.Logger) -> None:
    stream = _capture(logger, logging.Formatter("%(funcName)s"))
    log_fields(logger, logging.INFO, "where", n=1)
    assert stream.getvalue() == "test_records_name_the_caller_of_log_fields\n"


# -- PB_LOG_FORMAT and PB_LOG_LEVEL ----------------------------------------------------------


def test_settings_default_to_text_at_info() -> None:
    assert log_settings({}) == LogSettings("text", logging.INFO)
    assert log_settings({"PB_LOG_FORMAT": "", "PB_LOG_LEVEL": " "}) == LogSettings()


@pytest.mark.parametrize(
    ("text", "level"),
    [("debug", logging.DEBUG), ("INFO", logging.INFO), ("Warning", logging.WARNING),
     (" error ", logging.ERROR)],
)  # fmt: skip
def test_levels_are_case_insensitive(text: str, level: int) -> None:
    assert log_settings({"PB_LOG_LEVEL": text}).level == level


def test_formats_are_case_insensitive() -> None:
    assert log_settings({"PB_LOG_FORMAT": "JSON"}).format == "json"
    assert isinstance(log_settings({"PB_LOG_FORMAT": "json"}).formatter(), JsonFormatter)
    assert isinstance(log_settings({"PB_LOG_FORMAT": "Text"}).formatter(), TextFormatter)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PB_LOG_LEVEL": "loud"}, "PB_LOG_LEVEL: invalid level 'loud'"),
        ({"PB_LOG_LEVEL": "critical"}, "PB_LOG_LEVEL: invalid level 'critical'"),
        ({"PB_LOG_LEVEL": "10"}, "PB_LOG_LEVEL: invalid level '10'"),
        ({"PB_LOG_FORMAT": "logfmt"}, "PB_LOG_FORMAT: invalid format 'logfmt' (use text or json)"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        log_settings(environ)


def test_configure_logging_installs_one_handler(logger: logging.Logger) -> None:
    stream = io.StringIO()
    environ = {"PB_LOG_FORMAT": "json", "PB_LOG_LEVEL": "warning"}
    assert configure_logging(environ, logger=logger, stream=stream)
    assert logger.level == logging.WARNING
    log_fields(logger, logging.INFO, "below the level")
    log_fields(logger, logging.WARNING, "shown", job_id="j")
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["job_id"] == "j"
    # Configured already (a handler is there): left as it is.
    assert not configure_logging({"PB_LOG_LEVEL": "debug"}, logger=logger, stream=stream)
    assert len(logger.handlers) == 1
    assert logger.level == logging.WARNING


def test_configure_logging_keeps_handlers_the_app_set_up(logger: logging.Logger) -> None:
    own = logging.StreamHandler(io.StringIO())
    logger.addHandler(own)
    logger.setLevel(logging.ERROR)
    assert not configure_logging({"PB_LOG_FORMAT": "json"}, logger=logger)
    assert logger.handlers == [own]
    assert logger.level == logging.ERROR
    with pytest.raises(ValueError, match="PB_LOG_LEVEL"):  # still checked
        configure_logging({"PB_LOG_LEVEL": "loud"}, logger=logger)


def test_configure_logging_defaults_to_stderr(logger: logging.Logger) -> None:
    assert configure_logging({}, logger=logger)
    [handler] = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert isinstance(handler.formatter, TextFormatter)
    assert logger.level == logging.INFO
