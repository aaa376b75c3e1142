"""A payload comes back exactly as it went in, on SQLite and on PostgreSQL.

"Exactly" is stricter than ``==``: the types match all the way down (``True`` is not
``1``, ``1`` is not ``1.0``), ``-0.0`` keeps its sign, and objects keep their key order.
JSONB failed this (``1e16`` came back as an int, ``-0.0`` as ``0.0``, keys sorted), so
PostgreSQL stores the JSON text as given (step ``jobs_0003_payload_json``).

Every payload is enqueued one at a time (``store.enqueue``) and in batches
(``store.enqueue_many``: on PostgreSQL one JSON array read by ``json_to_recordset``), and
read back three ways: ``store.get``, ``store.list`` and a real claim (``jobs_claim``, on
PostgreSQL the ``_jobs_claim`` function).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketjobs import App
from pocketjobs.core.times import now_utc
from pocketjobs.plugins import jobs
from pocketjobs.plugins.jobs import Job, JobFilter, JobStore
from pocketjobs.plugins.jobs.drivers import ClaimParams, NewJob, driver_for
from pocketjobs.plugins.jobs.drivers.portable import PortableSQLDriver
from pocketjobs.plugins.jobs.job import uuid7

# Python refuses to convert an int of more than 4300 digits to or from text.
LARGEST_INT = 10**4299

#: The values JSONB used to change, and their neighbours.
REGRESSIONS = [1e16, 1e308, -0.0, 1.2345678901234567e19]
FLOAT_EDGES = [0.0, 5e-324, -5e-324, 2.0**53, 2.0**53 + 2, 1.7976931348623157e308, 0.1, 1e-7]
INT_EDGES = [2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**16, 10**308, -(10**40), LARGEST_INT]

# Strings: any text but NUL and lone surrogates, which the store refuses (PostgreSQL
# cannot hold NUL; a lone surrogate is not encodable text).
strings = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=["\x00"]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-LARGEST_INT, max_value=LARGEST_INT)
    | st.sampled_from(INT_EDGES)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(REGRESSIONS + FLOAT_EDGES)
    | strings
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(strings, children, max_size=5)
    ),
    max_leaves=25,
)

FIDELITY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    # One app and database serve every example: each example uses topics of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_same(expected: Any, actual: Any, path: str = "$") -> None:
    """``actual`` is ``expected``: equal, of the same types all the way down, floats with
    the same sign (``-0.0``), objects with their keys in the same order."""
    assert type(actual) is type(expected), f"{path}: {actual!r} is not {expected!r}"
    if isinstance(expected, float):
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected), f"{path}: sign"
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_same(want, got, f"{path}[{index}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, want in expected.items():
            assert_same(want, actual[key], f"{path}[{key!r}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_assert_same_is_strict() -> None:
    """The comparison itself tells apart what ``==`` does not."""
    assert_same({"a": [1, 2.5, None, True, "x"]}, {"a": [1, 2.5, None, True, "x"]})
    for expected, actual in [
        (True, 1),
        (1, 1.0),
        (1e16, 10**16),
        (-0.0, 0.0),
        ([0.0], [-0.0]),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({"a": [False]}, {"a": [0]}),
    ]:
        with pytest.raises(AssertionError):
            assert_same(expected, actual)


@pytest.fixture
def jobs_app(data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A bootstrapped app with the jobs plugin (dispatcher off) on this test's database."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    application = App(data_dir, db_url)
    config = jobs.Config(auto_start=False, max_payload_size=16 * 1024 * 1024)
    assert jobs.register(application, config) is not None
    application.bootstrap()
    yield application
    application.terminate()


@pytest.fixture
def store(jobs_app: App) -> JobStore:
    job_store = jobs.get_job_store(jobs_app)
    assert job_store is not None
    return job_store


def assert_round_trips(app: App, store: JobStore, payloads: Sequence[Any]) -> None:
    """Enqueue ``payloads`` one by one and as one batch, then read every job back through
    get, list and a claim: each payload is the same value it was."""
    topic = f"fidelity-{uuid.uuid4().hex}"
    # A batch of one is a single insert: a lone payload is batched with itself.
    batch = list(payloads) if len(payloads) > 1 else [payloads[0]] * 2
    enqueued = [(store.enqueue(topic, payload), payload) for payload in payloads]
    enqueued += zip(store.enqueue_many(topic, batch), batch, strict=True)
    expected = {job.id: payload for job, payload in enqueued}

    def check(how: str, read: Sequence[Job]) -> None:
        assert sorted(job.id for job in read) == sorted(expected), how
        for job in read:
            assert_same(expected[job.id], job.payload, f"{how}({job.id})")

    check("get", [store.get(job_id) for job_id in expected])
    page = store.list(JobFilter(topic=topic, limit=len(expected)))
    check("list", page.items)
    now = now_utc()
    params = ClaimParams([topic], len(expected), now, now + timedelta(minutes=5), "fidelity")
    check("claim", driver_for(app.db).jobs_claim(app.db, params))


@pytest.mark.parametrize("payload", REGRESSIONS, ids=repr)
def test_the_values_jsonb_changed_come_back_unchanged(
    jobs_app: App, store: JobStore, payload: float
) -> None:
    assert_round_trips(jobs_app, store, [payload])
    assert_round_trips(jobs_app, store, [[payload, {"v": payload}], {"z": payload, "a": -0.0}])


def test_large_ints_and_edge_floats_come_back_unchanged(jobs_app: App, store: JobStore) -> None:
    assert_round_trips(jobs_app, store, [*INT_EDGES, *FLOAT_EDGES, INT_EDGES + FLOAT_EDGES])


def test_object_key_order_and_strings_come_back_unchanged(jobs_app: App, store: JobStore) -> None:
    payloads = [
        {"b": 1, "a": 2, "aa": 3, "": 4},  # JSONB sorted keys by length, then bytes
        'a "quoted" \\ back\\slash \n\t\x01 \u00e9 \u2028 \U0001f600 /',
        {"nested": {"z": [], "y": {}, "x": ""}},
    ]
    assert_round_trips(jobs_app, store, payloads)


@FIDELITY_SETTINGS
@given(payload=json_values)
def test_any_payload_comes_back_exactly(jobs_app: App, store: JobStore, payload: Any) -> None:
    assert_round_trips(jobs_app, store, [payload])


@FIDELITY_SETTINGS
@given(payloads=st.lists(json_values, min_size=2, max_size=4))
def test_any_batch_comes_back_exactly(jobs_app: App, store: JobStore, payloads: list[Any]) -> None:
    assert_round_trips(jobs_app, store, payloads)


def test_step_3_upgrades_a_step_2_table_keeping_its_rows(app: App) -> None:
    """A database migrated to step 2 (PostgreSQL: a JSONB payload column and a claim
    function returning jsonb) with a job in it: step 3 keeps the job, and from then on
    payloads keep their text."""
    driver = driver_for(app.db)
    assert isinstance(driver, PortableSQLDriver)
    steps = driver.migrations()
    assert [step.name for step in steps[:3]] == [
        "jobs_0001_create_jobs",
        "jobs_0002_dispatcher_functions",
        "jobs_0003_payload_json",
    ]
    assert app.apply_migrations(steps[:2]) == [step.name for step in steps[:2]]
    now = now_utc().replace(microsecond=0)
    old_id = uuid7()
    app.db.execute(
        "INSERT INTO _jobs (id, topic, payload, status, run_at, retries, max_retries, created,"
        " updated) VALUES (?, 'old', ?, 'pending', ?, 0, 3, ?, ?)",
        (old_id, '{"b": [1, 2.5, "x"], "a": null, "n": 1e16}', *[driver.encode_time(now)] * 3),
    )
    if app.is_postgres():
        assert column_type(app) == "jsonb"

    assert app.apply_migrations(steps)[0] == "jobs_0003_payload_json"

    old = driver.jobs_get(app.db, old_id)
    assert old is not None
    # The row is kept as it was stored: JSONB had already sorted its keys and turned
    # 1e16 into an integer (that loss happened when it was written).
    if app.is_postgres():
        assert_same({"a": None, "b": [1, 2.5, "x"], "n": 10**16}, old.payload)
        assert column_type(app) == "json"
        assert app.db.fetch_value(
            "SELECT column_default FROM information_schema.columns"
            " WHERE table_name = '_jobs' AND column_name = 'payload'"
        ) in ("'null'::json", "'null'")
        functions = app.db.fetch_tuples(
            "SELECT pg_get_function_result(oid), array_to_string(proconfig, ',') FROM pg_proc"
            " WHERE proname = '_jobs_claim'"
        )
        assert len(functions) == 1, functions  # re-created, not overloaded
        result, config = functions[0]
        assert "payload json," in result
        assert config.startswith("plan_cache_mode=force_generic_plan")
    else:
        assert_same({"b": [1, 2.5, "x"], "a": None, "n": 1e16}, old.payload)

    new = NewJob(uuid7(), "old", '{"z":1e16,"a":-0.0}', now, 3, now)
    driver.jobs_insert(app.db, [new], wake_at=now)
    params = ClaimParams(["old"], 10, now, now + timedelta(minutes=5), "upgraded")
    claimed = {job.id: job.payload for job in driver.jobs_claim(app.db, params)}
    assert set(claimed) == {old_id, new.id}
    assert_same(old.payload, claimed[old_id])
    assert_same({"z": 1e16, "a": -0.0}, claimed[new.id])


def column_type(app: App) -> str:
    value: str = app.db.fetch_value(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_name = '_jobs' AND column_name = 'payload'"
    )
    return value
