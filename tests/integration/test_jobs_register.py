"""Registering the jobs plugin (SPEC §4.1-§4.4) on a real SQLite file and on PostgreSQL.

Covers ``register`` / ``must_register`` / ``get_job_store``, disabling, config and rule
errors at register time, the weak per-app registry, the lifecycle hooks (bootstrap,
terminate at priority -999) and the ``_jobs`` schema the plugin's migrations create.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketjobs import App
from pocketjobs.apis import RuleSyntaxError
from pocketjobs.core import TerminateEvent
from pocketjobs.plugins import jobs
from pocketjobs.tools.hook import Handler

JOBS_COLUMNS = {
    "id",
    "topic",
    "payload",
    "status",
    "run_at",
    "locked_until",
    "locked_by",
    "retries",
    "max_retries",
    "last_error",
    "created",
    "updated",
    "priority",
    "unique_key",
    "queue",
    "attempted_at",
    "first_attempted_at",
    "attempted_by",
    "finished_at",
    "errors",
    "timeout",
    "cancel_requested_at",
}
SQLITE_TYPES = {
    "id": "TEXT",
    "topic": "TEXT",
    "payload": "TEXT",
    "status": "TEXT",
    "run_at": "TEXT",
    "locked_until": "TEXT",
    "locked_by": "TEXT",
    "retries": "INTEGER",
    "max_retries": "INTEGER",
    "last_error": "TEXT",
    "created": "TEXT",
    "updated": "TEXT",
    "priority": "INTEGER",
    "unique_key": "TEXT",
    "queue": "TEXT",
    "attempted_at": "TEXT",
    "first_attempted_at": "TEXT",
    "attempted_by": "TEXT",
    "finished_at": "TEXT",
    "errors": "TEXT",
    "timeout": "INTEGER",
    "cancel_requested_at": "TEXT",
}
POSTGRES_TYPES = {
    "id": "text",
    "topic": "text",
    "payload": "json",
    "status": "text",
    "run_at": "timestamp with time zone",
    "locked_until": "timestamp with time zone",
    "locked_by": "text",
    "retries": "integer",
    "max_retries": "integer",
    "last_error": "text",
    "created": "timestamp with time zone",
    "updated": "timestamp with time zone",
    "priority": "integer",
    "unique_key": "text",
    "queue": "text",
    "attempted_at": "timestamp with time zone",
    "first_attempted_at": "timestamp with time zone",
    "attempted_by": "text",
    "finished_at": "timestamp with time zone",
    "errors": "jsonb",
    "timeout": "interval",
    "cancel_requested_at": "timestamp with time zone",
}
JOBS_INDEXES = {
    "idx_jobs_pending",
    "idx_jobs_locked",
    "idx_jobs_status",
    "idx_jobs_topic",
    "idx_jobs_unique",
}
TERMINATE_HANDLER_ID = "__pbJobsOnTerminate__"


def quiet_config(**overrides: Any) -> jobs.Config:
    """A config whose dispatcher stays off unless asked, and stops quickly."""
    settings: dict[str, Any] = {"auto_start": False, "shutdown_timeout": 5}
    settings.update(overrides)
    return jobs.Config(**settings)


pytestmark = pytest.mark.usefixtures("clean_jobs_env")


@pytest.fixture
def new_app(data_dir: Path, db_url: str | None) -> Iterator[Callable[[], App]]:
    """Factory of apps on this test's database; every bootstrapped app is terminated."""
    created: list[App] = []

    def make() -> App:
        application = App(data_dir, db_url)
        created.append(application)
        return application

    yield make
    for application in reversed(created):
        if application.is_bootstrapped():
            application.terminate()


def has_jobs_table(app: App) -> bool:
    if app.is_postgres():
        count = app.db.fetch_value(
            "SELECT COUNT(*) FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = '_jobs'"
        )
    else:
        count = app.db.fetch_value(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_jobs'"
        )
    return int(count) == 1


def column_types(app: App) -> dict[str, str]:
    if app.is_postgres():
        rows = app.db.fetch_tuples(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = '_jobs'"
        )
    else:
        rows = app.db.fetch_tuples("SELECT name, type FROM pragma_table_info('_jobs')")
    return dict(rows)


def index_definitions(app: App) -> dict[str, str]:
    if app.is_postgres():
        rows = app.db.fetch_tuples(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = '_jobs'"
        )
    else:
        rows = app.db.fetch_tuples(
            "SELECT name, COALESCE(sql, '') FROM sqlite_master"
            " WHERE type = 'index' AND tbl_name = '_jobs'"
        )
    return dict(rows)


# --------------------------------------------------------------------------- registration


def test_register_returns_the_store_that_get_job_store_finds(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    store = jobs.register(app, quiet_config())
    assert isinstance(store, jobs.JobStore)
    assert jobs.get_job_store(app) is store
    app.bootstrap()
    assert jobs.get_job_store(app) is store


def test_must_register_returns_the_store(new_app: Callable[[], App]) -> None:
    app = new_app()
    store = jobs.must_register(app, quiet_config())
    assert isinstance(store, jobs.JobStore)
    assert jobs.get_job_store(app) is store


def test_register_without_config_uses_the_defaults(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_AUTO_START", "false")  # keep the dispatcher off
    app = new_app()
    store = jobs.register(app)
    assert store is not None
    assert store.config.workers == 10
    assert store.config.max_retries == 3
    assert store.config.auto_start is False


def test_app_without_the_plugin_has_no_store_and_no_jobs_table(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    assert jobs.get_job_store(app) is None
    app.bootstrap()
    assert jobs.get_job_store(app) is None
    assert not has_jobs_table(app)


def test_registered_app_creates_the_jobs_table_with_columns_and_indexes(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    jobs.register(app, quiet_config())
    assert app.on_bootstrap.length() == 1  # nothing runs before bootstrap
    app.bootstrap()
    assert has_jobs_table(app)
    types = column_types(app)
    assert set(types) == JOBS_COLUMNS
    assert types == (POSTGRES_TYPES if app.is_postgres() else SQLITE_TYPES)
    indexes = index_definitions(app)
    assert set(indexes) >= JOBS_INDEXES
    # Partial indexes: pending jobs for the claim, processing jobs for the rescue.
    assert "WHERE" in indexes["idx_jobs_pending"].upper()
    assert "pending" in indexes["idx_jobs_pending"]
    assert "WHERE" in indexes["idx_jobs_locked"].upper()
    assert "processing" in indexes["idx_jobs_locked"]


# --------------------------------------------------------------------------- disabled


def assert_disabled(app: App, config: jobs.Config | None) -> None:
    assert jobs.register(app, config) is None
    with pytest.raises(jobs.PluginDisabled):
        jobs.must_register(app, config)
    assert jobs.get_job_store(app) is None
    assert app.on_bootstrap.length() == 0
    assert app.on_terminate.length() == 0
    app.bootstrap()
    assert not has_jobs_table(app)
    assert jobs.get_job_store(app) is None


def test_disabled_by_config(new_app: Callable[[], App]) -> None:
    assert_disabled(new_app(), quiet_config(disabled=True))


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " true "])
def test_disabled_by_env(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PB_JOBS_DISABLED", value)
    assert_disabled(new_app(), quiet_config())


def test_disabled_by_env_without_a_config(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_DISABLED", "1")
    assert_disabled(new_app(), None)


def test_env_disabled_wins_over_config_and_skips_validation(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_DISABLED", "true")
    assert_disabled(new_app(), quiet_config(disabled=False, workers=0))


def test_env_false_keeps_the_plugin_enabled(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_DISABLED", "0")
    app = new_app()
    assert jobs.register(app, quiet_config()) is not None
    app.bootstrap()
    assert has_jobs_table(app)


def test_disabled_plugin_can_be_registered_later_once_enabled(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    assert jobs.register(app, quiet_config(disabled=True)) is None
    store = jobs.register(app, quiet_config())
    assert store is not None
    assert jobs.get_job_store(app) is store


# --------------------------------------------------------------------------- errors


def test_registering_twice_raises(new_app: Callable[[], App]) -> None:
    app = new_app()
    store = jobs.register(app, quiet_config())
    with pytest.raises(jobs.PluginAlreadyRegistered):
        jobs.register(app, quiet_config())
    with pytest.raises(jobs.PluginAlreadyRegistered):
        jobs.must_register(app, quiet_config())
    assert issubclass(jobs.PluginAlreadyRegistered, jobs.JobsError)
    assert jobs.get_job_store(app) is store
    assert app.on_bootstrap.length() == 1
    assert app.on_terminate.length() == 1
    app.bootstrap()
    assert has_jobs_table(app)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"workers": 0}, id="workers-0"),
        pytest.param({"batch_size": 0}, id="batch-size-0"),
        pytest.param({"max_retries": -1}, id="max-retries-negative"),
        pytest.param({"poll_interval": 0}, id="poll-interval-0"),
        pytest.param({"max_payload_size": 0}, id="max-payload-size-0"),
    ],
)
def test_bad_config_raises_and_binds_nothing(
    new_app: Callable[[], App], overrides: dict[str, Any]
) -> None:
    app = new_app()
    with pytest.raises(ValueError, match="invalid jobs config") as raised:
        jobs.register(app, quiet_config(**overrides))
    assert isinstance(raised.value, jobs.ConfigError)
    assert jobs.get_job_store(app) is None
    assert app.on_bootstrap.length() == 0
    assert app.on_serve.length() == 0
    assert app.on_terminate.length() == 0
    app.bootstrap()
    assert not has_jobs_table(app)


def test_unparsable_env_value_raises_naming_the_variable(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_WORKERS", "ten")
    app = new_app()
    with pytest.raises(jobs.ConfigError, match="PB_JOBS_WORKERS"):
        jobs.register(app, quiet_config())
    assert jobs.get_job_store(app) is None
    app.bootstrap()
    assert not has_jobs_table(app)


def test_a_failed_registration_leaves_the_app_free_to_register(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    with pytest.raises(ValueError):
        jobs.register(app, quiet_config(workers=0))
    store = jobs.register(app, quiet_config())
    assert store is not None
    app.bootstrap()
    assert has_jobs_table(app)


@pytest.mark.parametrize("field", ["enqueue_rule", "manage_rule"])
@pytest.mark.parametrize(
    "rule", ["@request.auth.id =", "(", '@request.auth.id != "" &&', '"unterminated']
)
def test_malformed_rule_raises_at_register_time(
    new_app: Callable[[], App], field: str, rule: str
) -> None:
    app = new_app()
    with pytest.raises(RuleSyntaxError) as raised:
        jobs.register(app, quiet_config(**{field: rule}))
    assert isinstance(raised.value, ValueError)
    assert jobs.get_job_store(app) is None
    assert app.on_bootstrap.length() == 0
    assert app.on_terminate.length() == 0
    app.bootstrap()
    assert not has_jobs_table(app)


@pytest.mark.parametrize("rule", [None, "", "true", '@request.auth.email ~ "@example.com"'])
def test_well_formed_rules_register(new_app: Callable[[], App], rule: str | None) -> None:
    app = new_app()
    assert jobs.register(app, quiet_config(enqueue_rule=rule, manage_rule=rule)) is not None


# --------------------------------------------------------------------------- registry


def _register_and_forget_app(data_dir: Path, db_url: str | None) -> weakref.ref[App]:
    app = App(data_dir, db_url)
    store = jobs.register(app, quiet_config())
    assert store is not None
    assert jobs.get_job_store(app) is store
    return weakref.ref(app)


def test_registry_does_not_keep_apps_alive(data_dir: Path, db_url: str | None) -> None:
    ref = _register_and_forget_app(data_dir, db_url)
    gc.collect()
    assert ref() is None


def test_a_terminated_app_can_be_collected(data_dir: Path, db_url: str | None) -> None:
    app = App(data_dir, db_url)
    jobs.register(app, quiet_config())
    app.bootstrap()
    app.terminate()
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None


def test_registry_forgets_the_app_on_terminate(new_app: Callable[[], App]) -> None:
    app = new_app()
    store = jobs.register(app, quiet_config())
    app.bootstrap()
    assert jobs.get_job_store(app) is store
    app.terminate()
    assert jobs.get_job_store(app) is None


def test_registries_of_two_apps_are_separate(tmp_path: Path, db_url: str | None) -> None:
    first, second = App(tmp_path / "one", db_url), App(tmp_path / "two", db_url)
    first_store = jobs.register(first, quiet_config())
    assert jobs.get_job_store(second) is None
    second_store = jobs.register(second, quiet_config())
    assert first_store is not second_store
    assert jobs.get_job_store(first) is first_store
    assert jobs.get_job_store(second) is second_store


# --------------------------------------------------------------------------- lifecycle


def test_terminate_handler_has_the_documented_id(new_app: Callable[[], App]) -> None:
    app = new_app()
    jobs.register(app, quiet_config())
    assert app.on_terminate.length() == 1
    app.on_terminate.unbind(TERMINATE_HANDLER_ID)
    assert app.on_terminate.length() == 0


def test_terminate_stops_the_dispatcher_at_priority_minus_999(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    store = jobs.register(app, quiet_config())
    assert store is not None
    seen: list[tuple[str, bool, bool, bool]] = []

    def probe(name: str) -> Callable[[TerminateEvent], None]:
        def handler(event: TerminateEvent) -> None:
            seen.append(
                (
                    name,
                    store.is_running(),
                    jobs.get_job_store(app) is store,
                    app.is_bootstrapped(),
                )
            )
            event.next()

        return handler

    app.on_terminate.bind(Handler(fn=probe("before"), priority=-1000))
    app.on_terminate.bind(Handler(fn=probe("after"), priority=0))
    app.bootstrap()
    store.start()
    assert store.is_running()
    app.terminate()
    assert seen == [
        ("before", True, True, True),  # -1000 runs before the plugin's -999
        ("after", False, False, True),  # stopped and forgotten; the database still open
    ]
    assert not store.is_running()
    assert not app.is_bootstrapped()


def test_auto_start_starts_the_dispatcher_on_bootstrap(
    new_app: Callable[[], App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pocketjobs")
    app = new_app()
    store = jobs.register(app, quiet_config(auto_start=True, workers=3, poll_interval=0.5))
    assert store is not None
    assert not store.is_running()
    app.bootstrap()
    assert store.is_running()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("pocketjobs")]
    initialized = [m for m in messages if "Jobs plugin initialized" in m]
    assert len(initialized) == 1
    assert "queues default:3" in initialized[0]
    assert "0.5" in initialized[0]
    app.terminate()
    assert not store.is_running()


def test_auto_start_off_leaves_the_dispatcher_stopped(
    new_app: Callable[[], App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pocketjobs")
    app = new_app()
    store = jobs.register(app, quiet_config())
    assert store is not None
    app.bootstrap()
    assert not store.is_running()
    assert "Jobs plugin initialized" in caplog.text
    store.start()
    assert store.is_running()
    store.stop()
    assert not store.is_running()


def test_auto_start_env_override(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_AUTO_START", "0")
    app = new_app()
    store = jobs.register(app, quiet_config(auto_start=True))
    assert store is not None
    app.bootstrap()
    assert not store.is_running()


def test_background_disabled_does_not_start_the_dispatcher(
    new_app: Callable[[], App],
) -> None:
    app = new_app()
    app.background_enabled = False
    store = jobs.register(app, quiet_config(auto_start=True))
    assert store is not None
    app.bootstrap()
    assert not store.is_running()
    assert has_jobs_table(app)  # migrations still run


def test_migrations_are_idempotent_across_two_apps_on_one_database(
    new_app: Callable[[], App],
) -> None:
    first = new_app()
    first_store = jobs.register(first, quiet_config())
    assert first_store is not None
    first.bootstrap()
    job = first_store.enqueue("keep", {"n": 1})

    second = new_app()  # same data dir / PostgreSQL database, while the first is open
    second_store = jobs.register(second, quiet_config())
    assert second_store is not None
    second.bootstrap()
    assert second_store.get(job.id).payload == {"n": 1}
    first.terminate()

    third = new_app()
    third_store = jobs.register(third, quiet_config())
    assert third_store is not None
    third.bootstrap()
    assert third_store.get(job.id).payload == {"n": 1}
    assert third_store.stats().total == 1
    names = third.db.fetch_tuples("SELECT name FROM _migrations WHERE name LIKE 'jobs%'")
    assert len(names) == len({name for (name,) in names}) >= 1
    assert set(column_types(third)) == JOBS_COLUMNS
    assert set(index_definitions(third)) >= JOBS_INDEXES


def test_bootstrapping_again_keeps_processing_jobs(new_app: Callable[[], App]) -> None:
    app = new_app()
    store = jobs.register(app, quiet_config(auto_start=True, poll_interval=0.05))
    assert store is not None
    ran = threading.Event()
    store.register("again", lambda job: ran.set())
    app.bootstrap()
    app.bootstrap()  # the kernel closes the database and opens it again
    assert store.is_running()
    store.enqueue("again", None)
    assert ran.wait(5), "the handler did not run after the second bootstrap"


def test_client_never_starts_a_dispatcher_by_itself(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_AUTO_START", "true")  # even when the environment says so
    app = new_app()
    store = jobs.client(app, jobs.Config(auto_start=True, workers=2))
    assert jobs.get_job_store(app) is store
    assert store.config.auto_start is False
    assert store.config.workers == 2
    app.bootstrap()
    assert not store.is_running()
    job = store.enqueue("anything", {"n": 1}, queue="mail")  # no handler needed here
    assert store.get(job.id).queue == "mail"
    store.start()  # an explicit start still works
    assert store.is_running()


def test_client_of_a_disabled_plugin_raises(
    new_app: Callable[[], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_JOBS_DISABLED", "1")
    with pytest.raises(jobs.PluginDisabled):
        jobs.client(new_app())
