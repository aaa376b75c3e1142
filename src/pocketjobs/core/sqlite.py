"""The embedded SQLite database: one file in WAL mode, a small pool of connections."""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from pocketjobs.core.db import (
    Database,
    DatabaseError,
    IntegrityError,
    Listener,
    OperationalError,
    Params,
    Row,
    Tx,
    rows_as_dicts,
)

__all__ = ["SQLiteDatabase"]

# PRAGMAs applied to every connection. synchronous=NORMAL is durable in WAL mode against a
# crashed or killed process; only an operating-system crash or power loss can drop the last
# commits (the SQLite documentation's trade-off, also PocketBase's choice).
_DATA_VERSION_POLL = 0.005  # seconds between two looks at another connection's commits

_CONNECTION_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -16000",
)


@functools.lru_cache(maxsize=1024)
def _is_read_only(sql: str) -> bool:
    """Whether a statement outside a transaction can skip the writer lock."""
    head = sql.lstrip()[:7].upper()
    return head.startswith(("SELECT", "EXPLAIN"))


def _raise_translated(exc: sqlite3.Error) -> NoReturn:
    if isinstance(exc, sqlite3.IntegrityError):
        raise IntegrityError(str(exc)) from exc
    if isinstance(exc, sqlite3.OperationalError):
        raise OperationalError(str(exc)) from exc
    raise DatabaseError(str(exc)) from exc


class _SQLiteTx(Tx):
    """The query verbs over one pooled connection (a transaction, or one autocommit call)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            _raise_translated(exc)

    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        try:
            return self._conn.executemany(sql, params_seq).rowcount
        except sqlite3.Error as exc:
            _raise_translated(exc)

    def fetch_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            _raise_translated(exc)

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            _raise_translated(exc)
        return rows_as_dicts([d[0] for d in cursor.description or ()], rows)


class _DataVersionListener(Listener):
    """SQLite's stand-in for ``LISTEN``: notices any commit made through another connection
    (another process, or another connection of this one) by polling ``PRAGMA data_version``,
    an in-memory check, every ``interval`` seconds. Every change arrives as the payload
    ``""``, whatever the channel."""

    def __init__(self, path: Path, interval: float) -> None:
        self._interval = interval
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._version = self._read()
        except sqlite3.Error as exc:
            _raise_translated(exc)

    def _read(self) -> int:
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def wait(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        try:
            while True:
                version = self._read()
                if version != self._version:
                    self._version = version
                    return [""]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                time.sleep(min(self._interval, remaining))
        except sqlite3.Error as exc:
            _raise_translated(exc)

    def close(self) -> None:
        self._conn.close()


class SQLiteDatabase(Database):
    """A SQLite file opened in WAL mode with a busy timeout.

    Connections are pooled (created on demand, up to ``max_idle`` kept open). Writers of
    this process take turns on an in-memory lock before ``BEGIN IMMEDIATE``; writers of
    other processes wait on SQLite's busy timeout (``busy_timeout`` seconds), so callers do
    not see "database is locked" under normal concurrent use.
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0, max_idle: int = 32) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{self.path}"
        self._busy_timeout = busy_timeout
        self._max_idle = max_idle
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        # Reentrant so that a thread holding a transaction that (wrongly) writes through
        # the handle gets SQLite's busy error instead of a silent deadlock.
        self._write_lock = threading.RLock()
        self._closed = False
        with self._connection() as conn:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.Error as exc:
                _raise_translated(exc)
            if mode is None or str(mode[0]).lower() != "wal":
                raise OperationalError(f"could not switch {self.path} to WAL mode (got {mode})")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            for pragma in _CONNECTION_PRAGMAS:
                conn.execute(pragma)
        except sqlite3.Error as exc:
            _raise_translated(exc)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise OperationalError("the database is closed")
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            with self._pool_lock:
                keep = not self._closed and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _autocommit(self, sql: str) -> Iterator[_SQLiteTx]:
        if _is_read_only(sql):
            with self._connection() as conn:
                yield _SQLiteTx(conn)
        else:
            with self._write_lock, self._connection() as conn:
                yield _SQLiteTx(conn)

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._autocommit(sql) as runner:
            return runner.execute(sql, params)

    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        with self.transaction() as tx:
            return tx.execute_many(sql, params_seq)

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with self._autocommit(sql) as runner:
            return runner.fetch_all(sql, params)

    def fetch_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._autocommit(sql) as runner:
            return runner.fetch_tuples(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._write_lock, self._connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                _raise_translated(exc)
            tx = _SQLiteTx(conn)
            try:
                yield tx
            except BaseException:
                conn.rollback()
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.rollback()
                _raise_translated(exc)
        tx._run_after_commit()

    def listen(self, channel: str) -> Listener:
        """Notices commits from other connections within ~5 ms (see the listener); SQLite
        has no notification payloads, so ``channel`` is not used."""
        return _DataVersionListener(self.path, _DATA_VERSION_POLL)

    def advisory_lock(self, tx: Tx, key: int) -> None:
        """No-op: a SQLite write transaction already excludes every other writer."""

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
