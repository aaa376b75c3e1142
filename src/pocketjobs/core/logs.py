"""Log lines for operators: a human message plus stable ``key=value`` fields, as text or
as JSON lines.

Fields travel with a record in ``extra={"fields": {...}}``, or through :func:`log_fields`,
so the message text stays readable while the fields stay machine-readable::

    log_fields(logger, logging.WARNING, "job %s failed", job.id, event="job.failed", job_id=job.id)

:func:`configure_logging` (the CLI calls it) reads two environment variables:

``PB_LOG_FORMAT``
    ``text`` (default): ``%(asctime)s %(levelname)s %(name)s: %(message)s`` followed by
    the fields as `` key=value`` pairs (:class:`TextFormatter`); ``json``: one JSON object
    per line (:class:`JsonFormatter`).
``PB_LOG_LEVEL``
    ``debug``, ``info`` (default), ``warning`` or ``error`` (any case): the root logger's
    level.

A value that does not parse raises a ``ValueError`` naming the variable.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Final, Literal

from pocketjobs.core.times import format_time

__all__ = [
    "LOG_FIELDS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogSettings",
    "TextFormatter",
    "configure_logging",
    "format_value",
    "log_fields",
    "log_settings",
    "record_fields",
]

#: The ``extra`` key (and record attribute) that holds a record's structured fields.
LOG_FIELDS: Final = "fields"
#: The text format's layout before the fields (the CLI's format since the beginning).
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LogFormat = Literal["text", "json"]
_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: The JSON keys of every line; a field of the same name does not replace them.
_JSON_KEYS: Final = frozenset({"time", "level", "logger", "message"})
#: Characters that make a text value quoted (besides anything not printable).
_QUOTE_IF: Final = frozenset(' "=\\')


def log_fields(
    logger: logging.Logger,
    level: int,
    message: str,
    /,
    *args: object,
    exc_info: Any = None,
    stacklevel: int = 1,
    **fields: object,
) -> None:
    """Log ``message % args`` at ``level`` with ``fields`` as its structured fields
    (``extra={"fields": fields}``); no record is made when ``level`` is not enabled.
    ``exc_info`` and ``stacklevel`` are :meth:`logging.Logger.log`'s (``1``: the record
    names the caller of this function; a helper that wraps it passes ``2``).
    (A caller on a hot path checks ``logger.isEnabledFor(level)`` before it gathers the
    fields.)
    Fields whose value is ``None`` are left out of the line."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            message,
            *args,
            exc_info=exc_info,
            extra={LOG_FIELDS: fields},
            stacklevel=stacklevel + 1,
        )


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields of ``record`` (``None`` values left out; ``{}`` if none)."""
    fields = getattr(record, LOG_FIELDS, None)
    if not isinstance(fields, Mapping):
        return {}
    return {str(key): value for key, value in fields.items() if value is not None}


def _plain(value: object) -> object:
    """``value`` as a JSON-able scalar: times as RFC 3339 UTC, durations in seconds."""
    if isinstance(value, datetime):
        return format_time(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def format_value(value: object) -> str:
    """``value`` as a text line shows it after ``key=``: bare when it is a plain word,
    else a JSON string (double quotes, backslash escapes) — when empty or when it holds a
    space, a quote, ``=``, a backslash or anything not printable (a newline)."""
    plain = _plain(value)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    text = str(plain)
    if not text or not text.isprintable() or any(char in _QUOTE_IF for char in text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """The text format: ``fmt`` (default :data:`TEXT_FORMAT`) followed by the record's
    fields as `` key=value`` pairs (see :func:`format_value`), on the first line, before
    any traceback."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{key}={format_value(value)}" for key, value in fields.items())
        return f"{line} {pairs}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339 UTC, milliseconds), ``level``
    (``INFO``), ``logger``, ``message``, then the record's fields as keys of their own
    (a field named like one of those four is left out), and ``error`` (the traceback)
    when the record has ``exc_info``, ``stack`` when it has ``stack_info``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": format_time(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            if key not in _JSON_KEYS:
                line[key] = _plain(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["error"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """What the environment asks for (:func:`log_settings`): a format and a level."""

    format: LogFormat = "text"
    level: int = logging.INFO

    def formatter(self) -> logging.Formatter:
        """A new formatter for this format."""
        return JsonFormatter() if self.format == "json" else TextFormatter()


def log_settings(environ: Mapping[str, str] | None = None) -> LogSettings:
    """``PB_LOG_FORMAT`` and ``PB_LOG_LEVEL`` of ``environ`` (default ``os.environ``);
    unset or empty means the default. Raises ``ValueError`` naming the variable, e.g.
    ``PB_LOG_LEVEL: invalid level 'loud' (use debug, info, warning or error)``."""
    env = os.environ if environ is None else environ
    format_text = env.get("PB_LOG_FORMAT", "").strip().lower() or "text"
    if format_text not in _FORMATS:
        raise ValueError(
            f"PB_LOG_FORMAT: invalid format {env['PB_LOG_FORMAT']!r} (use text or json)"
        )
    level_text = env.get("PB_LOG_LEVEL", "").strip().lower() or "info"
    if level_text not in _LEVELS:
        raise ValueError(
            f"PB_LOG_LEVEL: invalid level {env['PB_LOG_LEVEL']!r} "
            "(use debug, info, warning or error)"
        )
    log_format: LogFormat = "json" if format_text == "json" else "text"
    return LogSettings(log_format, _LEVELS[level_text])


def configure_logging(
    environ: Mapping[str, str] | None = None,
    *,
    logger: logging.Logger | None = None,
    stream: IO[str] | None = None,
) -> bool:
    """Send ``logger``'s records (default: the root logger's, i.e. all) to ``stream``
    (default ``sys.stderr``) in the format and at the level of ``environ`` (default
    ``os.environ``; see :func:`log_settings`). A logger that already has handlers (logging
    the application configured itself) is left as it is; the variables are still checked.

    Returns whether it configured ``logger``. Raises ``ValueError`` for a bad variable."""
    settings = log_settings(environ)
    target = logger if logger is not None else logging.getLogger()
    if target.handlers:
        return False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(settings.formatter())
    target.addHandler(handler)
    target.setLevel(settings.level)
    return True
