# ruff: noqa: RUF001, RUF002 - the docstrings and output use the multiplication sign
"""Scaling out on PostgreSQL, measured: the figures of ``docs/SCALING.md``.

Not part of ``python -m bench``. Run from the repository root with the project's
virtualenv (a local PostgreSQL at ``postgresql://postgres@127.0.0.1:5432/postgres``, or
``--pg-url``; the workers' backends must run on this machine, their CPU is read from
``/proc``)::

    python -m bench.scaling [--jobs 20000] [--procs 1,2,4] [--runs 3] [--json FILE]
    python -m bench.scaling --runs 5     # the figures of docs/SCALING.md, ~5 minutes

One fresh database (``bench_scale_<random>``, dropped afterwards) for the whole sweep, with
``track_functions = 'pl'`` so that the claims (``_jobs_claim``) are counted. Then:

1. **connections at idle**: one worker process (the bench adapter's ``pocketjobs-pg``
   worker: ``Config(workers=10)``, the defaults otherwise, a plain no-op
   handler) bootstrapped, then with its dispatcher started and nothing to do: its backends
   in ``pg_stat_activity`` (every connection of a worker process carries the
   ``application_name`` of that process, through the URL);
2. **NOTIFY fan-out**: ``--notify-jobs`` ``store.enqueue`` calls one by one (a topic no
   worker handles) while ``--listeners`` plain connections of another process (0, 10, 40)
   listen on the jobs' channel, interleaved: enqueues/s, what each listener received, and
   the CPU of the sender's and the listeners' backends (``/proc/<pid>/schedstat``) per
   enqueue and per delivery; then ``--serial-threads`` connections committing one-row
   inserts into a scratch table for ``--serial-seconds``, with and without a
   ``pg_notify`` in the statement (PostgreSQL serializes notifying commits);
3. **burn-down** of ``--jobs`` no-op jobs with each number of worker processes in
   ``--procs``, ``--runs`` rounds, the order reversed every other round (1,2,4 then
   4,2,1 ...). Each run empties ``_jobs`` (``TRUNCATE``) and takes a ``CHECKPOINT``,
   queues the jobs (``store.enqueue_many``, chunks of 1,000), starts the processes and
   releases them at once. Measured per run:

   - jobs/s from the first to the last handler run (the no-op handler stamps its start);
   - CPU seconds (worker processes: ``/proc/<pid>/stat`` utime + stime; the server's
     processes: ``/proc/<pid>/schedstat``) from the release until ``_jobs``
     holds no unfinished job, as a share of cores × that wall time: the worker processes;
     PostgreSQL (the workers' backends, and the server's own processes: walwriter,
     checkpointer, background writer, postmaster); the rest of the machine
     (``/proc/stat`` busy time minus those: the benchmark process, other databases'
     backends, anything else running);
   - the 1-minute load average before the run;
   - the workers' backends per process, sampled every 0.1 s while the run lasts (peak),
     and one second after it (the pool keeps the connections it opened); their private
     memory (``/proc/<pid>/smaps_rollup``);
   - claims (``_jobs_claim`` calls, from ``pg_stat_user_functions``), commits
     (``pg_stat_database.xact_commit``) and row updates of ``_jobs``
     (``pg_stat_user_tables``), read after the workers exited.

4. **wake-ups**: each number of idle worker processes in ``--procs``; ``--herd-jobs``
   jobs enqueued one by one, ``--herd-interval`` apart: claims, commits and the CPU of the
   workers and of their backends per enqueue (every notification wakes every idle
   dispatcher, and each claims).

Prints the figures (medians with their ranges; progress on stderr); ``--json FILE`` keeps
every value.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters.pocketjobs_adapter import TOPIC, PocketjobsPostgres, make_app
from bench.common import (
    DEFAULT_PG_URL,
    POSTGRES,
    BenchError,
    WorkerProcess,
    count_records,
    fmt_num,
    machine_info,
    pg_admin_execute,
    read_records,
    wait_for_records,
    wait_until,
    with_database,
)

WORKER_KEY = PocketjobsPostgres.key
NOTIFY_TOPIC = "bench:notify"  # no handler: only the enqueue and its NOTIFY are measured
CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def with_app_name(url: str, name: str) -> str:
    """``url`` whose connections carry ``application_name = name``."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# -- CPU from /proc ------------------------------------------------------------------------


def proc_cpu(pid: int, *, threads: bool) -> tuple[float, int] | None:
    """``(CPU seconds, starttime)`` of ``pid``, or ``None`` if it is gone. A process with
    ``threads``: utime + stime of all its threads (``/proc/<pid>/stat``, clock ticks); a
    single-threaded one (a PostgreSQL backend): its run time in ns (``schedstat``), fine
    enough for the microseconds a backend spends on one notification."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        rest = text[text.rfind(")") + 2 :].split()  # fields from the 3rd (state) on
        started = int(rest[19])
        if not threads:
            with contextlib.suppress(OSError, ValueError, IndexError):
                ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
                return ns / 1e9, started
    except OSError:
        return None
    return (int(rest[11]) + int(rest[12])) / TICK, started


def postgres_pids() -> list[int]:
    """Every process of the PostgreSQL server on this machine (``comm`` is ``postgres``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def machine_busy_ticks() -> int:
    """Busy time of all cores (``/proc/stat``: all but idle and iowait), in ticks."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values[:8]) - values[3] - values[4]


def self_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuSnapshot:
    at: float
    machine: int
    bench: float
    workers: dict[int, float]
    postgres: dict[int, tuple[float, int]]

    @classmethod
    def take(cls, worker_pids: Sequence[int]) -> CpuSnapshot:
        workers = {
            pid: t[0] for pid in worker_pids if (t := proc_cpu(pid, threads=True)) is not None
        }
        pg = {pid: t for pid in postgres_pids() if (t := proc_cpu(pid, threads=False)) is not None}
        return cls(time.monotonic(), machine_busy_ticks(), self_seconds(), workers, pg)


def pg_seconds(start: CpuSnapshot, end: CpuSnapshot, roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds of the server's processes between two snapshots, per role (a process
    not in ``roles`` is one of the server's own, or has gone: ``server``)."""
    seconds: dict[str, float] = {}
    for pid, (used, started) in end.postgres.items():
        before = start.postgres.get(pid)
        if before is not None and before[1] == started:
            used -= before[0]
        role = roles.get(pid, "server")
        seconds[role] = seconds.get(role, 0.0) + used
    return seconds


def cpu_split(start: CpuSnapshot, end: CpuSnapshot, pg_roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds per role between two snapshots, and each as a share of all cores."""
    wall = end.at - start.at
    seconds: dict[str, float] = {
        "workers": sum(end.workers[p] - start.workers.get(p, 0.0) for p in end.workers),
        "bench": end.bench - start.bench,
    }
    for role, used in pg_seconds(start, end, pg_roles).items():
        seconds["pg_" + role] = used
    for role in ("pg_workers", "pg_bench", "pg_server", "pg_other", "pg_listeners"):
        seconds.setdefault(role, 0.0)
    machine = (end.machine - start.machine) / TICK
    seconds["pg"] = seconds["pg_workers"] + seconds["pg_server"]
    seconds["rest"] = max(0.0, machine - seconds["workers"] - seconds["pg"])
    seconds["machine"] = machine
    out = {f"cpu_s_{k}": v for k, v in seconds.items()}
    out.update({f"cpu_pct_{k}": 100 * v / (CORES * wall) for k, v in seconds.items()})
    out["wall_s"] = wall
    return out


# -- PostgreSQL observations ---------------------------------------------------------------


class Observer:
    """A connection to the admin database (so that its own statements do not count in the
    measured database's figures) that reads ``pg_stat_activity``."""

    def __init__(self, admin_url: str, dbname: str, prefix: str) -> None:
        import psycopg

        self.conn = psycopg.connect(with_app_name(admin_url, "pjscale-observer"), autocommit=True)
        self.dbname = dbname
        self.prefix = prefix

    def close(self) -> None:
        self.conn.close()

    def backends(self) -> list[tuple[int, str, str, str | None]]:
        """``(pid, application_name, state, backend_type)`` of the measured database's
        backends."""
        return [
            (int(pid), app or "", state or "", kind)
            for pid, app, state, kind in self.conn.execute(
                """SELECT pid, application_name, state, backend_type FROM pg_stat_activity
                WHERE datname = %s""",
                (self.dbname,),
            ).fetchall()
        ]

    def per_process(self) -> dict[str, dict[str, int]]:
        """Per worker process (``application_name``): its backends, and the active ones."""
        out: dict[str, dict[str, int]] = {}
        for _, app, state, _ in self.backends():
            if app.startswith(self.prefix):
                got = out.setdefault(app, {"total": 0, "active": 0})
                got["total"] += 1
                got["active"] += state == "active"
        return out

    def roles(self) -> dict[int, str]:
        """Every server process listed in ``pg_stat_activity``: ``workers`` (a worker
        process's backend), ``bench`` (another backend of the measured database), ``other``
        (a client backend of another database), ``server`` (the server's own processes)."""
        roles: dict[int, str] = {}
        for pid, datname, app, kind in self.conn.execute(
            "SELECT pid, datname, application_name, backend_type FROM pg_stat_activity"
        ).fetchall():
            if kind != "client backend":
                roles[int(pid)] = "server" if datname in (None, self.dbname) else "other"
            elif datname != self.dbname:
                roles[int(pid)] = "other"
            else:
                roles[int(pid)] = (
                    "workers"
                    if (app or "").startswith(self.prefix)
                    else "listeners"
                    if app == "pjscale-listener"
                    else "bench"
                )
        return roles


class Sampler(threading.Thread):
    """Samples the workers' backends every ``interval`` seconds: the peak per process."""

    def __init__(self, observer: Observer, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="pjscale-sampler")
        self.observer = observer
        self.interval = interval
        self.peak_total: dict[str, int] = {}
        self.peak_active: dict[str, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            for app, got in self.observer.per_process().items():
                self.peak_total[app] = max(self.peak_total.get(app, 0), got["total"])
                self.peak_active[app] = max(self.peak_active.get(app, 0), got["active"])
            self.samples += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def db_counters(url: str) -> dict[str, float]:
    """Claims, commits and ``_jobs`` row counts, from the database's own statistics."""
    import psycopg

    with psycopg.connect(with_app_name(url, "pjscale-stats"), autocommit=True) as conn:
        row = conn.execute(
            """SELECT calls, total_time FROM pg_stat_user_functions
            WHERE funcname = '_jobs_claim'"""
        ).fetchone()
        claims, claim_ms = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
        tup = conn.execute(
            """SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables
            WHERE relname = '_jobs'"""
        ).fetchone()
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    ins, upd, hot, dele = (float(v) for v in tup) if tup else (0.0, 0.0, 0.0, 0.0)
    return {
        "claims": claims,
        "claim_ms_total": claim_ms,
        "tup_ins": ins,
        "tup_upd": upd,
        "tup_hot_upd": hot,
        "tup_del": dele,
        "commits": float(commits[0]) if commits else 0.0,
    }


def private_kib(pid: int) -> int | None:
    """Private (unshared) memory of ``pid`` in KiB, from ``smaps_rollup``."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def listen_child(url: str, count: int, received: Any, ready: Any, stop: Any) -> None:
    """In a process of its own: ``count`` connections listening on the jobs' channel, each
    drained by a thread; ``received[i]`` counts what connection ``i`` got."""
    import psycopg

    from pocketjobs.plugins.jobs.drivers import NOTIFY_CHANNEL

    conns = []
    for _ in range(count):
        conn = psycopg.connect(with_app_name(url, "pjscale-listener"), autocommit=True)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        conns.append(conn)

    def drain(index: int) -> None:
        while not stop.is_set():
            for _ in conns[index].notifies(timeout=0.2):
                received[index] += 1

    threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    ready.set()
    stop.wait()
    for thread in threads:
        thread.join(1)
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


# -- the sweep -----------------------------------------------------------------------------


@dataclass
class Sweep:
    admin_url: str
    jobs: int
    workers: int
    tmp: Path
    dbname: str = field(default_factory=lambda: f"bench_scale_{secrets.token_hex(6)}")
    app: Any = None
    store: Any = None
    observer: Observer | None = None
    run_no: int = 0

    @property
    def url(self) -> str:
        return with_database(self.admin_url, self.dbname)

    @property
    def prefix(self) -> str:
        return f"pjscale-{self.dbname[-6:]}-w"

    def open(self) -> None:
        from pocketjobs.plugins import jobs

        pg_admin_execute(self.admin_url, f'CREATE DATABASE "{self.dbname}"')
        pg_admin_execute(
            self.admin_url, f"ALTER DATABASE \"{self.dbname}\" SET track_functions = 'pl'"
        )
        self.app = make_app(POSTGRES, self.tmp, with_app_name(self.url, "pjscale-bench"))
        self.store = jobs.must_register(
            self.app, jobs.Config(workers=self.workers, auto_start=False)
        )
        self.app.bootstrap()
        self.observer = Observer(self.admin_url, self.dbname, self.prefix)

    def close(self) -> None:
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.close()
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.terminate()
        with contextlib.suppress(Exception):
            pg_admin_execute(
                self.admin_url, f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'
            )

    def remaining(self) -> int:
        return int(
            self.app.db.fetch_value(
                "SELECT COUNT(*) FROM _jobs WHERE status IN ('pending', 'processing')"
            )
        )

    def start_workers(self, count: int, records: Path, tag: str) -> list[WorkerProcess]:
        procs = []
        try:
            for index in range(count):
                spec = {
                    "db": POSTGRES,
                    "pg_url": with_app_name(self.url, f"{self.prefix}{tag}-{index}"),
                    "tmp": str(self.tmp),
                    "records": str(records),
                    "concurrency": self.workers,
                }
                procs.append(WorkerProcess(WORKER_KEY, spec, self.tmp))
            for proc in procs:
                proc.wait_ready()
        except BaseException:
            for proc in procs:
                proc.stop()
            raise
        return procs

    # -- 1. connections at idle -----------------------------------------------------------

    def idle_connections(self, settle: float = 3.0) -> dict[str, Any]:
        assert self.observer is not None
        records = self.tmp / "records-idle.bin"
        procs = self.start_workers(1, records, "idle")
        try:
            bootstrapped = self.observer.per_process()
            procs[0].go()
            sampler = Sampler(self.observer)
            sampler.start()
            time.sleep(settle)
            sampler.stop()
            started = self.observer.per_process()
            procs[0].check_alive()
        finally:
            for proc in procs:
                proc.stop()
        name = f"{self.prefix}idle-0"
        out = {
            "bootstrapped": bootstrapped.get(name, {}).get("total", 0),
            "dispatcher_idle": started.get(name, {}).get("total", 0),
            "dispatcher_idle_peak": sampler.peak_total.get(name, 0),
        }
        log(f"connections at idle: {out}")
        return out

    # -- 2. NOTIFY fan-out ----------------------------------------------------------------

    def notify_run(self, listeners: int, jobs: int) -> dict[str, float]:
        """``jobs`` enqueues one by one while ``listeners`` connections of another process
        listen: enqueues/s, and the CPU the listeners' backends spent per delivery."""
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        received = ctx.Array("q", max(listeners, 1))
        ready, stop = ctx.Event(), ctx.Event()
        child = None
        if listeners:
            child = ctx.Process(
                target=listen_child, args=(self.url, listeners, received, ready, stop)
            )
            child.start()
            if not ready.wait(60):
                child.kill()
                raise BenchError("the listening process did not start")
        try:
            assert self.observer is not None
            load = loadavg()[0]
            latencies = []
            cpu_start = CpuSnapshot.take([])
            start = time.perf_counter()
            for number in range(jobs):
                t = time.perf_counter()
                self.store.enqueue(NOTIFY_TOPIC, number)
                latencies.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            if listeners:
                wait_until(
                    lambda: min(received[:listeners]) >= jobs, 60, "every notification delivered"
                )
            cpu_end = CpuSnapshot.take([])
            roles = self.observer.roles()
        finally:
            stop.set()
            if child is not None:
                child.join(10)
                if child.is_alive():
                    child.kill()
        used = pg_seconds(cpu_start, cpu_end, roles)
        listener_s, sender_s = used.get("listeners", 0.0), used.get("bench", 0.0)
        self.app.db.execute("DELETE FROM _jobs WHERE topic = ?", (NOTIFY_TOPIC,))
        deliveries = jobs * listeners
        return {
            "listeners": listeners,
            "enqueue_per_s": jobs / elapsed,
            "enqueue_ms_p50": statistics.median(latencies) * 1000,
            "received_min": float(min(received[:listeners])) if listeners else 0.0,
            "sender_backend_us_per_enqueue": 1e6 * sender_s / jobs,
            "listener_backends_us_per_delivery": 1e6 * listener_s / deliveries
            if deliveries
            else 0.0,
            "load1": load,
        }

    def notify_serial_run(self, threads: int, seconds: float, notify: bool) -> dict[str, float]:
        """``threads`` connections committing one-row inserts into a scratch table for
        ``seconds``, each with a ``pg_notify`` in the same statement or without: what the
        lock that serializes notifying commits costs."""
        import psycopg

        self.app.db.execute("CREATE TABLE IF NOT EXISTS _bench_scratch (n bigint)")
        insert = "WITH i AS (INSERT INTO _bench_scratch VALUES (1)) SELECT "
        sql = insert + ("pg_notify('bench_scratch', '')" if notify else "1")
        counts = [0] * threads
        deadline = time.monotonic() + seconds

        def loop(index: int) -> None:
            with psycopg.connect(with_app_name(self.url, "pjscale-serial"), autocommit=True) as c:
                while time.monotonic() < deadline:
                    c.execute(sql)
                    counts[index] += 1

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        load = loadavg()[0]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.app.db.execute("TRUNCATE _bench_scratch")
        return {
            "threads": threads,
            "notify": float(notify),
            "commits_per_s": sum(counts) / seconds,
            "load1": load,
        }

    # -- 3. burn-down ---------------------------------------------------------------------

    def burndown_run(self, procs_count: int, timeout: float) -> dict[str, Any]:
        assert self.observer is not None
        self.run_no += 1
        tag = f"r{self.run_no}"
        records = self.tmp / f"records-{tag}.bin"
        self.app.db.execute("TRUNCATE _jobs")
        self.app.db.execute("CHECKPOINT")
        numbers = list(range(self.jobs))
        for first in range(0, self.jobs, 1000):
            self.store.enqueue_many(TOPIC, numbers[first : first + 1000])
        procs = self.start_workers(procs_count, records, tag)
        result: dict[str, Any] = {"procs": procs_count}
        try:
            time.sleep(0.5)  # the producer's statistics reach the shared counters
            before = db_counters(self.url)
            result["load_before"] = loadavg()
            pids = [proc.proc.pid for proc in procs]
            sampler = Sampler(self.observer)
            cpu_start = CpuSnapshot.take(pids)
            for proc in procs:
                proc.go()
            sampler.start()

            def alive() -> None:
                for proc in procs:
                    proc.check_alive()

            wait_for_records(records, self.jobs, timeout, check=alive)
            wait_until(lambda: self.remaining() == 0, 60, "the last completions")
            cpu_end = CpuSnapshot.take(pids)
            roles = self.observer.roles()
            sampler.stop()
            result.update(cpu_split(cpu_start, cpu_end, roles))
            time.sleep(1.0)
            after_idle = self.observer.per_process()
            memory = [
                kib
                for pid, app, _, _ in self.observer.backends()
                if app.startswith(self.prefix) and (kib := private_kib(pid)) is not None
            ]
        finally:
            for proc in procs:
                proc.stop()
        time.sleep(1.5)  # the exited backends' statistics reach the shared counters
        after = db_counters(self.url)
        starts = read_records(records)
        total = count_records(records)
        if len(starts) != self.jobs or total != self.jobs:
            raise BenchError(f"{total} handler runs for {len(starts)} distinct jobs")
        first, last = min(starts.values()), max(starts.values())
        result["jobs_per_s"] = (self.jobs - 1) / ((last - first) / 1e9)
        result["first_start_s"] = (first / 1e9) - cpu_start.at
        names = sorted(sampler.peak_total)
        result["conn_peak"] = [sampler.peak_total[n] for n in names]
        result["conn_peak_active"] = [sampler.peak_active.get(n, 0) for n in names]
        result["conn_after"] = [after_idle.get(n, {}).get("total", 0) for n in names]
        result["backend_private_kib"] = memory
        delta = {k: after[k] - before[k] for k in after}
        result["claims"] = delta["claims"]
        result["claims_per_s"] = delta["claims"] / result["wall_s"]
        result["jobs_per_claim"] = self.jobs / delta["claims"] if delta["claims"] else 0.0
        result["claim_ms_mean"] = (
            delta["claim_ms_total"] / delta["claims"] if delta["claims"] else 0.0
        )
        result["commits_per_job"] = delta["commits"] / self.jobs
        result["updates_per_job"] = delta["tup_upd"] / self.jobs
        result["hot_updates_per_job"] = delta["tup_hot_upd"] / self.jobs
        log(
            f"  {procs_count} proc(s): {result['jobs_per_s']:,.0f} jobs/s, "
            f"workers {result['cpu_pct_workers']:.0f}%, PostgreSQL {result['cpu_pct_pg']:.0f}%, "
            f"rest {result['cpu_pct_rest']:.0f}% of {CORES} cores, "
            f"load {result['load_before'][0]:.2f}, conns {result['conn_peak']} "
            f"(after {result['conn_after']}), {result['claims_per_s']:,.0f} claims/s"
        )
        return result

    # -- 4. wake-ups: every idle dispatcher claims on every notification ------------------

    def herd_run(self, procs_count: int, jobs: int, interval: float) -> dict[str, Any]:
        """``procs_count`` idle worker processes; ``jobs`` jobs enqueued one by one,
        ``interval`` apart: claims and commits per enqueue, and the workers' backends' CPU
        per enqueue."""
        assert self.observer is not None
        self.run_no += 1
        tag = f"h{self.run_no}"
        records = self.tmp / f"records-{tag}.bin"
        self.app.db.execute("TRUNCATE _jobs")
        procs = self.start_workers(procs_count, records, tag)
        try:
            before = db_counters(self.url)
            for proc in procs:
                proc.go()
            time.sleep(1.0)  # started and idle
            load = loadavg()[0]
            cpu_start = CpuSnapshot.take([proc.proc.pid for proc in procs])
            start = time.monotonic()
            for number in range(jobs):
                time.sleep(max(0.0, start + number * interval - time.monotonic()))
                self.store.enqueue(TOPIC, number)
            wait_for_records(records, jobs, 30)
            wait_until(lambda: self.remaining() == 0, 30, "the last completions")
            cpu_end = CpuSnapshot.take([proc.proc.pid for proc in procs])
            roles = self.observer.roles()
        finally:
            for proc in procs:
                proc.stop()
        time.sleep(1.5)
        after = db_counters(self.url)
        used = pg_seconds(cpu_start, cpu_end, roles)
        worker_s = sum(cpu_end.workers[p] - cpu_start.workers.get(p, 0.0) for p in cpu_end.workers)
        window = cpu_end.at - cpu_start.at
        result = {
            "procs": procs_count,
            "load1": load,
            "claims_per_enqueue": (after["claims"] - before["claims"]) / jobs,
            "commits_per_enqueue": (after["commits"] - before["commits"]) / jobs,
            "pg_us_per_enqueue": 1e6 * used.get("workers", 0.0) / jobs,
            "worker_us_per_enqueue": 1e6 * worker_s / jobs,
            "window_s": window,
        }
        log(f"  wake-ups, {procs_count} idle proc(s): {result}")
        return result

    def table_info(self) -> dict[str, Any]:
        return {
            "reloptions": self.app.db.fetch_value(
                "SELECT reloptions::text FROM pg_class WHERE oid = '_jobs'::regclass"
            ),
        }


@contextlib.contextmanager
def sweep(admin_url: str, jobs: int, workers: int) -> Iterator[Sweep]:
    tmp = Path(tempfile.mkdtemp(prefix="pj-scale-"))
    s = Sweep(admin_url, jobs, workers, tmp)
    try:
        s.open()
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------


def med(values: Sequence[float], fmt: Callable[[float], str] = fmt_num) -> str:
    """Median (min–max) of ``values``."""
    if not values:
        return "n/a"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def pct(value: float) -> str:
    return f"{value:.0f}%"


def default_batch_size() -> int:
    from pocketjobs.plugins import jobs

    return jobs.Config().batch_size


def report(results: dict[str, Any]) -> str:
    lines = []
    info = results["machine"]
    lines.append(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"{info['os']}, Python {info['python']}, PostgreSQL {info['postgres']} "
        f"({', '.join(f'{k}={v}' for k, v in info['postgres_settings'].items())})."
    )
    lines.append(
        f"{results['jobs']:,} no-op jobs per run; each process Config(workers="
        f"{results['workers']}), the defaults otherwise (batch_size {default_batch_size()}); "
        f"{results['runs']} runs per row, medians (min–max)."
    )
    lines.append("")
    lines.append(
        "| processes | jobs/s | workers' CPU | PostgreSQL CPU | rest of machine | "
        "load (1 min) before | claims/s | jobs per claim | claim (ms, mean) | "
        "CPU per job: workers / PostgreSQL (µs) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for procs in results["procs"]:
        runs = [r for r in results["burndown"] if r["procs"] == procs]

        def col(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(r[key]) for r in runs]

        lines.append(
            f"| {procs} | {med(col('jobs_per_s'))} | {med(col('cpu_pct_workers'), pct)} | "
            f"{med(col('cpu_pct_pg'), pct)} | {med(col('cpu_pct_rest'), pct)} | "
            f"{med([r['load_before'][0] for r in runs])} | {med(col('claims_per_s'))} | "
            f"{med(col('jobs_per_claim'))} | {med(col('claim_ms_mean'))} | "
            f"{med([1e6 * r['cpu_s_workers'] / results['jobs'] for r in runs])} / "
            f"{med([1e6 * r['cpu_s_pg'] / results['jobs'] for r in runs])} |"
        )
    lines.append("")
    lines.append(
        "CPU: seconds used from the release to the last completion as a share of "
        f"{CORES} cores × that time. PostgreSQL = the workers' backends + the server's own "
        "processes; rest = everything else busy on the machine (the benchmark process, "
        "other databases' backends, other programs)."
    )
    lines.append("")
    lines.append("| processes | per-run load (1 min) before | commits/job | row updates/job "
                 "(HOT) | backends per process: peak (active) / 1 s after |")  # fmt: skip
    lines.append("|---:|---|---:|---:|---|")
    for procs in results["procs"]:
        runs = [r for r in results["burndown"] if r["procs"] == procs]
        loads = ", ".join(f"{r['load_before'][0]:.2f}" for r in runs)
        peaks = sorted({x for r in runs for x in r["conn_peak"]})
        active = sorted({x for r in runs for x in r["conn_peak_active"]})
        after = sorted({x for r in runs for x in r["conn_after"]})
        lines.append(
            f"| {procs} | {loads} | {med([r['commits_per_job'] for r in runs])} | "
            f"{med([r['updates_per_job'] for r in runs])} "
            f"({med([r['hot_updates_per_job'] for r in runs])}) | "
            f"{'/'.join(map(str, peaks))} ({'/'.join(map(str, active))}) / "
            f"{'/'.join(map(str, after))} |"
        )
    memory = [k for r in results["burndown"] for k in r["backend_private_kib"]]
    if memory:
        lines.append("")
        lines.append(
            "Private memory of a worker's backend after a run: median "
            f"{statistics.median(memory) / 1024:.1f} MiB ({min(memory) / 1024:.1f}–"
            f"{max(memory) / 1024:.1f}, {len(memory)} backends)."
        )
    herd = results.get("herd")
    if herd:
        lines.append("")
        lines.append(
            f"Wake-ups: idle worker processes, {results['herd_jobs']} jobs enqueued one by one "
            f"{results['herd_interval'] * 1000:g} ms apart:"
        )
        lines.append("")
        lines.append(
            "| processes | claims per enqueue | commits per enqueue | workers' backends CPU "
            "per enqueue (µs) | workers' CPU per enqueue (µs) |"
        )
        lines.append("|---:|---:|---:|---:|---:|")
        for procs in results["procs"]:
            runs = [r for r in herd if r["procs"] == procs]
            lines.append(
                f"| {procs} | {med([r['claims_per_enqueue'] for r in runs])} | "
                f"{med([r['commits_per_enqueue'] for r in runs])} | "
                f"{med([r['pg_us_per_enqueue'] for r in runs])} | "
                f"{med([r['worker_us_per_enqueue'] for r in runs])} |"
            )
    idle = results.get("idle_connections")
    if idle:
        lines.append(
            f"Backends of one worker process at idle: {idle['bootstrapped']} bootstrapped "
            f"(dispatcher not started), {idle['dispatcher_idle']} with its dispatcher "
            f"running and nothing to do (peak {idle['dispatcher_idle_peak']})."
        )
    notify = results.get("notify")
    if notify:
        lines.append("")
        lines.append(
            f"NOTIFY fan-out: {results['notify_jobs']:,} store.enqueue calls one by one, "
            "N connections listening:"
        )
        lines.append("")
        lines.append(
            "| listeners | enqueues/s | enqueue p50 (ms) | notifications each got | "
            "sender's backend CPU per enqueue (µs) | listeners' backends CPU per delivery (µs) |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for count in sorted({r["listeners"] for r in notify}):
            runs = [r for r in notify if r["listeners"] == count]
            lines.append(
                f"| {count} | {med([r['enqueue_per_s'] for r in runs])} | "
                f"{med([r['enqueue_ms_p50'] for r in runs])} | "
                f"{min(r['received_min'] for r in runs):,.0f} | "
                f"{med([r['sender_backend_us_per_enqueue'] for r in runs])} | "
                f"{med([r['listener_backends_us_per_delivery'] for r in runs])} |"
            )
    serial = results.get("notify_serial")
    if serial:
        plain = [r["commits_per_s"] for r in serial if not r["notify"]]
        notified = [r["commits_per_s"] for r in serial if r["notify"]]
        lines.append("")
        lines.append(
            f"Commits/s of {serial[0]['threads']} connections inserting one row per "
            f"statement into a scratch table for {results['serial_seconds']:g} s: "
            f"{med(plain)} without NOTIFY, {med(notified)} with a pg_notify in the "
            "statement (interleaved)."
        )
    lines.append("")
    lines.append(f"_jobs reloptions: {results['table'].get('reloptions')}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--procs", type=parse_counts, default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=10, help="Config.workers per process")
    parser.add_argument("--listeners", type=parse_counts, default=[0, 10, 40])
    parser.add_argument("--notify-jobs", type=int, default=1_000)
    parser.add_argument("--serial-threads", type=int, default=8)
    parser.add_argument("--serial-seconds", type=float, default=2.0)
    parser.add_argument("--herd-jobs", type=int, default=200)
    parser.add_argument("--herd-interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=180.0, help="per burn-down (s)")
    parser.add_argument("--json", type=Path, help="write every value to this file")
    args = parser.parse_args(argv)

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results: dict[str, Any] = {
        "started": started,
        "command": "python -m bench.scaling "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(args.pg_url),
        "jobs": args.jobs,
        "workers": args.workers,
        "runs": args.runs,
        "procs": args.procs,
        "notify_jobs": args.notify_jobs,
        "serial_seconds": args.serial_seconds,
        "herd_jobs": args.herd_jobs,
        "herd_interval": args.herd_interval,
        "burndown": [],
        "notify": [],
        "notify_serial": [],
        "herd": [],
    }
    with sweep(args.pg_url, args.jobs, args.workers) as s:
        log(f"database {s.dbname}; load {loadavg()}")
        results["table"] = s.table_info()
        results["idle_connections"] = s.idle_connections()
        max_conn = int(s.app.db.fetch_value("SHOW max_connections"))
        for round_ in range(args.runs):
            for listeners in args.listeners if round_ % 2 == 0 else args.listeners[::-1]:
                in_use = int(s.app.db.fetch_value("SELECT count(*) FROM pg_stat_activity"))
                if listeners and in_use + listeners > max_conn - 30:
                    log(
                        f"  skipping {listeners} listeners: {in_use} of {max_conn} "
                        "connections in use"
                    )
                    continue
                got = s.notify_run(listeners, args.notify_jobs)
                log(f"  notify, {listeners} listeners: {got}")
                results["notify"].append(got)
        for round_ in range(args.runs):
            for notify in (False, True) if round_ % 2 == 0 else (True, False):
                got = s.notify_serial_run(args.serial_threads, args.serial_seconds, notify)
                log(f"  {args.serial_threads} committers, notify={notify}: {got}")
                results["notify_serial"].append(got)
        for round_ in range(args.runs):
            order = args.procs if round_ % 2 == 0 else args.procs[::-1]
            log(f"round {round_ + 1}/{args.runs}: {order}")
            for procs in order:
                results["burndown"].append(s.burndown_run(procs, args.timeout))
        for round_ in range(args.runs):
            order = args.procs if round_ % 2 == 0 else args.procs[::-1]
            for procs in order:
                results["herd"].append(s.herd_run(procs, args.herd_jobs, args.herd_interval))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"{results['command']}: {started} – {results['finished']}")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
