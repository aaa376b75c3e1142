# ruff: noqa: RUF001, RUF002 - the tables use typographic signs on purpose
"""Outputs: the markdown table, the JSON file and the PNG chart.

``python -m bench.report [bench/results/results.json]`` re-renders the markdown and the
chart from a JSON file.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import DB_LABELS, POSTGRES, SQLITE, fmt_num

#: metric -> (column title, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "enqueue_single": ("Enqueue 1-by-1", "jobs/s", True),
    "enqueue_bulk": ("Enqueue bulk", "jobs/s", True),
    "burndown": ("Burn-down", "jobs/s", True),
    "steady": ("Steady state", "jobs/s", True),
    "wakeup_p50": ("Wake-up p50", "ms", False),
    "wakeup_p95": ("Wake-up p95", "ms", False),
    "wakeup_p99": ("Wake-up p99", "ms", False),
    "http_rps": ("HTTP enqueue", "req/s", True),
    "http_p50": ("HTTP p50", "ms", False),
    "http_p99": ("HTTP p99", "ms", False),
}
MAIN_COLUMNS = [
    "enqueue_single",
    "enqueue_bulk",
    "burndown",
    "steady",
    "wakeup_p50",
    "wakeup_p95",
    "wakeup_p99",
]
#: which workload produces which metrics (for errors and notes)
WORKLOAD_METRICS = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "burndown": ["burndown"],
    "steady": ["steady"],
    "wakeup": ["wakeup_p50", "wakeup_p95", "wakeup_p99"],
    "http": ["http_rps", "http_p50", "http_p99"],
}


def cell(stat: dict[str, Any] | None) -> str:
    if not stat or not stat.get("values"):
        return "—"
    if len(stat["values"]) == 1:
        return fmt_num(stat["median"])
    return f"{fmt_num(stat['median'])} ({fmt_num(stat['min'])}–{fmt_num(stat['max'])})"


def _row_cell(row: dict[str, Any], metric: str, footnotes: list[str]) -> str:
    for workload, metrics in WORKLOAD_METRICS.items():
        if metric not in metrics:
            continue
        if workload in row.get("errors", {}) and metric not in row.get("metrics", {}):
            footnotes.append(
                f"{row['label']} ({DB_LABELS[row['db']]}), {workload}: {row['errors'][workload]}"
            )
            return f"error [{len(footnotes)}]"
        if workload in row.get("notes", {}):
            footnotes.append(
                f"{row['label']} ({DB_LABELS[row['db']]}), {workload}: {row['notes'][workload]}"
            )
            return f"n/a [{len(footnotes)}]"
    text = cell(row.get("metrics", {}).get(metric))
    partial = row.get("metrics", {}).get("burndown_partial")
    if metric == "burndown" and partial and any(partial.get("values") or ()):
        footnotes.append(
            f"{row['label']} ({DB_LABELS[row['db']]}), burndown: measured on the jobs its "
            "handlers ran in the first 20 s (all of them would take minutes)"
        )
        text += f" [{len(footnotes)}]"
    return text


def _find(
    results: dict[str, Any], db: str, library: str, label: str | None = None
) -> list[dict[str, Any]]:
    return [
        r
        for r in results["rows"]
        if r["db"] == db and r["library"] == library and (label is None or r["label"] == label)
    ]


def _median(row: dict[str, Any] | None, metric: str) -> float | None:
    if row is None:
        return None
    stat = row.get("metrics", {}).get(metric)
    return stat["median"] if stat and stat.get("values") else None


def _best(rows: list[dict[str, Any]], metric: str) -> tuple[float | None, str]:
    found = [(_median(r, metric), r["label"]) for r in rows]
    found = [(v, label) for v, label in found if v is not None]
    if not found:
        return None, ""
    return max(found)


def _paired_ratio(
    db: str, on: dict[str, Any] | None, off: dict[str, Any], goal: float
) -> dict[str, Any]:
    """Burn-down with metrics / without, as the median of the ratios of the runs (each run
    measures the two one after the other, so a machine that is busier in some runs than in
    others moves both of a pair)."""
    name = f"{DB_LABELS[db]} burn-down with metrics ≥ {goal}× metrics off (median of run pairs)"
    with_metrics = (on or {}).get("metrics", {}).get("burndown", {}).get("values", [])
    without = off.get("metrics", {}).get("burndown", {}).get("values", [])
    pairs = [a / b for a, b in zip(with_metrics, without, strict=False) if b > 0]
    if not pairs:
        return {"target": name, "value": None, "goal": goal, "met": None, "detail": "not measured"}
    value = statistics.median(pairs)
    return {
        "target": name,
        "value": value,
        "goal": goal,
        "met": value >= goal,
        "kind": "ratio",
        "detail": f"runs {', '.join(f'{p:.2f}' for p in pairs)}; medians "
        f"{fmt_num(_median(on, 'burndown'))} vs {fmt_num(_median(off, 'burndown'))} jobs/s",
    }


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issue 6 item 3, as ratios measured in this run."""
    targets: list[dict[str, Any]] = []

    def pj(db: str, label: str = "pocketjobs") -> dict[str, Any] | None:
        rows = _find(results, db, "pocketjobs", label)
        return rows[0] if rows else None

    def ratio(
        name: str, ours: float | None, theirs: float | None, goal: float, versus: str
    ) -> None:
        if ours is None or theirs is None or theirs <= 0:
            targets.append(
                {"target": name, "value": None, "goal": goal, "met": None, "detail": "not measured"}
            )
            return
        value = ours / theirs
        targets.append(
            {
                "target": name,
                "value": value,
                "goal": goal,
                "met": value >= goal,
                "detail": f"{fmt_num(ours)} vs {fmt_num(theirs)} ({versus})",
                "kind": "ratio",
            }
        )

    pg, lite = pj(POSTGRES), pj(SQLITE)
    best_pgq, pgq_label = _best(_find(results, POSTGRES, "pgqueuer"), "burndown")
    ratio(
        "PostgreSQL burn-down ≥ 2× pgqueuer's best", _median(pg, "burndown"), best_pgq, 2, pgq_label
    )
    best_pro, pro_label = _best(_find(results, POSTGRES, "procrastinate"), "burndown")
    ratio(
        "PostgreSQL burn-down ≥ 10× procrastinate", _median(pg, "burndown"), best_pro, 10, pro_label
    )
    best_huey, huey_label = _best(_find(results, SQLITE, "huey"), "burndown")
    ratio("SQLite burn-down ≥ 5× huey's best", _median(lite, "burndown"), best_huey, 5, huey_label)
    for db, row, what in (
        (POSTGRES, pg, "worker process, LISTEN/NOTIFY"),
        (SQLITE, pj(SQLITE, "pocketjobs (in-process)"), "in-process"),
    ):
        for metric, goal in (("wakeup_p50", 1.5), ("wakeup_p99", 5.0)):
            value = _median(row, metric)
            targets.append(
                {
                    "target": f"{DB_LABELS[db]} wake-up {metric[-3:]} ≤ {goal} ms ({what})",
                    "value": value,
                    "goal": goal,
                    "kind": "max",
                    "met": None if value is None else value <= goal,
                    "detail": "not measured" if value is None else f"{fmt_num(value)} ms",
                }
            )
    best_pgq_single, label = _best(_find(results, POSTGRES, "pgqueuer"), "enqueue_single")
    ratio(
        "PostgreSQL single enqueue ≥ pgqueuer",
        _median(pg, "enqueue_single"),
        best_pgq_single,
        1,
        label,
    )
    best_huey_single, label = _best(_find(results, SQLITE, "huey"), "enqueue_single")
    ratio(
        "SQLite single enqueue ≥ 5× huey",
        _median(lite, "enqueue_single"),
        best_huey_single,
        5,
        label,
    )
    best_pgq_bulk, label = _best(_find(results, POSTGRES, "pgqueuer"), "enqueue_bulk")
    ratio(
        "PostgreSQL enqueue_many ≥ pgqueuer bulk",
        _median(pg, "enqueue_bulk"),
        best_pgq_bulk,
        1,
        label,
    )
    ratio(
        "SQLite enqueue_many ≥ pgqueuer bulk (PostgreSQL)",
        _median(lite, "enqueue_bulk"),
        best_pgq_bulk,
        1,
        label,
    )
    # The cost of the metrics (every attempt counted): at most 5% of the burn-down.
    for db, row in ((POSTGRES, pg), (SQLITE, lite)):
        off = pj(db, "pocketjobs (metrics off)")
        if off is not None:
            targets.append(_paired_ratio(db, row, off, 0.95))
    for db in (POSTGRES, SQLITE):
        entries = sorted(
            (
                b
                for b in results.get("backlog", [])
                if b["db"] == db and b.get("claim_p50") and b.get("kind", "finished") == "finished"
            ),
            key=lambda b: b["size"],
        )
        if len(entries) >= 2:
            small, big = entries[0], entries[-1]
            value = big["claim_p50"]["median"] / small["claim_p50"]["median"]
            targets.append(
                {
                    "target": f"{DB_LABELS[db]} claim p50 at {big['size_label']} finished "
                    f"< 2× at {small['size_label']}",
                    "value": value,
                    "goal": 2.0,
                    "kind": "max",
                    "met": value < 2.0,
                    "detail": f"{fmt_num(big['claim_p50']['median'])} ms vs "
                    f"{fmt_num(small['claim_p50']['median'])} ms",
                }
            )
    return targets


def render_markdown(results: dict[str, Any]) -> str:
    meta, machine = results["meta"], results["machine"]
    lines: list[str] = []
    add = lines.append
    add("# pocketjobs benchmark results")
    add("")
    runs = meta["runs"]
    add(
        f"Generated {meta['generated']} by `{meta['command']}` in {meta['wall_seconds']:.0f} s. "
        + (
            f"Each figure is the median of {runs} runs with its range (min–max)."
            if runs > 1
            else "One run per figure (smoke test)."
        )
    )
    add("")
    libs = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items())
    pg_settings = ", ".join(f"{k}={v}" for k, v in machine.get("postgres_settings", {}).items())
    add(
        f"**Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}; Python {machine['python']}; SQLite {machine['sqlite']}; "
        f"PostgreSQL {machine.get('postgres') or 'n/a'}"
        + (f" ({pg_settings})" if pg_settings else "")
        + f". Libraries: {libs}."
        + (
            f" Load average (1/5/15 min) before the run {'/'.join(machine['loadavg_before'])}, "
            f"after {'/'.join(machine['loadavg'])}."
            if machine.get("loadavg_before") and machine.get("loadavg")
            else ""
        )
    )
    add("")
    p = meta["params"]
    add(
        f"**Workloads:** {p['jobs']:,} no-op jobs for enqueue (1-by-1: one call per job; bulk: "
        f"chunks of {p['bulk_chunk']:,}) and burn-down (jobs queued first, then the workers "
        f"started; time until every job is done); steady state: an enqueuer (chunks of "
        f"{p['steady_chunk']}, backlog ≤ {p['steady_max_backlog']:,}) and the workers together, "
        f"completed jobs/s over {p['steady_seconds']:g} s after {p['steady_warmup']:g} s warm-up; "
        f"wake-up: idle workers, {p['wakeup_jobs']} jobs enqueued {p['wakeup_interval'] * 1000:g} "
        f"ms apart, latency from the enqueue call's return to the handler's start. Concurrency 10 "
        f"everywhere; every handler does the same no-op (appends a 16-byte record). A fresh "
        f"database per measurement. Throughput in jobs/s (higher is better), latency in ms "
        f"(lower is better)."
    )
    add("")
    footnotes: list[str] = []
    header = ["Database", "Library (configuration)"] + [
        f"{METRICS[m][0]} ({METRICS[m][1]})" for m in MAIN_COLUMNS
    ]
    add("| " + " | ".join(header) + " |")
    add("|" + "|".join(["---", "---"] + ["---:"] * len(MAIN_COLUMNS)) + "|")
    for row in results["rows"]:
        if not any(
            w in row.get("workloads", [])
            for w in ("enqueue_single", "enqueue_bulk", "burndown", "steady", "wakeup")
        ):
            continue
        cells = [DB_LABELS[row["db"]], row["label"]]
        for metric in MAIN_COLUMNS:
            workload = next(w for w, ms in WORKLOAD_METRICS.items() if metric in ms)
            if workload not in row.get("workloads", []):
                cells.append("—")
            else:
                cells.append(_row_cell(row, metric, footnotes))
        add("| " + " | ".join(cells) + " |")
    add("")

    http_rows = [r for r in results["rows"] if "http" in r.get("workloads", [])]
    if http_rows:
        add(
            f"## HTTP enqueue through `serve` (pocketjobs)\n\n`examples/base/main.py serve`, a "
            f"superuser token, {p['http_connections']} concurrent connections POSTing "
            f"`/api/jobs/enqueue` for {p['http_seconds']:g} s with {meta.get('load_generator')} "
            f"(one thread) on the same machine."
        )
        add("")
        add("| Database | Requests/s | p50 (ms) | p99 (ms) |")
        add("|---|---:|---:|---:|")
        for row in http_rows:
            add(
                "| "
                + " | ".join(
                    [
                        DB_LABELS[row["db"]],
                        _row_cell(row, "http_rps", footnotes),
                        _row_cell(row, "http_p50", footnotes),
                        _row_cell(row, "http_p99", footnotes),
                    ]
                )
                + " |"
            )
        add("")

    backlog = results.get("backlog", [])
    if backlog:
        add(
            f"## Backlog scaling (pocketjobs)\n\nLatency of one claim of a 10-job batch through "
            f"the driver (`driver.jobs_claim(app.db, ...)`) with N finished rows in `_jobs`, "
            f"`ANALYZE`d as autovacuum would ({p['backlog_claims']} claims per run, each batch "
            f"completed afterwards). The last row per database is the state of a burn-down: a "
            f"fresh table with {p.get('backlog_pending', 0):,} due jobs and no `ANALYZE` yet."
        )
        add("")
        add(
            "| Database | Finished rows | Due jobs | Statistics | Claim p50 (ms) | Claim p99 (ms) "
            "| Rows inserted in |"
        )
        add("|---|---:|---:|---|---:|---:|---:|")
        for entry in backlog:
            head = (
                f"| {DB_LABELS[entry['db']]} | {entry['size']:,} | "
                f"{entry.get('pending_label', '')} | "
                f"{'ANALYZE' if entry.get('analyze', True) else 'fresh table'} |"
            )
            if entry.get("error"):
                footnotes.append(
                    f"backlog {DB_LABELS[entry['db']]} {entry['size_label']}: {entry['error']}"
                )
                add(f"{head} error [{len(footnotes)}] | | |")
                continue
            add(
                f"{head} {cell(entry['claim_p50'])} | {cell(entry['claim_p99'])} | "
                f"{entry['insert_seconds']:.1f} s |"
            )
        add("")

    prune = [e for e in results.get("prune", []) if e.get("metrics") or e.get("error")]
    if prune:
        rows = prune[0].get("rows", 0)
        add(
            f"## Claim latency while pruning (pocketjobs)\n\n{rows:,} completed jobs due for "
            f"pruning, a steady stream of new jobs (10 every 10 ms) and one claim of a 10-job "
            f"batch every 10 ms through the driver (`driver.jobs_claim`, only that call timed; "
            f"each batch completed afterwards), first with nothing else running (idle), then "
            f"while `retention.prune` (default batch and pause) deletes the {rows:,} rows on "
            f"another thread; idle and pruning windows of {prune[0].get('window', 0):g} s "
            f"alternate until the prune is done. Ratio: the median of the runs' p99 pruning / "
            f"p99 idle. Prune rate: rows over the time spent in `prune`."
        )
        add("")
        add(
            "| Database | Claim p50 idle (ms) | Claim p50 pruning (ms) | Claim p99 idle (ms) "
            "| Claim p99 pruning (ms) | p99 pruning / idle | Prune rate (rows/s) "
            "| Prune time (s) |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for entry in prune:
            if entry.get("error"):
                footnotes.append(f"prune {DB_LABELS[entry['db']]}: {entry['error']}")
                add(f"| {DB_LABELS[entry['db']]} | error [{len(footnotes)}] | | | | | | |")
                continue
            m = entry["metrics"]
            ratio = m.get("claim_p99_ratio")
            ratio_text = (
                "—"
                if not ratio or not ratio.get("values")
                else f"{ratio['median']:.2f}×"
                + (f" ({ratio['min']:.2f}–{ratio['max']:.2f})" if len(ratio["values"]) > 1 else "")
            )
            add(
                f"| {DB_LABELS[entry['db']]} | {cell(m.get('claim_idle_p50'))} "
                f"| {cell(m.get('claim_prune_p50'))} | {cell(m.get('claim_idle_p99'))} "
                f"| {cell(m.get('claim_prune_p99'))} | {ratio_text} "
                f"| {cell(m.get('prune_rate'))} | {cell(m.get('prune_seconds'))} |"
            )
        add("")

    targets = results.get("targets") or []
    if targets:
        add("## Targets (issue 6, item 3), measured in this run")
        add("")
        add("| Target | Measured | Met |")
        add("|---|---|:-:|")
        for t in targets:
            if t["value"] is None:
                measured = t["detail"]
            elif t.get("kind") == "ratio" or "claim" in t["target"]:
                measured = f"{t['value']:.2f}× — {t['detail']}"
            else:
                measured = t["detail"]
            met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
            add(f"| {t['target']} | {measured} | {met} |")
        add("")

    notes = results.get("notes") or []
    if notes or footnotes:
        add("## Notes")
        add("")
        for index, text in enumerate(footnotes, 1):
            add(f"{index}. {_one_line(text)}")
        if footnotes:
            add("")
        for note in notes:
            add(f"- {note}")
        add("")

    plans = [b for b in backlog if b.get("plan")]
    if plans:
        add("## Claim query plans")
        add("")
        for entry in plans:
            kind = "EXPLAIN (ANALYZE, BUFFERS)" if entry["db"] == POSTGRES else "EXPLAIN QUERY PLAN"
            state = (
                f"{entry['size']:,} finished rows"
                if entry.get("kind", "finished") == "finished"
                else f"fresh table, {entry.get('pending_label')} due jobs, no ANALYZE"
            )
            add(f"{DB_LABELS[entry['db']]}, {state} — `{kind}`:")
            add("")
            add("```")
            add(entry["plan"])
            add("```")
            add("")
    if results.get("chart"):
        add(f"![chart]({results['chart']})")
        add("")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: throughput (left) and wake-up latency (right), one row per database;
    error bars span the min–max of the runs; log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = [db for db in (POSTGRES, SQLITE) if any(r["db"] == db for r in results["rows"])]
    if not dbs:
        return
    throughput = ["enqueue_single", "enqueue_bulk", "burndown", "steady", "http_rps"]
    latency = ["wakeup_p50", "wakeup_p95", "wakeup_p99"]
    fig, axes = plt.subplots(len(dbs), 2, figsize=(16, 6.2 * len(dbs)), squeeze=False)
    palette = plt.get_cmap("tab10")
    labels = list(dict.fromkeys(r["label"] for r in results["rows"]))
    color_of = {label: palette(i % 10) for i, label in enumerate(labels)}
    for r_index, db in enumerate(dbs):
        rows = [r for r in results["rows"] if r["db"] == db]
        for c_index, metrics in enumerate((throughput, latency)):
            ax = axes[r_index][c_index]
            present = [m for m in metrics if any(_median(r, m) is not None for r in rows)]
            series = [r for r in rows if any(_median(r, m) is not None for m in present)]
            if not present or not series:
                ax.set_visible(False)
                continue
            width = 0.8 / len(series)
            for s_index, row in enumerate(series):
                xs, heights, lows, highs = [], [], [], []
                for m_index, metric in enumerate(present):
                    stat = row.get("metrics", {}).get(metric)
                    if not stat or not stat.get("values"):
                        continue
                    xs.append(m_index - 0.4 + width * (s_index + 0.5))
                    heights.append(stat["median"])
                    lows.append(stat["median"] - stat["min"])
                    highs.append(stat["max"] - stat["median"])
                bars = ax.bar(
                    xs,
                    heights,
                    width * 0.95,
                    yerr=[lows, highs],
                    capsize=2,
                    label=row["label"],
                    color=color_of[row["label"]],
                )
                for bar, height in zip(bars, heights, strict=True):
                    ax.annotate(
                        fmt_num(height),
                        (bar.get_x() + bar.get_width() / 2, height),
                        ha="center",
                        va="bottom",
                        fontsize=6,
                        rotation=90,
                        xytext=(0, 2),
                        textcoords="offset points",
                    )
            ax.set_xticks(range(len(present)))
            ax.set_xticklabels([METRICS[m][0] for m in present])
            ax.set_yscale("log")
            unit = "jobs/s (req/s for HTTP)" if c_index == 0 else "ms (lower is better)"
            ax.set_ylabel(unit)
            kind = "Throughput (higher is better)" if c_index == 0 else "Wake-up latency"
            ax.set_title(f"{DB_LABELS[db]} — {kind}")
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.legend(
                fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, frameon=False
            )
    machine = results["machine"]
    fig.suptitle(
        f"pocketjobs vs peers — {machine['cpu']}, {machine['cores']} cores; "
        f"median of {results['meta']['runs']} run(s), bars span min–max",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_path = out_dir / "chart.png"
    results["targets"] = compute_targets(results)
    try:
        render_chart(results, chart_path)
        results["chart"] = chart_path.name
    except Exception as exc:  # a chart problem must not lose the numbers
        results.setdefault("notes", []).append(f"chart not drawn: {exc}")
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    md_path = out_dir / "results.md"
    md_path.write_text(render_markdown(results))
    return md_path, json_path, chart_path


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/results.json")
    results = json.loads(path.read_text())
    md_path, _, _ = write_outputs(results, path.parent)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
