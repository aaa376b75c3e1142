"""The JobStore (SPEC §4.5) on a real SQLite file and on PostgreSQL.

The dispatcher is off (``auto_start=False``) so statuses stay as written, except in the
one test where a handler runs. Fixtures set statuses directly in ``_jobs``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pocketjobs import App
from pocketjobs.core.times import format_time, now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import Job, JobFilter, JobStore

MS = timedelta(milliseconds=1)
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE_THIRTY = timezone(-timedelta(hours=5, minutes=30))


pytestmark = pytest.mark.usefixtures("clean_jobs_env")


StoreFactory = Callable[..., JobStore]


@pytest.fixture
def jobs_app(data_dir: Path, db_url: str | None) -> Iterator[App]:
    """An app (not yet bootstrapped) on this test's database; terminated afterwards."""
    application = App(data_dir, db_url)
    yield application
    if application.is_bootstrapped():
        application.terminate()


@pytest.fixture
def make_store(jobs_app: App) -> StoreFactory:
    """Register the plugin with a config (dispatcher off by default), then bootstrap."""

    def make(**overrides: Any) -> JobStore:
        settings: dict[str, Any] = {"auto_start": False, "shutdown_timeout": 5}
        settings.update(overrides)
        store = jobs.register(jobs_app, jobs.Config(**settings))
        assert store is not None
        jobs_app.bootstrap()
        return store

    return make


@pytest.fixture
def store(make_store: StoreFactory) -> JobStore:
    return make_store(max_retries=5)


@pytest.fixture
def app(jobs_app: App, store: JobStore) -> App:
    """The bootstrapped app behind ``store`` (shadows the conftest fixture)."""
    return jobs_app


def count_jobs(app: App) -> int:
    return int(app.db.fetch_value("SELECT COUNT(*) FROM _jobs"))


def set_status(app: App, job_id: str, status: str) -> None:
    assert app.db.execute("UPDATE _jobs SET status = ? WHERE id = ?", (status, job_id)) == 1


def assert_about_now(moment: datetime, before: datetime, after: datetime) -> None:
    # SQLite stores milliseconds (truncated), so allow one millisecond below ``before``.
    assert moment.utcoffset() == timedelta(0)
    assert before - MS <= moment <= after


# --------------------------------------------------------------------------- enqueue


def test_enqueue_defaults(app: App, store: JobStore) -> None:
    before = now_utc()
    job = store.enqueue("email:send", {"to": "a@example.com"})
    after = now_utc()
    for candidate in (job, store.get(job.id)):
        assert candidate.id == job.id
        assert candidate.topic == "email:send"
        assert candidate.payload == {"to": "a@example.com"}
        assert candidate.status == "pending"
        assert candidate.retries == 0
        assert candidate.max_retries == 5  # the config's, not the built-in default 3
        assert candidate.locked_until is None
        assert candidate.last_error is None
        assert_about_now(candidate.run_at, before, after)
        assert_about_now(candidate.created, before, after)
        assert_about_now(candidate.updated, before, after)
    assert count_jobs(app) == 1
    if not app.is_postgres():  # fixed-width UTC text with milliseconds (SPEC §4.4)
        row = app.db.fetch_one("SELECT run_at, created, updated FROM _jobs")
        assert row is not None
        assert all(TIME_RE.match(value) for value in row.values())


def test_enqueue_without_payload_stores_null(store: JobStore) -> None:
    job = store.enqueue("noop")
    assert job.payload is None
    assert store.get(job.id).payload is None


def test_ids_are_uuid7_strings_and_increasing(store: JobStore) -> None:
    ids = [store.enqueue("t", n).id for n in range(50)]
    ids += [job.id for job in store.enqueue_many("t", list(range(50)))]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id  # canonical lower-case 8-4-4-4-12 form
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    # The first 48 bits are the Unix time in milliseconds.
    millis = int(ids[-1].replace("-", "")[:12], 16)
    assert abs(millis / 1000 - time.time()) < 60


PAYLOADS = [
    pytest.param({"to": "a@example.com", "n": 3}, id="dict"),
    pytest.param([1, "two", 3.5, None, True], id="list"),
    pytest.param("just a string", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param(42, id="int"),
    pytest.param(-7.25, id="float"),
    pytest.param(2**70, id="big-int"),
    pytest.param(True, id="bool"),
    pytest.param(None, id="none"),
    pytest.param({}, id="empty-dict"),
    pytest.param([], id="empty-list"),
    pytest.param(
        {"user": {"id": 1, "tags": ["a", "b"], "prefs": {"dark": True, "x": None}}, "k": [[1]]},
        id="nested",
    ),
    pytest.param(
        {"名前": "Zoë 🎉", "text": "naïve café — ünïcödé", "emoji": ["🚀", "👍🏽"]}, id="unicode"
    ),
    pytest.param({"quote": 'say "hi"\\ \n\t', "apos": "it's"}, id="escapes"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_round_trips(store: JobStore, payload: Any) -> None:
    job = store.enqueue("t", payload)
    assert job.payload == payload
    stored = store.get(job.id)
    assert stored.payload == payload
    assert type(stored.payload) is type(payload)
    assert store.list().items[0].payload == payload


def test_nul_characters_are_refused_alike_on_both_databases(app: App, store: JobStore) -> None:
    """PostgreSQL cannot store NUL in text or JSONB, so neither database accepts it."""
    with pytest.raises(jobs.InvalidPayload, match="NUL"):
        store.enqueue("t", {"text": "a\x00b"})
    with pytest.raises(jobs.InvalidTopic, match="NUL"):
        store.enqueue("t\x00", {})
    assert count_jobs(app) == 0
    literal = store.enqueue("t", {"text": "a\\u0000b"})  # an escaped backslash, no NUL
    assert store.get(literal.id).payload == {"text": "a\\u0000b"}
    for call in (store.get, store.delete, store.requeue):
        with pytest.raises(jobs.JobNotFound):
            call("id\x00")
    with pytest.raises(jobs.InvalidJobOptions):
        store.list(jobs.JobFilter(topic="t\x00"))


def test_run_at_aware_datetime(store: JobStore) -> None:
    run_at = datetime(2030, 5, 17, 8, 30, 15, 250000, tzinfo=UTC)
    job = store.enqueue("t", 1, run_at=run_at)
    assert job.run_at == run_at
    assert store.get(job.id).run_at == run_at


@pytest.mark.parametrize("zone", [PLUS_TWO, MINUS_FIVE_THIRTY], ids=["+02:00", "-05:30"])
def test_run_at_with_another_offset_is_stored_as_utc(store: JobStore, zone: timezone) -> None:
    run_at = datetime(2030, 1, 1, 12, 0, 0, 123000, tzinfo=zone)
    job = store.enqueue("t", 1, run_at=run_at)
    stored = store.get(job.id)
    assert stored.run_at == run_at  # the same instant
    assert stored.run_at.utcoffset() == timedelta(0)
    assert stored.run_at.replace(tzinfo=UTC) == run_at.astimezone(UTC).replace(tzinfo=UTC)
    assert stored.to_json()["run_at"] == format_time(run_at)


def test_returned_job_run_at_is_normalised_to_utc(store: JobStore) -> None:
    job = store.enqueue("t", 1, run_at=datetime(2030, 1, 1, 12, 0, tzinfo=PLUS_TWO))
    assert job.run_at.utcoffset() == timedelta(0)


def test_enqueue_returns_the_job_as_stored(app: App, store: JobStore) -> None:
    job = store.enqueue("t", {"a": 1}, run_at=datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert job == store.get(job.id)


@pytest.mark.parametrize(
    "delay",
    [timedelta(minutes=5), 300, 300.0],
    ids=["timedelta", "int-seconds", "float-seconds"],
)
def test_delay(store: JobStore, delay: timedelta | float) -> None:
    before = now_utc()
    job = store.enqueue("t", 1, delay=delay)
    after = now_utc()
    five = timedelta(minutes=5)
    assert before + five - MS <= store.get(job.id).run_at <= after + five
    assert before + five - MS <= job.run_at <= after + five


def test_zero_delay_is_now(store: JobStore) -> None:
    before = now_utc()
    job = store.enqueue("t", 1, delay=0)
    assert_about_now(store.get(job.id).run_at, before, now_utc())


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"run_at": datetime(2030, 1, 1, 12, 0)}, id="naive-run-at"),
        pytest.param(
            {"run_at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5}, id="run-at-and-delay"
        ),
        pytest.param({"run_at": "2030-01-01T00:00:00Z"}, id="run-at-str"),
        pytest.param({"delay": -1}, id="negative-seconds"),
        pytest.param({"delay": timedelta(seconds=-1)}, id="negative-timedelta"),
        pytest.param({"delay": math.nan}, id="nan-delay"),
        pytest.param({"delay": "5"}, id="str-delay"),
        pytest.param({"delay": True}, id="bool-delay"),
        pytest.param({"max_retries": -1}, id="negative-max-retries"),
        pytest.param({"max_retries": True}, id="bool-max-retries"),
        pytest.param({"max_retries": False}, id="false-max-retries"),
        pytest.param({"max_retries": "3"}, id="str-max-retries"),
        pytest.param({"max_retries": 2.0}, id="float-max-retries"),
    ],
)
def test_invalid_options(app: App, store: JobStore, options: dict[str, Any]) -> None:
    with pytest.raises(jobs.InvalidJobOptions):
        store.enqueue("t", {"a": 1}, **options)
    with pytest.raises(jobs.InvalidJobOptions):
        store.enqueue_many("t", [1, 2], **options)
    assert count_jobs(app) == 0


def test_naive_run_at_through_enqueue_at(app: App, store: JobStore) -> None:
    with pytest.raises(jobs.InvalidJobOptions):
        store.enqueue_at("t", 1, datetime(2030, 1, 1))
    assert count_jobs(app) == 0


@pytest.mark.parametrize("max_retries", [0, 1, 7])
def test_explicit_max_retries(store: JobStore, max_retries: int) -> None:
    job = store.enqueue("t", 1, max_retries=max_retries)
    assert job.max_retries == max_retries
    assert store.get(job.id).max_retries == max_retries


def test_max_retries_none_takes_the_config_default(store: JobStore) -> None:
    assert store.get(store.enqueue("t", 1, max_retries=None).id).max_retries == 5


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("\t\n", id="whitespace"),
        pytest.param("x" * 256, id="256-chars"),
        pytest.param("é" * 256, id="256-unicode-chars"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"topic", id="bytes"),
        pytest.param(["topic"], id="list"),
    ],
)
def test_invalid_topic(app: App, store: JobStore, topic: Any) -> None:
    with pytest.raises(jobs.InvalidTopic):
        store.enqueue(topic, {"a": 1})
    with pytest.raises(jobs.InvalidTopic):
        store.enqueue_many(topic, [1, 2])
    with pytest.raises(jobs.InvalidTopic):
        store.enqueue_at(topic, 1, datetime(2030, 1, 1, tzinfo=UTC))
    assert count_jobs(app) == 0


@pytest.mark.parametrize("topic", ["x" * 255, "é" * 255, "a", "email:send/v2 ✉"])
def test_valid_topics(store: JobStore, topic: str) -> None:
    job = store.enqueue(topic, 1)
    assert store.get(job.id).topic == topic


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param({"x": -math.inf}, id="nested-inf"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"when": datetime(2030, 1, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
    ],
)
def test_unserializable_payload(app: App, store: JobStore, payload: Any) -> None:
    with pytest.raises(jobs.InvalidPayload) as raised:
        store.enqueue("t", payload)
    assert not isinstance(raised.value, jobs.PayloadTooLarge)
    assert isinstance(raised.value, ValueError)
    assert count_jobs(app) == 0


def test_payload_size_limit_counts_utf8_bytes_of_compact_json(
    jobs_app: App, make_store: StoreFactory
) -> None:
    store = make_store(max_payload_size=20)
    # '"' + 9 * 'é' (2 bytes each) + '"' = 20 bytes: exactly at the limit.
    at_limit = "é" * 9
    assert len(json.dumps(at_limit, ensure_ascii=False).encode()) == 20
    job = store.enqueue("t", at_limit)
    assert store.get(job.id).payload == at_limit
    with pytest.raises(jobs.PayloadTooLarge) as raised:
        store.enqueue("t", at_limit + "a")  # 21 bytes
    assert isinstance(raised.value, jobs.InvalidPayload)
    # Compact separators: {"k":"xxxxxxxxxxxx"} is 8 + 12 = 20 bytes.
    assert store.enqueue("t", {"k": "x" * 12}).payload == {"k": "x" * 12}
    with pytest.raises(jobs.PayloadTooLarge):
        store.enqueue("t", {"k": "x" * 13})
    with pytest.raises(jobs.PayloadTooLarge):
        store.enqueue("t", "🚀" * 5)  # 2 + 5 * 4 = 22 bytes, though only 7 characters
    with pytest.raises(jobs.PayloadTooLarge):
        store.enqueue_many("t", ["ok", "x" * 19])  # the second one is 21 bytes
    assert count_jobs(jobs_app) == 2


def test_default_payload_limit_is_one_mebibyte(app: App, store: JobStore) -> None:
    limit = 1024 * 1024
    assert store.config.max_payload_size == limit
    job = store.enqueue("t", "x" * (limit - 2))
    assert len(store.get(job.id).payload) == limit - 2
    with pytest.raises(jobs.PayloadTooLarge):
        store.enqueue("t", "x" * (limit - 1))
    assert count_jobs(app) == 1


# --------------------------------------------------------------------------- enqueue_at / many


def test_enqueue_at(store: JobStore) -> None:
    run_at = datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=PLUS_TWO)
    job = store.enqueue_at("report", {"id": 9}, run_at)
    stored = store.get(job.id)
    assert stored.run_at == run_at
    assert stored.topic == "report"
    assert stored.payload == {"id": 9}
    assert stored.status == "pending"
    assert stored.max_retries == 5


def test_enqueue_many(app: App, store: JobStore) -> None:
    payloads = [{"n": 1}, [2], "three", None]
    created = store.enqueue_many("batch", payloads, max_retries=1, delay=timedelta(hours=1))
    assert len(created) == 4
    assert len({job.id for job in created}) == 4
    assert [job.id for job in created] == sorted(job.id for job in created)
    assert count_jobs(app) == 4
    for job, payload in zip(created, payloads, strict=True):
        stored = store.get(job.id)
        assert stored.payload == payload
        assert stored.topic == "batch"
        assert stored.status == "pending"
        assert stored.max_retries == 1
        assert stored.run_at > now_utc() + timedelta(minutes=59)


def test_enqueue_many_accepts_a_tuple(store: JobStore) -> None:
    assert [job.payload for job in store.enqueue_many("t", (1, 2))] == [1, 2]


def test_enqueue_many_empty(app: App, store: JobStore) -> None:
    assert store.enqueue_many("t", []) == []
    assert count_jobs(app) == 0


@pytest.mark.parametrize(
    "bad",
    [pytest.param(object(), id="object"), pytest.param(math.nan, id="nan")],
)
def test_enqueue_many_is_all_or_nothing(app: App, store: JobStore, bad: Any) -> None:
    with pytest.raises(jobs.InvalidPayload):
        store.enqueue_many("t", [{"ok": 1}, {"ok": 2}, bad, {"ok": 4}])
    assert count_jobs(app) == 0


@pytest.mark.parametrize("payloads", ["abc", b"abc", {"a": 1}, 5, None])
def test_enqueue_many_needs_a_list(app: App, store: JobStore, payloads: Any) -> None:
    with pytest.raises(jobs.InvalidPayload):
        store.enqueue_many("t", payloads)
    assert count_jobs(app) == 0


def test_enqueue_many_five_thousand(app: App, store: JobStore) -> None:
    created = store.enqueue_many("bulk", [{"i": i} for i in range(5000)])
    assert len(created) == 5000
    assert len({job.id for job in created}) == 5000
    assert count_jobs(app) == 5000
    assert store.get(created[4321].id).payload == {"i": 4321}
    assert store.stats().pending == 5000


# --------------------------------------------------------------------------- get / list / stats


@pytest.mark.parametrize("job_id", ["nope", "", "01890000-0000-7000-8000-000000000000"])
def test_get_unknown(store: JobStore, job_id: str) -> None:
    with pytest.raises(jobs.JobNotFound):
        store.get(job_id)


def test_get_finds_the_right_job(store: JobStore) -> None:
    jobs_ = [store.enqueue("t", i) for i in range(3)]
    assert [store.get(job.id).payload for job in jobs_] == [0, 1, 2]


def test_list_newest_first_with_filters_and_paging(app: App, store: JobStore) -> None:
    a = [store.enqueue("a", i) for i in range(5)]
    b = [store.enqueue("b", i) for i in range(3)]
    everything = a + b
    set_status(app, a[0].id, "completed")
    set_status(app, a[1].id, "failed")
    set_status(app, b[0].id, "failed")

    page = store.list()
    assert (page.total, page.limit, page.offset) == (8, 20, 0)
    assert [job.id for job in page.items] == [job.id for job in reversed(everything)]
    assert isinstance(page.items[0], Job)

    page = store.list(JobFilter(topic="a"))
    assert page.total == 5
    assert [job.id for job in page.items] == [job.id for job in reversed(a)]

    page = store.list(JobFilter(status="failed"))
    assert page.total == 2
    assert [job.id for job in page.items] == [b[0].id, a[1].id]
    assert all(job.status == "failed" for job in page.items)

    page = store.list(JobFilter(topic="a", status="failed"))
    assert [job.id for job in page.items] == [a[1].id]
    assert page.total == 1

    page = store.list(JobFilter(topic="a", status="processing"))
    assert (page.items, page.total) == ([], 0)
    page = store.list(JobFilter(topic="nobody"))
    assert (page.items, page.total) == ([], 0)

    newest_first = [job.id for job in reversed(everything)]
    pages = [store.list(JobFilter(limit=3, offset=offset)) for offset in (0, 3, 6, 9)]
    assert [[job.id for job in p.items] for p in pages] == [
        newest_first[0:3],
        newest_first[3:6],
        newest_first[6:8],
        [],
    ]
    assert all(p.total == 8 and p.limit == 3 for p in pages)
    assert [p.offset for p in pages] == [0, 3, 6, 9]

    page = store.list(JobFilter(topic="a", limit=2, offset=1))
    assert [job.id for job in page.items] == [a[3].id, a[2].id]
    assert page.total == 5


def test_list_empty(store: JobStore) -> None:
    page = store.list()
    assert (page.items, page.total, page.limit, page.offset) == ([], 0, 20, 0)


def test_list_limit_zero_counts_without_items(store: JobStore) -> None:
    store.enqueue_many("t", [1, 2])
    page = store.list(JobFilter(limit=0))
    assert (page.items, page.total) == ([], 2)


@pytest.mark.parametrize(
    "job_filter",
    [
        pytest.param({"status": "done"}, id="bad-status"),
        pytest.param({"status": ""}, id="empty-status"),
        pytest.param({"status": "PENDING"}, id="upper-status"),
        pytest.param({"limit": -1}, id="negative-limit"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"limit": "10"}, id="str-limit"),
        pytest.param({"limit": True}, id="bool-limit"),
        pytest.param({"offset": 1.5}, id="float-offset"),
    ],
)
def test_list_rejects_a_bad_filter(store: JobStore, job_filter: dict[str, Any]) -> None:
    with pytest.raises(jobs.InvalidJobOptions):
        store.list(JobFilter(**job_filter))


def test_stats(app: App, store: JobStore) -> None:
    created = store.enqueue_many("t", list(range(10)))
    statuses = ["completed"] * 3 + ["failed"] + ["processing"] * 2
    for job, status in zip(created, statuses, strict=False):
        set_status(app, job.id, status)
    stats = store.stats()
    assert (stats.pending, stats.processing, stats.completed, stats.failed) == (4, 2, 3, 1)
    assert stats.total == 10
    assert stats.success_rate == pytest.approx(0.75)
    assert stats.to_json() == {
        "pending": 4,
        "processing": 2,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
        "total": 10,
        "success_rate": pytest.approx(0.75),
        "orphaned_topics": {"t": 4},  # no worker runs: no topic has a handler
        "orphaned_queues": {"default": 4},  # ... and no queue a worker
    }


def test_stats_empty(store: JobStore) -> None:
    stats = store.stats()
    assert (stats.pending, stats.processing, stats.completed, stats.failed, stats.total) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert stats.success_rate == 0


def test_stats_success_rate_zero_without_finished_jobs(app: App, store: JobStore) -> None:
    created = store.enqueue_many("t", [1, 2, 3])
    set_status(app, created[0].id, "processing")
    stats = store.stats()
    assert (stats.pending, stats.processing, stats.total) == (2, 1, 3)
    assert stats.success_rate == 0.0


def test_stats_success_rate_extremes(app: App, store: JobStore) -> None:
    first, second = store.enqueue_many("t", [1, 2])
    set_status(app, first.id, "failed")
    assert store.stats().success_rate == 0.0
    set_status(app, first.id, "completed")
    set_status(app, second.id, "completed")
    assert store.stats().success_rate == 1.0


# --------------------------------------------------------------------------- delete / requeue


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_delete(app: App, store: JobStore, status: str) -> None:
    job, other = store.enqueue_many("t", [1, 2])
    set_status(app, job.id, status)
    assert store.delete(job.id) is None  # type: ignore[func-returns-value]
    with pytest.raises(jobs.JobNotFound):
        store.get(job.id)
    assert store.get(other.id).payload == 2
    assert count_jobs(app) == 1


def test_delete_refuses_a_processing_job(app: App, store: JobStore) -> None:
    job = store.enqueue("t", 1)
    set_status(app, job.id, "processing")
    with pytest.raises(jobs.JobCannotDelete, match="cancel it first"):
        store.delete(job.id)
    assert store.get(job.id).status == "processing"
    assert count_jobs(app) == 1


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_delete_a_finished_job(app: App, store: JobStore, status: str) -> None:
    job, kept = store.enqueue("t", 1), store.enqueue("t", 2)
    set_status(app, job.id, status)
    store.delete(job.id)
    assert count_jobs(app) == 1
    assert store.get(kept.id).status == "pending"


def test_delete_unknown(app: App, store: JobStore) -> None:
    store.enqueue("t", 1)
    with pytest.raises(jobs.JobNotFound):
        store.delete("01890000-0000-7000-8000-000000000000")
    with pytest.raises(jobs.JobNotFound):
        store.delete("nope")
    assert count_jobs(app) == 1


def test_delete_twice(store: JobStore) -> None:
    job = store.enqueue("t", 1)
    store.delete(job.id)
    with pytest.raises(jobs.JobNotFound):
        store.delete(job.id)


def test_requeue_failed(app: App, store: JobStore) -> None:
    job = store.enqueue("t", {"x": 1}, max_retries=2, run_at=datetime(2030, 1, 1, tzinfo=UTC))
    app.db.execute(
        "UPDATE _jobs SET status = 'failed', retries = 2, last_error = ? WHERE id = ?",
        ("boom", job.id),
    )
    before = now_utc()
    requeued = store.requeue(job.id)
    after = now_utc()
    assert requeued.id == job.id
    assert requeued.status == "pending"
    assert requeued.retries == 0
    assert requeued.max_retries == 2
    assert requeued.payload == {"x": 1}
    assert requeued.locked_until is None
    assert_about_now(requeued.run_at, before, after)
    assert_about_now(requeued.updated, before, after)
    assert requeued == store.get(job.id)
    assert store.stats().pending == 1


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_requeue_refuses_unfailed_jobs(app: App, store: JobStore, status: str) -> None:
    job = store.enqueue("t", 1)
    set_status(app, job.id, status)
    stored = store.get(job.id)
    with pytest.raises(jobs.JobCannotRequeue):
        store.requeue(job.id)
    assert store.get(job.id) == stored


def test_requeue_unknown(store: JobStore) -> None:
    with pytest.raises(jobs.JobNotFound):
        store.requeue("01890000-0000-7000-8000-000000000000")


# --------------------------------------------------------------------------- handlers


def test_register_and_handler(store: JobStore) -> None:
    def send(job: Job) -> None:
        pass

    async def report(job: Job) -> None:
        pass

    assert store.topics() == []
    assert store.register("send", send) is None  # type: ignore[func-returns-value]
    assert store.handler("report")(report) is report
    assert sorted(store.topics()) == ["report", "send"]

    @store.handler("decorated")
    def decorated(job: Job) -> None:
        pass

    assert decorated.__name__ == "decorated"
    assert callable(decorated)
    assert sorted(store.topics()) == ["decorated", "report", "send"]


def test_duplicate_handlers_raise(store: JobStore) -> None:
    def first(job: Job) -> None:
        pass

    def second(job: Job) -> None:
        pass

    store.register("t", first)
    with pytest.raises(jobs.TopicAlreadyRegistered):
        store.register("t", second)
    with pytest.raises(jobs.TopicAlreadyRegistered):
        store.handler("t")(second)
    store.handler("u")(first)
    with pytest.raises(jobs.TopicAlreadyRegistered):
        store.register("u", first)
    assert sorted(store.topics()) == ["t", "u"]


def test_register_checks_topic_and_callable(store: JobStore) -> None:
    with pytest.raises(jobs.InvalidTopic):
        store.register("", lambda job: None)
    with pytest.raises(jobs.InvalidTopic):
        store.register("x" * 256, lambda job: None)
    with pytest.raises(TypeError):
        store.register("t", "not callable")  # type: ignore[arg-type]
    assert store.topics() == []


# --------------------------------------------------------------------------- transactions


def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(app: App, store: JobStore) -> None:
    class Boom(Exception):
        pass

    created: list[Job] = []

    def enqueue_then_fail() -> None:
        with app.db.transaction() as tx:
            created.append(store.enqueue("t", {"a": 1}, tx=tx))
            created.extend(store.enqueue_many("t", [1, 2], tx=tx))
            assert tx.fetch_value("SELECT COUNT(*) FROM _jobs") == 3
            raise Boom

    with pytest.raises(Boom):
        enqueue_then_fail()
    assert len(created) == 3
    assert count_jobs(app) == 0
    for job in created:
        with pytest.raises(jobs.JobNotFound):
            store.get(job.id)


def test_enqueue_in_a_committed_transaction(app: App, store: JobStore) -> None:
    app.db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    with app.db.transaction() as tx:
        tx.execute("INSERT INTO orders (id) VALUES (?)", ("o1",))
        job = store.enqueue("order:created", {"order": "o1"}, tx=tx)
        many = store.enqueue_many("t", [1, 2], tx=tx)
    assert store.get(job.id).payload == {"order": "o1"}
    assert [store.get(j.id).payload for j in many] == [1, 2]
    assert count_jobs(app) == 3
    assert app.db.fetch_value("SELECT COUNT(*) FROM orders") == 1


def test_enqueue_in_a_transaction_is_invisible_to_other_connections_until_commit(
    app: App, store: JobStore
) -> None:
    seen: dict[str, Any] = {}

    def look(job_id: str) -> None:
        seen["count"] = app.db.fetch_value("SELECT COUNT(*) FROM _jobs")
        seen["stats_total"] = store.stats().total
        try:
            store.get(job_id)
        except jobs.JobNotFound:
            seen["found"] = False
        else:
            seen["found"] = True

    with app.db.transaction() as tx:
        job = store.enqueue("t", {"a": 1}, tx=tx)
        assert tx.fetch_value("SELECT COUNT(*) FROM _jobs") == 1
        reader = threading.Thread(target=look, args=(job.id,))
        reader.start()
        reader.join(30)
        assert not reader.is_alive()
    assert seen == {"count": 0, "stats_total": 0, "found": False}
    look(job.id)
    assert seen == {"count": 1, "stats_total": 1, "found": True}


def test_job_enqueued_in_a_transaction_runs_after_commit(
    jobs_app: App, make_store: StoreFactory
) -> None:
    store = make_store(auto_start=True, workers=2, poll_interval=0.05)
    ran: list[str] = []
    done = threading.Event()

    @store.handler("after:commit")
    def handle(job: Job) -> None:
        ran.append(job.id)
        done.set()

    assert store.is_running()
    with jobs_app.db.transaction() as tx:
        job = store.enqueue("after:commit", {"n": 1}, tx=tx)
        assert not done.is_set()
    assert done.wait(15), "the handler did not run after commit"
    deadline = time.monotonic() + 15
    while store.get(job.id).status != "completed":
        assert time.monotonic() < deadline, f"job not completed: {store.get(job.id)}"
        time.sleep(0.01)
    assert ran == [job.id]
    completed = store.get(job.id)
    assert completed.retries == 0
    assert completed.locked_until is None
    assert completed.last_error is None


# --------------------------------------------------------------------------- async twins


def test_async_twins_return_what_the_sync_methods_return(app: App, store: JobStore) -> None:
    run_at = datetime(2030, 6, 1, 9, 0, tzinfo=UTC)

    async def scenario() -> dict[str, Any]:
        return {
            "one": await store.aenqueue("a", {"k": 1}, max_retries=2),
            "delayed": await store.aenqueue("a", 2, delay=timedelta(hours=1)),
            "at": await store.aenqueue_at("b", [3], run_at),
            "many": await store.aenqueue_many("c", [4, 5, 6]),
            "none": await store.aenqueue_many("c", []),
        }

    made = asyncio.run(scenario())
    one, at, many = made["one"], made["at"], made["many"]
    assert (one.topic, one.payload, one.status, one.retries, one.max_retries) == (
        "a",
        {"k": 1},
        "pending",
        0,
        2,
    )
    assert made["delayed"].run_at > now_utc() + timedelta(minutes=59)
    assert at.run_at == run_at
    assert store.get(at.id).run_at == run_at
    assert [job.payload for job in many] == [4, 5, 6]
    assert made["none"] == []
    assert count_jobs(app) == 6

    failed = many[0]
    set_status(app, failed.id, "failed")
    filt = JobFilter(topic="c", limit=2)

    async def reads() -> tuple[Any, ...]:
        return (
            await store.aget(one.id),
            await store.alist(filt),
            await store.alist(),
            await store.astats(),
        )

    got, listed, listed_all, stats = asyncio.run(reads())
    assert got == store.get(one.id)
    assert listed == store.list(filt)
    assert listed_all == store.list()
    assert stats == store.stats()

    requeued = asyncio.run(store.arequeue(failed.id))
    assert requeued == store.get(failed.id)
    assert requeued.status == "pending"
    assert asyncio.run(store.adelete(one.id)) is None
    with pytest.raises(jobs.JobNotFound):
        store.get(one.id)


def test_async_twins_raise_the_same_errors(app: App, store: JobStore) -> None:
    job = store.enqueue("t", 1)
    set_status(app, job.id, "processing")
    naive = datetime(2030, 1, 1)
    too_big = "x" * store.config.max_payload_size
    cases: list[tuple[Callable[[], Any], type[Exception]]] = [
        (lambda: store.aenqueue("", 1), jobs.InvalidTopic),
        (lambda: store.aenqueue("t", object()), jobs.InvalidPayload),
        (lambda: store.aenqueue("t", too_big), jobs.PayloadTooLarge),
        (lambda: store.aenqueue("t", 1, delay=-1), jobs.InvalidJobOptions),
        (lambda: store.aenqueue_at("t", 1, naive), jobs.InvalidJobOptions),
        (lambda: store.aenqueue_many("t", [1, object()]), jobs.InvalidPayload),
        (lambda: store.aenqueue_many("x" * 256, [1]), jobs.InvalidTopic),
        (lambda: store.aget("nope"), jobs.JobNotFound),
        (lambda: store.alist(JobFilter(limit=-1)), jobs.InvalidJobOptions),
        (lambda: store.adelete("nope"), jobs.JobNotFound),
        (lambda: store.adelete(job.id), jobs.JobCannotDelete),
        (lambda: store.arequeue("nope"), jobs.JobNotFound),
        (lambda: store.arequeue(job.id), jobs.JobCannotRequeue),
    ]
    for make_coroutine, expected in cases:
        with pytest.raises(expected):
            asyncio.run(make_coroutine())
    assert count_jobs(app) == 1
    assert store.get(job.id).status == "processing"


def test_async_enqueue_in_a_transaction(app: App, store: JobStore) -> None:
    with app.db.transaction() as tx:
        job = asyncio.run(store.aenqueue("t", {"a": 1}, tx=tx))
        many = asyncio.run(store.aenqueue_many("t", [1, 2], tx=tx))
    assert store.get(job.id).payload == {"a": 1}
    assert len(many) == 2
    assert count_jobs(app) == 3


# --------------------------------------------------------------------------- Job values


@dataclasses.dataclass
class Email:
    to: str
    subject: str = ""
    cc: list[str] = dataclasses.field(default_factory=list)


def test_unmarshal_payload_builds_a_dataclass(store: JobStore) -> None:
    job = store.get(store.enqueue("mail", {"to": "a@example.com", "cc": ["b@example.com"]}).id)
    email = job.unmarshal_payload(Email)
    assert email == Email(to="a@example.com", subject="", cc=["b@example.com"])


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"to": "a", "bcc": "b"}, id="unknown-field"),
        pytest.param({"subject": "missing to"}, id="missing-field"),
        pytest.param(["a@example.com"], id="list"),
        pytest.param("a@example.com", id="str"),
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
    ],
)
def test_unmarshal_payload_rejects_what_does_not_fit(store: JobStore, payload: Any) -> None:
    job = store.get(store.enqueue("mail", payload).id)
    with pytest.raises(TypeError):
        job.unmarshal_payload(Email)


def test_to_json_formats_times(store: JobStore) -> None:
    run_at = datetime(2025, 1, 8, 14, 0, 0, 987654, tzinfo=PLUS_TWO)
    job = store.get(store.enqueue_at("t", {"a": [1]}, run_at).id)
    data = job.to_json()
    assert data["run_at"] == "2025-01-08T12:00:00.987Z"
    assert TIME_RE.match(data["created"])
    assert TIME_RE.match(data["updated"])
    assert data["locked_until"] is None
    assert data == {
        "id": job.id,
        "topic": "t",
        "payload": {"a": [1]},
        "status": "pending",
        "run_at": "2025-01-08T12:00:00.987Z",
        "locked_until": None,
        "retries": 0,
        "max_retries": 5,
        "last_error": None,
        "created": data["created"],
        "updated": data["updated"],
        "priority": 0,
        "unique_key": None,
        "queue": "default",
        "attempted_at": None,
        "first_attempted_at": None,
        "attempted_by": None,
        "finished_at": None,
        "errors": [],
        "timeout": None,
        "cancel_requested_at": None,
        "duplicate": False,
    }
    json.dumps(data)  # plain JSON types only
    exact = store.get(store.enqueue_at("t", None, datetime(2025, 1, 8, 12, tzinfo=UTC)).id)
    assert exact.to_json()["run_at"] == "2025-01-08T12:00:00.000Z"
    assert store.list().to_json()["items"][0] == exact.to_json()
