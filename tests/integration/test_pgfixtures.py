"""Tests for the PostgreSQL fixtures in ``tests/pgfixtures.py``.

Run with ``PB_TEST_POSTGRES_FORCE_CLUSTER=1`` to exercise the whole file against a
throwaway cluster instead of the local server.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

import pgfixtures

PGFIXTURES_DIR = Path(pgfixtures.__file__).resolve().parent

# Every database handed out by `postgres_url` in this module, in order (per process).
_SEEN: list[str] = []


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _existing_databases(server_url: str, names: list[str]) -> list[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY datname", [names]
        ).fetchall()
    return [r[0] for r in rows]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


# --------------------------------------------------------------------------------------
# postgres_url / postgres_server_url against the discovered server
# --------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_empty_writable_database(
    postgres_url: str, postgres_server_url: str, postgres_template_database: str
) -> None:
    assert postgres_url.startswith("postgresql://")
    name = _dbname(postgres_url)
    assert re.fullmatch(r"pj_test_[0-9a-f]{16}", name)
    assert postgres_template_database.startswith("pj_template_")
    _SEEN.append(name)

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        user_relations = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%%'"
        ).fetchone()
        assert user_relations == (0,)

        conn.execute("CREATE TABLE jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        conn.execute("INSERT INTO jobs (payload) VALUES (%s), (%s)", ['{"a": 1}', '{"b": "é"}'])
        conn.commit()
        rows = conn.execute("SELECT payload FROM jobs ORDER BY id").fetchall()
        assert rows == [({"a": 1},), ({"b": "é"},)]

    # The template stays empty: writes went to the clone only.
    assert _existing_databases(postgres_server_url, [postgres_template_database]) == [
        postgres_template_database
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_database_and_earlier_ones_are_gone(
    run: int, postgres_url: str, postgres_server_url: str
) -> None:
    name = _dbname(postgres_url)
    assert name not in _SEEN, f"run {run}: database {name} was handed out before"
    assert _existing_databases(postgres_server_url, [name]) == [name]
    # Databases of the tests that ran before this one (in this process) were dropped.
    assert _existing_databases(postgres_server_url, list(_SEEN)) == []
    _SEEN.append(name)


@pytest.fixture
def expect_dropped(postgres_server_url: str) -> Iterator[list[str]]:
    """Databases appended here must be gone by this fixture's teardown.

    Tests request ``postgres_url`` *after* this fixture (via ``getfixturevalue``), so
    ``postgres_url`` is torn down (dropped) first and this check runs after it.
    """
    names: list[str] = []
    yield names
    assert names, "the test did not register its database"
    assert _existing_databases(postgres_server_url, names) == []


_CLIENT_CODE = textwrap.dedent(
    """
    import sys, time, psycopg
    conn = psycopg.connect(sys.argv[1])
    conn.execute("SELECT 1")
    print("connected", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def lingering_clients() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start subprocesses that connect to a URL and hang on; killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(url: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT_CODE, url], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.postgres
def test_database_is_dropped_after_the_test_despite_leftover_connections(
    request: pytest.FixtureRequest,
    expect_dropped: list[str],
    lingering_clients: Callable[[str], subprocess.Popen[str]],
    postgres_server_url: str,
) -> None:
    url: str = request.getfixturevalue("postgres_url")  # set up last, torn down first
    name = _dbname(url)
    expect_dropped.append(name)
    _SEEN.append(name)

    killed = lingering_clients(url)
    killed.kill()  # a killed client whose backend may linger
    killed.wait(timeout=30)
    lingering_clients(url)  # still connected (and sleeping) when the fixture drops the DB

    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()
    assert row is not None
    assert row[0] >= 1


# --------------------------------------------------------------------------------------
# Discovery step 3: a real throwaway cluster
# --------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_throwaway_cluster_starts_accepts_connections_and_stops_cleanly() -> None:
    bin_dir = pgfixtures.find_postgres_bin_dir()
    if bin_dir is None:
        msg = f"initdb/pg_ctl not found in PATH or {pgfixtures.PG_LIB_GLOB}"
        if pgfixtures.is_ci():
            pytest.fail(f"CI is set: {msg}", pytrace=False)
        pytest.skip(msg)

    cluster = pgfixtures.start_temp_cluster(bin_dir)
    try:
        base_dir, pid, url = cluster.base_dir, cluster.postmaster_pid, cluster.url
        assert base_dir.is_dir()
        assert pid is not None
        assert pgfixtures._process_alive(pid)
        assert cluster.port != 5432
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwuid(base_dir.stat().st_uid).pw_name
            assert owner == pgfixtures.CLUSTER_OS_USER

        with psycopg.connect(url, connect_timeout=5) as conn:
            settings = conn.execute(
                "SELECT current_setting('fsync'), current_setting('listen_addresses'), "
                "current_setting('port')::int, current_user, current_setting('server_encoding')"
            ).fetchone()
        assert settings == ("off", "127.0.0.1", cluster.port, "postgres", "UTF8")

        # The database helpers work against it too (template clone + forced drop).
        with pgfixtures.temporary_database(url, prefix="pj_template_") as tmpl_url:
            template = _dbname(tmpl_url)
            with pgfixtures.temporary_database(url, template=template) as db_url:
                with psycopg.connect(db_url) as conn:
                    conn.execute("CREATE TABLE t (x int)")
                    conn.execute("INSERT INTO t VALUES (1)")
                    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
                test_db = _dbname(db_url)
            assert _existing_databases(url, [test_db, template]) == [template]
    finally:
        cluster.stop()

    assert cluster.stopped
    assert not base_dir.exists()
    assert not pgfixtures._process_alive(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()
    cluster.stop()  # idempotent


# --------------------------------------------------------------------------------------
# Discovery logic, skip/fail policy and helpers (no server needed)
# --------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (pgfixtures.ENV_URL, pgfixtures.ENV_FORCE_CLUSTER, pgfixtures.ENV_CI):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def nothing_available(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No env URL, no local server, no initdb."""
    clean_env.setattr(
        pgfixtures, "LOCAL_URL", f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    )
    clean_env.setattr(pgfixtures, "find_postgres_bin_dir", lambda: None)
    return clean_env


def test_nothing_available_names_everything_tried(nothing_available: pytest.MonkeyPatch) -> None:
    with pytest.raises(pgfixtures.PostgresUnavailable) as info:
        pgfixtures.acquire_postgres_server()
    message = str(info.value)
    assert not info.value.explicit
    assert "PB_TEST_POSTGRES_URL: not set" in message
    assert pgfixtures.LOCAL_URL in message
    assert "initdb/pg_ctl not found" in message

    probe = pgfixtures.probe_postgres()
    assert not probe.available
    assert pgfixtures.postgres_available_reason() == probe.reason
    assert "initdb/pg_ctl not found" in probe.reason


@pytest.mark.parametrize("value", ["true", "1", "TRUE", "yes"])
def test_missing_postgres_fails_under_ci(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("CI", value)
    assert pgfixtures.is_ci()
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        pgfixtures.skip_or_fail_without_postgres("nothing found")


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_missing_postgres_skips_outside_ci(
    clean_env: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        clean_env.setenv("CI", value)
    assert not pgfixtures.is_ci()
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL tests SKIPPED: nothing found"):
        pgfixtures.skip_or_fail_without_postgres("nothing found")
    with pytest.raises(pytest.fail.Exception, match="requested explicitly"):
        pgfixtures.skip_or_fail_without_postgres("nothing found", force_fail=True)


def test_unusable_env_url_is_explicit_and_redacted(clean_env: pytest.MonkeyPatch) -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{_closed_port()}/postgres"
    clean_env.setenv(pgfixtures.ENV_URL, url)
    with pytest.raises(pgfixtures.PostgresUnavailable) as info:
        pgfixtures.acquire_postgres_server()
    assert info.value.explicit  # fails even outside CI, no silent fallback
    assert "s3cret" not in str(info.value)
    assert "someone:***@127.0.0.1" in str(info.value)


def test_force_cluster_skips_env_url_and_local_server(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(pgfixtures.ENV_FORCE_CLUSTER, "1")
    clean_env.setenv(pgfixtures.ENV_URL, "postgresql://would-fail.invalid/postgres")
    clean_env.setattr(pgfixtures, "find_postgres_bin_dir", lambda: None)
    with pytest.raises(pgfixtures.PostgresUnavailable) as info:
        pgfixtures.acquire_postgres_server()
    assert info.value.explicit
    assert "PB_TEST_POSTGRES_FORCE_CLUSTER is set" in str(info.value)
    assert "would-fail" not in str(info.value)


def test_database_url_replaces_only_the_database() -> None:
    url = "postgresql://u:p%40ss@db.example:6543/postgres?sslmode=require&dbname=other"
    assert pgfixtures.database_url(url, "pj_test_ab") == (
        "postgresql://u:p%40ss@db.example:6543/pj_test_ab?sslmode=require"
    )
    assert pgfixtures.database_url("postgres://h", "x") == "postgresql://h/x"
    with pytest.raises(ValueError, match=r"postgresql://"):
        pgfixtures.database_url("host=localhost dbname=x", "y")


def test_redact_url() -> None:
    assert pgfixtures.redact_url("postgresql://u:pw@h:1/d") == "postgresql://u:***@h:1/d"
    assert pgfixtures.redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


# --------------------------------------------------------------------------------------
# The fixtures end to end, in a child pytest run
# --------------------------------------------------------------------------------------

_INNER_TEST = textwrap.dedent(
    """
    import json, os
    import psycopg

    def test_inner(postgres_server_url, postgres_url):
        with psycopg.connect(postgres_url) as conn:
            conn.execute("CREATE TABLE t (x int)")
        with open(os.environ["PJ_INNER_OUT"], "w") as f:
            json.dump({"server": postgres_server_url, "db": postgres_url}, f)
    """
)


def _run_inner_pytest(
    tmp_path: Path, env_overrides: dict[str, str], conftest_extra: str = ""
) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    # Patch from a hook: importing pgfixtures before pytest registers it as a plugin
    # would trigger PytestAssertRewriteWarning (an error under filterwarnings=error).
    (tmp_path / "conftest.py").write_text(
        "pytest_plugins = ['pgfixtures']\n\n"
        "def pytest_configure(config):\n"
        "    import pgfixtures\n"
        f"{textwrap.indent(conftest_extra, '    ')}\n"
    )
    (tmp_path / "test_inner.py").write_text(_INNER_TEST)
    out = tmp_path / "inner.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTEST_ADDOPTS", "CI", pgfixtures.ENV_URL, pgfixtures.ENV_FORCE_CLUSTER}
    }
    env.update(PYTHONPATH=str(PGFIXTURES_DIR), PJ_INNER_OUT=str(out), **env_overrides)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return result, out


@pytest.mark.postgres
@pytest.mark.slow
def test_fixtures_use_a_throwaway_cluster_when_forced(tmp_path: Path) -> None:
    if pgfixtures.find_postgres_bin_dir() is None and not pgfixtures.is_ci():
        pytest.skip("initdb/pg_ctl not installed")
    result, out = _run_inner_pytest(tmp_path, {pgfixtures.ENV_FORCE_CLUSTER: "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "PostgreSQL tests ran against throwaway cluster" in result.stdout

    urls = json.loads(out.read_text())
    server = urlsplit(urls["server"])
    assert (server.hostname, server.username) == ("127.0.0.1", "postgres")
    assert server.port != 5432
    assert _dbname(urls["db"]).startswith("pj_test_")
    # Stopped and removed at session end.
    match = re.search(r"data in (\S+)\)", result.stdout)
    assert match, result.stdout
    assert not Path(match.group(1)).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(urls["server"], connect_timeout=2).close()


_NOTHING_AVAILABLE = (
    "pgfixtures.LOCAL_URL = 'postgresql://postgres@127.0.0.1:{port}/postgres'\n"
    "pgfixtures.find_postgres_bin_dir = lambda: None\n"
)


def test_fixtures_skip_loudly_without_postgres(tmp_path: Path) -> None:
    conftest_extra = _NOTHING_AVAILABLE.format(port=_closed_port())
    result, out = _run_inner_pytest(tmp_path, {}, conftest_extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "PostgreSQL tests SKIPPED: no PostgreSQL server for the tests" in result.stdout
    assert "PostgreSQL tests did not run" in result.stdout  # terminal summary banner
    assert not out.exists()


def test_fixtures_fail_without_postgres_under_ci(tmp_path: Path) -> None:
    conftest_extra = _NOTHING_AVAILABLE.format(port=_closed_port())
    result, out = _run_inner_pytest(tmp_path, {"CI": "true"}, conftest_extra)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "PostgreSQL is required (CI is set) but unavailable" in result.stdout
    assert "skipped" not in result.stdout
    assert not out.exists()
