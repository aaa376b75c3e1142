"""Periodic jobs: cron schedules whose every slot is enqueued exactly once, fleet-wide.

A schedule (:meth:`JobStore.periodic <pocketjobs.plugins.jobs.store.JobStore.periodic>`,
or a handler's ``cron=``) enqueues a job of its topic, with its payload, at each time its
cron expression names in its time zone. Expressions have the five classic fields
(``minute hour day-of-month month day-of-week``) or are one of ``@hourly``, ``@daily``,
``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``; `cronsim`_ evaluates
them (``L``, ``#`` and ``W`` included). A slot's job is due at the slot (its first
``run_at``) and its unique key names the schedule and the slot (:func:`slot_key`:
``schedule:reports:2026-05-04T07:00Z``), which a retry does not change.

**Exactly once, no leader.** ``_jobs_schedules`` holds each schedule's next slot
(``next_run``). Every running dispatcher keeps the schedules registered in its process
(:class:`Scheduler`, one of its maintenance chores): it writes their rows at start and
every :data:`SYNC_INTERVAL` (which also marks them as alive, ``seen``), and wakes at
``next_run``. The first process to get there moves ``next_run`` on with one
compare-and-set (``UPDATE ... WHERE next_run = <the slot>``) and enqueues the slot's job in
the same transaction; the others find it moved and change nothing. So any number of
processes, on PostgreSQL or on one SQLite file, enqueue one job per slot; and a pruned
job (retention) cannot make its slot run again.

**Missed slots.** A slot is on time while less than :data:`ON_TIME` (one minute) has
passed since it, which a running process always manages. Slots older than that when a
process gets to them (every process was down) are *missed*: with ``catch_up="skip"`` (the
default) none of them runs; with ``catch_up="last"`` the latest of them runs, once. Either
way the schedule then goes on with the first slot after now, and the skipped slots are
logged (``jobs.schedule_missed``, with ``missed``).

**Daylight saving time** follows cronsim, which follows Debian's cron. When clocks go
forward, a slot in the skipped hour runs at the first minute after it (``30 2 * * *`` in
``Europe/Paris`` runs at 03:00 that day), and an every-hour expression just has no slot
in the hour that does not exist. When clocks go back, a slot at a fixed hour in the
repeated hour runs once, the first time (``30 2 * * *``: 02:30 summer time); an
expression with ``*`` (or a step) in the hour field runs in both repetitions, as its
elapsed time says (``*/30 * * * *``: 02:00 and 02:30 twice). Schedules in ``UTC`` (the
default) have none of this.

**Changing a schedule.** A process that registers a schedule with a different cron
expression or time zone than the row restarts it from the first slot after now; other
changes (payload, queue, catch-up) take effect at its next slot. While processes
disagree (a rolling deploy), the last one to write wins, so give a changed schedule a
new name to keep the two apart. A schedule no process registers any more stays listed,
inactive (``active`` false, after :data:`~pocketjobs.plugins.jobs.presence.WORKER_TIMEOUT`)
until deleted (``store.delete_schedule``).

.. _cronsim: https://github.com/cuu508/cronsim
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from pocketjobs.core import Database, Tx, log_fields
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.drivers import JobsDriver, ScheduleRow
from pocketjobs.plugins.jobs.errors import InvalidJobOptions, JobsError
from pocketjobs.plugins.jobs.job import Job
from pocketjobs.plugins.jobs.limits import MAX_TOPIC_LENGTH
from pocketjobs.plugins.jobs.presence import ANNOUNCE_INTERVAL, WORKER_TIMEOUT
from pocketjobs.plugins.jobs.validation import is_storable_text

__all__ = [
    "CATCH_UP",
    "ON_TIME",
    "SYNC_INTERVAL",
    "CatchUp",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "check_cron",
    "check_name",
    "check_tz",
    "list_schedules",
    "slot_key",
]

CatchUp = Literal["skip", "last"]
#: What a schedule does with the slots it missed (see the module's docs).
CATCH_UP: Final = ("skip", "last")
#: How late a slot may be enqueued and still count as on time, not missed.
ON_TIME: Final = timedelta(minutes=1)
#: How often a running dispatcher writes its schedules' rows (``seen``, and any change).
SYNC_INTERVAL: Final = ANNOUNCE_INTERVAL
#: Missed slots are counted up to this many (a log line says "at least").
_MISSED_COUNTED = 10_000

_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MINUTE = timedelta(minutes=1)
#: The next slot of a schedule that has none left (and the last of one that had none).
NEVER: Final = datetime(9999, 12, 31, tzinfo=UTC)
LONG_AGO: Final = datetime(1970, 1, 1, tzinfo=UTC)


def slot_key(name: str, slot: datetime) -> str:
    """The unique key of the job of schedule ``name``'s ``slot``."""
    return f"schedule:{name}:{slot.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def check_name(name: object) -> str:
    """``name`` if it can name a schedule (as a topic: 1 to 255 characters of storable
    text); else :class:`InvalidJobOptions` (field ``name``)."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_TOPIC_LENGTH
        or not is_storable_text(name)
    ):
        raise InvalidJobOptions(
            f"a schedule's name must be 1 to {MAX_TOPIC_LENGTH} characters of text (no NUL"
            " characters or lone surrogates)", field="name",
        )  # fmt: skip
    return name


def check_cron(expression: object) -> str:
    """``expression`` if it is a cron expression of five fields (or an ``@`` alias);
    else :class:`InvalidJobOptions` (field ``cron``) saying what is wrong."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidJobOptions(
            "cron must be a cron expression such as '*/5 * * * *'", field="cron",
            code="validation_invalid_cron",
        )  # fmt: skip
    text = " ".join(expression.split())
    fields = _ALIASES.get(text.lower(), text)
    if len(fields.split()) != 5:
        raise InvalidJobOptions(
            f"cron {expression!r} must have five fields (minute hour day-of-month month"
            " day-of-week) or be one of " + ", ".join(_ALIASES),
            field="cron", code="validation_invalid_cron",
        )  # fmt: skip
    try:
        next(CronSim(fields, datetime.now(UTC)))
    except CronSimError as exc:
        raise InvalidJobOptions(
            f"cron {expression!r} is not valid: {exc}", field="cron",
            code="validation_invalid_cron",
        ) from None  # fmt: skip
    except StopIteration:  # cronsim looks 50 years ahead
        raise InvalidJobOptions(
            f"cron {expression!r} never matches", field="cron", code="validation_invalid_cron"
        ) from None
    return text


def check_tz(tz: object) -> ZoneInfo:
    """The time zone named ``tz`` (an IANA name such as ``Europe/Paris``, or ``UTC``);
    else :class:`InvalidJobOptions` (field ``tz``)."""
    if isinstance(tz, str) and tz.strip() == tz and tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidJobOptions(
        f"tz {tz!r} is not a known time zone (use an IANA name such as 'Europe/Paris')",
        field="tz", code="validation_invalid_tz",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Schedule:
    """A registered periodic job (build it with ``store.periodic``, which checks it).

    ``queue``, ``priority``, ``max_retries`` and ``timeout`` are the options of its jobs;
    ``None`` takes the topic's handler defaults, as an enqueue would."""

    name: str
    topic: str
    cron: str
    tz: str
    payload: Any
    payload_json: str
    catch_up: CatchUp = "skip"
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    timeout: timedelta | None = None

    def _slots(self, start: datetime, *, reverse: bool = False) -> Iterator[datetime]:
        """Slots after ``start`` (before it with ``reverse``), in UTC."""
        local = start.astimezone(ZoneInfo(self.tz))
        fields = _ALIASES.get(self.cron.lower(), self.cron)
        return (slot.astimezone(UTC) for slot in CronSim(fields, local, reverse=reverse))

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (aware), in UTC; :data:`NEVER` when
        none comes within 50 years (cronsim looks no further)."""
        return next(self._slots(after), NEVER)

    def last_slot(self, at: datetime) -> datetime:
        """The latest slot at or before ``at`` (aware), in UTC (:data:`LONG_AGO` when none
        came in the 50 years before)."""
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        return next(self._slots(minute + _MINUTE, reverse=True), LONG_AGO)

    def slots_between(self, start: datetime, end: datetime, *, limit: int) -> int:
        """How many slots fall in ``[start, end)`` (at most ``limit``)."""
        if start >= end:
            return 0
        slots = takewhile(lambda slot: slot < end, self._slots(start - timedelta(microseconds=1)))
        return sum(1 for _ in islice(slots, limit))


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as :meth:`JobStore.schedules` lists it: its definition, its next slot
    (``next_run``), the last slot it enqueued a job for (``last_run``, ``last_job_id``),
    whether a running process registers it (``active``), and whether this one does
    (``here``)."""

    name: str
    topic: str
    cron: str
    tz: str
    catch_up: str
    queue: str
    payload: Any
    next_run: datetime
    last_run: datetime | None
    last_job_id: str | None
    active: bool
    here: bool

    def to_dict(self) -> dict[str, Any]:
        """The schedule as JSON-ready values (times as RFC 3339 text), for the API."""
        return {
            "name": self.name,
            "topic": self.topic,
            "cron": self.cron,
            "tz": self.tz,
            "catch_up": self.catch_up,
            "queue": self.queue,
            "payload": self.payload,
            "next_run": format_time(self.next_run),
            "last_run": format_time(self.last_run) if self.last_run else None,
            "last_job_id": self.last_job_id,
            "active": self.active,
            "here": self.here,
        }


def list_schedules(
    rows: list[ScheduleRow],
    here: Mapping[str, Schedule],
    now: datetime,
    queue_of: Callable[[Schedule], str],
) -> list[ScheduleInfo]:
    """The schedules of ``rows`` (the database's) and of ``here`` (this process's, which
    may not be written yet), by name."""
    infos: dict[str, ScheduleInfo] = {}
    alive = now - WORKER_TIMEOUT
    for row in rows:
        infos[row.name] = ScheduleInfo(
            row.name, row.topic, row.cron, row.tz, row.catch_up, row.queue,
            json.loads(row.payload_json), row.next_run, row.last_run, row.last_job_id,
            active=row.seen >= alive, here=row.name in here,
        )  # fmt: skip
    for name, schedule in here.items():
        if name not in infos:
            infos[name] = ScheduleInfo(
                name, schedule.topic, schedule.cron, schedule.tz, schedule.catch_up,
                queue_of(schedule), schedule.payload, schedule.next_slot(now), None, None,
                active=False, here=True,
            )  # fmt: skip
    return [infos[name] for name in sorted(infos)]


#: What enqueues a slot's job: ``(tx, schedule, slot) -> job``, in the caller's transaction.
SlotEnqueuer = Callable[[Tx, Schedule, datetime], Job]


class Scheduler:
    """One dispatcher's chore for the schedules registered in its process: keep their rows
    and enqueue each slot that falls due, unless another process did."""

    def __init__(
        self,
        db: Database,
        driver: JobsDriver,
        schedules: Mapping[str, Schedule],
        *,
        enqueue: SlotEnqueuer,
        queue_of: Callable[[Schedule], str],
        logger: logging.Logger,
        node: str,
        now: datetime,
    ) -> None:
        self._db = db
        self._driver = driver
        self._schedules = schedules  # the store's, live: registrations after start count
        self._enqueue = enqueue
        self._queue_of = queue_of
        self._logger = logger
        self._node = node
        self._next: dict[str, datetime] = {}  # each synced schedule's next_run, as stored
        self._sync_at = now

    def next_at(self) -> datetime:
        """When the next slot (or the next sync) is due: at once when a schedule was
        registered since the last sync."""
        if self._schedules.keys() != self._next.keys():
            return datetime.min.replace(tzinfo=UTC)
        if self._next:
            return min(self._sync_at, min(self._next.values()))
        return self._sync_at

    def run_due(self, now: datetime) -> None:
        """Sync the rows if due (or a schedule was registered since), then enqueue every
        slot due at ``now``. Raises :class:`~pocketjobs.core.DatabaseError`; what failed
        is retried next time."""
        if now >= self._sync_at or self._schedules.keys() != self._next.keys():
            self._sync(now)
        for name, due in list(self._next.items()):
            if due <= now:
                self._fire(name, now)

    def stop(self) -> None:
        """Nothing runs outside the caller's thread."""

    def _sync(self, now: datetime) -> None:
        schedules = list(self._schedules.values())
        rows = [
            ScheduleRow(s.name, s.topic, s.cron, s.tz, s.catch_up, self._queue_of(s),
                        s.payload_json, s.next_slot(now), now, now)
            for s in schedules
        ]  # fmt: skip
        self._next = self._driver.schedules_sync(self._db, rows) if rows else {}
        self._sync_at = now + SYNC_INTERVAL

    def _fire(self, name: str, now: datetime) -> None:
        schedule = self._schedules.get(name)
        if schedule is None:
            return
        for _ in range(3):  # another process moved it: look at where to, and go on
            expected = self._next[name]
            if expected > now:
                return
            latest = schedule.last_slot(now)
            if latest < expected:  # the stored slot is not one of ours (a changed cron)
                latest_run = None
            elif schedule.catch_up == "last" or now - latest < ON_TIME:
                latest_run = latest
            else:
                latest_run = None
            following = schedule.next_slot(now)
            try:
                with self._db.transaction() as tx:
                    moved = self._driver.schedule_advance(
                        tx, name, expected=expected, next_run=following, last_run=latest_run
                    )
                    if moved and latest_run is not None:
                        job = self._enqueue(tx, schedule, latest_run)
                        self._driver.schedule_set_last_job(tx, name, job.id)
                    stored = following if moved else self._driver.schedule_next_run(tx, name)
            except JobsError as exc:  # its job cannot be enqueued (its topic was disallowed)
                log_fields(
                    self._logger, logging.ERROR,
                    "jobs: schedule %r could not enqueue its %s slot: %s", name,
                    latest.isoformat(), exc,
                    event="jobs.schedule_failed", schedule=name, topic=schedule.topic,
                    error=str(exc), node=self._node,
                )  # fmt: skip
                self._next[name] = following  # this process tries again at the next slot
                return
            if moved:
                self._next[name] = following
                self._log_fired(schedule, expected, latest, latest_run, now)
                return
            if stored is None:  # the row was deleted: write it again
                self._sync_at = now
                del self._next[name]
                return
            self._next[name] = stored

    def _log_fired(
        self,
        schedule: Schedule,
        expected: datetime,
        latest: datetime,
        ran: datetime | None,
        now: datetime,
    ) -> None:
        missed_until = ran if ran is not None else latest + timedelta(microseconds=1)
        missed = schedule.slots_between(expected, missed_until, limit=_MISSED_COUNTED)
        if missed:
            log_fields(
                self._logger, logging.WARNING,
                "jobs: schedule %r missed %s%d slot(s) from %s (catch_up=%s)",
                schedule.name, "at least " if missed >= _MISSED_COUNTED else "", missed,
                expected.isoformat(), schedule.catch_up,
                event="jobs.schedule_missed", schedule=schedule.name, topic=schedule.topic,
                missed=missed, node=self._node,
            )  # fmt: skip
        if ran is not None:
            log_fields(
                self._logger, logging.INFO, "jobs: schedule %r enqueued its %s slot",
                schedule.name, ran.isoformat(),
                event="jobs.scheduled", schedule=schedule.name, topic=schedule.topic,
                slot=ran.isoformat(), node=self._node,
            )  # fmt: skip
