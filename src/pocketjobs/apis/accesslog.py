"""The HTTP access log: one line per request, through the ``pocketjobs.access`` logger at
``INFO``.

The message is Apache's combined log format followed by the duration in milliseconds::

    192.0.2.7 - - [03/Dec/2026:17:52:25 +0000] "GET /api/health HTTP/1.1" 200 52 "-" "curl" 0.41ms

client IP (:func:`~pocketjobs.apis.client_ip`, so behind a trusted proxy the forwarded
one), identity and user (always ``-``), the time the request arrived (UTC), the request
line, the status, the body bytes sent (``-`` for none), the ``Referer`` and the
``User-Agent``. Quotes, backslashes and control characters in the request line and the
headers are escaped, so a client cannot forge lines.

When the handlers that format the logger's records are JSON ones (``PB_LOG_FORMAT=json``,
see :mod:`pocketjobs.core.logs`), each record also carries the parts as fields:
``client_ip``, ``method``, ``uri``, ``protocol``, ``status``, ``bytes``, ``referer``,
``user_agent``, ``duration_ms``. A text line does not repeat them.

The log is off when the logger is not enabled for ``INFO`` (``PB_LOG_LEVEL=warning``), or
with ``serve --no-access-log`` / ``app.access_log = False``.

Lines are written in batches, by a thread of their own, every :data:`FLUSH_INTERVAL`
seconds (and at exit): a write to the log per request, on the event loop's thread, gave
the interpreter lock away at each one, and under load the loop then waited for it behind
the other threads. So a line may reach the log up to that long after its response (the
record's time is the response's), and a process killed with SIGKILL loses at most that
last fraction of a second of lines.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections import deque
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocketjobs.apis.clientip import TrustedProxies
from pocketjobs.core.logs import LOG_FIELDS, JsonFormatter

__all__ = ["ACCESS_LOGGER", "FLUSH_INTERVAL", "AccessLogMiddleware"]

#: The name of the access log's logger.
ACCESS_LOGGER: Final = "pocketjobs.access"
#: Seconds between two writes of the lines gathered meanwhile.
FLUSH_INTERVAL: Final = 0.05
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec")  # fmt: skip


def _escape(text: str) -> str:
    """``text`` safe inside a quoted log field: ``"``, ``\\`` and non-printables escaped."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return json.dumps(text)[1:-1]


def _uses_json(logger: logging.Logger) -> bool:
    """Whether a handler that would format ``logger``'s records has a JSON formatter."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(isinstance(handler.formatter, JsonFormatter) for handler in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


class _Writer:
    """Hands the gathered records to their logger every ``FLUSH_INTERVAL`` seconds, on a
    daemon thread started with the first record, and once more at exit."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._records: deque[logging.LogRecord] = deque()
        self._lock = threading.Lock()
        self._started = False

    def add(self, record: logging.LogRecord) -> None:
        self._records.append(record)  # deque.append is atomic: no lock on the hot path
        if not self._started:
            with self._lock:
                if not self._started:
                    self._started = True
                    atexit.register(self.flush)
                    threading.Thread(
                        target=self._run, name="pocketjobs-access-log", daemon=True
                    ).start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        with self._lock:  # one flusher at a time keeps the lines in order
            records = self._records
            while records:
                self._logger.handle(records.popleft())


class AccessLogMiddleware:
    """ASGI middleware that logs each HTTP request once its response is sent (see the
    module docstring). It costs one record per request and nothing when the logger is
    not enabled for ``INFO``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        proxies: TrustedProxies | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        # Starlette builds its middleware on the first request, after logging is set up.
        self.with_fields = _uses_json(self.logger)
        self._second = -1
        self._stamp = ""
        self._writer = _Writer(self.logger)

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # formatted once a second, not once a request
            t = time.gmtime(second)
            self._stamp = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )
            self._second = second
        return self._stamp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        started = time.perf_counter()
        status = 0
        sent = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        except BaseException:
            if not status:
                status = 500  # what the server answers for an exception before a response
            raise
        finally:
            self._log(scope, arrived, status, sent, time.perf_counter() - started)

    def _log(self, scope: Scope, arrived: float, status: int, sent: int, seconds: float) -> None:
        referer = user_agent = ""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
        raw_path: bytes | None = scope.get("raw_path")
        uri = raw_path.decode("latin-1") if raw_path is not None else scope["path"]
        query: bytes = scope.get("query_string", b"")
        if query:
            uri = f"{uri}?{query.decode('latin-1')}"
        method: str = scope["method"]
        protocol: str = scope.get("http_version", "1.1")
        client = self.proxies.client_ip(scope) or "-"
        duration_ms = seconds * 1000
        message = (
            f'{client} - - [{self._timestamp(arrived)}] "{_escape(method)} {_escape(uri)} '
            f'HTTP/{protocol}" {status} {sent or "-"} "{_escape(referer) if referer else "-"}" '
            f'"{_escape(user_agent) if user_agent else "-"}" {duration_ms:.2f}ms'
        )
        extra = None
        if self.with_fields:
            extra = {
                LOG_FIELDS: {
                    "client_ip": client,
                    "method": method,
                    "uri": uri,
                    "protocol": f"HTTP/{protocol}",
                    "status": status,
                    "bytes": sent,
                    "referer": referer or None,
                    "user_agent": user_agent or None,
                    "duration_ms": round(duration_ms, 3),
                }
            }
        # makeRecord is logger.info without its search of the caller's frame (a third of
        # its cost); the record names this function instead. It is handled later, in a
        # batch (see the module doc), with the time of the response.
        record = self.logger.makeRecord(
            self.logger.name, logging.INFO, __file__, 0, message, (), None, "_log", extra
        )
        self._writer.add(record)
