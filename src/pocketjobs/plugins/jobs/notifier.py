"""The listener: wakes the dispatcher when another process enqueues (PostgreSQL NOTIFY),
and passes cancel requests on.

An enqueue notifies :data:`~pocketjobs.plugins.jobs.drivers.NOTIFY_CHANNEL` in its own
transaction, with the new jobs' due time and topics as the payload (``wake_payload``: a
dispatcher that handles none of the topics is not woken); the notification is delivered
when (and only if) that transaction commits. A cancel of a running job notifies
``cancel:<job id>``. SQLite reports every commit of another connection (by watching its
data version), with an empty payload: due now, and maybe a cancel to look for. Where a
database offers neither, or its notifications do not arrive (PostgreSQL behind a
transaction-pooling proxy: the kernel's ``listen`` checks), the listener tells the
dispatcher so (``unavailable()``) and ends; with ``enabled`` off (``Config.listen``) it
never starts, and opens no connection. The dispatcher then polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from pocketjobs.core import Database, DatabaseError
from pocketjobs.plugins.jobs.completer import db_backoff
from pocketjobs.plugins.jobs.drivers import CANCEL_PREFIX, NOTIFY_CHANNEL, parse_wake_payload

__all__ = ["Listener"]

_TICK = 0.25  # seconds: how often the listener checks whether to stop
_THREAD_NAME = "pocketjobs-listener"


class Listener:
    """Listens on ``db`` and calls ``wake(due, topics)`` for each notification of due jobs
    (``due`` is the notified due time, ``None`` if the payload is not one; ``topics`` the
    new jobs' topics, ``None`` when it does not name them) and ``cancel(job_id)``
    for each cancel request (``cancel(None)`` for a payload that may hide one: look), and
    both after each (re)connection, since notifications may have been missed meanwhile.
    Calls ``unavailable()`` once if the database cannot notify; with ``enabled`` off it
    does nothing at all."""

    def __init__(
        self,
        db: Database,
        wake: Callable[[datetime | None, frozenset[str] | None], None],
        logger: logging.Logger,
        cancel: Callable[[str | None], None] | None = None,
        *,
        enabled: bool = True,
        unavailable: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._wake = wake
        self._cancel = cancel or (lambda job_id: None)
        self._unavailable = unavailable or (lambda: None)
        self.enabled = enabled
        self._logger = logger
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen_loop, name=_THREAD_NAME, daemon=True)

    def start(self) -> None:
        """Start listening (with ``enabled`` off: nothing)."""
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        """Stop listening; returns once the connection is closed (or after a few ticks)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(_TICK * 4)

    def _listen_loop(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            try:
                listener = self._db.listen(NOTIFY_CHANNEL)
            except DatabaseError as exc:
                delay = db_backoff(delay)
                self._logger.warning(
                    "jobs listener: cannot listen, retrying in %.1fs: %s", delay, exc
                )
                self._stopping.wait(delay)
                continue
            if listener is None:  # the database has no notifications: the dispatcher polls
                if self._db.is_postgres():
                    self._logger.warning(
                        "jobs listener: notifications do not arrive through this database "
                        "URL; polling instead (behind a transaction-pooling proxy, set "
                        "PB_JOBS_LISTEN=false)"
                    )
                self._unavailable()
                return
            delay = 0.0
            self._wake(None, None)
            self._cancel(None)
            try:
                while not self._stopping.is_set():
                    for payload in listener.wait(_TICK):
                        if payload.startswith(CANCEL_PREFIX):
                            self._cancel(payload.removeprefix(CANCEL_PREFIX))
                            continue
                        self._wake(*parse_wake_payload(payload))
                        if not payload:
                            self._cancel(None)
            except DatabaseError as exc:
                self._logger.warning("jobs listener: connection lost, reconnecting: %s", exc)
            finally:
                listener.close()
