"""The shared query API, transactions and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pocketjobs import App
from pocketjobs.core import IntegrityError, Migration, Tx
from pocketjobs.core.db import DatabaseError

POSTGRES_ONLY = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def table(app: App) -> str:
    app.db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, qty INTEGER)")
    return "items"


def test_query_api_round_trip(app: App, table: str) -> None:
    assert app.db.execute("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)", (1, "a%b", 3)) == 1
    changed = app.db.execute_many(
        "INSERT INTO items (id, name, qty) VALUES (?, ?, ?)", [(2, "b", 5), (3, "c?", 7)]
    )
    assert changed in (2, -1)  # drivers may not report a total for executemany
    assert app.db.fetch_one("SELECT name, qty FROM items WHERE id = ?", (1,)) == {
        "name": "a%b",
        "qty": 3,
    }
    assert app.db.fetch_one("SELECT name FROM items WHERE id = ?", (99,)) is None
    assert app.db.fetch_all("SELECT id FROM items WHERE name LIKE 'c%' ORDER BY id") == [{"id": 3}]
    assert app.db.fetch_tuples("SELECT id, qty FROM items ORDER BY id") == [(1, 3), (2, 5), (3, 7)]
    assert app.db.fetch_value("SELECT SUM(qty) FROM items") == 15
    assert app.db.fetch_value("SELECT qty FROM items WHERE id = ?", (42,)) is None
    assert app.db.execute("UPDATE items SET qty = qty + 1 WHERE qty > ?", (4,)) == 2
    rows = app.db.fetch_all("UPDATE items SET qty = 0 WHERE id = ? RETURNING id, qty", (2,))
    assert rows == [{"id": 2, "qty": 0}]


def test_integrity_error_is_translated(app: App, table: str) -> None:
    app.db.execute("INSERT INTO items (id, name) VALUES (1, 'x')")
    with pytest.raises(IntegrityError):
        app.db.execute("INSERT INTO items (id, name) VALUES (2, 'x')")
    with pytest.raises(DatabaseError):
        app.db.execute("SELECT * FROM no_such_table")


def test_transaction_commits(app: App, table: str) -> None:
    with app.db.transaction() as tx:
        tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        assert tx.fetch_value("SELECT COUNT(*) FROM items") == 1
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 1


def test_transaction_rolls_back_on_exception(app: App, table: str) -> None:
    class Boom(Exception):
        pass

    def work(tx: Tx) -> None:
        tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        raise Boom

    with pytest.raises(Boom):
        app.db.run_in_transaction(work)
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 0


def test_transaction_rolls_back_on_failed_statement(app: App, table: str) -> None:
    def work(tx: Tx) -> None:
        tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        tx.execute("INSERT INTO items (id, name) VALUES (2, 'a')")

    with pytest.raises(IntegrityError):
        app.db.run_in_transaction(work)
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 0
    # the pooled connection is clean for the next user
    app.db.execute("INSERT INTO items (id, name) VALUES (3, 'b')")
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 1


def test_run_in_transaction(app: App, table: str) -> None:
    def work(tx: Tx) -> int:
        tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        return int(tx.fetch_value("SELECT COUNT(*) FROM items"))

    assert app.run_in_transaction(work) == 1

    def failing(tx: Tx) -> None:
        tx.execute("INSERT INTO items (id, name) VALUES (2, 'b')")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        app.run_in_transaction(failing)
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 1


def test_uncommitted_writes_are_invisible_to_others(app: App, table: str) -> None:
    seen: list[int] = []
    with app.db.transaction() as tx:
        tx.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        reader = threading.Thread(
            target=lambda: seen.append(app.db.fetch_value("SELECT COUNT(*) FROM items"))
        )
        reader.start()
        reader.join(10)
    assert seen == [0]
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 1


def test_concurrent_writers_never_see_locked_errors(app: App, table: str) -> None:
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(50):
                with app.db.transaction() as tx:
                    tx.execute(
                        "INSERT INTO items (id, name, qty) VALUES (?, ?, ?)",
                        (offset + i, f"n{offset + i}", i),
                    )
                app.db.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (offset + i,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert app.db.fetch_value("SELECT COUNT(*) FROM items") == 400
    assert app.db.fetch_value("SELECT SUM(qty) FROM items") == 8 * sum(range(1, 51))


def test_kernel_migrations_recorded_once(app: App) -> None:
    names = [r["name"] for r in app.db.fetch_all("SELECT name FROM _migrations")]
    assert names == ["0001_kernel_auth"]
    assert app.apply_migrations([]) == []


def test_plugin_migrations_apply_once_and_in_order(app: App) -> None:
    order: list[str] = []

    def create(tx: Tx) -> None:
        order.append("create")
        tx.execute("CREATE TABLE things (id TEXT PRIMARY KEY)")

    def alter(tx: Tx) -> None:
        order.append("alter")
        tx.execute("ALTER TABLE things ADD COLUMN note TEXT")

    migrations = [Migration("things_1", create), Migration("things_2", alter)]
    assert app.apply_migrations(migrations) == ["things_1", "things_2"]
    assert app.apply_migrations(migrations) == []
    assert order == ["create", "alter"]
    app.db.execute("INSERT INTO things (id, note) VALUES ('x', 'y')")


def test_failed_migration_rolls_back_the_batch(app: App) -> None:
    def create(tx: Tx) -> None:
        tx.execute("CREATE TABLE things (id TEXT PRIMARY KEY)")

    def broken(tx: Tx) -> None:
        tx.execute("THIS IS NOT SQL")

    with pytest.raises(DatabaseError):
        app.apply_migrations([Migration("ok", create), Migration("broken", broken)])
    assert app.db.fetch_value("SELECT COUNT(*) FROM _migrations WHERE name = 'ok'") == 0
    assert app.apply_migrations([Migration("ok", create)]) == ["ok"]


def test_duplicate_migration_names_rejected(app: App) -> None:
    noop = Migration("same", lambda tx: None)
    with pytest.raises(ValueError, match="duplicate"):
        app.apply_migrations([noop, noop])


_CONCURRENT_BOOT = textwrap.dedent(
    """
    import sys, time
    from pocketjobs import App
    from pocketjobs.core import Migration

    def slow_create(tx):
        tx.execute("CREATE TABLE boot_marks (pid INTEGER)")
        time.sleep(0.5)  # widen the window in which a second booter could race us

    def mark(tx):
        import os
        tx.execute("INSERT INTO boot_marks (pid) VALUES (?)", (os.getpid(),))

    app = App(data_dir=sys.argv[1], database_url=sys.argv[2] or None)
    app.bootstrap()
    applied = app.apply_migrations([Migration("boot_1", slow_create), Migration("boot_2", mark)])
    print(",".join(applied))
    app.terminate()
    """
)


def test_migrations_run_once_under_concurrent_boots(data_dir: Path, db_url: str | None) -> None:
    """Two processes boot the same fresh database at once: each migration applies once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_BOOT, str(data_dir), db_url or ""],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    applied = sorted(out.strip() for out, _ in outputs)
    assert applied == ["", "", "boot_1,boot_2"], outputs
    app = App(data_dir=data_dir, database_url=db_url)
    app.bootstrap()
    try:
        assert app.db.fetch_value("SELECT COUNT(*) FROM boot_marks") == 1
        names = [r[0] for r in app.db.fetch_tuples("SELECT name FROM _migrations ORDER BY name")]
        assert names == ["0001_kernel_auth", "boot_1", "boot_2"]
    finally:
        app.terminate()


def test_question_marks_in_literals_and_comments_are_text(app: App) -> None:
    """The SQL both databases read alike: only the ``?`` outside literals are parameters."""
    row = app.db.fetch_one(
        "SELECT 'it''s ?' AS s, ? AS p /* ? */, ? AS \"q?\" -- ?\n", ("one", "two")
    )
    assert row == {"s": "it's ?", "p": "one", "q?": "two"}


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_question_marks_in_postgres_literals_come_back_verbatim(app: App) -> None:
    row = app.db.fetch_one(
        "SELECT 'it''s ?' AS standard, E'it\\'s ?\\\\' AS escape,"
        " $$dollar's ? 100%$$ AS dollar, $fn$ $$ ? $$ $fn$ AS tagged,"
        ' $$x$$ || ? AS after_dollar, ? AS "quoted?"',
        ("param", 7),
    )
    assert row == {
        "standard": "it's ?",
        "escape": "it's ?\\",
        "dollar": "dollar's ? 100%",
        "tagged": " $$ ? $$ ",
        "after_dollar": "xparam",
        "quoted?": 7,
    }


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_question_marks_in_postgres_comments_take_no_parameter(app: App) -> None:
    # A `?` read as a placeholder in a comment would make psycopg reject the statement:
    # more placeholders than the three parameters.
    row = app.db.fetch_one(
        "SELECT /* ? /* nested ? */ still ? */ ? AS a, -- ?\n ? AS b, ? AS c /* ? */",
        (1, 2, 3),
    )
    assert row == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_doubled_question_marks_are_jsonb_operators(app: App) -> None:
    row = app.db.fetch_one(
        "SELECT '{\"a\":1}'::jsonb ?? 'a' AS has_a, '{\"a\":1}'::jsonb ?? ? AS has_param,"
        " ?::jsonb ??| ?::text[] AS has_any, ?::jsonb ??& ?::text[] AS has_all, ? AS tag",
        ("b", '{"x": 1, "y": 2}', ["y", "z"], '{"x": 1, "y": 2}', ["x", "z"], "t?"),
    )
    assert row == {
        "has_a": True,
        "has_param": False,
        "has_any": True,
        "has_all": False,
        "tag": "t?",
    }
    app.db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body JSONB)")
    app.db.execute_many(
        "INSERT INTO docs (id, body) VALUES (?, ?::jsonb)",
        [(1, '{"k": 1}'), (2, '{"other": 2}')],
    )
    ids = app.db.fetch_tuples("SELECT id FROM docs WHERE body ?? ? AND id > ?", ("k", 0))
    assert ids == [(1,)]


@pytest.mark.parametrize("db_url", POSTGRES_ONLY, indirect=True)
def test_plpgsql_body_keeps_its_question_marks_and_percent_signs(app: App) -> None:
    # Inside the dollar-quoted body `?` is PostgreSQL's own operator, written once.
    app.db.execute(
        """CREATE FUNCTION describe_key(doc jsonb, k text) RETURNS text
        LANGUAGE plpgsql AS $body$
        BEGIN
            IF doc ? k THEN
                RETURN format('%s: it''s there?', k);  -- 100% sure?
            END IF;
            RETURN 'no ?';
        END
        $body$"""
    )
    assert app.db.fetch_value("SELECT describe_key(?::jsonb, ?)", ('{"a": 1}', "a")) == (
        "a: it's there?"
    )
    assert app.db.fetch_value("SELECT describe_key(?::jsonb, ?)", ('{"a": 1}', "b")) == "no ?"
