"""PostgreSQL through a psycopg 3 connection pool."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql

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

__all__ = ["PostgresDatabase", "redact_url", "to_pyformat"]

logger = logging.getLogger("pocketjobs.db")


@functools.lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """Translate ``?`` placeholders to psycopg's ``%s`` (and escape literal ``%``).

    Quoted strings, quoted identifiers and ``--`` comments are copied verbatim.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote escapes itself
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _raise_translated(exc: Exception) -> NoReturn:
    if isinstance(exc, psycopg.IntegrityError):
        raise IntegrityError(str(exc)) from exc
    if isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError | psycopg_pool.PoolTimeout
    ):
        raise OperationalError(str(exc) or type(exc).__name__) from exc
    raise DatabaseError(str(exc)) from exc


class _PostgresTx(Tx):
    """The query verbs over one checked-out connection."""

    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return self._conn.execute(to_pyformat(sql), params).rowcount
        except psycopg.Error as exc:
            _raise_translated(exc)

    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        try:
            with self._conn.cursor() as cursor:
                cursor.executemany(to_pyformat(sql), params_seq)
                return cursor.rowcount
        except psycopg.Error as exc:
            _raise_translated(exc)

    def fetch_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(to_pyformat(sql), params).fetchall()
        except psycopg.Error as exc:
            _raise_translated(exc)

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            cursor = self._conn.execute(to_pyformat(sql), params)
            rows = cursor.fetchall()
        except psycopg.Error as exc:
            _raise_translated(exc)
        return rows_as_dicts([d.name for d in cursor.description or ()], rows)


class _PostgresListener(Listener):
    """``LISTEN channel`` on a dedicated autocommit connection (outside the pool)."""

    def __init__(self, url: str, channel: str) -> None:
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            _raise_translated(exc)

    def wait(self, timeout: float) -> list[str]:
        try:
            payloads = [n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)]
            if payloads:  # collect whatever else has already arrived, without waiting
                payloads += [n.payload for n in self._conn.notifies(timeout=0)]
        except psycopg.Error as exc:
            _raise_translated(exc)
        return payloads

    def close(self) -> None:
        self._conn.close()


class PostgresDatabase(Database):
    """A pool of autocommit connections to one PostgreSQL database.

    Connections broken by a server restart are discarded by the pool when they fail; the
    failing call raises :class:`OperationalError` and the next call gets a fresh
    connection. Nothing is retried behind the caller's back: a write is never run twice.
    """

    dialect = "postgres"

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 10.0
    ) -> None:
        self.url = url
        # One direct attempt first: it fails at once, with the server's reason, where the
        # pool would keep retrying until its timeout.
        try:
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))).close()
        except psycopg.Error as exc:
            raise OperationalError(
                f"cannot connect to PostgreSQL at {redact_url(url)}: {str(exc).strip()}"
            ) from exc
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            timeout=connect_timeout,
            open=False,
            name="pocketjobs",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise OperationalError(
                f"cannot connect to PostgreSQL at {redact_url(url)} within {connect_timeout:g}s"
            ) from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except OperationalError:  # raised (translated) by a statement on this connection
            self._evict_dead_connections()
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self._evict_dead_connections()
            _raise_translated(exc)

    def _evict_dead_connections(self) -> None:
        # After a server restart or killed backends every idle connection is dead, and the
        # pool would hand them out one failure at a time. Test them all now instead.
        try:
            self._pool.check()
        except Exception:  # the server may still be down: the next call will tell
            logger.debug("connection pool check failed", exc_info=True)

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._connection() as conn:
            return _PostgresTx(conn).execute(sql, params)

    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> int:
        with self.transaction() as tx:
            return tx.execute_many(sql, params_seq)

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with self._connection() as conn:
            return _PostgresTx(conn).fetch_all(sql, params)

    def fetch_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return _PostgresTx(conn).fetch_tuples(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        # Errors of BEGIN/COMMIT surface from the driver here and are translated by
        # _connection; the block's own statements already raise translated errors.
        with self._connection() as conn, conn.transaction():
            tx = _PostgresTx(conn)
            yield tx
        tx._run_after_commit()

    def listen(self, channel: str) -> Listener:
        return _PostgresListener(self.url, channel)

    def advisory_lock(self, tx: Tx, key: int) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def close(self) -> None:
        self._pool.close()
