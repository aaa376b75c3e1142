"""Time helpers: one fixed-width UTC text format, so string order is time order."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_time", "now_utc", "parse_time"]


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with milliseconds: ``2025-01-08T12:00:00.000Z``.

    Raises ``ValueError`` for a naive datetime (its zone would be a guess).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: pass a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``) into aware UTC.

    Raises ``ValueError`` for text that is not such a timestamp, including naive ones.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return moment.astimezone(UTC)
