"""Input that no database can store is refused with the plugin's own errors, alike on
SQLite and PostgreSQL, through the Python API (validation.py): lone surrogates, absurd
nesting. Nothing is written on any error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketjobs import App
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import JobFilter, JobStore
from pocketjobs.plugins.jobs.limits import MAX_JSON_DEPTH

SURROGATE = "\ud800"


@pytest.fixture
def store(data_dir: Path, db_url: str | None, clean_jobs_env: None) -> Iterator[JobStore]:
    app = App(data_dir=data_dir, database_url=db_url)
    job_store = jobs.must_register(app, jobs.Config(auto_start=False, http_enabled=False))
    app.bootstrap()
    yield job_store
    app.terminate()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("topic", [SURROGATE, f"email{SURROGATE}", f"{SURROGATE}\udc00x", "\udfff"])
def test_a_topic_with_a_lone_surrogate_is_invalid(store: JobStore, topic: str) -> None:
    with pytest.raises(jobs.InvalidTopic) as raised:
        store.enqueue(topic, 1)
    assert raised.value.field == "topic"
    with pytest.raises(jobs.InvalidTopic):
        store.enqueue_many(topic, [1, 2])
    with pytest.raises(jobs.InvalidTopic):
        store.register(topic, lambda job: None)
    assert store.stats().total == 0


@pytest.mark.parametrize(
    "payload",
    [SURROGATE, {"k": SURROGATE}, {SURROGATE: 1}, [1, {"deep": [f"a{SURROGATE}b"]}]],
    ids=["string", "value", "key", "nested"],
)
def test_a_payload_with_a_lone_surrogate_is_invalid(store: JobStore, payload: Any) -> None:
    with pytest.raises(jobs.InvalidPayload) as raised:
        store.enqueue("t", payload)
    assert raised.value.field == "payload"
    with pytest.raises(jobs.InvalidPayload):
        store.enqueue_many("t", [1, payload])
    assert store.stats().total == 0


def test_a_surrogate_pair_written_properly_is_fine(store: JobStore) -> None:
    job = store.enqueue("t", {"emoji": "\U0001f600"})
    assert store.get(job.id).payload == {"emoji": "\U0001f600"}


@pytest.mark.parametrize("job_id", [SURROGATE, f"0190{SURROGATE}", "a\x00b"])
def test_an_id_no_database_can_hold_is_not_found(store: JobStore, job_id: str) -> None:
    with pytest.raises(jobs.JobNotFound):
        store.get(job_id)
    with pytest.raises(jobs.JobNotFound):
        store.delete(job_id)
    with pytest.raises(jobs.JobNotFound):
        store.requeue(job_id)


def test_a_list_filter_with_a_lone_surrogate_is_invalid(store: JobStore) -> None:
    with pytest.raises(jobs.InvalidJobOptions) as raised:
        store.list(JobFilter(topic=SURROGATE))
    assert raised.value.field == "topic"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
def test_deep_nesting_is_an_invalid_payload_not_a_recursion_error(
    store: JobStore, depth: int
) -> None:
    with pytest.raises(jobs.InvalidPayload) as raised:
        store.enqueue("t", nested(depth))
    assert raised.value.code == "validation_too_deep"
    with pytest.raises(jobs.InvalidPayload):
        store.enqueue_many("t", [1, nested(depth)])
    assert store.stats().total == 0


def test_nesting_up_to_the_limit_round_trips(store: JobStore) -> None:
    payload = {"a": nested(MAX_JSON_DEPTH - 1), "s": "[[[[{{{{ brackets in text"}
    job = store.enqueue("t", payload)
    assert store.get(job.id).payload == payload
    many = "[" * (MAX_JSON_DEPTH * 2)  # brackets inside a string do not nest
    assert store.get(store.enqueue("t", many).id).payload == many


def test_every_bad_field_is_reported_at_once(store: JobStore) -> None:
    with pytest.raises(jobs.InvalidTopic) as raised:
        store.enqueue("", object(), delay=-1, max_retries=-1)
    fields = [raised.value.field] + [e.field for e in raised.value.related]
    assert fields == ["topic", "delay", "max_retries", "payload"]
    assert store.stats().total == 0
