# ruff: noqa: RUF001 - the table uses typographic signs on purpose
"""Claim latency while retention prunes (pocketjobs only): the ``prune`` workload of
``python -m bench``, and a sweep of the prune's batch size and pause.

One run, in a fresh database (:func:`claims_while_pruning`):

1. ``rows`` completed jobs are bulk-inserted with SQL (finished two days ago, so due for
   pruning under the default retention of a day), then ``ANALYZE``; ``buffer`` due jobs
   are queued.
2. A producer thread enqueues ``store.enqueue_many`` chunks of 10 jobs every
   ``claim_interval`` (a steady stream, ~1,000 jobs/s at 10 ms), topping the due jobs up
   to ``buffer``; a claimer thread claims a 10-job batch every ``claim_interval`` through
   the driver (``driver.jobs_claim(app.db, ...)``, as the backlog rows do; only that call
   is timed) and completes it (``driver.jobs_settle``, untimed). Both run from start to end.
3. The main thread alternates windows of ``window`` seconds: *idle* (nothing else runs),
   then *pruning*: ``retention.prune(app.db, driver, DEFAULT_RETENTION.cutoffs(now),
   batch=..., pause=...)`` -- what the dispatcher's ``Pruner`` runs on its own thread --
   stopped at the window's end by its ``stopping`` callback and resumed in the next
   pruning window, until all ``rows`` are deleted. Interleaving puts the idle and the
   pruning claims in the same stretch of a noisy machine.

A claim counts as *pruning* when it started while ``prune`` was running. The prune rate
is ``rows`` over the summed time spent inside ``prune`` (the batches' statements and the
pauses between them); a single uninterrupted prune takes the same total.

``python -m bench.pruning`` runs the sweep (see :func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DB_LABELS,
    DEFAULT_PG_URL,
    POSTGRES,
    BenchError,
    Scenario,
    fmt_num,
    percentile,
    scenario,
)


@dataclass(frozen=True)
class PruneParams:
    rows: int = 1_000_000
    #: seconds per pruning window, and per idle window (``idle_window``: the same if None)
    window: float = 2.0
    idle_window: float | None = None
    #: one claim (and one enqueue of 10 jobs) per this many seconds
    claim_interval: float = 0.010
    #: due jobs kept queued
    buffer: int = 2_000
    batch: int | None = None  # None: the driver's prune_batch
    pause: float | None = None  # None: retention.PRUNE_PAUSE
    #: how old the seeded finished jobs are (the default retention keeps completed ones a day)
    age: timedelta = field(default=timedelta(days=2))


def claims_while_pruning(ctx: Scenario, p: PruneParams) -> dict[str, float]:
    """One run (see the module's docstring): a fresh app on ``ctx``, ``p.rows`` completed
    jobs inserted, then :func:`measure_while_pruning`."""
    from bench.adapters.pocketjobs_adapter import insert_finished_rows, prepare_scenario_app

    app, store, driver = prepare_scenario_app(ctx)
    try:
        insert_finished_rows(app, p.rows, age=p.age)
        return measure_while_pruning(app, store, driver, p)
    finally:
        app.terminate()


def measure_while_pruning(
    app: Any,
    store: Any,
    driver: Any,
    p: PruneParams,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """On a bootstrapped ``app`` whose ``_jobs`` holds ``p.rows`` due completed jobs (and
    whatever else): queue ``p.buffer`` due jobs, start the producer and the claimer, and
    alternate idle and pruning windows until the due jobs are gone. Returns
    ``claim_idle_p50|p99``, ``claim_prune_p50|p99`` (ms), ``claim_p99_ratio`` (pruning /
    idle), ``prune_rate`` (rows/s), ``prune_seconds``, and the counts and batch timings
    behind them (``batch_ms_deciles``: the mean statement time of each tenth of the full
    batches, in order, is a list). ``log`` gets a line per pruning window."""
    from bench.adapters.pocketjobs_adapter import TOPIC
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Claim, ClaimParams, Outcomes
    from pocketjobs.plugins.jobs.retention import DEFAULT_RETENTION, PRUNE_PAUSE, prune

    batch = driver.prune_batch if p.batch is None else p.batch
    pause = PRUNE_PAUSE if p.pause is None else p.pause
    idle_window = p.window if p.idle_window is None else p.idle_window
    stop = threading.Event()
    failures: list[BaseException] = []
    phase = {"pruning": False}
    idle: list[float] = []
    pruning: list[float] = []
    short_claims = 0
    counts = {"enqueued": 0, "claimed": 0}
    batch_seconds: list[float] = []  # the full batches' statements

    def enqueue(count: int) -> None:
        for first in range(0, count, 1000):
            n = min(1000, count - first)
            store.enqueue_many(TOPIC, list(range(counts["enqueued"], counts["enqueued"] + n)))
            counts["enqueued"] += n

    def producer() -> None:
        try:
            tick = time.monotonic()
            while not stop.is_set():
                if counts["enqueued"] - counts["claimed"] < p.buffer:
                    enqueue(10)
                tick += p.claim_interval
                stop.wait(max(0.0, tick - time.monotonic()))
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    def claimer() -> None:
        nonlocal short_claims
        lock = timedelta(minutes=5)
        try:
            tick = time.monotonic()
            while not stop.is_set():
                now = now_utc()
                token = uuid.uuid4().hex
                params = ClaimParams([TOPIC], 10, now, now + lock, token)
                during = phase["pruning"]
                t = time.perf_counter()
                claimed = driver.jobs_claim(app.db, params)
                elapsed = (time.perf_counter() - t) * 1000
                # Counted only if the phase did not change under the claim.
                if during == phase["pruning"]:
                    (pruning if during else idle).append(elapsed)
                counts["claimed"] += len(claimed)
                if len(claimed) < 10:
                    short_claims += 1
                if claimed:
                    done = [Claim(job.id, token) for job in claimed]
                    driver.jobs_settle(app.db, Outcomes(now_utc(), done))
                tick += p.claim_interval
                stop.wait(max(0.0, tick - time.monotonic()))
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    class TimedDriver:
        """The driver, with each prune batch's statement timed."""

        def __getattr__(self, name: str) -> Any:
            return getattr(driver, name)

        def jobs_prune(
            self, q: Any, status: str, before: Any, limit: int, **bounds: Any
        ) -> tuple[int, Any]:
            t = time.perf_counter()
            done, last = driver.jobs_prune(q, status, before, limit, **bounds)
            if done == limit:
                batch_seconds.append(time.perf_counter() - t)
            return done, last

    prune_func = prune
    threads = [
        threading.Thread(target=producer, name="bench-producer", daemon=True),
        threading.Thread(target=claimer, name="bench-claimer", daemon=True),
    ]
    try:
        enqueue(p.buffer)
        for thread in threads:
            thread.start()
        timed = TimedDriver()
        deleted = 0
        prune_seconds = 0.0
        windows = 0
        deadline = time.monotonic() + 4 * 3600
        while deleted < p.rows and not stop.is_set():
            stop.wait(idle_window)  # idle window
            if stop.is_set():
                break
            window_end = time.monotonic() + p.window
            phase["pruning"] = True
            t = time.perf_counter()
            done = prune_func(
                app.db,
                timed,  # type: ignore[arg-type]
                DEFAULT_RETENTION.cutoffs(now_utc()),
                stopping=lambda end=window_end: time.monotonic() >= end,  # type: ignore[misc]
                batch=batch,
                pause=pause,
            )
            spent = time.perf_counter() - t
            prune_seconds += spent
            phase["pruning"] = False
            windows += 1
            gained = sum(done.values())
            deleted += gained
            if log is not None:
                log(
                    f"  window {windows}: {gained:,} rows in {spent:.1f}s "
                    f"({gained / spent:,.0f}/s), {deleted:,}/{p.rows:,} pruned"
                )
            if gained == 0 or time.monotonic() > deadline:
                break
        stop.wait(idle_window)  # a last idle window: as many of each kind
        stop.set()
        for thread in threads:
            thread.join(10)
        if failures:
            raise failures[0]
        if deleted != p.rows:
            raise BenchError(f"pruned {deleted} of {p.rows} finished jobs")
        left = int(app.db.fetch_value("SELECT COUNT(*) FROM _jobs WHERE finished_at < ?",
                                      (now_utc() - timedelta(days=1),)))  # fmt: skip
        if left:
            raise BenchError(f"{left} due finished jobs left after pruning")
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(10)
    if len(idle) < 20 or len(pruning) < 20:
        raise BenchError(f"too few claims: {len(idle)} idle, {len(pruning)} while pruning")
    tenth = max(1, len(batch_seconds) // 10)
    deciles = [
        statistics.fmean(batch_seconds[i : i + tenth]) * 1000
        for i in range(0, tenth * 10, tenth)
        if batch_seconds[i : i + tenth]
    ]
    idle_p99, prune_p99 = percentile(idle, 99), percentile(pruning, 99)
    return {
        "claim_idle_p50": percentile(idle, 50),
        "claim_idle_p99": idle_p99,
        "claim_prune_p50": percentile(pruning, 50),
        "claim_prune_p99": prune_p99,
        "claim_p99_ratio": prune_p99 / idle_p99,
        "prune_rate": p.rows / prune_seconds,
        "prune_seconds": prune_seconds,
        "claims_idle": float(len(idle)),
        "claims_pruning": float(len(pruning)),
        "short_claims": float(short_claims),
        "windows": float(windows),
        # a full batch's statement, in ms: the median, and the means of the first and the
        # last tenth (on PostgreSQL it grows as the prune goes on: see BACKLOG_HEALTH.md)
        "batch_ms_p50": statistics.median(batch_seconds) * 1000 if batch_seconds else 0.0,
        "batch_ms_first": deciles[0] if deciles else 0.0,
        "batch_ms_last": deciles[-1] if deciles else 0.0,
        **({"batch_ms_deciles": deciles} if log is not None else {}),
    }


# -- the sweep -----------------------------------------------------------------------------


def _parse_list(text: str, kind: type) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.pruning``: the ``prune`` workload for each combination of
    ``--batch`` and ``--pause`` (milliseconds), ``--runs`` times, on each ``--db``; the
    combinations are taken in a different rotation each run (interleaved), a fresh database
    per measurement. Prints one line per measurement (stderr) and a table of medians;
    ``--json FILE`` keeps every value."""
    parser = argparse.ArgumentParser(prog="python -m bench.pruning", description=main.__doc__)
    parser.add_argument("--db", default="postgres,sqlite")
    parser.add_argument("--rows", type=int, default=PruneParams.rows)
    parser.add_argument("--batch", default="500", help="comma-separated, e.g. 200,500,1000")
    parser.add_argument("--pause", default="5", help="milliseconds, comma-separated, e.g. 0,5")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=PruneParams.window)
    parser.add_argument("--idle-window", type=float, default=None, help="default: --window")
    parser.add_argument("--claim-interval", type=float, default=PruneParams.claim_interval * 1000,
                        help="milliseconds between two claims")  # fmt: skip
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    dbs = [{"pg": POSTGRES, "postgresql": POSTGRES}.get(d, d) for d in args.db.split(",")]
    combos = [
        (b, pz) for b in _parse_list(args.batch, int) for pz in _parse_list(args.pause, float)
    ]
    results: dict[str, dict[str, list[float]]] = {}
    for run in range(args.runs):
        shift = run % len(combos)
        order = combos[shift:] + combos[:shift]
        if run % 2:
            order = order[::-1]
        for db in dbs if run % 2 == 0 else dbs[::-1]:
            for batch, pause_ms in order:
                key = f"{db} batch={batch} pause={pause_ms:g}ms"
                params = PruneParams(
                    rows=args.rows,
                    window=args.window,
                    idle_window=args.idle_window,
                    claim_interval=args.claim_interval / 1000,
                    batch=batch,
                    pause=pause_ms / 1000,
                )
                started = time.monotonic()
                with scenario(db, args.pg_url) as ctx:
                    values = claims_while_pruning(ctx, params)
                for name, value in values.items():
                    results.setdefault(key, {}).setdefault(name, []).append(value)
                print(
                    f"[run {run + 1}/{args.runs}] {key}: "
                    + ", ".join(f"{k}={fmt_num(v)}" for k, v in values.items())
                    + f" ({time.monotonic() - started:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(render_sweep(results, args.rows))
    return 0


def render_sweep(results: dict[str, dict[str, list[float]]], rows: int) -> str:
    lines = [
        f"Prune of {rows:,} completed jobs while claiming (median of runs, ms unless noted)",
        "",
        "| Database | Batch | Pause | Claim p99 idle | Claim p99 pruning | p99 ratio "
        "| Claim p50 idle / pruning | Prune rate (rows/s) | Prune time (s) | Batch stmt p50 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, values in results.items():
        db, batch, pause = key.split(" ")
        med = {k: statistics.median(v) for k, v in values.items() if k != "batch_ms_deciles"}
        lines.append(
            f"| {DB_LABELS.get(db, db)} "
            f"| {batch.split('=')[1]} | {pause.split('=')[1]} "
            f"| {fmt_num(med['claim_idle_p99'])} | {fmt_num(med['claim_prune_p99'])} "
            f"| {med['claim_p99_ratio']:.2f}× "
            f"| {fmt_num(med['claim_idle_p50'])} / {fmt_num(med['claim_prune_p50'])} "
            f"| {fmt_num(med['prune_rate'])} | {fmt_num(med['prune_seconds'])} "
            f"| {fmt_num(med['batch_ms_p50'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
