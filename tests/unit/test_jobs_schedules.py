"""A schedule's slots: next and last slot, counting, aliases, zones and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs.schedules import (
    LONG_AGO,
    Schedule,
    check_cron,
    check_tz,
    slot_key,
)


def schedule(cron: str, tz: str = "UTC") -> Schedule:
    return Schedule("s", "t", check_cron(cron), check_tz(tz).key, None, "null")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_next_slot_is_strictly_after_and_last_slot_at_or_before() -> None:
    every5 = schedule("*/5 * * * *")
    assert every5.next_slot(at("2026-05-04T10:00")) == at("2026-05-04T10:05")
    assert every5.next_slot(at("2026-05-04T10:04:59.999")) == at("2026-05-04T10:05")
    assert every5.last_slot(at("2026-05-04T10:05")) == at("2026-05-04T10:05")
    assert every5.last_slot(at("2026-05-04T10:09:59.999")) == at("2026-05-04T10:05")


@pytest.mark.parametrize(
    ("alias", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
     ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
     ("@ANNUALLY", "0 0 1 1 *")],
)  # fmt: skip
def test_aliases_are_their_expressions(alias: str, fields: str) -> None:
    start = at("2026-05-04T10:17")
    a, b = schedule(alias), schedule(fields)
    for _ in range(3):
        assert a.next_slot(start) == b.next_slot(start)
        start = a.next_slot(start)


def test_slots_between_counts_a_half_open_range_up_to_a_limit() -> None:
    minutely = schedule("* * * * *")
    assert minutely.slots_between(at("2026-05-04T10:00"), at("2026-05-04T11:00"), limit=1000) == 60
    assert minutely.slots_between(at("2026-05-04T10:00"), at("2026-05-04T11:00"), limit=7) == 7
    assert minutely.slots_between(at("2026-05-04T11:00"), at("2026-05-04T10:00"), limit=9) == 0


def test_a_zone_applies_to_the_fields() -> None:
    seven = schedule("0 7 * * *", "Asia/Tokyo")  # UTC+9, no daylight saving
    assert seven.next_slot(at("2026-05-04T00:00")) == at("2026-05-04T22:00")


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)))
def test_last_slot_before_next_slot(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    sched = schedule("*/7 3-5 * * MON-FRI", "Europe/Paris")
    last, upcoming = sched.last_slot(moment), sched.next_slot(moment)
    assert last <= moment < upcoming
    assert last == LONG_AGO or sched.next_slot(last) == upcoming  # nothing in between


def test_slot_key_names_the_schedule_and_the_minute_in_utc() -> None:
    moment = datetime.fromisoformat("2026-05-04T09:05:00+02:00")
    assert slot_key("reports:daily", moment) == "schedule:reports:daily:2026-05-04T07:05Z"


@pytest.mark.parametrize(
    "cron", ["", "   ", "* * * *", "0 0 * * * *", "61 * * * *", "@every_minute", "0 0 30 2 *"]
)
def test_bad_expressions_are_refused(cron: str) -> None:
    with pytest.raises(jobs.InvalidJobOptions) as caught:
        check_cron(cron)
    assert (caught.value.field, caught.value.code) == ("cron", "validation_invalid_cron")


def test_an_expression_is_kept_with_single_spaces() -> None:
    assert check_cron("  */5   *  * * * ") == "*/5 * * * *"


@pytest.mark.parametrize("tz", ["", "Mars/Olympus", " UTC", "../etc/passwd", None, 5])
def test_bad_zones_are_refused(tz: object) -> None:
    with pytest.raises(jobs.InvalidJobOptions) as caught:
        check_tz(tz)
    assert caught.value.field == "tz"


def test_the_minute_resolution_ignores_seconds() -> None:
    hourly = schedule("0 * * * *")
    assert hourly.last_slot(at("2026-05-04T10:00:59")) == at("2026-05-04T10:00")
    assert hourly.next_slot(at("2026-05-04T10:00:00.001")) == at("2026-05-04T11:00")
    assert hourly.next_slot(at("2026-05-04T10:00")) - at("2026-05-04T10:00") == timedelta(hours=1)
