"""The workloads. Each function measures one run in a fresh :class:`Scenario` and returns
``{metric: value}``; it raises :class:`Unsupported` (a note) or any other exception (an
error) when it cannot.

Metrics: ``enqueue_single``, ``enqueue_bulk``, ``burndown``, ``steady`` (jobs/s);
``wakeup_p50|p95|p99`` (ms); ``http_rps`` (requests/s), ``http_p50|p99`` (ms);
``claim_p50|p99`` at each backlog size (ms); ``claim_idle_p50|p99``,
``claim_prune_p50|p99`` (ms), ``claim_p99_ratio``, ``prune_rate`` (rows/s) and
``prune_seconds`` for the prune workload (:func:`prune`, in ``bench/pruning.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.adapters.base import Adapter
from bench.common import (
    POSTGRES,
    REPO_ROOT,
    BenchError,
    Scenario,
    count_records,
    percentile,
    read_records,
    wait_for_records,
    wait_until,
)


@dataclass(frozen=True)
class Params:
    jobs: int = 10_000
    bulk_chunk: int = 1_000
    steady_seconds: float = 5.0
    steady_warmup: float = 1.0
    steady_chunk: int = 100
    steady_max_backlog: int = 1_000
    wakeup_jobs: int = 200
    wakeup_interval: float = 0.020
    wakeup_idle: float = 1.0
    backlog_sizes: tuple[int, ...] = (1_000, 1_000_000)
    backlog_claims: int = 200
    #: the burn-down case: this many due jobs in a fresh table, no ANALYZE
    backlog_pending: int = 10_000
    http_seconds: float = 10.0
    http_connections: int = 200
    #: a burn-down slower than this (seconds) is measured on the jobs done by then
    burndown_cap: float = 20.0
    #: the prune workload: completed jobs due for pruning, and its idle / pruning windows
    prune_rows: int = 1_000_000
    prune_window: float = 2.0


def _with_adapter(cls: type[Adapter], ctx: Scenario) -> Adapter:
    adapter = cls(ctx)
    try:
        adapter.setup()
    except BaseException:
        with contextlib.suppress(Exception):
            adapter.teardown()
        raise
    return adapter


# -- enqueue ---------------------------------------------------------------------------


def enqueue_single(cls: type[Adapter], ctx: Scenario, p: Params) -> dict[str, float]:
    adapter = _with_adapter(cls, ctx)
    try:
        numbers = range(p.jobs)
        start = time.perf_counter()
        adapter.enqueue_single(numbers)
        elapsed = time.perf_counter() - start
        _check_queued(adapter, p.jobs)
    finally:
        adapter.teardown()
    return {"enqueue_single": p.jobs / elapsed}


def enqueue_bulk(cls: type[Adapter], ctx: Scenario, p: Params) -> dict[str, float]:
    adapter = _with_adapter(cls, ctx)
    try:
        numbers = range(p.jobs)
        start = time.perf_counter()
        adapter.enqueue_bulk(numbers, p.bulk_chunk)
        elapsed = time.perf_counter() - start
        _check_queued(adapter, p.jobs)
    finally:
        adapter.teardown()
    return {"enqueue_bulk": p.jobs / elapsed}


def _check_queued(adapter: Adapter, expected: int) -> None:
    queued = adapter.remaining()
    if queued != expected:
        raise BenchError(f"expected {expected} queued jobs, the database has {queued}")


# -- processing ------------------------------------------------------------------------


def burndown(cls: type[Adapter], ctx: Scenario, p: Params) -> dict[str, float]:
    """Queue ``jobs`` no-op jobs, then start the workers; time until all are done (every
    handler ran and the library's tables show no unfinished job). A library that needs
    more than ``burndown_cap`` seconds is measured on the jobs its handlers ran by then
    (``burndown_partial`` 1), so one slow peer cannot stretch the run by minutes."""
    adapter = _with_adapter(cls, ctx)
    partial = False
    try:
        adapter.fill(range(p.jobs))
        _check_queued(adapter, p.jobs)
        handle = adapter.start_workers()
        try:
            start = time.monotonic()
            handle.go()
            try:
                wait_for_records(ctx.records, p.jobs, p.burndown_cap, check=handle.check_alive)
            except BenchError:
                if count_records(ctx.records) == 0:
                    raise
                partial = True
                end = time.monotonic()
                done = count_records(ctx.records)
            else:
                end = wait_until(lambda: adapter.remaining() == 0, 60, "the last completions")
                done = p.jobs
        finally:
            handle.stop()
        _check_no_duplicates(ctx, done if partial else p.jobs, at_least=partial)
    finally:
        adapter.teardown()
    return {"burndown": done / (end - start), "burndown_partial": float(partial)}


def _check_no_duplicates(ctx: Scenario, expected: int, *, at_least: bool = False) -> None:
    """Every handler run was a different job, and ``expected`` of them ran (or, for a
    measurement cut short while workers were still stopping, at least that many)."""
    unique = len(read_records(ctx.records))
    total = count_records(ctx.records)
    if unique != total or (unique < expected if at_least else unique != expected):
        raise BenchError(f"{total} handler runs for {unique} distinct jobs (expected {expected})")


def steady(cls: type[Adapter], ctx: Scenario, p: Params) -> dict[str, float]:
    """An enqueuer (chunks of ``steady_chunk``, backlog kept under ``steady_max_backlog``)
    and the workers together; completions per second over ``steady_seconds`` after a
    ``steady_warmup``."""
    adapter = _with_adapter(cls, ctx)
    samples: dict[str, tuple[float, int]] = {}
    try:
        handle = adapter.start_workers()
        try:
            start = time.monotonic()
            window_start = start + p.steady_warmup
            window_end = window_start + p.steady_seconds

            def sample() -> None:
                for name, at in (("start", window_start), ("end", window_end)):
                    time.sleep(max(0.0, at - time.monotonic()))
                    samples[name] = (time.monotonic(), count_records(ctx.records))

            sampler = threading.Thread(target=sample, daemon=True)
            handle.go()
            sampler.start()
            sent = adapter.enqueue_steady(
                0,
                window_end,
                p.steady_chunk,
                lambda sent: sent - count_records(ctx.records) < p.steady_max_backlog,
            )
            sampler.join(5)
            handle.check_alive()
        finally:
            handle.stop()
    finally:
        adapter.teardown()
    if "end" not in samples:
        raise BenchError("the sampler did not finish")
    (t0, c0), (t1, c1) = samples["start"], samples["end"]
    if c1 - c0 <= 0:
        raise BenchError(f"no job completed in the window ({sent} enqueued)")
    return {"steady": (c1 - c0) / (t1 - t0), "steady_enqueued": sent / (window_end - start)}


def wakeup(cls: type[Adapter], ctx: Scenario, p: Params) -> dict[str, float]:
    """Idle workers; ``wakeup_jobs`` jobs enqueued ``wakeup_interval`` apart; latency from
    the enqueue call's return to the handler's start."""
    adapter = _with_adapter(cls, ctx)
    try:
        handle = adapter.start_workers()
        try:
            handle.go()
            time.sleep(p.wakeup_idle)  # let them go idle
            numbers = range(p.wakeup_jobs)
            returned = adapter.enqueue_paced(numbers, p.wakeup_interval)
            wait_for_records(ctx.records, p.wakeup_jobs, 60, check=handle.check_alive)
        finally:
            handle.stop()
    finally:
        adapter.teardown()
    starts = read_records(ctx.records)
    latencies = [(starts[n] - returned[n]) / 1e6 for n in numbers]
    return {
        "wakeup_p50": percentile(latencies, 50),
        "wakeup_p95": percentile(latencies, 95),
        "wakeup_p99": percentile(latencies, 99),
    }


# -- backlog scaling (pocketjobs only) -------------------------------------------------


def size_label(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1_000 and size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def backlog(
    ctx: Scenario, size: int, runs: int, p: Params, *, pending: int = 0, analyze: bool = True
) -> dict[str, Any]:
    """Claim latency of a 10-job batch with ``size`` finished rows in ``_jobs``, through
    the driver (``driver.jobs_claim(app.db, ...)``), ``backlog_claims`` claims per run,
    each batch completed afterwards (untimed). Each run starts with ``max(pending,
    backlog_claims * 10)`` due jobs. ``analyze``: ``ANALYZE`` after the finished rows are
    inserted (as autovacuum would on a table that size); without it the planner works from
    whatever statistics the fresh table has, as in a burst of enqueues. Returns per-run
    p50/p99 lists, the insert time and the claim's ``EXPLAIN`` (taken before run 1)."""
    import uuid
    from datetime import timedelta

    from bench.adapters.pocketjobs_adapter import (
        TOPIC,
        claim_plan,
        insert_finished_rows,
        prepare_scenario_app,
    )
    from pocketjobs.core.times import now_utc
    from pocketjobs.plugins.jobs.drivers import Claim, ClaimParams, Outcomes

    def enqueue(count: int) -> None:
        for first in range(0, count, 1000):
            store.enqueue_many(TOPIC, list(range(first, min(first + 1000, count))))

    app, store, driver = prepare_scenario_app(ctx)
    try:
        start = time.perf_counter()
        insert_finished_rows(app, size, analyze=analyze)
        insert_seconds = time.perf_counter() - start
        p50s: list[float] = []
        p99s: list[float] = []
        plan_sql, plan = "", ""
        lock = timedelta(minutes=5)
        per_run = p.backlog_claims * 10
        enqueue(max(0, pending - per_run))
        for run in range(runs):
            enqueue(per_run)
            if run == 0:
                plan_sql, plan = claim_plan(app, driver)
            latencies: list[float] = []
            for _ in range(p.backlog_claims):
                now = now_utc()
                token = uuid.uuid4().hex
                params = ClaimParams([TOPIC], 10, now, now + lock, token)
                t = time.perf_counter()
                claimed = driver.jobs_claim(app.db, params)
                latencies.append((time.perf_counter() - t) * 1000)
                if len(claimed) != 10:
                    raise BenchError(f"a claim returned {len(claimed)} jobs, expected 10")
                completed = [Claim(job.id, token) for job in claimed]
                driver.jobs_settle(app.db, Outcomes(now_utc(), completed))
            p50s.append(percentile(latencies, 50))
            p99s.append(percentile(latencies, 99))
    finally:
        app.terminate()
    return {
        "claim_p50": p50s,
        "claim_p99": p99s,
        "insert_seconds": insert_seconds,
        "plan_sql": plan_sql,
        "plan": plan,
    }


# -- claim latency while pruning (pocketjobs only) ---------------------------------------


def prune(ctx: Scenario, p: Params) -> dict[str, float]:
    """Claim p50/p99 with nothing else running vs while ``retention.prune`` deletes
    ``prune_rows`` completed jobs (default batch and pause), interleaved in windows of
    ``prune_window`` seconds; see :func:`bench.pruning.claims_while_pruning`."""
    from bench.pruning import PruneParams, claims_while_pruning

    return claims_while_pruning(ctx, PruneParams(rows=p.prune_rows, window=p.prune_window))


# -- HTTP enqueue through serve (pocketjobs only) --------------------------------------

EXAMPLE_APP = REPO_ROOT / "examples" / "base" / "main.py"
SUPERUSER = ("bench@example.com", "bench-password-123")
HTTP_TOPIC = "bench:http"  # no handler: the jobs stay pending, only enqueue is measured


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "httpx"


def http_enqueue(ctx: Scenario, p: Params) -> dict[str, float]:
    """``examples/base/main.py serve`` on the scenario's database; a superuser token; then
    ``http_connections`` concurrent connections POSTing ``/api/jobs/enqueue`` for
    ``http_seconds`` (wrk when installed, else an httpx async client)."""
    import httpx

    data_dir = ctx.tmp / "pb_data"
    base = [sys.executable, str(EXAMPLE_APP), "--dir", str(data_dir)]
    if ctx.db == POSTGRES:
        base += ["--db", str(ctx.pg_url)]
    env = {k: v for k, v in os.environ.items() if k != "PB_DATABASE_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [*base, "superuser", "upsert", *SUPERUSER],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"superuser upsert failed: {done.stderr.strip()[-500:]}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = ctx.tmp / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [*base, "serve", "--http", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(server, url, log_path)
            auth = httpx.post(
                f"{url}/api/collections/_superusers/auth-with-password",
                json={"identity": SUPERUSER[0], "password": SUPERUSER[1]},
                timeout=30,
            )
            if auth.status_code != 200:
                raise BenchError(f"superuser login failed: {auth.status_code} {auth.text[:300]}")
            token = auth.json()["token"]
            body = {"topic": HTTP_TOPIC, "payload": {"n": 1}}
            probe = httpx.post(
                f"{url}/api/jobs/enqueue", json=body, headers={"Authorization": token}, timeout=30
            )
            if probe.status_code != 200:
                raise BenchError(f"enqueue probe failed: {probe.status_code} {probe.text[:300]}")
            if load_generator() == "wrk":
                figures = _run_wrk(url, token, body, ctx.tmp, p)
            else:
                figures = _run_httpx(url, token, body, p)
            _check_stored(ctx, data_dir, figures, p)
            return figures
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(20)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(5)


def _check_stored(ctx: Scenario, data_dir: Path, figures: dict[str, float], p: Params) -> None:
    """Every answered enqueue (and the probe) is a row; at most the requests still in
    flight when the load generator stopped are rows nobody saw answered."""
    sql = f"SELECT count(*) FROM _jobs WHERE topic = '{HTTP_TOPIC}'"
    stored = ctx.count_sql(sql, data_dir / "data.db") - 1  # the probe
    answered = int(figures.pop("http_answered"))
    if not answered <= stored <= answered + p.http_connections:
        raise BenchError(f"{answered} enqueues answered 200 but {stored} jobs stored")


def _wait_healthy(server: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"serve exited: {log_path.read_text(errors='replace')[-800:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError("serve did not become healthy in 60 s")


_WRK_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _run_wrk(url: str, token: str, body: dict[str, Any], tmp: Path, p: Params) -> dict[str, float]:
    script = tmp / "enqueue.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = {json.dumps(token)}\n'
    )
    # One wrk thread: the server gets the other core.
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{p.http_connections}",
            f"-d{max(1, round(p.http_seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"{url}/api/jobs/enqueue",
        ],
        capture_output=True,
        text=True,
        timeout=p.http_seconds + 60,
    )
    out = done.stdout
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr.strip()[-500:]}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = {q: float(v) * _UNITS[u] for q, v, u in _WRK_LATENCY.findall(out)}
    if not rps or "50" not in lat or "99" not in lat:
        raise BenchError(f"could not parse wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if bad and int(bad.group(1)) > 0:
        raise BenchError(f"{bad.group(1)} non-2xx responses during the load test")
    if errors:
        raise BenchError(f"wrk reported {errors.group(0).strip()}")
    answered = re.search(r"(\d+) requests in", out)
    if not answered:
        raise BenchError(f"could not parse wrk output:\n{out}")
    return {
        "http_rps": float(rps.group(1)),
        "http_p50": lat["50"],
        "http_p99": lat["99"],
        "http_answered": float(answered.group(1)),
    }


def _run_httpx(url: str, token: str, body: dict[str, Any], p: Params) -> dict[str, float]:
    import asyncio

    import httpx

    latencies: list[float] = []
    failures = 0

    async def main() -> float:
        nonlocal failures
        limits = httpx.Limits(max_connections=p.http_connections)
        async with httpx.AsyncClient(
            base_url=url, limits=limits, headers={"Authorization": token}, timeout=30
        ) as client:
            start = time.perf_counter()
            stop_at = start + p.http_seconds

            async def user() -> None:
                nonlocal failures
                while time.perf_counter() < stop_at:
                    t = time.perf_counter()
                    response = await client.post("/api/jobs/enqueue", json=body)
                    latencies.append((time.perf_counter() - t) * 1000)
                    if response.status_code != 200:
                        failures += 1

            await asyncio.gather(*(user() for _ in range(p.http_connections)))
            return time.perf_counter() - start

    elapsed = asyncio.run(main())
    if failures:
        raise BenchError(f"{failures} failed requests during the load test")
    return {
        "http_rps": len(latencies) / elapsed,
        "http_p50": percentile(latencies, 50),
        "http_p99": percentile(latencies, 99),
        "http_answered": float(len(latencies)),
    }
