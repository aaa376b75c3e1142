"""``python -m bench``: run every workload for pocketjobs and its peers, print the table,
write ``bench/results/{results.md,results.json,chart.png}``.

Run it from the repository root with the project's virtualenv (``.venv/bin/python -m
bench``). The first run installs ``bench/requirements.txt`` into that virtualenv. Options:

    --quick              1 run, 2,000 jobs, short windows, 100k rows pruned (a smoke
                         test; results go to bench/results/quick/)
    --only NAME[,NAME]   run a subset; names are libraries (pocketjobs, pgqueuer,
                         procrastinate, huey), workloads (enqueue, burndown, steady,
                         wakeup, backlog, prune, http) or databases (postgres, sqlite);
                         repeatable.
                         Within a kind the names add up; across kinds they intersect.
    --runs N / --jobs N  override the number of runs (3) / jobs (10,000)
    --pg-url URL         PostgreSQL server (a fresh database is created per measurement);
                         default $BENCH_PG_URL or postgresql://postgres@127.0.0.1:5432/postgres
    --out DIR            where to write the results
    --no-install         do not pip-install missing benchmark dependencies
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    DB_LABELS,
    DEFAULT_PG_URL,
    POSTGRES,
    REPO_ROOT,
    SQLITE,
    Unsupported,
    fmt_num,
    machine_info,
    pg_available,
    scenario,
    summarize,
)

REQUIREMENTS = REPO_ROOT / "bench" / "requirements.txt"
NEEDED_MODULES = ("pgqueuer", "procrastinate", "huey", "matplotlib", "asyncpg", "httpx")
LIBRARIES = ("pocketjobs", "pgqueuer", "procrastinate", "huey")
WORKLOADS = ("enqueue", "burndown", "steady", "wakeup", "backlog", "prune", "http")
DATABASES = (POSTGRES, SQLITE)
ALIASES = {
    "pg": POSTGRES,
    "postgresql": POSTGRES,
    "enqueue_single": "enqueue",
    "enqueue_bulk": "enqueue",
    "burn-down": "burndown",
    "latency": "wakeup",
    "pruning": "prune",
    "retention": "prune",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_dependencies(allow_install: bool) -> None:
    """Install ``bench/requirements.txt`` into this interpreter's environment when a
    benchmark dependency is missing."""
    if importlib.util.find_spec("pocketjobs") is None:
        sys.exit(
            "pocketjobs is not importable: run with the project's venv "
            "(.venv/bin/python -m bench) after `pip install -e .`"
        )
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if not allow_install:
        log(f"missing benchmark dependencies: {', '.join(missing)} (--no-install given)")
        return
    if sys.prefix == sys.base_prefix:
        log("warning: not running in a virtualenv; installing into this interpreter anyway")
    log(
        f"installing benchmark dependencies ({', '.join(missing)} missing): "
        f"pip install -r {REQUIREMENTS.relative_to(REPO_ROOT)}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        check=False,
    )
    if done.returncode != 0:
        log("pip install failed; the adapters that need the missing packages will error")
    importlib.invalidate_caches()


def parse_only(values: list[str]) -> tuple[set[str], set[str], set[str]]:
    libraries: set[str] = set()
    workloads: set[str] = set()
    databases: set[str] = set()
    for value in values:
        for raw in value.split(","):
            name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
            if not name:
                continue
            if name in LIBRARIES:
                libraries.add(name)
            elif name in WORKLOADS:
                workloads.add(name)
            elif name in DATABASES:
                databases.add(name)
            else:
                sys.exit(
                    f"--only: unknown name {raw!r}; use one of "
                    f"{', '.join(LIBRARIES + WORKLOADS + DATABASES)}"
                )
    return (libraries or set(LIBRARIES), workloads or set(WORKLOADS), databases or set(DATABASES))


def build_params(args: argparse.Namespace) -> Any:
    from bench.workloads import Params

    if args.quick:
        params = Params(
            jobs=2_000,
            steady_seconds=3.0,
            steady_warmup=0.5,
            wakeup_jobs=50,
            wakeup_idle=1.0,
            backlog_sizes=(1_000, 100_000),
            backlog_claims=50,
            backlog_pending=2_000,
            http_seconds=3.0,
            prune_rows=100_000,
            prune_window=1.0,
        )
    else:
        params = Params()
    if args.jobs:
        params = dataclasses.replace(params, jobs=args.jobs)
    return params


def _row_workloads(adapter: Any, selected: set[str]) -> list[str]:
    names = []
    for workload in adapter.workloads:
        if workload not in selected:
            continue
        names += ["enqueue_single", "enqueue_bulk"] if workload == "enqueue" else [workload]
    return names


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        from bench.adapters import all_adapters

        self.args = args
        self.params = build_params(args)
        self.runs = args.runs or (1 if args.quick else 3)
        self.libraries, self.workloads, self.databases = parse_only(args.only)
        self.pg_url = args.pg_url
        self.rows: list[dict[str, Any]] = []
        self.adapters: dict[str, Any] = {}
        self.backlog: list[dict[str, Any]] = []
        self.prune: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.pg_problem = pg_available(self.pg_url) if POSTGRES in self.databases else None
        if self.pg_problem:
            log(f"PostgreSQL unavailable at {self.pg_url}: {self.pg_problem}")
            self.notes.append(f"PostgreSQL unavailable, its rows were skipped: {self.pg_problem}")
        for adapter in all_adapters():
            if adapter.library not in self.libraries or adapter.db not in self.databases:
                continue
            workloads = _row_workloads(adapter, self.workloads)
            if adapter.key in ("pocketjobs-pg", "pocketjobs-sqlite") and "http" in self.workloads:
                workloads.append("http")
            if not workloads:
                continue
            row = {
                "db": adapter.db,
                "library": adapter.library,
                "label": adapter.label,
                "key": adapter.key,
                "workloads": workloads,
                "metrics": {},
                "errors": {},
                "notes": {},
                "seconds": {},
            }
            if adapter.db == POSTGRES and self.pg_problem:
                for workload in workloads:
                    row["errors"][workload] = "PostgreSQL unavailable"
            self.rows.append(row)
            self.adapters[adapter.key] = adapter
            for note in adapter.notes:
                if note not in self.notes:
                    self.notes.append(note)

    # -- one measurement -----------------------------------------------------------------

    def measure(self, row: dict[str, Any], workload: str, run: int) -> None:
        from bench import workloads as w

        if workload in row["errors"] or workload in row["notes"]:
            return  # failed (or unsupported) before: do not spend the time again
        what = (
            f"[run {run + 1}/{self.runs}] {DB_LABELS[row['db']]:<10} {workload:<14} {row['label']}"
        )
        started = time.monotonic()
        try:
            with scenario(row["db"], self.pg_url) as ctx:
                if workload == "http":
                    values = w.http_enqueue(ctx, self.params)
                else:
                    func = getattr(w, workload)
                    values = func(self.adapters[row["key"]], ctx, self.params)
        except Unsupported as exc:
            row["notes"][workload] = str(exc)
            log(f"{what}: n/a ({exc})")
            return
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            row["errors"][workload] = message
            log(f"{what}: ERROR {message}")
            if self.args.verbose:
                traceback.print_exc()
            return
        finally:
            row["seconds"][workload] = row["seconds"].get(workload, 0) + time.monotonic() - started
        for metric, value in values.items():
            row["metrics"].setdefault(metric, {"values": []})["values"].append(value)
        shown = ", ".join(f"{k}={fmt_num(v)}" for k, v in values.items())
        log(f"{what}: {shown} ({time.monotonic() - started:.1f}s)")

    def measure_backlog(self, db: str) -> None:
        from bench import workloads as w

        cases = [
            {"kind": "finished", "size": size, "pending": 0, "analyze": True}
            for size in self.params.backlog_sizes
        ]
        # The state of a burn-down: a fresh table, a burst of due jobs, no ANALYZE yet.
        cases.append(
            {"kind": "pending", "size": 0, "pending": self.params.backlog_pending, "analyze": False}
        )
        for case in cases:
            entry: dict[str, Any] = {"db": db, **case, "size_label": w.size_label(case["size"])}
            entry["pending_label"] = w.size_label(
                max(case["pending"], self.params.backlog_claims * 10)
            )
            self.backlog.append(entry)
            what = (
                f"[backlog]    {DB_LABELS[db]:<10} {entry['size_label']:>4} finished, "
                f"{entry['pending_label']:>4} due{'' if case['analyze'] else ', no ANALYZE'}"
            )
            if db == POSTGRES and self.pg_problem:
                entry["error"] = "PostgreSQL unavailable"
                continue
            started = time.monotonic()
            try:
                with scenario(db, self.pg_url) as ctx:
                    out = w.backlog(
                        ctx,
                        case["size"],
                        self.runs,
                        self.params,
                        pending=case["pending"],
                        analyze=case["analyze"],
                    )
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                log(f"{what}: ERROR {entry['error']}")
                if self.args.verbose:
                    traceback.print_exc()
                continue
            entry["claim_p50"] = {"values": out["claim_p50"], **summarize(out["claim_p50"])}
            entry["claim_p99"] = {"values": out["claim_p99"], **summarize(out["claim_p99"])}
            entry["insert_seconds"] = out["insert_seconds"]
            entry["plan_sql"] = out["plan_sql"]
            entry["plan"] = out["plan"]
            log(
                f"{what}: claim p50={fmt_num(entry['claim_p50']['median'])} ms "
                f"p99={fmt_num(entry['claim_p99']['median'])} ms "
                f"(insert {out['insert_seconds']:.1f}s, total {time.monotonic() - started:.1f}s)"
            )

    def measure_prune(self, db: str, run: int) -> None:
        """One run of the prune workload on ``db`` (a fresh database)."""
        from bench import workloads as w

        entry = self.prune.setdefault(
            db,
            {
                "db": db,
                "rows": self.params.prune_rows,
                "window": self.params.prune_window,
                "metrics": {},
            },
        )
        what = f"[run {run + 1}/{self.runs}] {DB_LABELS[db]:<10} {'prune':<14} pocketjobs"
        if db == POSTGRES and self.pg_problem:
            entry["error"] = "PostgreSQL unavailable"
            return
        if entry.get("error"):
            return
        started = time.monotonic()
        try:
            with scenario(db, self.pg_url) as ctx:
                values = w.prune(ctx, self.params)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{what}: ERROR {entry['error']}")
            if self.args.verbose:
                traceback.print_exc()
            return
        for metric, value in values.items():
            entry["metrics"].setdefault(metric, {"values": []})["values"].append(value)
        shown = ", ".join(f"{k}={fmt_num(v)}" for k, v in values.items())
        log(f"{what}: {shown} ({time.monotonic() - started:.1f}s)")

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        order = ["enqueue_single", "enqueue_bulk", "burndown", "steady", "wakeup", "http"]
        for run in range(self.runs):
            # Every other run takes the libraries in the reverse order: a measurement
            # right after another on the same database runs faster (caches warm), which
            # would otherwise always favour the later rows (measured: "metrics off" after
            # "metrics on" looked 7-9% faster; swapped, 1-2%).
            rows = self.rows if run % 2 == 0 else self.rows[::-1]
            for db in DATABASES:
                for workload in order:
                    for row in rows:
                        if row["db"] == db and workload in row["workloads"]:
                            self.measure(row, workload, run)
        if "backlog" in self.workloads and "pocketjobs" in self.libraries:
            for db in DATABASES:
                if db in self.databases:
                    self.measure_backlog(db)
        if "prune" in self.workloads and "pocketjobs" in self.libraries:
            for run in range(self.runs):
                for db in DATABASES if run % 2 == 0 else DATABASES[::-1]:
                    if db in self.databases:
                        self.measure_prune(db, run)
        for row in [*self.rows, *self.prune.values()]:
            for stat in row["metrics"].values():
                stat.update(summarize(stat["values"]))
        return {
            "rows": self.rows,
            "backlog": self.backlog,
            "prune": [self.prune[db] for db in DATABASES if db in self.prune],
            "notes": self.notes,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1 run, 2,000 jobs (smoke test)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME[,NAME]")
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks")
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    ensure_dependencies(not args.no_install)

    from bench.report import write_outputs
    from bench.workloads import load_generator

    started = time.monotonic()
    load_before = (
        Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    )
    runner = Runner(args)
    log(
        f"benchmark: {runner.runs} run(s), {runner.params.jobs:,} jobs, "
        f"{len(runner.rows)} configurations, PostgreSQL at {args.pg_url}"
    )
    body = runner.run()
    wall = time.monotonic() - started
    results: dict[str, Any] = {
        "meta": {
            "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m bench"
            + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])),
            "quick": args.quick,
            "runs": runner.runs,
            "params": dataclasses.asdict(runner.params),
            "wall_seconds": wall,
            "load_generator": load_generator(),
        },
        "machine": machine_info(None if runner.pg_problem else args.pg_url),
        **body,
    }
    results["machine"]["loadavg_before"] = load_before
    out_dir = args.out or (REPO_ROOT / "bench" / "results" / ("quick" if args.quick else ""))
    md_path, json_path, chart_path = write_outputs(results, out_dir)
    print(md_path.read_text())
    log(
        f"wrote {md_path}, {json_path}, {chart_path} in {wall:.0f}s "
        f"(median of per-configuration seconds: "
        f"{statistics.median([sum(r['seconds'].values()) for r in runner.rows] or [0]):.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
