"""Turn a benchmark's results into files: JSON, a Markdown table, PNG charts, and the index.

* ``<out>/<scale>/bench.json``: everything measured (the source of the other files);
* ``<out>/<scale>/bench.md``: the measures against the targets, then the runs, one table
  per run with a row per job (full, no-op, incremental), the backfill, where the time went;
* ``<out>/<scale>/bench.png``: seconds of each run beside the floor and the peer, and
  seconds per job of the full run;
* ``<out>/README.md`` and ``<out>/scaling.png``: the machine, and every scale measured so far,
  with a link to ``<out>/ANALYSIS.md`` (hand-written: the targets read against the profiles)
  when that file exists.

Results of the earlier format (``format`` absent: one process per layer, before the job
graph's runner) are not rebuilt: their ``bench.md`` and ``bench.png`` stay as written, and
the index lists them in a table of their own.

    python -m bench.report bench/results      # rebuild every bench.md/png and the index from the JSON
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# A hand-written reading of the results (targets, gaps, profiles), kept beside the generated index.
ANALYSIS = "ANALYSIS.md"
FORMAT = 2  # bench.run.RESULTS_FORMAT (not imported: this module reads results without the pipeline)
_RATIO_LABELS = {
    "noop_over_full": "no-op run / full run",
    "incremental_over_full": "incremental day / full run",
    "full_over_floor": "full run / Spark floor",
    "backfill_daily_over_blocks": "bronze backfill: 120 daily folders / 12 folders",
    "spark_over_duckdb": "Spark / DuckDB (the two aggregates)",
    "paris_over_utc": "full run with TZ=Europe/Paris / with TZ=UTC",
}
_HEADLINE_LABELS = {
    "noop_over_full": "no-op/full",
    "incremental_over_full": "incremental/full",
    "full_over_floor": "full/floor",
    "backfill_daily_over_blocks": "120/12 folders",
    "spark_over_duckdb": "Spark/DuckDB",
    "paris_over_utc": "Paris/UTC",
}
_RUN_LABELS = {
    "full": "full run (`run --layer all`, first days)",
    "noop": "no-op run (same command, nothing new)",
    "paris": "full run, TZ=Europe/Paris (fresh lake)",
    "incremental": "incremental day (`run --layer all`)",
}
_RUN_COLORS = {
    "full": "#4c72b0",
    "noop": "#8c8c8c",
    "paris": "#64b5cd",
    "incremental": "#dd8452",
    "floor": "#55a868",
    "aggregates": "#c44e52",
    "backfill": "#b08d57",
}


def is_current(results: dict[str, Any]) -> bool:
    """Whether ``results`` has this module's format (not the earlier one-process-per-layer one)."""
    return results.get("format") == FORMAT


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| " + " | ".join(_fmt(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
        for row in rows
    ]
    return lines


def _ok(results: dict[str, Any], name: str) -> dict[str, Any]:
    """A step's results, or an empty dict when it was not made or failed."""
    step = results.get(name)
    return step if isinstance(step, dict) and "error" not in step else {}


def _failed(results: dict[str, Any], name: str) -> str | None:
    """The error of a step that failed, shortened; None when it did not fail."""
    step = results.get(name)
    if isinstance(step, dict) and "error" in step:
        return f"failed: {step['error'][:160]}"
    return None


def _jobs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs of the full run (each layer's, for results of the earlier format)."""
    full = results["full"]
    if is_current(results):
        return list(full["jobs"])
    return [job for layer in full["layers"] for job in layer["jobs"]]


def click_events(results: dict[str, Any]) -> int:
    """Click events ingested by the full run (bronze.clicks rows read)."""
    return sum(job.get("rows_read", 0) for job in _jobs(results) if job["job"] == "bronze.clicks")


def landing_rows(results: dict[str, Any]) -> int:
    """Rows of the full run's landing zone (bronze rows read)."""
    return sum(job.get("rows_read", 0) for job in _jobs(results) if job["job"].startswith("bronze."))


def headline(results: dict[str, Any]) -> str:
    """One line: the scale, the full run and the ratios."""
    values = results["ratios"]["values"]
    parts = [f"scale {results['scale']:g}: full {results['full']['seconds']:.0f}s"]
    parts += [f"{label} {_fmt(values.get(name), 3)}" for name, label in _HEADLINE_LABELS.items()]
    parts.append("peer equal" if _ok(results, "peer").get("equal") else "peer DIFFERENT or failed")
    return ", ".join(parts)


def _verdict(met: bool | None, beyond: bool | None) -> str:
    if met is None:
        return "-"
    if beyond:
        return "yes, beyond"
    return "yes" if met else "no"


def targets_table(results: dict[str, Any]) -> list[str]:
    """measure | value | target | beyond | met, for every target, then the checks and side ratios."""
    ratios = results["ratios"]
    values = ratios["values"]
    rows = []
    for name, label in _RATIO_LABELS.items():
        target = ratios["targets"][name]
        rows.append(
            [
                label,
                _fmt(values.get(name), 3),
                f"<= {target['target']:g}",
                "-" if target["beyond"] is None else f"<= {target['beyond']:g}",
                _verdict(ratios["met"].get(name), ratios["beyond"].get(name)),
            ]
        )
    noop = _ok(results, "noop")
    if noop:
        everything_skipped = not noop["runner"]["ran"] and not noop["runner"]["failed"]
        rows.append(
            ["no-op run: every job skipped", _fmt(everything_skipped), "yes", "-", _fmt(everything_skipped)]
        )
    peer = _ok(results, "peer")
    if peer:
        rows.append(
            ["DuckDB outputs equal Spark's gold rows", _fmt(peer["equal"]), "yes", "-", _fmt(peer["equal"])]
        )
    backfilled = _ok(results, "backfill")
    if backfilled:
        equal = backfilled["rows_equal"]
        rows.append(["backfill: both layouts read the same rows", _fmt(equal), "yes", "-", _fmt(equal)])
    rows.append(
        ["full run / Spark floor, in CPU seconds", _fmt(values.get("full_over_floor_cpu"), 3)] + ["-"] * 3
    )
    rows.append(["full run / pyarrow floor", _fmt(values.get("full_over_pyarrow_floor"), 3)] + ["-"] * 3)
    rows.append(
        ["full run TZ=Europe/Paris / UTC, in CPU seconds", _fmt(values.get("paris_over_utc_cpu"), 3)]
        + ["-"] * 3
    )
    lines = _table(["measure", "value", "target", "beyond", "met"], rows)
    if results["scale"] != ratios["target_scale"]:
        lines += ["", f"The targets are set for scale {ratios['target_scale']:g} on 2 cores."]
    return lines


def _run_row(label: str, run: dict[str, Any]) -> list[Any]:
    runner = run["runner"]
    return [
        label,
        run["seconds"],
        run["cpu_s"],
        run["peak_driver_mb"],
        len(runner["ran"]),
        len(runner["skipped"]),
        len(runner["failed"]) + len(runner["blocked"]),
        run["rows_read"],
        run["rows_per_s"],
        run["delta_commits"],
        (run["spark_event_log"] or {}).get("spark_jobs", 0),
    ]


def _process_row(
    label: str, seconds: Any, cpu_s: float | None = None, peak_mb: int | None = None
) -> list[Any]:
    """A row of the runs table for a process that is not a pipeline run (or a step that failed)."""
    return [label, seconds, cpu_s, peak_mb, *[None] * 7]


def times_table(results: dict[str, Any]) -> list[str]:
    """One row per measured process: the pipeline runs, the floors, the peer, the backfill."""
    rows: list[list[Any]] = []
    for name, label in _RUN_LABELS.items():
        run = _ok(results, name)
        if run:
            rows.append(_run_row(label, run))
        elif _failed(results, name):
            rows.append(_process_row(label, _failed(results, name)))
    floor = _ok(results, "floor")
    if floor:
        spark = floor["spark"]
        rows.append(
            _process_row(
                "floor, Spark (1 process)", spark["seconds"], spark["cpu_s"], spark["peak_tree_rss_mb"]
            )
        )
        rows[-1][10] = (spark.get("event_log") or {}).get("spark_jobs")
        rows.append(_process_row("floor, pyarrow (in process)", floor["pyarrow"]["seconds"]))
        rows[-1][7] = floor["pyarrow"].get("rows")
    elif _failed(results, "floor"):
        rows.append(_process_row("floor", _failed(results, "floor")))
    peer = _ok(results, "peer")
    if peer:
        rows.append(
            _process_row("Spark: the two aggregate jobs, each run alone (run records)", peer["spark_jobs_s"])
        )
        label = (
            f"DuckDB: read {peer['read_s']:.2f} + compute {peer['compute_s']:.2f} "
            f"+ write {peer['write_s']:.2f}"
        )
        rows.append(_process_row(label, peer["total_s"], None, peer["peak_tree_rss_mb"]))
    elif _failed(results, "peer"):
        rows.append(_process_row("DuckDB peer", _failed(results, "peer")))
    backfilled = _ok(results, "backfill")
    if backfilled:
        for key, folders in (("daily", backfilled["days"]), ("blocks", backfilled["folders"])):
            rows.append(_run_row(f"backfill, `run --layer bronze`, {folders} folders", backfilled[key]))
    elif _failed(results, "backfill"):
        rows.append(_process_row("backfill", _failed(results, "backfill")))
    header = ["run", "wall s", "CPU s", "peak driver MB", "jobs ran", "skipped", "failed", "rows read"]
    return _table([*header, "rows/s", "Delta commits", "Spark jobs"], rows)


def jobs_table(
    run: dict[str, Any], *, compare: dict[str, Any] | None = None, compare_label: str = ""
) -> list[str]:
    """One row per job of a run: status, seconds, rows, Spark jobs, Delta commits; then the totals.

    ``compare`` (another run of the same jobs) adds a column with its seconds per job.
    """
    other = {job["job"]: job.get("seconds") for job in (compare or {}).get("jobs", [])}
    rows = []
    for job in run["jobs"]:
        row = [
            job["job"],
            job["status"],
            job.get("seconds"),
            job.get("rows_read"),
            job.get("rows_per_s"),
            job.get("spark_jobs"),
            job.get("busy_s"),
            job.get("delta_commits"),
        ]
        rows.append(row + ([other.get(job["job"])] if compare else []))
    events = run["spark_event_log"] or {}
    between = run.get("spark_jobs_outside_pipeline_jobs") or {}
    rows.append(
        [
            "(outside jobs: start, bookkeeping, shutdown)",
            "",
            run["outside_jobs_s"],
            None,
            None,
            between.get("spark_jobs"),
            between.get("busy_s"),
            run["delta_commits_outside_jobs"],
        ]
        + ([None] if compare else [])
    )
    rows.append(
        [
            "**total**",
            f"{len(run['runner']['ran'])} ran, {len(run['runner']['skipped'])} skipped",
            run["seconds"],
            run["rows_read"],
            run["rows_per_s"],
            events.get("spark_jobs", 0),
            events.get("busy_s"),
            run["delta_commits"],
        ]
        + ([compare["seconds"]] if compare else [])
    )
    header = ["job", "status", "s", "rows read", "rows/s", "Spark jobs", "Spark busy s", "Delta commits"]
    return _table(header + ([compare_label] if compare else []), rows)


def backfill_section(backfilled: dict[str, Any]) -> list[str]:
    """The two bronze runs side by side: layouts, totals, and seconds per bronze job."""
    daily, blocks = backfilled["daily"], backfilled["blocks"]
    lines = [
        f"{backfilled['days']} days generated at scale {backfilled['scale']:g} (seed {backfilled['seed']}, "
        f"from {backfilled['start']}): {sum(backfilled['rows_generated'].values()):,} rows. The same files "
        f"as {backfilled['days']} daily delivery folders per source, and regrouped into "
        f"{backfilled['folders']} folders per source "
        f"({backfilled['days'] // backfilled['folders']} days each: "
        "CSV under one header, JSON Lines concatenated, gzip recompressed); each layout ingested by one "
        "`run --layer bronze` into a fresh lake.",
        "",
    ]
    rows = []
    for label, layout, run in (
        (f"{backfilled['days']} folders", backfilled["daily_layout"], daily),
        (f"{backfilled['folders']} folders", backfilled["blocks_layout"], blocks),
    ):
        rows.append(
            [
                label,
                layout["files"],
                round(layout["bytes"] / 2**20, 1),
                run["seconds"],
                run["cpu_s"],
                run["jobs_s"],
                run["rows_read"],
                run["rows_per_s"],
                (run["spark_event_log"] or {}).get("spark_jobs", 0),
                run["delta_commits"],
            ]
        )
    header = ["layout", "files", "MB", "wall s", "CPU s", "in jobs s", "rows read", "rows/s", "Spark jobs"]
    lines += _table([*header, "Delta commits"], rows)
    seconds_of = {job["job"]: job.get("seconds") for job in blocks["jobs"]}
    spark_of = {job["job"]: job.get("spark_jobs") for job in blocks["jobs"]}
    lines += ["", "Per bronze job:", ""]
    lines += _table(
        [
            "job",
            f"{backfilled['days']} folders s",
            f"{backfilled['folders']} folders s",
            "rows read",
            f"Spark jobs ({backfilled['days']} / {backfilled['folders']})",
        ],
        [
            [
                job["job"],
                job.get("seconds"),
                seconds_of.get(job["job"]),
                job.get("rows_read"),
                f"{_fmt(job.get('spark_jobs'))} / {_fmt(spark_of.get(job['job']))}",
            ]
            for job in daily["jobs"]
        ],
    )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report of one scale."""
    scale = results["scale"]
    machine = results["machine"]
    full, generated = results["full"], results["generate"]
    lines = [
        f"# Benchmark at scale {scale:g}",
        "",
        f"{results['started_at']} on {machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']} GB; "
        f"load average {results['load_average_start'][0]:.1f} at the start and "
        f"{results['load_average_end'][0]:.1f} at the end (a shared machine: above "
        f"{machine['cores']} the timings are slowed by other work, compare CPU seconds). "
        f"Code: {results.get('code', '?')}.",
        "",
        f"Data: {generated['days']} days from {generated['start']}, "
        f"{landing_rows(results):,} landing rows ({click_events(results):,} click events) in "
        f"{generated['landing_files_full_run']} files, "
        f"{generated['landing_bytes_full_run'] / 2**20:.1f} MB; the incremental day is "
        f"{generated['held_back_day']}. Every run is one fresh `ecom-pipeline` process with TZ=UTC "
        "unless said.",
        "",
        "## Targets",
        "",
        *targets_table(results),
        "",
        "## Runs",
        "",
        *times_table(results),
        "",
        "*peak driver*: high-water marks of the Python driver and its JVM (from `/proc`). *jobs ran / "
        "skipped / failed*: from the runner's progress lines. *rows read*: the run records' sum; "
        "*rows/s*: rows read / wall s. *Delta commits*: every commit of every table of the lake made "
        "while the process ran (`_delta_log`, `ops` bookkeeping tables included). *Spark jobs*: "
        "from the Spark event log.",
        "",
        "## Full run, per job",
        "",
    ]
    paris = _ok(results, "paris")
    lines += jobs_table(full, compare=paris or None, compare_label="TZ=Paris s")
    lines += [
        "",
        "*s*: the job's run record (`ended_at - started_at`). *Spark jobs*, *Spark busy s*: the Spark "
        "jobs tagged with the job's name (`ecom-job=<job>`; untagged ones: those started within the "
        "job's run record), and the time at least one of them ran. *Delta commits*: the commits whose "
        "`userMetadata` names the job, and the others whose `commitInfo` time falls within its run; "
        "commits made outside every job's run (the run records themselves, written after the jobs) "
        "count under *outside jobs* (`delta_commits_outside_jobs_by_table` in `bench.json`).",
    ]
    for name, title in (("noop", "No-op run, per job"), ("incremental", "Incremental run, per job")):
        run = _ok(results, name)
        lines += ["", f"## {title}", ""]
        if run:
            lines += jobs_table(run, compare=full, compare_label="full run s")
        else:
            lines.append(_failed(results, name) or "Not measured.")
    lines += ["", "## Backfill of many small deliveries", ""]
    backfilled = _ok(results, "backfill")
    lines += backfill_section(backfilled) if backfilled else [_failed(results, "backfill") or "Not measured."]
    lines += ["", "## Where the time goes (full run)", "", *where_time_goes(results)]
    peer = _ok(results, "peer")
    if peer:
        lines += ["", f"Peer comparison as of {peer['as_of_date']}:"]
        lines += [f"- {table}: {comparison['summary']}" for table, comparison in peer["comparison"].items()]
    lines += ["", "## Spark jobs by kind (full run)", ""]
    lines += _table(
        ["Spark job (call site)", "count", "seconds"],
        [
            [k["what"], k["count"], k["seconds"]]
            for k in (full["spark_event_log"] or {}).get("jobs_by_kind", [])
        ],
    )
    bench_s = results.get("bench_seconds")
    lines += ["", f"Benchmark wall time {_fmt(bench_s, 0)}s. Raw numbers: `bench.json`.", ""]
    return "\n".join(lines)


def where_time_goes(results: dict[str, Any]) -> list[str]:
    """Bullet points that split the full run into fixed overhead and data work."""
    full = results["full"]
    jobs = [job for job in full["jobs"] if "seconds" in job]
    events = full["spark_event_log"] or {}
    busy = sum(job.get("busy_s", 0.0) for job in jobs)
    in_jobs = sum(job["seconds"] for job in jobs)
    spark_jobs = sum(job.get("spark_jobs", 0) for job in jobs)
    ops_commits = full["delta"].get("ops", {}).get("commits", 0)
    seconds = full["seconds"] or 1.0
    lines = [
        f"- {len(jobs)} pipeline jobs ran in one process of {full['seconds']:.0f}s: "
        f"{full['outside_jobs_s']:.0f}s ({100 * full['outside_jobs_s'] / seconds:.0f}%) outside any job "
        f"(process and JVM start, session, run records, shutdown), {in_jobs:.0f}s in jobs.",
        f"- Inside the jobs, Spark ran {spark_jobs:,} Spark jobs ({events.get('tasks', 0):,} tasks in the "
        f"whole process) and was busy {busy:.0f}s; the other {in_jobs - busy:.0f}s are driver-only "
        f"(planning, Delta log reads and commits, Python). Executors worked "
        f"{events.get('task_s', 0.0):.0f} task-seconds, {events.get('task_cpu_s', 0.0):.0f} of them on a "
        f"CPU (the whole process used {full['cpu_s']:.0f} CPU seconds).",
        f"- {full['delta_commits']:,} Delta commits ({ops_commits} of them to the `ops` bookkeeping "
        f"tables, {full['delta_commits_outside_jobs']} outside any job's run record), "
        f"{full['delta_data_files_added']:,} data files written; per job "
        f"{in_jobs / max(len(jobs), 1):.1f}s, {spark_jobs / max(len(jobs), 1):.0f} Spark jobs and "
        f"{(full['delta_commits'] - full['delta_commits_outside_jobs']) / max(len(jobs), 1):.1f} "
        "Delta commits on average.",
    ]
    floor = _ok(results, "floor")
    if floor:
        spark = floor["spark"]
        lines.append(
            f"- The Spark floor took {spark['seconds']:.0f}s, of which {spark['session_s']:.0f}s to start "
            f"the session and {spark['work_s']:.0f}s to read and write."
        )
    slowest = sorted(jobs, key=lambda job: job["seconds"], reverse=True)[:5]
    lines.append(
        "- Slowest jobs: "
        + ", ".join(
            f"{job['job']} {job['seconds']:.0f}s ({job.get('spark_jobs', 0)} Spark jobs, "
            f"{job.get('delta_commits', 0)} commits)"
            for job in slowest
        )
        + "."
    )
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Seconds of each run beside the floor and the peer, and seconds per job of the full run."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1, 1.3]})
    bars: list[tuple[str, float, str]] = []
    for name, label in (
        ("full", "full run"),
        ("noop", "no-op run"),
        ("paris", "full, TZ=Paris"),
        ("incremental", "incremental"),
    ):
        if _ok(results, name):
            bars.append((label, results[name]["seconds"], _RUN_COLORS[name]))
    floor = _ok(results, "floor")
    if floor:
        bars.append(("floor (Spark)", floor["spark"]["seconds"], _RUN_COLORS["floor"]))
        bars.append(("floor (pyarrow)", floor["pyarrow"]["seconds"], _RUN_COLORS["floor"]))
    peer = _ok(results, "peer")
    if peer:
        bars.append(("aggregates, Spark", peer["spark_jobs_s"], _RUN_COLORS["aggregates"]))
        bars.append(("aggregates, DuckDB", peer["total_s"], _RUN_COLORS["aggregates"]))
    backfilled = _ok(results, "backfill")
    if backfilled:
        bars.append(
            (f"bronze, {backfilled['days']} folders", backfilled["daily"]["seconds"], _RUN_COLORS["backfill"])
        )
        bars.append(
            (
                f"bronze, {backfilled['folders']} folders",
                backfilled["blocks"]["seconds"],
                _RUN_COLORS["backfill"],
            )
        )
    for index, (_label, seconds, color) in enumerate(bars):
        left.bar(index, seconds, color=color)
        left.text(index, seconds, f"{seconds:.1f}s", ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(bars)), [label for label, _, _ in bars], rotation=30, ha="right", fontsize=8)
    left.set_ylabel("wall seconds")
    left.set_title(f"scale {results['scale']:g}: runs (fresh processes), floor, peer, backfill", fontsize=10)

    jobs = [job for job in results["full"]["jobs"] if "seconds" in job]
    names = [job["job"] for job in jobs][::-1]
    right.barh(
        names, [job["seconds"] for job in jobs][::-1], color="#dddddd", label="job wall s (run record)"
    )
    right.barh(
        names,
        [job.get("busy_s", 0.0) for job in jobs][::-1],
        color="#c44e52",
        label="Spark busy s (event log)",
    )
    right.tick_params(axis="y", labelsize=7)
    right.set_xlabel("seconds")
    right.legend(fontsize=8)
    right.set_title("full run, per job", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_scale_report(results: dict[str, Any], out: Path) -> None:
    """``bench.json``, ``bench.md`` and ``bench.png`` of one scale (of the current format)."""
    if not is_current(results):
        raise ValueError(f"results of scale {results.get('scale')} are of the earlier format: not rebuilt")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(markdown(results), encoding="utf-8")
    chart(results, out / "bench.png")


def load_all(root: Path) -> list[dict[str, Any]]:
    """Every ``<root>/<scale>/bench.json`` with a full run (of either format), smallest scale first.

    Results of the earlier format count only when their floor and peer succeeded (what its
    tables need).
    """
    found = [json.loads(p.read_text(encoding="utf-8")) for p in root.glob("*/bench.json")]
    usable = [
        r
        for r in found
        if isinstance(r.get("full"), dict)
        and (is_current(r) or ("error" not in r["floor"] and "error" not in r["peer"]))
    ]
    return sorted(usable, key=lambda results: results["scale"])


def _link(results: dict[str, Any]) -> str:
    return f"[{results['scale']:g}]({results['scale']:g}/bench.md)"


def _current_rows(all_results: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for results in all_results:
        values = results["ratios"]["values"]
        peer = _ok(results, "peer")
        rows.append(
            [
                _link(results),
                click_events(results),
                landing_rows(results),
                results["full"]["seconds"],
                results["full"]["cpu_s"],
                _ok(results, "noop").get("seconds"),
                _ok(results, "incremental").get("seconds"),
                _ok(results, "paris").get("seconds"),
                (_ok(results, "floor").get("spark") or {}).get("seconds"),
                peer.get("spark_jobs_s"),
                peer.get("total_s"),
                (_ok(results, "backfill").get("daily") or {}).get("seconds"),
                (_ok(results, "backfill").get("blocks") or {}).get("seconds"),
                results["full"]["peak_driver_mb"],
                *(_fmt(values.get(name), 3) for name in _RATIO_LABELS),
                _fmt(peer.get("equal")),
                f"{results['load_average_start'][0]:.1f}",
                results.get("code", "?"),
            ]
        )
    return rows


def _earlier_rows(all_results: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for results in all_results:
        values = results["ratios"]["values"]
        rows.append(
            [
                _link(results),
                click_events(results),
                landing_rows(results),
                results["full"]["seconds"],
                results["full"]["cpu_s"],
                results["floor"]["spark"]["seconds"],
                results["floor"]["pyarrow"]["seconds"],
                (results.get("incremental") or {}).get("seconds"),
                results["peer"]["spark_jobs_s"],
                results["peer"]["total_s"],
                results["full"].get("peak_driver_mb", results["full"]["peak_tree_rss_mb"]),
                _fmt(values["pipeline_over_floor"], 2),
                _fmt(values["incremental_over_full"], 2),
                _fmt(values["spark_over_duckdb"], 2),
                "yes" if results["peer"]["equal"] else "NO",
                f"{results['load_average_start'][0]:.1f}",
                results.get("code", "?"),
            ]
        )
    return rows


def _machine_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per machine the results were measured on (a scale measured on another CPU
    than the others is named with it: their ratios to the floor and the peer differ)."""
    scales_by_machine: dict[tuple[Any, ...], list[str]] = {}
    for result in results:
        machine = result["machine"]
        key = (machine["cores"], machine["cpu"], machine["memory_gb"], machine["os"])
        scales_by_machine.setdefault(key, []).append(f"{result['scale']:g}")
    lines = []
    for (cores, cpu, memory_gb, os_name), scales in scales_by_machine.items():
        measured = f" (scale {', '.join(scales)})" if len(scales_by_machine) > 1 else ""
        lines.append(f"- {cores} cores, {cpu}, {memory_gb} GB RAM, {os_name}{measured}")
    return lines


def index_markdown(all_results: list[dict[str, Any]], *, analysis: str | None = None) -> str:
    """The index: the machine, and one row per scale; a link to ``analysis`` (a file name) if given."""
    current = [r for r in all_results if is_current(r)]
    earlier = [r for r in all_results if not is_current(r)]
    machine = (current or all_results)[-1]["machine"]
    versions = machine["versions"]
    lines = [
        "# Benchmark results",
        "",
        "Produced by `make bench SCALE=<s>` (`python -m bench.run --scale <s>`); see `bench/README.md` "
        "for what is measured and how. One folder per scale: `bench.md` (tables), `bench.json` (raw), "
        "`bench.png` (chart).",
        "",
        "## Machine",
        "",
        *_machine_lines(current or all_results),
        f"- Python {machine['python']}, {machine['java']}",
        f"- pyspark {versions.get('pyspark')}, delta-spark {versions.get('delta-spark')}, "
        f"duckdb {versions.get('duckdb')}, deltalake {versions.get('deltalake')}, "
        f"pyarrow {versions.get('pyarrow')}",
        "",
    ]
    if current:
        ratios = current[-1]["ratios"]
        lines += ["## Scaling", ""]
        lines += _table(
            [
                "scale",
                "click events",
                "landing rows",
                "full s",
                "full CPU s",
                "no-op s",
                "incremental s",
                "TZ=Paris s",
                "floor Spark s",
                "Spark aggregates s",
                "DuckDB s",
                "bronze 120 folders s",
                "bronze 12 folders s",
                "peak driver MB",
                "no-op / full",
                "incremental / full",
                "full / floor",
                "120 / 12 folders",
                "Spark / DuckDB",
                "Paris / UTC",
                "peer equal",
                "load at start",
                "code",
            ],
            _current_rows(current),
        )
        targets = ", ".join(
            f"{_RATIO_LABELS[name]} <= {t['target']:g}"
            + (f" (beyond: <= {t['beyond']:g})" if t["beyond"] else "")
            for name, t in ratios["targets"].items()
        )
        lines += ["", f"Targets (2 cores, scale {ratios['target_scale']:g}): {targets}.", ""]
    if earlier:
        lines += [
            "## Earlier results (one process per layer)",
            "",
            "Measured before the job graph's runner: the full and incremental runs were three processes "
            "each (`run --layer bronze`, `silver`, `gold`), so their times do not compare with the table "
            "above. Targets then: pipeline / floor <= 4, incremental / full <= 0.15, Spark / DuckDB <= 5 "
            "(scale 5).",
            "",
        ]
        lines += _table(
            [
                "scale",
                "click events",
                "landing rows",
                "full s",
                "full CPU s",
                "floor Spark s",
                "floor pyarrow s",
                "incremental s",
                "Spark aggregates s",
                "DuckDB s",
                "peak driver MB",
                "pipeline / floor",
                "incremental / full",
                "Spark / DuckDB",
                "peer equal",
                "load at start",
                "code",
            ],
            _earlier_rows(earlier),
        )
        lines.append("")
    lines += ["![time against scale](scaling.png)", ""]
    if analysis:
        lines += [f"Where each target stands and the profile behind each gap: [{analysis}]({analysis}).", ""]
    return "\n".join(lines)


def scaling_chart(all_results: list[dict[str, Any]], path: Path) -> None:
    """Seconds against click events (log-log): the runs, floors and peer; earlier results hollow."""
    figure, axis = plt.subplots(figsize=(8, 5.5))
    current = [r for r in all_results if is_current(r)]
    earlier = [r for r in all_results if not is_current(r)]
    series: dict[str, tuple[list[dict[str, Any]], Any, str]] = {
        "full run": (current, lambda r: r["full"]["seconds"], "o"),
        "no-op run": (current, lambda r: _ok(r, "noop").get("seconds"), "o"),
        "incremental day": (current, lambda r: _ok(r, "incremental").get("seconds"), "o"),
        "floor (Spark)": (all_results, lambda r: (_ok(r, "floor").get("spark") or {}).get("seconds"), "o"),
        "aggregates, Spark": (all_results, lambda r: _ok(r, "peer").get("spark_jobs_s"), "o"),
        "aggregates, DuckDB": (all_results, lambda r: _ok(r, "peer").get("total_s"), "o"),
        "full run, earlier (3 processes)": (earlier, lambda r: r["full"]["seconds"], "s"),
        "incremental, earlier (3 processes)": (
            earlier,
            lambda r: (r.get("incremental") or {}).get("seconds"),
            "s",
        ),
    }
    for label, (chosen, value, marker) in series.items():
        points = sorted((click_events(r), value(r)) for r in chosen if value(r))
        if points:
            hollow = {"markerfacecolor": "none", "linestyle": "--"} if marker == "s" else {}
            axis.plot(*zip(*points, strict=True), marker=marker, label=label, **hollow)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("click events in the full run")
    axis.set_ylabel("wall seconds")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("time against data size", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_index(root: Path) -> None:
    """``<root>/README.md`` and ``<root>/scaling.png`` from every scale's ``bench.json``."""
    all_results = load_all(root)
    if not all_results:
        return
    analysis = ANALYSIS if (root / ANALYSIS).is_file() else None
    (root / "README.md").write_text(index_markdown(all_results, analysis=analysis), encoding="utf-8")
    scaling_chart(all_results, root / "scaling.png")


def main(argv: list[str] | None = None) -> int:
    """Rebuild every scale's Markdown and chart (current format), and the index, from the JSON files."""
    root = Path((argv or sys.argv[1:] or ["bench/results"])[0])
    for results in load_all(root):
        if is_current(results):
            write_scale_report(results, root / f"{results['scale']:g}")
        else:
            kept = root / f"{results['scale']:g}" / "bench.md"
            print(f"kept {kept} as written (earlier format)", file=sys.stderr)
    write_index(root)
    print(f"rebuilt {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
