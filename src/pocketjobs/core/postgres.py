"""PostgreSQL through a psycopg 3 connection pool."""

from __future__ import annotations

import functools
import logging
import re
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


# The scanner below follows PostgreSQL's own lexer (src/backend/parser/scan.l) just far
# enough to tell where a string literal, quoted identifier or comment starts and ends:
# a `?` inside one of those is text, and only the `?` outside them are placeholders.
# It assumes standard_conforming_strings = on (the default since PostgreSQL 9.1), under
# which a backslash escapes only inside E'...' strings.

# An identifier or keyword (scan.l's ident_start ident_cont*; the server counts every
# non-ASCII character as a letter). Read as one token so that a `$` inside a word (`a$$b`)
# never opens a dollar quote and the `e` ending a word (`some'...'`) never makes an E-string.
_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
# The delimiter that opens a dollar-quoted string: `$$` or `$tag$`, where the tag is an
# identifier without `$`. A positional parameter such as `$1` does not match: a tag
# cannot start with a digit.
_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
# What may follow a string's closing quote to continue the same string on a later line
# ('abc'<newline>'def' is 'abcdef'). Matters for E'...' only: the continuation keeps the
# backslash escapes.
_CONTINUATION = re.compile(r"[ \t\f]*[\n\r][ \t\n\r\f\v]*'")
_BLOCK_COMMENT_DELIMITER = re.compile(r"/\*|\*/")
_NEWLINE = re.compile(r"[\n\r]")


def _quoted_end(sql: str, start: int) -> int:
    """End of the '...' string or "..." identifier opening at ``start``, where a doubled
    quote stands for one."""
    quote = sql[start]
    i = start + 1
    while (close := sql.find(quote, i)) != -1:
        if not sql.startswith(quote, close + 1):
            return close + 1
        i = close + 2
    return len(sql)


def _escape_string_end(sql: str, start: int) -> int:
    """End of the E'...' string whose opening quote is at ``start``: a backslash escapes
    the next character (``\\'`` is a quote), and so does a doubled quote."""
    i, n = start + 1, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "\\":
            i += 2
        elif ch != "'":
            i += 1
        elif sql.startswith("'", i + 1):
            i += 2
        elif continuation := _CONTINUATION.match(sql, i + 1):
            i = continuation.end()
        else:
            return i + 1
    return n


def _block_comment_end(sql: str, start: int) -> int:
    """End of the /* ... */ comment opening at ``start``; these nest in PostgreSQL."""
    depth = 0
    for delimiter in _BLOCK_COMMENT_DELIMITER.finditer(sql, start):
        depth += 1 if delimiter.group() == "/*" else -1
        if depth == 0:
            return delimiter.end()
    return len(sql)


def _verbatim_end(sql: str, i: int) -> int | None:
    """End of the string literal, quoted identifier or comment starting at ``i``, or
    ``None`` if none starts there. ``i`` must be at a token boundary (not inside a word).

    An unterminated one runs to the end of ``sql`` (copied as it is), so the server
    rejects the statement with its own syntax error.
    """
    ch = sql[i]
    if ch in "'\"":
        return _quoted_end(sql, i)
    if ch in "Ee" and sql.startswith("'", i + 1):
        return _escape_string_end(sql, i + 1)
    if ch == "$" and (opening := _DOLLAR_QUOTE.match(sql, i)):
        close = sql.find(opening.group(), opening.end())
        return len(sql) if close == -1 else close + len(opening.group())
    if sql.startswith("--", i):
        newline = _NEWLINE.search(sql, i)
        return len(sql) if newline is None else newline.start()
    if sql.startswith("/*", i):
        return _block_comment_end(sql, i)
    return None


@functools.lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """Translate the kernel's ``?`` placeholders to psycopg's ``%s``.

    Outside string literals, quoted identifiers and comments:

    * ``?`` becomes ``%s``, a placeholder;
    * ``??`` becomes one literal ``?`` character (JDBC's convention), the only way to
      write PostgreSQL's JSONB operators: ``payload ?? 'key'``, ``payload ??| array['a']``,
      ``payload ??& array['a', 'b']``;
    * ``%`` becomes ``%%``.

    String literals (``'...'`` with ``''`` escapes, ``E'...'`` with backslash escapes,
    dollar-quoted ``$$...$$`` and ``$tag$...$tag$``), quoted identifiers (``"..."``) and
    comments (``-- ...`` to the end of the line, ``/* ... */`` nested) are copied as they
    are, ``?`` and ``??`` included, except that ``%`` becomes ``%%`` there too (psycopg
    reads ``%`` anywhere in the query text). ``$1``-style positional parameters are not
    dollar quotes and are copied unchanged. An unterminated literal or comment runs to the
    end of ``sql``. Assumes ``standard_conforming_strings = on`` (PostgreSQL's default).
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        end = _verbatim_end(sql, i)
        if end is not None:
            out.append(sql[i:end].replace("%", "%%"))
        elif sql.startswith("??", i):
            out.append("?")
            end = i + 2
        elif sql[i] == "?":
            out.append("%s")
            end = i + 1
        elif sql[i] == "%":
            out.append("%%")
            end = i + 1
        else:
            # A whole word at once, so the next token boundary is after it (see _WORD).
            word = _WORD.match(sql, i)
            end = word.end() if word else i + 1
            out.append(sql[i:end])
        i = end
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
