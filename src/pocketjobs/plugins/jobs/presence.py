"""Who works on the queue: each running dispatcher announces itself in the database.

A dispatcher writes a row to ``_jobs_workers`` when it starts (its host, pid, queues and
topics) and refreshes it every :data:`ANNOUNCE_INTERVAL`; it deletes the row when it stops,
and a row not refreshed for :data:`WORKER_TIMEOUT` (its process died) counts as gone and is
pruned. From these rows any process, even one that only enqueues, knows which topics some
running worker handles and which queues one works on, so jobs that nothing will run are
reported (:func:`orphaned_work`: ``stats().orphaned_topics`` and ``orphaned_queues``,
``/api/jobs/stats``, the dashboard) and each worker logs a warning once per such topic or
queue (``event=jobs.orphaned_topic`` / ``jobs.orphaned_queue``, with ``pending``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from pocketjobs.core import Queryable, log_fields
from pocketjobs.plugins.jobs.drivers import JobsDriver, WorkerInfo

__all__ = ["ANNOUNCE_INTERVAL", "WORKER_TIMEOUT", "Presence", "orphaned_work"]

#: How often a running dispatcher refreshes its row.
ANNOUNCE_INTERVAL = timedelta(seconds=10)
#: A worker whose row was not refreshed for this long is gone.
WORKER_TIMEOUT = timedelta(seconds=60)


def orphaned_work(
    q: Queryable, driver: JobsDriver, now: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """Pending jobs per topic that no worker running at ``now`` handles, and per queue
    that no such worker works on."""
    handled: set[str] = set()
    served: set[str] = set()
    for worker in driver.workers_list(q, seen_since=now - WORKER_TIMEOUT):
        handled.update(worker.topics)
        served.update(worker.queues)
    return driver.jobs_pending_outside(q, handled), driver.jobs_pending_outside_queues(q, served)


class Presence:
    """One dispatcher's row in ``_jobs_workers``, and its warnings about orphaned topics."""

    def __init__(
        self,
        q: Queryable,
        driver: JobsDriver,
        *,
        queues: Mapping[str, int],
        topics: Callable[[], list[str]],
        now: datetime,
        logger: logging.Logger,
    ) -> None:
        self._q = q
        self._driver = driver
        self._topics = topics
        self._logger = logger
        self._warned: set[str] = set()  # topics warned about
        self._warned_queues: set[str] = set()
        self.info = WorkerInfo(
            id=secrets.token_hex(6), host=socket.gethostname(), pid=os.getpid(),
            queues=dict(queues),
            topics=[], started=now, seen=now,
        )  # fmt: skip
        #: This worker as its claims' ``attempted_by`` and its log lines name it:
        #: ``host:pid:node-id`` (the node id is its row's id).
        self.node = f"{self.info.host}:{self.info.pid}:{self.info.id}"

    def announce(self, now: datetime) -> None:
        """Write this worker's row (seen ``now``), prune dead workers' rows, and warn once
        per topic that has pending jobs and no handler in any running worker. Raises
        :class:`~pocketjobs.core.DatabaseError`."""
        self.info = WorkerInfo(
            self.info.id, self.info.host, self.info.pid, self.info.queues, self._topics(),
            self.info.started, now,
        )  # fmt: skip
        self._driver.workers_announce(self._q, self.info)
        self._driver.workers_prune(self._q, seen_before=now - WORKER_TIMEOUT)
        orphaned, unserved = orphaned_work(self._q, self._driver, now)
        for topic in sorted(orphaned.keys() - self._warned):
            log_fields(
                self._logger, logging.WARNING,
                "jobs: %d pending job(s) of topic %r have no handler in any running worker; "
                "register one (store.handler(%r)) or delete them",
                orphaned[topic], topic, topic,
                event="jobs.orphaned_topic", topic=topic, pending=orphaned[topic],
                node=self.node,
            )  # fmt: skip
        for queue in sorted(unserved.keys() - self._warned_queues):
            log_fields(
                self._logger, logging.WARNING,
                "jobs: %d pending job(s) in queue %r, which no running worker works on; "
                "start one with the queue (Config.queues, --queues %s)",
                unserved[queue], queue, queue,
                event="jobs.orphaned_queue", queue=queue, pending=unserved[queue],
                node=self.node,
            )  # fmt: skip
        # A topic or queue served again, then orphaned again, warns again.
        self._warned, self._warned_queues = set(orphaned), set(unserved)

    def leave(self) -> None:
        """Delete this worker's row (at stop). Raises :class:`~pocketjobs.core.DatabaseError`."""
        self._driver.workers_remove(self._q, self.info.id)
