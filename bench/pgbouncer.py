"""What running behind PgBouncer costs: ``python -m bench.pgbouncer``.

Compares pocketjobs on PostgreSQL directly (``listen`` on: LISTEN/NOTIFY wake-ups) with
pocketjobs through a PgBouncer in transaction pooling mode (``listen`` off: polling every
``claim_poll_interval``), and, to tell the proxy's cost from the polling's, directly with
``listen`` off. PgBouncer is started by this script the way the tests start it
(``tests/pgbouncer_support.py``: ``pool_mode = transaction``, ``--pool-size`` server
connections, 20 by default, PgBouncer's own default).

Figures, each measured ``--runs`` times (default 3) with the configurations interleaved
(the order reversed every other run: the machine is shared and noisy), reported as the
median of the runs:

* **wake-up**: one idle worker process (10 slots); the benchmark process enqueues
  ``--wakeup-jobs`` jobs (default 200), 20 ms apart plus a varying offset; latency from
  the enqueue call's return to the handler's start (``time.monotonic_ns()``, system-wide),
  p50 and p99 of each run.
* **burn-down**: ``--jobs`` no-op jobs (default 10,000) queued first, then one worker
  process (10 slots, batch 10) released; jobs per second until the last one ran.
* **idle poll**: an idle worker through PgBouncer for 5 s: statements per second (PgBouncer's
  ``SHOW STATS`` counters) and the server time of one (``total_query_time`` over
  ``total_query_count``), plus the round trip of one empty claim from the benchmark
  process, directly and through PgBouncer.

The benchmark process and the worker use a fresh database each time (``bench_<random>``,
dropped afterwards). ``--pg-url`` (default ``$BENCH_PG_URL`` or the local server) is the
admin URL.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG_URL,
    REPO_ROOT,
    BenchError,
    count_records,
    percentile,
    read_records,
    record,
    scenario,
    set_record_path,
    wait_for_records,
)

sys.path.insert(0, str(REPO_ROOT / "tests"))
from pgbouncer_support import PgBouncer, start_pgbouncer

TOPIC = "noop"
WORKERS = 10
BATCH_SIZE = 10

#: Wake-up: (label, through PgBouncer, listen)
CONFIGURATIONS = (
    ("direct, LISTEN", False, True),
    ("PgBouncer, polling", True, False),
    ("direct, polling", False, False),
)
#: Burn-down (listening is moot: a backlog never waits for a wake-up): (label, through
#: PgBouncer, listen, URL query). The third tells the proxy's cost from that of
#: preparing no statements (what the kernel does through a proxy).
BURNDOWN_CONFIGURATIONS = (
    ("direct, LISTEN", False, True, ""),
    ("PgBouncer, polling", True, False, ""),
    ("direct, prepared statements off", False, True, "prepare_threshold=none"),
)


# -- the worker process ------------------------------------------------------------------


def _noop(job: Any) -> None:
    record(job.payload)


def worker_main(spec: dict[str, Any]) -> None:
    """In the worker process: an app on ``spec["url"]`` with a no-op handler; signals
    readiness with its ready file, starts the dispatcher on a line of stdin, stops on the
    next (or end of input)."""
    from pocketjobs import App
    from pocketjobs.plugins import jobs

    set_record_path(spec["records"])
    app = App(data_dir=Path(spec["tmp"]) / "pb_data", database_url=spec["url"])
    config = jobs.Config(
        workers=WORKERS,
        batch_size=BATCH_SIZE,
        auto_start=False,
        listen=spec["listen"],
        claim_poll_interval=spec["claim_poll"],
    )
    store = jobs.must_register(app, config)
    store.register(TOPIC, _noop)
    app.bootstrap()
    Path(spec["ready"]).touch()
    sys.stdin.readline()
    store.start()
    sys.stdin.readline()
    store.stop(timeout=2)
    app.terminate()


class Worker:
    """``python -m bench.pgbouncer --worker SPEC`` as a subprocess."""

    def __init__(self, tmp: Path, url: str, listen: bool, claim_poll: float = 0.1) -> None:
        self.ready = tmp / f"ready-{secrets.token_hex(4)}"
        self.log_path = tmp / f"worker-{secrets.token_hex(3)}.log"
        spec = {
            "url": url,
            "listen": listen,
            "claim_poll": claim_poll,
            "tmp": str(tmp),
            "records": str(tmp / "records.bin"),
            "ready": str(self.ready),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("PB_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.pgbouncer", "--worker", json.dumps(spec)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"worker not ready:\n{self.log_path.read_text()}")
            time.sleep(0.01)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited:\n{self.log_path.read_text()}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b"stop\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# -- one measurement ----------------------------------------------------------------------


@contextmanager
def _setup(
    admin_url: str, bouncer: PgBouncer, through: bool, query: str = ""
) -> Iterator[tuple[Any, Any, Any, str]]:
    """A fresh database, its URL (through PgBouncer or not), the benchmark process's app
    and store on it (migrated, no dispatcher)."""
    from pocketjobs import App
    from pocketjobs.plugins import jobs

    with scenario("postgres", admin_url) as ctx:
        assert ctx.pg_url is not None
        url = bouncer.url_for(ctx.pg_url) if through else ctx.pg_url
        url += f"?{query}" if query else ""
        app = App(data_dir=ctx.tmp / "producer", database_url=url)
        store = jobs.must_register(app, jobs.Config(auto_start=False))
        app.bootstrap()
        try:
            yield ctx, app, store, url
        finally:
            app.terminate()


def wakeup(admin_url: str, bouncer: PgBouncer, through: bool, listen: bool, jobs: int) -> dict:
    with _setup(admin_url, bouncer, through) as (ctx, _, store, url):
        worker = Worker(ctx.tmp, url, listen)
        try:
            worker.go()
            time.sleep(1.0)  # idle
            returned: list[int] = []
            start = time.monotonic()
            for n in range(jobs):
                # 20 ms apart, plus an offset that walks through a 100 ms poll cycle.
                delay = start + n * 0.020 + (n * 0.0073) % 0.1 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                store.enqueue(TOPIC, n)
                returned.append(time.monotonic_ns())
            wait_for_records(ctx.records, jobs, 60, check=worker.check_alive)
        finally:
            worker.stop()
        starts = read_records(ctx.records)
        latencies = [(starts[n] - returned[n]) / 1e6 for n in range(jobs)]
        return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def burndown(
    admin_url: str, bouncer: PgBouncer, through: bool, listen: bool, query: str, jobs: int
) -> dict:
    with _setup(admin_url, bouncer, through, query) as (ctx, _, store, url):
        for chunk in range(0, jobs, 1000):
            store.enqueue_many(TOPIC, list(range(chunk, min(jobs, chunk + 1000))))
        worker = Worker(ctx.tmp, url, listen)
        try:
            start = time.monotonic()
            worker.go()
            end = wait_for_records(ctx.records, jobs, 300, check=worker.check_alive)
        finally:
            worker.stop()
        if len(read_records(ctx.records)) != jobs or count_records(ctx.records) != jobs:
            raise BenchError("a job ran twice or not at all")
        return {"jobs_per_s": jobs / (end - start)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pids(admin_url: str, dbname: str) -> list[int]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def idle_poll(admin_url: str, bouncer: PgBouncer, claim_poll: float) -> dict[str, float]:
    """An idle worker through PgBouncer polling every ``claim_poll`` seconds, for 5 s:
    statements/s (PgBouncer's counters) and CPU, as a share of one core, of the worker
    process, of the server backends of its database, and of PgBouncer."""
    with _setup(admin_url, bouncer, True) as (ctx, _, _, url):
        worker = Worker(ctx.tmp, url, listen=False, claim_poll=claim_poll)
        try:
            worker.go()
            time.sleep(1.5)
            dbname = url.rsplit("/", 1)[1]

            def sample() -> tuple[float, int, dict[str, float]]:
                rows = [r for r in bouncer.show("STATS") if r["database"] == dbname]
                cpu = {
                    "worker": _cpu_seconds(worker.proc.pid),
                    "server": sum(_cpu_seconds(pid) for pid in _server_pids(admin_url, dbname)),
                    "pgbouncer": _cpu_seconds(bouncer.process.pid),
                }
                return time.monotonic(), int(rows[0]["total_query_count"]), cpu

            t0, q0, cpu0 = sample()
            time.sleep(5.0)
            t1, q1, cpu1 = sample()
        finally:
            worker.stop()
    seconds = t1 - t0
    result = {"queries_per_s": (q1 - q0) / seconds}
    for part in cpu0:
        result[f"cpu_{part}_pct"] = 100 * (cpu1[part] - cpu0[part]) / seconds
    return result


def claim_round_trip(admin_url: str, bouncer: PgBouncer, through: bool) -> float:
    """Median milliseconds of one claim that finds nothing, from this process."""
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import ClaimParams, QueueClaim, driver_for

    with _setup(admin_url, bouncer, through) as (_, app, _, _):
        db = app.db
        driver = driver_for(db)
        now = now_utc()
        params = ClaimParams(
            [TOPIC], 10, now, now + timedelta(minutes=5), "t" * 32,
            [QueueClaim("default", 10, None)], "bench",
        )  # fmt: skip
        for _ in range(50):
            driver.jobs_claim(db, params)
        times = []
        for _ in range(1000):
            started = time.perf_counter()
            driver.jobs_claim(db, params)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgbouncer", description=__doc__)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--wakeup-jobs", type=int, default=200)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    results: dict[str, list[dict[str, float]]] = {}
    with start_pgbouncer(args.pg_url, pool_size=args.pool_size) as bouncer:
        print(f"PgBouncer (transaction pooling, pool size {args.pool_size}) on {bouncer.port}")
        idle: dict[str, Any] = {}
        for claim_poll in (0.1, 0.05):
            idle[f"{claim_poll * 1000:g} ms"] = idle_poll(args.pg_url, bouncer, claim_poll)
        for label, through in (("direct", False), ("PgBouncer", True)):
            idle[f"claim round trip {label} (ms)"] = claim_round_trip(args.pg_url, bouncer, through)
        print(f"idle: {json.dumps(idle, indent=1)}", flush=True)
        for run in range(args.runs):
            order = CONFIGURATIONS if run % 2 == 0 else CONFIGURATIONS[::-1]
            for label, through, listen in order:
                figure = wakeup(args.pg_url, bouncer, through, listen, args.wakeup_jobs)
                results.setdefault(f"wakeup {label}", []).append(figure)
                print(f"run {run + 1} wake-up   {label}: {_fmt(figure)}", flush=True)
            burndowns = BURNDOWN_CONFIGURATIONS
            for label, through, listen, query in burndowns if run % 2 == 0 else burndowns[::-1]:
                figure = burndown(args.pg_url, bouncer, through, listen, query, args.jobs)
                results.setdefault(f"burndown {label}", []).append(figure)
                print(f"run {run + 1} burn-down {label}: {_fmt(figure)}", flush=True)
    _report(results, idle, args)


def _fmt(figure: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in figure.items())


def _median(results: dict[str, list[dict[str, float]]], key: str, field: str) -> float:
    return statistics.median(run[field] for run in results[key])


def _report(results: dict[str, list[dict[str, float]]], idle: dict, args: Any) -> None:
    print(f"\nMedians of {args.runs} runs (python -m bench.pgbouncer):\n")
    print("| figure | direct, LISTEN | PgBouncer, polling | ratio | direct, polling |")
    print("|---|---|---|---|---|")
    for field in ("p50", "p99"):
        direct = _median(results, "wakeup direct, LISTEN", field)
        pooled = _median(results, "wakeup PgBouncer, polling", field)
        polling = _median(results, "wakeup direct, polling", field)
        print(
            f"| wake-up {field} (ms) | {direct:.1f} | {pooled:.1f} | {pooled / direct:.1f}x "
            f"| {polling:.1f} |"
        )
    direct = _median(results, "burndown direct, LISTEN", "jobs_per_s")
    pooled = _median(results, "burndown PgBouncer, polling", "jobs_per_s")
    print(
        f"| burn-down of {args.jobs:,} jobs (jobs/s) | {direct:,.0f} | {pooled:,.0f} "
        f"| {pooled / direct:.2f}x | — |"
    )
    print("\nBurn-down, each run against the direct one of the same run (median of the ratios):")
    for label, *_ in BURNDOWN_CONFIGURATIONS[1:]:
        ratios = [
            other["jobs_per_s"] / base["jobs_per_s"]
            for base, other in zip(
                results["burndown direct, LISTEN"], results[f"burndown {label}"], strict=True
            )
        ]
        print(
            f"- {label}: {_median(results, f'burndown {label}', 'jobs_per_s'):,.0f} jobs/s, "
            f"{statistics.median(ratios):.2f}x (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print("\nAn idle worker polling through PgBouncer (5 s; CPU in % of one core):\n")
    print("| claim_poll_interval | statements/s | worker CPU | server CPU | PgBouncer CPU |")
    print("|---|---|---|---|---|")
    for label in ("100 ms", "50 ms"):
        f = idle[label]
        print(
            f"| {label} | {f['queries_per_s']:.1f} | {f['cpu_worker_pct']:.1f}% "
            f"| {f['cpu_server_pct']:.1f}% | {f['cpu_pgbouncer_pct']:.1f}% |"
        )
    print(
        f"\nAn empty claim's round trip: {idle['claim round trip direct (ms)']:.2f} ms direct, "
        f"{idle['claim round trip PgBouncer (ms)']:.2f} ms through PgBouncer (median of 1,000)."
    )


if __name__ == "__main__":
    main()
