"""App lifecycle: bootstrap and terminate order, database selection, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketjobs import App
from pocketjobs.core import BootstrapEvent, OperationalError, TerminateEvent
from pocketjobs.tools.hook import Handler


def test_bootstrap_and_terminate_order(data_dir: Path, db_url: str | None) -> None:
    app = App(data_dir=data_dir, database_url=db_url)
    calls: list[str] = []

    def early(e: BootstrapEvent) -> None:
        calls.append(f"early before next: db open={e.app.is_bootstrapped()}")
        e.next()
        calls.append(f"early after next: db open={e.app.is_bootstrapped()}")

    def late(e: BootstrapEvent) -> None:
        calls.append("late before next")
        e.next()
        calls.append("late after next")

    app.on_bootstrap.bind(Handler(fn=late, id="late", priority=10))
    app.on_bootstrap.bind(Handler(fn=early, id="early", priority=-10))

    def on_terminate(e: TerminateEvent) -> None:
        calls.append(f"terminate before next: db open={e.app.is_bootstrapped()}")
        e.app.db.execute("SELECT 1")  # still usable before the default action
        e.next()
        calls.append(f"terminate after next: db open={e.app.is_bootstrapped()}")

    app.on_terminate.bind(Handler(fn=on_terminate, id="t"))

    assert not app.is_bootstrapped()
    app.bootstrap()
    assert app.is_bootstrapped()
    app.terminate()
    assert not app.is_bootstrapped()
    assert calls == [
        "early before next: db open=False",
        "late before next",
        "late after next",
        "early after next: db open=True",
        "terminate before next: db open=True",
        "terminate after next: db open=False",
    ]


def test_handler_that_skips_next_prevents_bootstrap(data_dir: Path) -> None:
    app = App(data_dir=data_dir)
    app.on_bootstrap.bind_func(lambda e: None)
    app.bootstrap()
    assert not app.is_bootstrapped()
    with pytest.raises(RuntimeError, match="not bootstrapped"):
        _ = app.db


def test_handler_exception_propagates_from_bootstrap(data_dir: Path) -> None:
    app = App(data_dir=data_dir)

    def fail(e: BootstrapEvent) -> None:
        e.next()
        raise LookupError("plugin failed")

    app.on_bootstrap.bind_func(fail)
    with pytest.raises(LookupError, match="plugin failed"):
        app.bootstrap()
    app.terminate()


def test_sqlite_default_location_and_wal(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    app = App(data_dir=data_dir)
    app.bootstrap()
    try:
        assert not app.is_postgres()
        assert (data_dir / "data.db").exists()
        assert app.db.fetch_value("PRAGMA journal_mode") == "wal"
        assert app.db.fetch_value("PRAGMA busy_timeout") >= 5000
    finally:
        app.terminate()


def test_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    target = tmp_path / "elsewhere" / "app.db"
    app = App(data_dir=tmp_path / "pb_data", database_url=f"sqlite:///{target}")
    app.bootstrap()
    app.terminate()
    assert target.exists()


@pytest.mark.postgres
def test_env_database_url_overrides_constructor(
    data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PB_DATABASE_URL", postgres_url)
    app = App(data_dir=data_dir, database_url=None)
    app.bootstrap()
    try:
        assert app.is_postgres()
        assert app.db.fetch_value("SELECT COUNT(*) FROM _migrations") == 1
    finally:
        app.terminate()
    assert not (data_dir / "data.db").exists()


def test_unsupported_url_is_a_clear_error(data_dir: Path) -> None:
    app = App(data_dir=data_dir, database_url="mysql://localhost/db")
    with pytest.raises(ValueError, match="unsupported database URL 'mysql'"):
        app.bootstrap()


def test_unreachable_postgres_is_an_operational_error(data_dir: Path) -> None:
    app = App(data_dir=data_dir, database_url="postgresql://nobody:pw@127.0.0.1:1/none")
    app.db_pool_size = 1
    with pytest.raises(OperationalError, match=r"cannot connect.*nobody:\*\*\*@"):
        app.bootstrap()
    assert not app.is_bootstrapped()


def test_bootstrap_twice_reopens(app: App) -> None:
    app.db.execute("CREATE TABLE keep (x INTEGER)")
    app.bootstrap()
    assert app.is_bootstrapped()
    assert app.db.fetch_value("SELECT COUNT(*) FROM keep") == 0
