"""Shared fixtures: apps on a real SQLite file and on a real PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pocketjobs import App
from support import clear_jobs_env

pytest_plugins = ["pgfixtures"]

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` (the SQLite default under the app's data dir) or a fresh PostgreSQL URL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return None


@pytest.fixture
def clean_jobs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``PB_DATABASE_URL`` or ``PB_JOBS_*`` from the caller's environment leaks in."""
    clear_jobs_env(monkeypatch)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory for an app."""
    return tmp_path / "pb_data"


@pytest.fixture
def app(data_dir: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A bootstrapped app on each database; terminated after the test."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    application = App(data_dir=data_dir, database_url=db_url)
    application.bootstrap()
    yield application
    if application.is_bootstrapped():
        application.terminate()


class LiveServer:
    """An app served by uvicorn on a free local port, in a background thread."""

    def __init__(self, app: App) -> None:
        import socket

        import uvicorn

        from pocketjobs.apis import prepare_serve

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.asgi = prepare_serve(app, "127.0.0.1", self.port)
        config = uvicorn.Config(
            self.asgi, host="127.0.0.1", port=self.port, lifespan="off", log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def live_server(app: App) -> Iterator[LiveServer]:
    """``app`` served over real HTTP (on_serve handlers bound before it starts)."""
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client for :func:`live_server`."""
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        yield client
