"""The wake-up notification's payload: the due time, then the new jobs' topics."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers import MAX_WAKE_TOPICS, parse_wake_payload, wake_payload

DUE = datetime(2026, 5, 4, 10, 5, 0, 123000, tzinfo=UTC)


def test_the_time_then_the_topics_sorted_once_each() -> None:
    payload = wake_payload(DUE, ["mail", "b", "mail"])
    assert payload == f'{format_time(DUE)} ["b", "mail"]'
    assert parse_wake_payload(payload) == (DUE, frozenset({"b", "mail"}))


def test_no_topics_or_too_many_name_none_so_every_dispatcher_wakes() -> None:
    assert wake_payload(DUE) == format_time(DUE)
    many = [f"t{n}" for n in range(MAX_WAKE_TOPICS + 1)]
    assert wake_payload(DUE, many) == format_time(DUE)
    assert parse_wake_payload(format_time(DUE)) == (DUE, None)
    assert parse_wake_payload(wake_payload(DUE, many[:-1]))[1] == frozenset(many[:-1])


def test_a_payload_that_is_not_one_means_now_and_any_topic() -> None:
    for payload in ("", "soon", "x y", "cancel:123"):
        assert parse_wake_payload(payload) == (None, None)
    for names in ("[1, 2]", "{}", "not json", '"t"'):
        assert parse_wake_payload(f"{format_time(DUE)} {names}") == (DUE, None)


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=MAX_WAKE_TOPICS))
def test_any_topics_come_back_as_sent(topics: list[str]) -> None:
    assert parse_wake_payload(wake_payload(DUE, topics)) == (DUE, frozenset(topics))
