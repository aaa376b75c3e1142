"""The database handle shared by the kernel and plugins.

One small query API serves both databases, so code above the drivers never touches
``sqlite3`` or ``psycopg`` directly::

    app.db.execute("UPDATE users SET verified = ? WHERE id = ?", (1, user_id))  # -> rowcount
    row = app.db.fetch_one("SELECT id, email FROM users WHERE email = ?", (email,))  # dict | None
    rows = app.db.fetch_all("SELECT id FROM users")                 # list[dict]
    pairs = app.db.fetch_tuples("SELECT id, email FROM users")      # list[tuple]
    count = app.db.fetch_value("SELECT COUNT(*) FROM users")        # first column of first row

    with app.db.transaction() as tx:        # commit on success, rollback on exception
        tx.execute("INSERT INTO ...", (...))

Contract:

* **Parameter style**: ``?`` positional placeholders on both databases. On PostgreSQL they
  are translated once per distinct statement (cached); a literal ``%`` in SQL needs no
  escaping, and a ``?`` inside a string literal (``'...'``, ``E'...'``, ``$$...$$``), a
  quoted identifier or a comment is text, not a placeholder. PostgreSQL's JSONB operators
  ``?``, ``?|`` and ``?&`` are written doubled, as in JDBC: ``??`` outside literals and
  comments stands for one literal ``?`` (``payload ?? 'key'``, ``payload ??| ?``); inside
  a literal, such as a ``$$``-quoted PL/pgSQL body, they are written as usual. SQLite has
  no such operators, so ``??`` belongs only in PostgreSQL-only SQL.
* **Statements outside a transaction** run in autocommit mode, each atomic on its own.
* **Transactions** are short write transactions: on SQLite ``BEGIN IMMEDIATE`` (taken
  behind a process-wide writer lock, so threads of one process queue in memory instead of
  spinning on the file lock); on PostgreSQL an ordinary ``BEGIN``/``COMMIT``. A transaction
  object is used by the thread that opened it.
* **Errors** are this module's :class:`DatabaseError` tree, whatever the driver::

      DatabaseError
       ├── IntegrityError      a constraint was violated (unique, not null, ...)
       └── OperationalError    the database is unreachable, restarting, or busy

  The original driver exception is chained as ``__cause__``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar

__all__ = [
    "Database",
    "DatabaseError",
    "Dialect",
    "IntegrityError",
    "Listener",
    "OperationalError",
    "Params",
    "Queryable",
    "Row",
    "Tx",
]

Dialect = Literal["sqlite", "postgres"]
Params = Sequence[Any]
Row = dict[str, Any]
T = TypeVar("T")
logger = logging.getLogger("pocketjobs.db")


class DatabaseError(Exception):
    """A database operation failed."""


class IntegrityError(DatabaseError):
    """A constraint (unique, not null, check, foreign key) was violated."""


class OperationalError(DatabaseError):
    """The database could not run the statement now: unreachable, restarting or busy."""


class Queryable(abc.ABC):
    """The query verbs shared by a :class:`Database` and a :class:`Tx`."""

    dialect: Dialect

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 if unknown)."""

    @abc.abstractmethod
    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        """Run one statement once per parameter tuple; return the total rows changed."""

    @abc.abstractmethod
    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a statement and return every row as a dict keyed by column name."""

    @abc.abstractmethod
    def fetch_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a statement and return every row as a tuple (cheaper than dicts)."""

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run a statement and return its first row as a dict, or ``None``."""
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    def fetch_value(self, sql: str, params: Params = ()) -> Any:
        """Run a statement and return the first column of its first row, or ``None``."""
        rows = self.fetch_tuples(sql, params)
        return rows[0][0] if rows else None


class Tx(Queryable, abc.ABC):
    """An open transaction; obtained from :meth:`Database.transaction`."""

    _after_commit: list[Callable[[], None]] | None = None

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this transaction has committed (never on rollback).

        Callbacks run in registration order on the committing thread; an exception in one
        is logged and does not affect the others or the (already committed) transaction.
        """
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)

    def _run_after_commit(self) -> None:
        for callback in self._after_commit or ():
            try:
                callback()
            except Exception:
                logger.exception("an on_commit callback failed")


class Listener(abc.ABC):
    """A subscription to one notification channel (PostgreSQL ``LISTEN``)."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` seconds for notifications; return their payloads
        (empty on timeout). Raises :class:`OperationalError` when the connection is lost:
        close this listener and open a new one."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening and close the connection."""


class Database(Queryable, abc.ABC):
    """A connection pool to one database with the shared query API."""

    url: str

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """Open a write transaction: commits when the block ends, rolls back on exception."""

    def run_in_transaction(self, fn: Callable[[Tx], T]) -> T:
        """Call ``fn(tx)`` inside :meth:`transaction` and return its result."""
        with self.transaction() as tx:
            return fn(tx)

    @abc.abstractmethod
    def advisory_lock(self, tx: Tx, key: int) -> None:
        """Serialise ``tx`` against every other transaction taking the same ``key``.

        The lock is held until ``tx`` ends. On SQLite every write transaction is already
        exclusive, so this is a no-op there.
        """

    def listen(self, channel: str) -> Listener | None:
        """Subscribe to ``channel`` on a dedicated connection, or ``None`` where the database
        cannot. On PostgreSQL, payloads sent with ``pg_notify`` in a transaction arrive when it
        commits; SQLite reports every commit of another connection with the payload ``""``."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection. The handle is unusable afterwards."""

    def is_postgres(self) -> bool:
        """Whether this is a PostgreSQL database."""
        return self.dialect == "postgres"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def rows_as_dicts(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[Row]:
    """Zip column names onto tuple rows."""
    return [dict(zip(columns, row, strict=True)) for row in rows]
