"""``format_time``: RFC 3339 UTC with milliseconds, fixed width, so text order is time
order; it formats by hand (for speed), so it is checked against ``isoformat``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.core.times import format_time, parse_time

# Aware instants whose UTC year stays within 1..9999 whatever their offset.
_OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
_MOMENTS = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 30)).flatmap(
    lambda naive: st.one_of(st.just(UTC), _OFFSETS).map(lambda tz: naive.replace(tzinfo=tz))
)


@given(_MOMENTS)
def test_format_time_is_isoformat_of_utc_in_milliseconds(moment: datetime) -> None:
    expected = moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    assert format_time(moment) == expected
    assert len(expected) == 24


@given(_MOMENTS, _MOMENTS)
def test_text_order_is_time_order(a: datetime, b: datetime) -> None:
    a, b = (moment.replace(microsecond=moment.microsecond // 1000 * 1000) for moment in (a, b))
    assert (format_time(a) < format_time(b)) == (a < b)
    assert parse_time(format_time(a)) == a


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2025, 1, 8, 12, 0))
