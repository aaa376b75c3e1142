"""Helpers for tests that run the example app as a real subprocess.

Import them from any test module (``tests/`` is on ``sys.path``)::

    from support import run_app, run_cli, start_app

* :func:`free_port` -- a TCP port on 127.0.0.1 that was free a moment ago.
* :func:`run_cli` -- run a one-shot command (``superuser upsert ...``) to completion.
* :func:`run_app` -- context manager: ``serve`` on a free port, wait for ``/api/health``,
  yield a :class:`ServerProcess`, stop it (SIGTERM, SIGKILL after 15 s) on exit.
* :func:`login` -- a token from ``auth-with-password`` on an httpx client (200 asserted).
* :func:`start_app` / :func:`run_process` -- the same machinery for any long-running
  command, e.g. ``worker`` (wait for a log line with :meth:`AppProcess.wait_for_log`).

Every process runs ``sys.executable examples/base/main.py`` (or another ``script``) from
the repository root, with ``PB_DATABASE_URL`` removed from the inherited environment
(pass ``db_url`` or ``env`` to choose the database explicitly) and ``PYTHONUNBUFFERED=1``.
Long-running processes write stdout and stderr to a log file in their data directory so
that a failing test can show it (:meth:`AppProcess.log_text`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

__all__ = [
    "EXAMPLE_APP",
    "REPO_ROOT",
    "AppProcess",
    "ProcessError",
    "ServerProcess",
    "app_argv",
    "child_env",
    "clear_jobs_env",
    "free_port",
    "run_app",
    "run_app_as_superuser",
    "run_cli",
    "run_process",
    "start_app",
]

#: The repository root (``tests/..``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The example app every subprocess runs unless told otherwise.
EXAMPLE_APP = REPO_ROOT / "examples" / "base" / "main.py"

#: Seconds a process gets to exit after SIGTERM/SIGINT before it is killed.
STOP_TIMEOUT = 15.0
_POLL_INTERVAL = 0.05
_log_counter = itertools.count(1)


class ProcessError(AssertionError):
    """A subprocess did not start, did not become ready, or misbehaved (log included)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clear_jobs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ``PB_DATABASE_URL`` and every ``PB_JOBS_*`` variable of the caller's environment
    from reaching an app the test builds in-process."""
    monkeypatch.delenv("PB_DATABASE_URL", raising=False)
    for name in list(os.environ):
        if name.startswith("PB_JOBS_"):
            monkeypatch.delenv(name)


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an app subprocess: ours without ``PB_DATABASE_URL``, plus
    ``PYTHONUNBUFFERED=1``, plus ``env`` (which may set ``PB_DATABASE_URL`` again)."""
    result = {k: v for k, v in os.environ.items() if k != "PB_DATABASE_URL"}
    result["PYTHONUNBUFFERED"] = "1"
    if env:
        result.update(env)
    return result


def app_argv(
    *args: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    script: str | os.PathLike[str] = EXAMPLE_APP,
) -> list[str]:
    """``[python, script, *args, --dir data_dir, --db db_url]`` (flags only when given)."""
    argv = [sys.executable, str(script), *(str(a) for a in args)]
    if data_dir is not None:
        argv += ["--dir", str(data_dir)]
    if db_url is not None:
        argv += ["--db", db_url]
    return argv


def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    data_dir: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    script: str | os.PathLike[str] = EXAMPLE_APP,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script *args`` to completion and return it (text stdout/stderr captured).

    ``data_dir``/``db_url``, when given, are appended as ``--dir``/``--db``; pass the
    flags in ``args`` yourself to put them elsewhere on the line. Never raises for a
    non-zero exit code; raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds
    (the process is killed).
    """
    return subprocess.run(
        app_argv(*args, data_dir=data_dir, db_url=db_url, script=script),
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class AppProcess:
    """A long-running app subprocess whose output goes to ``log_path``."""

    def __init__(self, process: subprocess.Popen[bytes], argv: Sequence[str], log_path: Path):
        self.process = process
        self.argv = list(argv)
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return self.process.poll()

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"

    def describe(self) -> str:
        """Command, state and full log, for assertion messages."""
        state = "running" if self.returncode is None else f"exit code {self.returncode}"
        return (
            f"command: {' '.join(self.argv)}\nstate: {state}\n"
            f"----- log {self.log_path} -----\n{self.log_text()}----- end of log -----"
        )

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` appears in the log; :class:`ProcessError` if the process
        exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if self.returncode is not None:
                if text in self.log_text():
                    return
                raise ProcessError(f"process exited before logging {text!r}\n{self.describe()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{text!r} not logged within {timeout} s\n{self.describe()}")
            time.sleep(_POLL_INTERVAL)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process if it still runs."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait up to ``timeout`` seconds for the exit code (``None`` if still running)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum``, wait up to ``timeout`` seconds, then SIGKILL; return the exit
        code (negative for a signal, e.g. ``-9`` when it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            if self.wait(timeout) is None:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stop_cleanly(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """:meth:`stop` and raise :class:`ProcessError` unless the exit code is 0."""
        code = self.stop(signum, timeout)
        if code != 0:
            raise ProcessError(
                f"expected exit code 0 after {signal.Signals(signum).name}, got {code}\n"
                f"{self.describe()}"
            )


class ServerProcess(AppProcess):
    """A ``serve`` subprocess; ``base_url`` is ``http://127.0.0.1:<port>``."""

    def __init__(
        self, process: subprocess.Popen[bytes], argv: Sequence[str], log_path: Path, port: int
    ):
        super().__init__(process, argv, log_path)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        """``base_url + path`` (``path`` starts with ``/``)."""
        return self.base_url + path

    def client(self, **kwargs: object) -> httpx.Client:
        """An ``httpx.Client`` on ``base_url`` (close it, or use it in ``with``)."""
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    def superuser_token(self, email: str, password: str) -> str:
        """A superuser's auth token, from ``auth-with-password`` (asserts it is a 200)."""
        with self.client() as http:
            response = http.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": email, "password": password},
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def wait_until_healthy(self, timeout: float = 20) -> None:
        """Poll ``GET /api/health`` until it answers 200; :class:`ProcessError` if the
        process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=2) as http:
            while True:
                if self.returncode is not None:
                    raise ProcessError(f"server exited before it was healthy\n{self.describe()}")
                try:
                    response = http.get(self.url("/api/health"))
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"/api/health not 200 within {timeout} s (last: {last})\n{self.describe()}"
                    )
                time.sleep(_POLL_INTERVAL)


def _log_path(data_dir: Path, name: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / f"{name}-{os.getpid()}-{next(_log_counter)}.log"


def _popen(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches pytest, not the app, so
            # the test (or the cleanup) alone decides how the app is stopped.
            start_new_session=True,
        )


def start_app(
    *args: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
    script: str | os.PathLike[str] = EXAMPLE_APP,
    log_name: str | None = None,
) -> AppProcess:
    """Start ``python script *args --dir data_dir [--db db_url]`` in the background.

    The caller must stop it (:meth:`AppProcess.stop`); prefer :func:`run_process`.
    """
    data_dir = Path(data_dir)
    argv = app_argv(*args, data_dir=data_dir, db_url=db_url, script=script)
    name = log_name or (str(args[0]) if args else "app")
    log_path = _log_path(data_dir, name)
    return AppProcess(_popen(argv, log_path, env), argv, log_path)


@contextlib.contextmanager
def run_process(
    *args: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_log: str | None = None,
    ready_timeout: float = 20,
    script: str | os.PathLike[str] = EXAMPLE_APP,
) -> Iterator[AppProcess]:
    """Run a long-running command (e.g. ``worker``) for the ``with`` block.

    If ``ready_log`` is given, waits until that text is in the log first. On exit the
    process is stopped with SIGTERM (SIGKILL after 15 s) unless it already exited.
    """
    proc = start_app(*args, data_dir=data_dir, db_url=db_url, env=env, script=script)
    try:
        if ready_log is not None:
            proc.wait_for_log(ready_log, ready_timeout)
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def run_app(
    *args: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 20,
    script: str | os.PathLike[str] = EXAMPLE_APP,
) -> Iterator[ServerProcess]:
    """Serve the app on a free port for the ``with`` block.

    Runs ``python script serve --http 127.0.0.1:<port> *args --dir data_dir [--db url]``,
    waits until ``GET /api/health`` answers 200 (raising :class:`ProcessError` with the
    log if the process exits or ``ready_timeout`` passes), and yields the
    :class:`ServerProcess`. On exit it sends SIGTERM and waits, killing it after 15 s.
    The exit code is not checked here: call :meth:`AppProcess.stop_cleanly` for that.
    If the port was taken in between (a race with another process), it retries on
    another port.
    """
    data_dir = Path(data_dir)
    server: ServerProcess | None = None
    for attempt in range(3):
        port = free_port()
        argv = app_argv(
            "serve",
            "--http",
            f"127.0.0.1:{port}",
            *args,
            data_dir=data_dir,
            db_url=db_url,
            script=script,
        )
        log_path = _log_path(data_dir, "serve")
        server = ServerProcess(_popen(argv, log_path, env), argv, log_path, port)
        try:
            server.wait_until_healthy(ready_timeout)
            break
        except ProcessError:
            server.stop()
            if attempt < 2 and "address already in use" in server.log_text().lower():
                continue
            raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def run_app_as_superuser(
    email: str, password: str, *, data_dir: str | os.PathLike[str], db_url: str | None = None
) -> Iterator[tuple[ServerProcess, str]]:
    """:func:`run_app` after ``superuser upsert email password``; yields the server and
    that superuser's token."""
    created = run_cli("superuser", "upsert", email, password, data_dir=data_dir, db_url=db_url)
    assert created.returncode == 0, created.stderr
    with run_app(data_dir=data_dir, db_url=db_url) as server:
        yield server, server.superuser_token(email, password)


def login(http: httpx.Client, collection: str, email: str, password: str) -> str:
    """The token of ``email`` in ``collection`` (``_superusers``, ``users``, ...), signed in
    through ``http`` (an httpx client on the app); asserts the sign-in succeeded."""
    response = http.post(
        f"/api/collections/{collection}/auth-with-password",
        json={"identity": email, "password": password},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token
