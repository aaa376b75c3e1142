"""Time helpers: one fixed-width UTC text format, so string order is time order."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_time", "now_utc", "parse_time"]


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with milliseconds: ``2025-01-08T12:00:00.000Z``.

    Raises ``ValueError`` for a naive datetime (its zone would be a guess).
    """
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("naive datetime: pass a timezone-aware datetime")
        moment = moment.astimezone(UTC)
    # By hand: twice as fast as isoformat(timespec="milliseconds"), and every enqueue,
    # claim and outcome formats times.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - the fastest way
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
        moment.microsecond // 1000,
    )  # fmt: skip


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset (``2025-01-08T12:00:00Z``,
    ``...T13:00:00.5+01:00``) into aware UTC.

    Raises ``ValueError`` for anything else: naive times, other ISO 8601 shapes (week dates,
    basic format, no seconds), impossible dates, or instants outside years 1 to 9999 in UTC.
    """
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 date-time with a timezone: {text!r}")
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most 6 fractional digits: drop the extra precision
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"date-time out of range: {text!r}") from None
