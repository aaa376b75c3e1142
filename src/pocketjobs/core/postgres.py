"""PostgreSQL through a psycopg 3 connection pool.

Prepared statements: psycopg prepares a statement on the server once a connection has run
it ``prepare_threshold`` times (psycopg's default: 5). A transaction-pooling proxy
(PgBouncer ``pool_mode = transaction`` before 1.21) hands each transaction to whichever
server connection is free, where a statement prepared on another one does not exist, so
through a proxy the pool's connections prepare nothing (``prepare_threshold = None``).
The database finds out by itself: a proxy answers the connection's handshake with a
backend process id of its own, which differs from the server's ``pg_backend_pid()``. The
URL's ``prepare_threshold`` query parameter overrides that (it is read here and never
reaches libpq)::

    postgresql://app@pgbouncer:6432/app?prepare_threshold=none   # never prepare
    postgresql://app@db:5432/app?prepare_threshold=5              # prepare, even via a proxy
    postgresql://app@db:5432/app?prepare_threshold=auto           # the default

``LISTEN`` needs a connection that stays on one server session, which transaction pooling
does not give: :meth:`PostgresDatabase.listen` checks that a notification sent from the
pool reaches its listening connection, and returns ``None`` (no notifications) when none
arrives.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

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

__all__ = [
    "LISTEN_CHECK_TIMEOUT",
    "PREPARE_THRESHOLD_PARAMETER",
    "PostgresDatabase",
    "redact_url",
    "split_prepare_threshold",
    "to_pyformat",
]

logger = logging.getLogger("pocketjobs.db")

#: The URL query parameter that sets :attr:`PostgresDatabase.prepare_threshold`.
PREPARE_THRESHOLD_PARAMETER: Final = "prepare_threshold"
#: psycopg's own default: a statement is prepared at its 5th run on a connection.
_PSYCOPG_PREPARE_THRESHOLD: Final = 5
#: Seconds a new listening connection waits for its test notification.
LISTEN_CHECK_TIMEOUT: Final = 5.0

PrepareThreshold = int | None | Literal["auto"]


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


def split_prepare_threshold(url: str) -> tuple[str, PrepareThreshold] | None:
    """``url`` without its ``prepare_threshold`` query parameter, and that parameter's
    value: ``"auto"``, ``None`` for ``none``/``off``/``false``, or an int of at least 0
    (``0`` prepares every statement at once); ``None`` when ``url`` has no such parameter
    (a ``key=value`` connection string never has). Raises ``ValueError`` for any other
    value."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.query:
        return None
    # The other parameters are kept as written: libpq decodes them its own way.
    items = parts.query.split("&")
    ours = [item for item in items if item.partition("=")[0] == PREPARE_THRESHOLD_PARAMETER]
    if not ours:
        return None
    values = [unquote(item.partition("=")[2]) for item in ours]
    kept = "&".join(item for item in items if item not in ours)
    stripped = urlunsplit(parts._replace(query=kept))
    text = values[-1].strip().lower()
    if text == "auto":
        return stripped, "auto"
    if text in ("none", "off", "false"):
        return stripped, None
    if text.isdigit():
        return stripped, int(text)
    raise ValueError(
        f"database URL parameter {PREPARE_THRESHOLD_PARAMETER}={values[-1]!r}: use auto, "
        f"none (never prepare: for a transaction-pooling proxy) or a number of runs (0 or more)"
    )


_PREPARED_STATEMENT_ERRORS = (psycopg.errors.InvalidSqlStatementName,
                              psycopg.errors.DuplicatePreparedStatement)  # fmt: skip


def _raise_translated(exc: Exception) -> NoReturn:
    if isinstance(exc, _PREPARED_STATEMENT_ERRORS):
        raise DatabaseError(
            f"{str(exc).strip()} (the connection goes through a transaction-pooling proxy "
            f"such as PgBouncer in pool_mode=transaction, which cannot keep prepared "
            f"statements: add ?{PREPARE_THRESHOLD_PARAMETER}=none to the database URL)"
        ) from exc
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

    def __init__(self, conninfo: str) -> None:
        try:
            # Prepares nothing: a LISTEN connection runs no statement twice.
            self._conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
        except psycopg.Error as exc:
            _raise_translated(exc)

    def listen(self, channel: str) -> None:
        """``LISTEN channel``."""
        try:
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            _raise_translated(exc)

    def receives(self, notify: Callable[[str, str], object], timeout: float) -> bool:
        """Whether a notification that ``notify(channel, payload)`` sends (from another
        connection) reaches this one within ``timeout`` seconds. Checked on a channel of
        its own, so no other listener sees it."""
        channel = f"pocketjobs_check_{secrets.token_hex(8)}"
        payload = secrets.token_hex(8)
        try:
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            notify(channel, payload)
            received = False
            for note in self._conn.notifies(timeout=timeout):
                if note.channel == channel and note.payload == payload:
                    received = True
                    break
            self._conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            _raise_translated(exc)
        return received

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

    ``prepare_threshold`` (see the module docstring): ``"auto"`` (default) is psycopg's 5
    on a direct connection and ``None`` (never prepare) through a connection pooler; an
    int or ``None`` is used as it is. The URL's ``prepare_threshold`` parameter, when
    present, wins. Raises ``ValueError`` for a bad parameter and
    :class:`OperationalError` when the database cannot be reached.
    """

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        prepare_threshold: PrepareThreshold = "auto",
    ) -> None:
        self.url = url
        conninfo = url
        from_url = split_prepare_threshold(url)
        if from_url is not None:
            conninfo, prepare_threshold = from_url
        self._conninfo = conninfo
        # One direct attempt first: it fails at once, with the server's reason, where the
        # pool would keep retrying until its timeout.
        try:
            with psycopg.connect(
                conninfo, connect_timeout=max(1, round(connect_timeout)), autocommit=True
            ) as probe:
                #: Whether a proxy stands between the pool and the server (PgBouncer,
                #: ...): the process id of the handshake is then the proxy's, not the
                #: server's.
                self.through_proxy = _through_proxy(probe)
        except psycopg.Error as exc:
            raise OperationalError(
                f"cannot connect to PostgreSQL at {redact_url(url)}: {str(exc).strip()}"
            ) from exc
        if prepare_threshold == "auto":
            prepare_threshold = None if self.through_proxy else _PSYCOPG_PREPARE_THRESHOLD
        #: How many runs of a statement on one connection before psycopg prepares it on
        #: the server (``None``: never).
        self.prepare_threshold: int | None = prepare_threshold
        if self.through_proxy:
            logger.info(
                "PostgreSQL at %s is reached through a connection pooler: %s",
                redact_url(url),
                "prepared statements off"
                if prepare_threshold is None
                else f"prepare_threshold={prepare_threshold} (from the URL)",
            )
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": prepare_threshold},
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

    def listen(self, channel: str) -> Listener | None:
        """``LISTEN channel`` on a connection of its own, once a test notification from
        the pool has reached it; ``None`` (with a warning) when none arrives within
        :data:`LISTEN_CHECK_TIMEOUT` seconds: behind a transaction-pooling proxy the
        connection that listens is not the one its server session talks to."""
        listener = _PostgresListener(self._conninfo)
        try:
            received = listener.receives(
                lambda name, payload: self.execute("SELECT pg_notify(?, ?)", (name, payload)),
                LISTEN_CHECK_TIMEOUT,
            )
            if received:
                listener.listen(channel)
                return listener
        except BaseException:
            listener.close()
            raise
        listener.close()
        logger.warning(
            "LISTEN through %s receives no notifications (a transaction-pooling proxy such "
            "as PgBouncer in pool_mode=transaction cannot keep one): not listening",
            redact_url(self.url),
        )
        return None

    def advisory_lock(self, tx: Tx, key: int) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def close(self) -> None:
        self._pool.close()


def _through_proxy(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` reaches its server through a proxy: the backend process id the
    handshake gave (a proxy makes up its own, for its cancel keys) is not the server's."""
    server_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    return server_pid is None or server_pid[0] != conn.info.backend_pid
