"""The command line of the example app, as real subprocesses on SQLite and PostgreSQL.

``db_url`` and ``data_dir`` come from ``tests/conftest.py``: ``db_url`` is ``None`` (the
SQLite file ``<data_dir>/data.db``) or a fresh PostgreSQL database (marked ``postgres``).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pocketjobs.core.auth import TOKEN_CACHE_SECONDS
from support import ServerProcess, free_port, run_app, run_cli, run_process, start_app

EMAIL = "admin@example.com"
PASSWORD = "first-password-123"
NEW_PASSWORD = "second-password-456"
SUPERUSERS = "/api/collections/_superusers"


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    """Assert a one-shot command exited 0, showing its output otherwise."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _db_flags(data_dir: Path, db_url: str | None) -> list[str]:
    flags = ["--dir", str(data_dir)]
    if db_url is not None:
        flags += ["--db", db_url]
    return flags


def _login(server: ServerProcess, email: str, password: str) -> httpx.Response:
    return httpx.post(
        server.url(f"{SUPERUSERS}/auth-with-password"),
        json={"identity": email, "password": password},
        timeout=30,
    )


def _refresh(server: ServerProcess, token: str) -> httpx.Response:
    return httpx.post(
        server.url(f"{SUPERUSERS}/auth-refresh"), headers={"Authorization": token}, timeout=30
    )


def _assert_revoked(server: ServerProcess, token: str) -> None:
    """``token`` stops working within the seconds the server takes a verified token on
    trust (the change was made by another process: the CLI)."""
    deadline = time.monotonic() + TOKEN_CACHE_SECONDS + 2
    while (response := _refresh(server, token)).status_code == 200:
        assert time.monotonic() < deadline, "the token still works"
        time.sleep(0.2)
    _assert_error(response, 401)


def _assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["data"], dict)


def _assert_clean_shutdown(log: str) -> None:
    assert "Shutting down" in log, log
    assert "Finished server process" in log, log
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


# -- serve / worker lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_health_and_exits_0_on_signal(
    data_dir: Path, db_url: str | None, signum: signal.Signals
) -> None:
    with run_app(data_dir=data_dir, db_url=db_url) as server:
        response = httpx.get(server.url("/api/health"), timeout=10)
        assert response.status_code == 200
        assert response.json()["code"] == 200

        server.send_signal(signum)
        code = server.wait(timeout=15)
        assert code == 0, f"serve did not exit 0 within 15 s of {signum.name}\n{server.describe()}"
        log = server.log_text()
    _assert_clean_shutdown(log)
    assert f"Server started at {server.base_url}" in log
    if db_url is None:
        assert (data_dir / "data.db").is_file()
    else:
        assert not (data_dir / "data.db").exists()


def test_serve_refuses_new_connections_after_shutdown(data_dir: Path, db_url: str | None) -> None:
    with run_app(data_dir=data_dir, db_url=db_url) as server:
        server.stop_cleanly(signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url("/api/health"), timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_runs_until_signalled_and_exits_0(
    data_dir: Path, db_url: str | None, signum: signal.Signals
) -> None:
    with run_process(
        "worker", data_dir=data_dir, db_url=db_url, ready_log="Worker started"
    ) as worker:
        assert worker.returncode is None, worker.describe()
        worker.send_signal(signum)
        code = worker.wait(timeout=15)
        assert code == 0, f"worker did not exit 0 within 15 s\n{worker.describe()}"
        log = worker.log_text()
    assert "Traceback" not in log, log
    if db_url is None:
        assert (data_dir / "data.db").is_file()


# An app whose bootstrap blocks until the file "<data dir>/go" exists, so that a test can
# signal it deterministically while it is still starting up.
SLOW_BOOTSTRAP_APP = """
import sys
import time
from pathlib import Path

from pocketjobs import App

app = App()
gate = Path(sys.argv[sys.argv.index("--dir") + 1]) / "go"


@app.on_bootstrap.bind_func
def wait_for_gate(e):
    print("bootstrap waiting for gate", flush=True)
    while not gate.exists():
        time.sleep(0.02)
    e.next()


app.start()
"""


@pytest.mark.parametrize(
    "command",
    ["serve", "worker"],
)
def test_signal_during_bootstrap_stops_the_process(
    tmp_path: Path, db_url: str | None, command: str
) -> None:
    script = tmp_path / "slow_app.py"
    script.write_text(SLOW_BOOTSTRAP_APP)
    data_dir = tmp_path / "data"
    args = [command] if command == "worker" else [command, "--http", f"127.0.0.1:{free_port()}"]
    proc = start_app(*args, data_dir=data_dir, db_url=db_url, script=script)
    try:
        proc.wait_for_log("bootstrap waiting for gate")
        proc.send_signal(signal.SIGTERM)
        (data_dir / "go").touch()
        code = proc.wait(timeout=15)
        assert code == 0, f"{command} did not exit 0 within 15 s of SIGTERM\n{proc.describe()}"
    finally:
        proc.stop()


# -- superusers ----------------------------------------------------------------------------


def test_superuser_upsert_login_refresh_password_change_and_delete(
    data_dir: Path, db_url: str | None
) -> None:
    flags = _db_flags(data_dir, db_url)
    created = run_cli("superuser", "upsert", EMAIL, PASSWORD, *flags)
    _ok(created)
    assert "Created superuser admin@example.com" in created.stdout
    assert PASSWORD not in created.stdout + created.stderr

    with run_app(data_dir=data_dir, db_url=db_url) as server:
        login = _login(server, EMAIL, PASSWORD)
        assert login.status_code == 200, login.text
        body = login.json()
        old_token = body["token"]
        assert isinstance(old_token, str)
        assert old_token.count(".") == 2
        assert body["record"]["email"] == EMAIL
        assert body["record"]["collectionName"] == "_superusers"
        assert "password" not in str(body["record"]).lower()

        refreshed = _refresh(server, old_token)
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["record"]["id"] == body["record"]["id"]
        assert _refresh(server, refreshed.json()["token"]).status_code == 200
        _assert_error(
            httpx.post(server.url(f"{SUPERUSERS}/auth-refresh"), timeout=30), 401
        )  # no token

        # upsert again (while the server runs): a new password, old tokens revoked
        updated = run_cli("superuser", "upsert", EMAIL, NEW_PASSWORD, *flags)
        _ok(updated)
        assert "Updated superuser admin@example.com" in updated.stdout
        _assert_error(_login(server, EMAIL, PASSWORD), 400)
        _assert_revoked(server, old_token)
        new_login = _login(server, EMAIL, NEW_PASSWORD)
        assert new_login.status_code == 200, new_login.text
        assert new_login.json()["record"]["id"] == body["record"]["id"]
        new_token = new_login.json()["token"]
        assert _refresh(server, new_token).status_code == 200

        # delete: the login fails and the token stops working
        deleted = run_cli("superuser", "delete", EMAIL, *flags)
        _ok(deleted)
        assert "Deleted superuser admin@example.com" in deleted.stdout
        _assert_error(_login(server, EMAIL, NEW_PASSWORD), 400)
        _assert_revoked(server, new_token)

        server.stop_cleanly()
    _assert_clean_shutdown(server.log_text())


def test_superuser_email_is_case_insensitive(data_dir: Path, db_url: str | None) -> None:
    flags = _db_flags(data_dir, db_url)
    _ok(run_cli("superuser", "upsert", "Mixed.Case@Example.COM", PASSWORD, *flags))
    with run_app(data_dir=data_dir, db_url=db_url) as server:
        login = _login(server, "mixed.case@example.com", PASSWORD)
        assert login.status_code == 200, login.text
        assert login.json()["record"]["email"] == "mixed.case@example.com"
    _ok(run_cli("superuser", "delete", "MIXED.case@example.com", *flags))


def test_superuser_delete_unknown_exits_1(data_dir: Path, db_url: str | None) -> None:
    result = run_cli("superuser", "delete", "nobody@example.com", *_db_flags(data_dir, db_url))
    assert result.returncode == 1, result
    assert "nobody@example.com" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("email", "password", "expected"),
    [
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
        (EMAIL, "short", "password"),
    ],
    ids=["bad-email", "empty-email", "short-password"],
)
def test_superuser_upsert_rejects_invalid_input(
    data_dir: Path, db_url: str | None, email: str, password: str, expected: str
) -> None:
    flags = _db_flags(data_dir, db_url)
    result = run_cli("superuser", "upsert", email, password, *flags)
    assert result.returncode == 1, result
    assert f"error: {expected}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # nothing was created
    missing = run_cli("superuser", "delete", email or "x@example.com", *flags)
    assert missing.returncode == 1, missing


# -- argument handling ---------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    _ok(result)
    for command in ("serve", "worker", "superuser"):
        assert command in result.stdout, result.stdout
    assert "--dir" in result.stdout
    assert "--db" in result.stdout
    sub = run_cli("superuser", "--help", cwd=tmp_path)
    _ok(sub)
    assert "upsert" in sub.stdout
    assert "delete" in sub.stdout


def test_unknown_command_exits_2(data_dir: Path) -> None:
    result = run_cli("frobnicate", "--dir", str(data_dir))
    assert result.returncode == 2, result
    assert "frobnicate" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_command_exits_2(data_dir: Path) -> None:
    result = run_cli("--dir", str(data_dir))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr


def test_global_flag_without_value_exits_2(data_dir: Path) -> None:
    result = run_cli("serve", "--dir")
    assert result.returncode == 2, result
    assert "--dir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "address", ["nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "host:x"]
)
def test_serve_rejects_a_bad_http_address(data_dir: Path, address: str) -> None:
    result = run_cli("serve", "--http", address, "--dir", str(data_dir), timeout=30)
    assert result.returncode != 0, result
    assert "--http" in result.stderr, result.stderr
    assert address in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_fails_with_a_message(data_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--http", f"127.0.0.1:{port}", "--dir", str(data_dir))
    assert result.returncode != 0, result
    output = result.stdout + result.stderr
    assert "address already in use" in output.lower(), output


def test_data_dir_that_is_a_file_fails_with_a_message(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = run_cli("superuser", "upsert", EMAIL, PASSWORD, "--dir", str(not_a_dir))
    assert result.returncode == 1, result
    assert str(not_a_dir) in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_unreachable_postgres_fails_with_a_message(data_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        url = f"postgresql://postgres@127.0.0.1:{port}/nope"
        result = run_cli(
            "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data_dir), "--db", url
        )
    assert result.returncode == 1, result
    assert "PostgreSQL" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_unsupported_database_url_exits_1(data_dir: Path) -> None:
    result = run_cli(
        "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data_dir), "--db", "mysql://x/y"
    )
    assert result.returncode == 1, result
    assert "mysql" in result.stderr
    assert "Traceback" not in result.stderr


def test_global_flags_before_after_and_between_command_words(
    tmp_path: Path, db_url: str | None
) -> None:
    before, after, equals = tmp_path / "before", tmp_path / "after", tmp_path / "equals"
    db_flags = [] if db_url is None else ["--db", db_url]

    # flags before the command
    _ok(run_cli("--dir", str(before), *db_flags, "superuser", "upsert", EMAIL, PASSWORD))
    # flags between the command words, --flag=value form
    db_eq = [] if db_url is None else [f"--db={db_url}"]
    _ok(run_cli("superuser", f"--dir={equals}", *db_eq, "upsert", "b@example.com", PASSWORD))
    # flags after the command
    _ok(run_cli("superuser", "upsert", "c@example.com", PASSWORD, "--dir", str(after), *db_flags))

    if db_url is None:
        for directory in (before, equals, after):
            assert (directory / "data.db").is_file(), directory
        # each directory has its own database
        assert run_cli("superuser", "delete", EMAIL, "--dir", str(after)).returncode == 1
        _ok(run_cli("--dir", str(equals), "superuser", "delete", "b@example.com"))
    else:
        for directory in (before, equals, after):
            assert not (directory / "data.db").exists(), directory
        # one PostgreSQL database: all three superusers are in it
        _ok(run_cli(*db_flags, "superuser", "delete", "b@example.com", "--dir", str(after)))

    # serve puts --dir/--db after the command; the record made with flags before it logs in
    with run_app(data_dir=before, db_url=db_url) as server:
        assert _login(server, EMAIL, PASSWORD).status_code == 200
        assert _login(server, "b@example.com", PASSWORD).status_code == 400


@pytest.mark.postgres
def test_database_url_from_environment(tmp_path: Path, postgres_url: str) -> None:
    """``PB_DATABASE_URL`` selects the database; ``--db`` overrides it."""
    env = {"PB_DATABASE_URL": postgres_url}
    flags = ["--dir", str(tmp_path / "data")]
    _ok(run_cli("superuser", "upsert", EMAIL, PASSWORD, *flags, env=env))
    assert not (tmp_path / "data" / "data.db").exists()
    # --db overrides the environment: this SQLite database has no such superuser
    sqlite_url = f"sqlite:///{tmp_path / 'other.db'}"
    result = run_cli("superuser", "delete", EMAIL, *flags, "--db", sqlite_url, env=env)
    assert result.returncode == 1, result
    assert (tmp_path / "other.db").is_file()
    # and without --db the environment's database has it
    _ok(run_cli("superuser", "delete", EMAIL, *flags, env=env))
