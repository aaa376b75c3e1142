"""What a large ``_jobs`` costs: the measurements behind ``docs/BACKLOG_HEALTH.md``.

Not part of ``python -m bench`` (one ``pg`` run takes about an hour on 2 cores). Run from
the repository root with the project's virtualenv::

    python -m bench.backlog pg      [--rows 10000000] [--pending 10000]   # PostgreSQL
    python -m bench.backlog sqlite  [--rows 1000000]  [--pending 10000]   # SQLite
    python -m bench.backlog index   [--db postgres,sqlite] [--jobs 100000] [--runs 3]

Each prints its figures (stderr: progress) and, with ``--json FILE``, keeps every value.

``pg`` / ``sqlite``: two scratch databases, ``bench_backlog_empty`` and
``bench_backlog_big`` (SQLite: two files in a temp dir). Both get ``--pending`` due jobs;
the big one also ``--rows`` completed jobs finished two days ago (bulk SQL, then
``ANALYZE``), so the default retention (a day) prunes them all. Then:

1. sizes: the table and each index (PostgreSQL ``pg_relation_size``, ``pg_indexes_size``;
   SQLite the file, ``page_count``, ``freelist_count``);
2. ``--rounds`` rounds, alternating the two databases: ``--claims`` claims of a 10-job
   batch through ``driver.jobs_claim`` (each completed afterwards, untimed); 200
   ``store.enqueue`` and 3 ``store.enqueue_many`` of 1,000 (another topic); 3 runs of
   ``SELECT status, COUNT(*) FROM _jobs GROUP BY status`` (``driver.jobs_count_by_status``,
   what ``store.stats()`` runs);
3. the prune of the big one, with claims going on (``bench.pruning.measure_while_pruning``:
   idle windows of 2 s, pruning windows of 10 s, ``retention.prune`` with its defaults);
4. after the prune: sizes, dead tuples and autovacuum (``pg_stat_user_tables``, 11 s
   after, for the statistics to arrive) / ``freelist_count``, the count and claims again;
5. SQLite: 200,000 jobs enqueued and completed (the freed pages are reused: file size and
   ``freelist_count`` before/after); then ``VACUUM`` (timed, with a claim from another
   thread started during it) and the file and its WAL before/after (SQLite sizes are
   taken as: the WAL's size, then ``wal_checkpoint(TRUNCATE)``, then the file's).
   PostgreSQL: ``VACUUM (ANALYZE) _jobs`` (timed), sizes, dead tuples, the count and
   claims again. (PostgreSQL's seeded table is ``VACUUM``ed once before step 1, as
   autovacuum would have left an old table.)

``index``: the cost of ``idx_jobs_finished`` to completions. Per run and database, two
scratch databases, one with the index dropped; in each, ``--jobs`` jobs enqueued and
claimed (1,000 a claim, untimed), then completed through ``driver.jobs_settle`` in
batches of 10 (the dispatcher's ``batch_size``), alternating between the two every
10,000; then ``--jobs`` more completed in one ``jobs_settle`` call each. And the bench's
burn-down (10,000 no-op jobs, worker process) with and without the index, 5 interleaved
pairs. Ratios are medians of the runs' ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG_URL,
    POSTGRES,
    SQLITE,
    machine_info,
    percentile,
    pg_admin_execute,
    with_database,
)

ENQUEUE_TOPIC = "bench:enqueue"  # no handler, not claimed: only the enqueue is measured


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- scratch databases -------------------------------------------------------------------


class Target:
    """One scratch database with a bootstrapped app (dispatcher off)."""

    def __init__(self, db: str, name: str, admin_url: str, root: Path) -> None:
        from bench.adapters.pocketjobs_adapter import make_app
        from pocketjobs.plugins import jobs
        from pocketjobs.plugins.jobs.drivers import driver_for

        self.db, self.name, self.admin_url = db, name, admin_url
        self.tmp = root / name
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.pg_url = None
        if db == POSTGRES:
            pg_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            pg_admin_execute(admin_url, f'CREATE DATABASE "{name}"')
            self.pg_url = with_database(admin_url, name)
        self.app = make_app(db, self.tmp, self.pg_url)
        self.store = jobs.must_register(self.app, jobs.Config(auto_start=False))
        self.app.bootstrap()
        self.driver = driver_for(self.app.db)
        self.enqueued = 0

    @property
    def sqlite_path(self) -> Path:
        return Path(self.app.db.path)

    def close(self, keep: bool) -> None:
        with contextlib.suppress(Exception):
            self.app.terminate()
        if self.db == POSTGRES and not keep:
            with contextlib.suppress(Exception):
                pg_admin_execute(
                    self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
                )

    def enqueue_due(self, count: int) -> None:
        from bench.adapters.pocketjobs_adapter import TOPIC

        for first in range(0, count, 1000):
            n = min(1000, count - first)
            self.store.enqueue_many(TOPIC, list(range(self.enqueued, self.enqueued + n)))
            self.enqueued += n


@contextlib.contextmanager
def targets(db: str, names: list[str], admin_url: str, keep: bool) -> Iterator[list[Target]]:
    root = Path(tempfile.mkdtemp(prefix="pj-backlog-"))
    made: list[Target] = []
    try:
        for name in names:
            made.append(Target(db, name, admin_url, root))
        yield made
    finally:
        for target in made:
            target.close(keep)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}" + (f" and databases {', '.join(names)}" if db == POSTGRES else ""))


def timed(func: Callable[[], Any]) -> float:
    t = time.perf_counter()
    func()
    return time.perf_counter() - t


# -- measurements --------------------------------------------------------------------------


def claim_latencies(t: Target, claims: int) -> list[float]:
    """``claims`` claims of a 10-job batch (ms each), each batch completed afterwards."""
    from bench.adapters.pocketjobs_adapter import TOPIC
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Claim, ClaimParams, Outcomes

    out = []
    for _ in range(claims):
        now = now_utc()
        token = uuid.uuid4().hex
        params = ClaimParams([TOPIC], 10, now, now + timedelta(minutes=5), token)
        start = time.perf_counter()
        claimed = t.driver.jobs_claim(t.app.db, params)
        out.append((time.perf_counter() - start) * 1000)
        if claimed:
            done = [Claim(job.id, token) for job in claimed]
            t.driver.jobs_settle(t.app.db, Outcomes(now_utc(), done))
    return out


def enqueue_costs(t: Target) -> dict[str, list[float]]:
    """ms per ``store.enqueue`` (200) and per ``store.enqueue_many`` of 1,000 (3)."""
    single = []
    for n in range(200):
        single.append(timed(lambda n=n: t.store.enqueue(ENQUEUE_TOPIC, n)) * 1000)  # type: ignore[misc]
    bulk = [
        timed(lambda: t.store.enqueue_many(ENQUEUE_TOPIC, list(range(1000)))) * 1000
        for _ in range(3)
    ]
    return {"enqueue_ms": single, "enqueue_many_1000_ms": bulk}


def count_seconds(t: Target, times: int = 3) -> list[float]:
    return [timed(lambda: t.driver.jobs_count_by_status(t.app.db)) for _ in range(times)]


def pg_sizes(t: Target) -> dict[str, int]:
    db = t.app.db
    sizes = {
        "table": int(db.fetch_value("SELECT pg_relation_size('_jobs')")),
        "indexes": int(db.fetch_value("SELECT pg_indexes_size('_jobs')")),
        "total": int(db.fetch_value("SELECT pg_total_relation_size('_jobs')")),
    }
    for name, size in db.fetch_tuples(
        """SELECT c.relname, pg_relation_size(c.oid) FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = '_jobs'::regclass ORDER BY c.relname"""
    ):
        sizes[f"index {name}"] = int(size)
    return sizes


def pg_table_stats(t: Target) -> dict[str, Any]:
    row = t.app.db.fetch_one(
        """SELECT n_live_tup, n_dead_tup, n_tup_del, last_vacuum, last_autovacuum,
                  last_analyze, last_autoanalyze, vacuum_count, autovacuum_count,
                  autoanalyze_count
        FROM pg_stat_user_tables WHERE relname = '_jobs'"""
    )
    stats = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in (row or {}).items()}
    stats["server autovacuum"] = t.app.db.fetch_value("SHOW autovacuum")
    stats["reloptions"] = t.app.db.fetch_value(
        "SELECT reloptions::text FROM pg_class WHERE oid = '_jobs'::regclass"
    )
    return stats


def sqlite_sizes(t: Target) -> dict[str, int]:
    """The WAL as it is, then (after ``wal_checkpoint(TRUNCATE)``) the database file, its
    pages and its free pages."""
    db = t.app.db
    path = t.sqlite_path
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "wal_before_checkpoint": wal_size,
        "file": path.stat().st_size,
        "page_size": int(db.fetch_value("PRAGMA page_size")),
        "page_count": int(db.fetch_value("PRAGMA page_count")),
        "freelist_count": int(db.fetch_value("PRAGMA freelist_count")),
    }


def sizes(t: Target) -> dict[str, int]:
    return pg_sizes(t) if t.db == POSTGRES else sqlite_sizes(t)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}


def interleaved_rounds(pair: list[Target], rounds: int, claims: int) -> dict[str, Any]:
    """Claims, enqueues and counts on each target, alternating, ``rounds`` times."""
    raw: dict[str, dict[str, list[float]]] = {t.name: {} for t in pair}
    for round_ in range(rounds):
        for t in pair if round_ % 2 == 0 else pair[::-1]:
            got = raw[t.name]
            got.setdefault("claim_ms", []).extend(claim_latencies(t, claims))
            t.enqueue_due(claims * 10)  # keep the due jobs as they were
            for key, values in enqueue_costs(t).items():
                got.setdefault(key, []).extend(values)
            got.setdefault("count_s", []).extend(count_seconds(t))
        log(f"  round {round_ + 1}/{rounds} done")
    out: dict[str, Any] = {}
    for name, got in raw.items():
        out[name] = {
            "claim": summary(got["claim_ms"]),
            "enqueue_ms_p50": statistics.median(got["enqueue_ms"]),
            "enqueue_ms_p99": percentile(got["enqueue_ms"], 99),
            "enqueue_many_1000_ms": statistics.median(got["enqueue_many_1000_ms"]),
            "count_s": statistics.median(got["count_s"]),
        }
    return out


def after_state(t: Target, claims: int, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": sizes(t)}
    out["count_s"] = statistics.median(count_seconds(t))
    out["claim"] = summary(claim_latencies(t, claims))
    t.enqueue_due(claims * 10)
    log(f"  {what}: {json.dumps(out, default=str)}")
    return out


# -- pg / sqlite -------------------------------------------------------------------------


def health(args: argparse.Namespace, db: str) -> dict[str, Any]:
    from bench.adapters.pocketjobs_adapter import insert_finished_rows
    from bench.pruning import PruneParams, measure_while_pruning

    results: dict[str, Any] = {"db": db, "rows": args.rows, "pending": args.pending}
    names = ["bench_backlog_empty", "bench_backlog_big"]
    with targets(db, names, args.pg_url, args.keep) as (empty, big):
        log(f"{db}: seeding {args.rows:,} completed jobs")
        results["seed_seconds"] = timed(
            lambda: insert_finished_rows(big.app, args.rows, age=timedelta(days=2))
        )
        for t in (empty, big):
            t.enqueue_due(args.pending)
            t.app.db.execute("ANALYZE _jobs" if db == POSTGRES else "ANALYZE")
        log(f"  seeded in {results['seed_seconds']:.0f}s")
        if db == POSTGRES:
            # The seed's rows are all-visible after a VACUUM, as autovacuum would leave an
            # old table; without it the first reads set hint bits (writes) as they go.
            results["seed_vacuum_seconds"] = timed(lambda: big.app.db.execute("VACUUM _jobs"))
        results["sizes_before"] = {t.name: sizes(t) for t in (empty, big)}
        log(f"  sizes: {json.dumps(results['sizes_before'])}")
        results["rounds"] = interleaved_rounds([empty, big], args.rounds, args.claims)
        log(f"  rounds: {json.dumps(results['rounds'])}")

        log(f"{db}: pruning {args.rows:,} rows with claims going on")
        params = PruneParams(rows=args.rows, window=args.prune_window, idle_window=2.0)
        results["prune"] = measure_while_pruning(big.app, big.store, big.driver, params, log=log)
        log(f"  prune: {json.dumps(results['prune'])}")
        if db == POSTGRES:
            time.sleep(11)  # the backends' statistics reach pg_stat_user_tables
            results["stats_after_prune"] = pg_table_stats(big)
            log(f"  stats after prune: {json.dumps(results['stats_after_prune'])}")
        results["after_prune"] = after_state(big, args.claims, "after prune")
        if db == POSTGRES:
            results["vacuum_seconds"] = timed(lambda: big.app.db.execute("VACUUM (ANALYZE) _jobs"))
            log(f"  VACUUM (ANALYZE) _jobs: {results['vacuum_seconds']:.1f}s")
            results["after_vacuum"] = after_state(big, args.claims, "after VACUUM")
            time.sleep(11)
            results["stats_after_vacuum"] = pg_table_stats(big)
        else:
            results["reuse"] = sqlite_reuse(big, args.reuse)
            results["vacuum"] = sqlite_vacuum(big)
            results["after_vacuum"] = after_state(big, args.claims, "after VACUUM")
    return results


def sqlite_reuse(t: Target, jobs: int) -> dict[str, Any]:
    """Enqueue and complete ``jobs`` jobs: the pages the prune freed are reused."""
    from bench.adapters.pocketjobs_adapter import TOPIC
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Claim, ClaimParams, Outcomes

    before = sqlite_sizes(t)
    done_jobs = 0
    while done_jobs < jobs:
        t.enqueue_due(1000)
        now = now_utc()
        token = uuid.uuid4().hex
        params = ClaimParams([TOPIC], 1000, now, now + timedelta(minutes=5), token)
        claimed = t.driver.jobs_claim(t.app.db, params)
        t.driver.jobs_settle(t.app.db, Outcomes(now_utc(), [Claim(j.id, token) for j in claimed]))
        done_jobs += len(claimed)
    after = sqlite_sizes(t)
    out = {"jobs": done_jobs, "before": before, "after": after}
    log(f"  reuse: {json.dumps(out)}")
    return out


def sqlite_vacuum(t: Target) -> dict[str, Any]:
    """``VACUUM`` on the app's handle, timed, with one claim started from another thread
    0.1 s into it (how long it waited); the file and its WAL before and after."""
    out: dict[str, Any] = {"before": sqlite_sizes(t)}
    waited: list[float] = []

    def claim_during() -> None:
        time.sleep(0.1)
        waited.extend(claim_latencies(t, 1))

    thread = threading.Thread(target=claim_during, daemon=True)
    thread.start()
    out["seconds"] = timed(lambda: t.app.db.execute("VACUUM"))
    thread.join(60)
    out["claim_during_vacuum_ms"] = waited[0] if waited and out["seconds"] > 0.1 else None
    out["after"] = sqlite_sizes(t)
    log(f"  VACUUM: {json.dumps(out)}")
    return out


# -- index ---------------------------------------------------------------------------------


def claim_all(t: Target, count: int) -> list[Any]:
    from bench.adapters.pocketjobs_adapter import TOPIC
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Claim, ClaimParams

    t.enqueue_due(count)
    claims: list[Any] = []
    while len(claims) < count:
        now = now_utc()
        token = uuid.uuid4().hex
        params = ClaimParams([TOPIC], 1000, now, now + timedelta(hours=1), token)
        got = t.driver.jobs_claim(t.app.db, params)
        if not got:
            break
        claims.extend(Claim(job.id, token) for job in got)
    return claims


def settle_seconds(t: Target, claims: list[Any], per_call: int) -> float:
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Outcomes

    start = time.perf_counter()
    for first in range(0, len(claims), per_call):
        t.driver.jobs_settle(t.app.db, Outcomes(now_utc(), claims[first : first + per_call]))
    return time.perf_counter() - start


def index_cost(args: argparse.Namespace, db: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        names = ["bench_index_with", "bench_index_without"]
        with targets(db, names, args.pg_url, False) as (with_idx, without):
            without.app.db.execute("DROP INDEX idx_jobs_finished")
            pair = [with_idx, without] if run % 2 == 0 else [without, with_idx]
            claims = {t.name: claim_all(t, args.jobs) for t in pair}
            batched = {t.name: 0.0 for t in pair}
            for first in range(0, args.jobs, 10_000):
                for t in pair:
                    part = claims[t.name][first : first + 10_000]
                    batched[t.name] += settle_seconds(t, part, 10)
            claims = {t.name: claim_all(t, args.jobs) for t in pair}
            one_call = {t.name: settle_seconds(t, claims[t.name], args.jobs) for t in pair}
            entry: dict[str, Any] = {
                "settle_batches_of_10_s": batched,
                "settle_one_call_s": one_call,
            }
            if db == POSTGRES:
                entry["idx_jobs_finished_bytes"] = int(
                    with_idx.app.db.fetch_value("SELECT pg_relation_size('idx_jobs_finished')")
                )
                entry["indexes_bytes"] = {
                    t.name: int(t.app.db.fetch_value("SELECT pg_indexes_size('_jobs')"))
                    for t in pair
                }
            else:
                entry["file_bytes"] = {t.name: sqlite_sizes(t)["file"] for t in pair}
            runs.append(entry)
            log(f"{db} index run {run + 1}/{args.runs}: {json.dumps(entry)}")
    burndown = burndown_pairs(db, args.pg_url, args.burndown_pairs)

    def ratio(key: str) -> float:
        return statistics.median(
            r[key]["bench_index_with"] / r[key]["bench_index_without"] for r in runs
        )

    return {
        "db": db,
        "jobs": args.jobs,
        "runs": runs,
        "settle_batches_of_10_ratio": ratio("settle_batches_of_10_s"),
        "settle_one_call_ratio": ratio("settle_one_call_s"),
        "settle_batches_of_10_jobs_per_s": {
            name: statistics.median(args.jobs / r["settle_batches_of_10_s"][name] for r in runs)
            for name in ("bench_index_with", "bench_index_without")
        },
        "settle_one_call_jobs_per_s": {
            name: statistics.median(args.jobs / r["settle_one_call_s"][name] for r in runs)
            for name in ("bench_index_with", "bench_index_without")
        },
        "burndown": burndown,
    }


def burndown_pairs(db: str, pg_url: str, pairs: int) -> dict[str, Any]:
    """The bench's burn-down workload with and without ``idx_jobs_finished``."""
    from bench import workloads as w
    from bench.adapters.pocketjobs_adapter import PocketjobsPostgres, PocketjobsSQLite
    from bench.common import scenario

    base = PocketjobsPostgres if db == POSTGRES else PocketjobsSQLite

    class WithoutFinishedIndex(base):  # type: ignore[valid-type,misc]
        # The worker process is the base configuration's (same key): it only opens the
        # database, whose migrations are applied already.
        def setup(self) -> None:
            super().setup()
            self.app.db.execute("DROP INDEX idx_jobs_finished")

    params = w.Params()
    values: dict[str, list[float]] = {"with": [], "without": []}
    for pair in range(pairs):
        order = [("with", base), ("without", WithoutFinishedIndex)]
        for label, cls in order if pair % 2 == 0 else order[::-1]:
            with scenario(db, pg_url) as ctx:
                got = w.burndown(cls, ctx, params)
            values[label].append(got["burndown"])
        log(f"{db} burn-down pair {pair + 1}/{pairs}: {values}")
    ratios = [a / b for a, b in zip(values["with"], values["without"], strict=True)]
    return {
        "jobs_per_s": values,
        "with_median": statistics.median(values["with"]),
        "without_median": statistics.median(values["without"]),
        "ratio": statistics.median(ratios),
    }


# -- CLI -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=("pg", "sqlite", "index"))
    parser.add_argument("--rows", type=int, default=0, help="10M (pg), 1M (sqlite)")
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--claims", type=int, default=200, help="claims per round")
    parser.add_argument("--prune-window", type=float, default=10.0)
    parser.add_argument("--reuse", type=int, default=200_000, help="SQLite: jobs after prune")
    parser.add_argument("--db", default="postgres,sqlite", help="index: which databases")
    parser.add_argument("--jobs", type=int, default=100_000, help="index: jobs completed")
    parser.add_argument("--runs", type=int, default=3, help="index: runs")
    parser.add_argument("--burndown-pairs", type=int, default=5)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.chdir(Path(__file__).resolve().parents[1])
    started = time.monotonic()
    out: dict[str, Any] = {
        "command": "python -m bench.backlog "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(args.pg_url),
    }
    if args.what == "index":
        out["index"] = [index_cost(args, {"pg": POSTGRES}.get(db, db)) for db in args.db.split(",")]
    else:
        db = POSTGRES if args.what == "pg" else SQLITE
        args.rows = args.rows or (10_000_000 if db == POSTGRES else 1_000_000)
        out["health"] = health(args, db)
    out["wall_seconds"] = time.monotonic() - started
    text = json.dumps(out, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    log(f"done in {out['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
