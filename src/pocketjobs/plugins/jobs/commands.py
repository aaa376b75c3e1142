"""The plugin's CLI: ``jobs`` views and actions, and the ``--queues`` flag of ``serve`` and
``worker``, added to ``app.start()``.

::

    python main.py jobs stats
    python main.py jobs list [--status failed] [--topic T] [--queue Q] [--limit 20] [--offset 0]
    python main.py jobs queues
    python main.py jobs pause mail        # every process stops claiming the queue's jobs
    python main.py jobs resume mail
    python main.py jobs cancel JOB_ID     # pending: cancelled now; running: asked to stop
    python main.py jobs schedules         # periodic jobs: cron, next run, last run
    python main.py jobs prune             # delete the finished jobs retention says are due
    python main.py jobs prune --older-than 2h --status completed
    python main.py worker --queues mail,default   # work on these queues only
    python main.py worker --queues mail:4         # ... with 4 slots for mail
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pocketjobs.core import BackgroundOption, BaseApp, Command
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.config import parse_age, parse_queue_sizes
from pocketjobs.plugins.jobs.errors import JobsError
from pocketjobs.plugins.jobs.job import JOB_STATUSES, JobFilter
from pocketjobs.plugins.jobs.retention import FINISHED_STATUSES

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.store import JobStore

__all__ = ["format_table", "jobs_command", "queues_option"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table with aligned columns and a rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _configure(parser: argparse.ArgumentParser) -> None:
    views = parser.add_subparsers(dest="view", metavar="VIEW", required=True)
    views.add_parser("stats", help="job counts per status")
    listing = views.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES)
    listing.add_argument("--topic")
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    views.add_parser("queues", help="queues: paused or not, their jobs, slots and limits")
    for action, text in (("pause", "stop claiming a queue's jobs, in every process"),
                         ("resume", "claim a paused queue's jobs again")):  # fmt: skip
        views.add_parser(action, help=text).add_argument("name", help="the queue")
    cancel = views.add_parser("cancel", help="cancel a pending job, or stop a running one")
    cancel.add_argument("job_id", metavar="ID", help="the job's id")
    views.add_parser("schedules", help="periodic jobs: their cron, next and last run")
    pruning = views.add_parser(
        "prune", help="delete finished jobs now (those retention says are due, by default)"
    )
    pruning.add_argument(
        "--older-than", metavar="DURATION", type=_duration,
        help="delete the ones that finished longer ago than this (e.g. 2h, 30m, 7d)",
    )  # fmt: skip
    pruning.add_argument(
        "--status", action="append", choices=FINISHED_STATUSES,
        help="only jobs of this status (repeatable; default: completed, failed, cancelled)",
    )  # fmt: skip


def _duration(text: str) -> timedelta:
    try:
        return parse_age(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1]  # a traceback's last line names the error
    return line if len(line) <= width else line[: width - 1] + "…"


def _run(store: JobStore, args: argparse.Namespace) -> int:
    try:
        return _show(store, args)
    except JobsError as exc:  # e.g. an unknown job: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _orphans(title: str, column: str, counts: dict[str, int]) -> None:
    if counts:
        print(f"\n{title}:")
        print(format_table([column, "pending"], [[k, str(n)] for k, n in sorted(counts.items())]))


def _show(store: JobStore, args: argparse.Namespace) -> int:
    if args.view == "stats":
        stats = store.stats()
        rows = [[status, str(getattr(stats, status))] for status in JOB_STATUSES]
        rows += [["total", str(stats.total)], ["success rate", f"{stats.success_rate:.1%}"]]
        print(format_table(["status", "jobs"], rows))
        _orphans(
            "Topics with pending jobs and no handler in any running worker",
            "topic",
            stats.orphaned_topics,
        )
        _orphans(
            "Queues with pending jobs and no running worker working on them",
            "queue",
            stats.orphaned_queues,
        )
        return 0
    if args.view == "queues":
        rows = [
            [q.name, "paused" if q.paused else "active", str(q.pending), str(q.processing),
             str(q.concurrency), "-" if q.global_limit is None else str(q.global_limit)]
            for q in store.queues()
        ]  # fmt: skip
        headers = ["queue", "state", "pending", "processing", "slots here", "global limit"]
        print(format_table(headers, rows))
        return 0
    if args.view in ("pause", "resume"):
        if args.view == "pause":
            store.pause_queue(args.name)
        else:
            store.resume_queue(args.name)
        print(f"queue {args.name} {'paused' if args.view == 'pause' else 'resumed'}")
        return 0
    if args.view == "cancel":
        job = store.cancel(args.job_id)
        if job.status == "processing":
            print(f"job {job.id}: cancel requested (it is running)")
        else:
            print(f"job {job.id} cancelled")
        return 0
    if args.view == "schedules":
        _show_schedules(store)
        return 0
    if args.view == "prune":
        deleted = store.prune(older_than=args.older_than, statuses=args.status)
        print(format_table(["status", "deleted"], [[s, str(n)] for s, n in deleted.items()]))
        return 0
    if args.limit < 1 or args.offset < 0:
        print("error: --limit must be at least 1 and --offset at least 0", file=sys.stderr)
        return 2
    page = store.list(JobFilter(args.topic, args.status, args.limit, args.offset, args.queue))
    rows = [
        [
            job.id,
            job.topic,
            job.queue,
            job.status,
            f"{job.retries}/{job.max_retries}",
            format_time(job.run_at),
            format_time(job.updated),
            _one_line(job.last_error, 50),
        ]
        for job in page.items
    ]
    headers = ["id", "topic", "queue", "status", "retries", "run_at", "updated", "last error"]
    print(format_table(headers, rows))
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "none"
    print(f"\n{shown} of {page.total}")
    return 0


def _show_schedules(store: JobStore) -> None:
    def when(moment: datetime | None) -> str:
        return format_time(moment) if moment is not None else "-"

    rows = [
        [s.name, s.topic, s.cron, s.tz, when(s.next_run), when(s.last_run), s.last_job_id or "-",
         s.catch_up, "active" if s.active else ("registered here" if s.here else "inactive")]
        for s in store.schedules()
    ]  # fmt: skip
    headers = ["name", "topic", "cron", "tz", "next run", "last run", "last job", "catch-up",
               "state"]  # fmt: skip
    print(format_table(headers, rows))


def jobs_command(store: JobStore) -> Command:
    """The ``jobs`` CLI command for ``store``'s app."""

    def run(app: BaseApp, args: argparse.Namespace) -> int:
        return _run(store, args)

    return Command(name="jobs", help="inspect the job queue", configure=_configure, run=run)


def queues_option(store: JobStore) -> BackgroundOption:
    """``--queues`` for ``serve`` and ``worker``: work on the named queues only.

    ``--queues mail,default`` takes each queue's slots from the config (``queues``; a queue
    not there gets ``workers`` slots); ``--queues mail:4`` gives the number. It replaces
    the config's ``queues`` (and ``PB_JOBS_QUEUES``) for this process."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--queues",
            metavar="NAME[:SLOTS],...",
            help="work on these job queues only (default: the config's)",
        )

    def apply(app: BaseApp, args: argparse.Namespace) -> None:
        if args.queues is None:
            return
        configured = store.config.queue_sizes()
        sizes = parse_queue_sizes(args.queues, default=0)
        store.use_queues(
            {name: size or configured.get(name, store.config.workers)
             for name, size in sizes.items()}
        )  # fmt: skip

    return BackgroundOption(configure=configure, apply=apply)
