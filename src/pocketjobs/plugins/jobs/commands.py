"""Terminal views of the queue: ``jobs stats`` and ``jobs list``, added to ``app.start()``.

::

    python main.py jobs stats
    python main.py jobs list [--status failed] [--topic T] [--limit 20] [--offset 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pocketjobs.core import BaseApp, Command
from pocketjobs.core.times import format_time
from pocketjobs.plugins.jobs.job import JOB_STATUSES, JobFilter

if TYPE_CHECKING:
    from pocketjobs.plugins.jobs.store import JobStore

__all__ = ["format_table", "jobs_command"]


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
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1]  # a traceback's last line names the error
    return line if len(line) <= width else line[: width - 1] + "…"


def _run(store: JobStore, args: argparse.Namespace) -> int:
    if args.view == "stats":
        stats = store.stats()
        rows = [[status, str(getattr(stats, status))] for status in JOB_STATUSES]
        rows += [["total", str(stats.total)], ["success rate", f"{stats.success_rate:.1%}"]]
        print(format_table(["status", "jobs"], rows))
        return 0
    if args.limit < 1 or args.offset < 0:
        print("error: --limit must be at least 1 and --offset at least 0", file=sys.stderr)
        return 2
    page = store.list(JobFilter(args.topic, args.status, args.limit, args.offset))
    rows = [
        [
            job.id,
            job.topic,
            job.status,
            f"{job.retries}/{job.max_retries}",
            format_time(job.run_at),
            format_time(job.updated),
            _one_line(job.last_error, 50),
        ]
        for job in page.items
    ]
    headers = ["id", "topic", "status", "retries", "run_at", "updated", "last error"]
    print(format_table(headers, rows))
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "none"
    print(f"\n{shown} of {page.total}")
    return 0


def jobs_command(store: JobStore) -> Command:
    """The ``jobs`` CLI command for ``store``'s app."""

    def run(app: BaseApp, args: argparse.Namespace) -> int:
        return _run(store, args)

    return Command(name="jobs", help="inspect the job queue", configure=_configure, run=run)
