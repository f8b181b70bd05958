"""Turn a benchmark's results into files: JSON, a Markdown table, PNG charts, and the index.

* ``<out>/<scale>/bench.json``: everything measured (the source of the other files);
* ``<out>/<scale>/bench.md``: the headline ratios against the targets, then per layer and
  per job tables and where the time went;
* ``<out>/<scale>/bench.png``: seconds per layer (full and incremental run) beside the
  floor and the peer, and seconds per job of the full run;
* ``<out>/README.md`` and ``<out>/scaling.png``: the machine, and every scale measured so far,
  with a link to ``<out>/ANALYSIS.md`` (hand-written: the targets read against the profiles)
  when that file exists.

    python -m bench.report bench/results      # rebuild every bench.md/png and the index from the JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# A hand-written reading of the results (targets, gaps, profiles), kept beside the generated index.
ANALYSIS = "ANALYSIS.md"
LAYER_COLORS = {"bronze": "#b08d57", "silver": "#9aa5b1", "gold": "#d4af37"}
_RATIO_LABELS = {
    "pipeline_over_floor": "full pipeline / floor (Spark)",
    "incremental_over_full": "incremental day / full run",
    "spark_over_duckdb": "Spark / DuckDB (the two aggregates)",
}


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


def click_events(results: dict[str, Any]) -> int:
    """Click events ingested by the full run (bronze.clicks rows read)."""
    bronze = results["full"]["layers"][0]
    return sum(job["rows_read"] for job in bronze["jobs"] if job["job"] == "bronze.clicks")


def landing_rows(results: dict[str, Any]) -> int:
    """Rows of the full run's landing zone (bronze rows read)."""
    return int(results["full"]["layers"][0]["rows_read"])


def headline(results: dict[str, Any]) -> str:
    """One line: the scale and the three ratios."""
    values = results["ratios"]["values"]
    parts = [f"scale {results['scale']:g}: full {results['full']['seconds']:.0f}s"]
    parts.append(f"pipeline/floor {_fmt(values['pipeline_over_floor'], 2)}")
    parts.append(f"incremental/full {_fmt(values['incremental_over_full'], 2)}")
    parts.append(f"Spark/DuckDB {_fmt(values['spark_over_duckdb'], 2)}")
    parts.append("peer equal" if results["peer"].get("equal") else "peer DIFFERENT or failed")
    return ", ".join(parts)


def _status(met: bool | None, scale: float, target_scale: float) -> str:
    if met is None:
        return "-"
    word = "met" if met else "missed"
    return word if scale == target_scale else f"{word} (target is for scale {target_scale:g})"


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report of one scale."""
    scale = results["scale"]
    machine = results["machine"]
    ratios = results["ratios"]
    full, incremental, peer, floor = (
        results["full"],
        results.get("incremental"),
        results["peer"],
        results["floor"],
    )
    lines = [
        f"# Benchmark at scale {scale:g}",
        "",
        f"{results['started_at']} on {machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']} GB; "
        f"load average {results['load_average_start'][0]:.1f} at the start and "
        f"{results['load_average_end'][0]:.1f} at the end (a shared machine: above "
        f"{machine['cores']} the timings are slowed by other work, compare CPU seconds). "
        f"Code: {results.get('code', '?')}.",
        "",
        f"Data: {results['generate']['days']} days from {results['generate']['start']}, "
        f"{landing_rows(results):,} landing rows ({click_events(results):,} click events) in "
        f"{results['generate']['landing_files_full_run']} files, "
        f"{results['generate']['landing_bytes_full_run'] / 2**20:.1f} MB; the incremental day is "
        f"{results['generate']['held_back_day']}.",
        "",
        "## Targets",
        "",
    ]
    rows = []
    for name, label in _RATIO_LABELS.items():
        rows.append(
            [
                label,
                _fmt(ratios["values"][name], 3),
                f"<= {ratios['targets'][name]:g}",
                _status(ratios["met"][name], scale, ratios["target_scale"]),
            ]
        )
    rows.append(
        [
            "full pipeline / floor (Spark), in CPU seconds",
            _fmt(ratios["values"].get("pipeline_over_floor_cpu"), 3),
            "-",
            "-",
        ]
    )
    rows.append(
        [
            "full pipeline / floor (pyarrow)",
            _fmt(ratios["values"]["pipeline_over_pyarrow_floor"], 3),
            "-",
            "-",
        ]
    )
    rows.append(
        [
            "DuckDB outputs equal Spark's gold rows",
            "yes" if peer["equal"] else "NO",
            "yes",
            "met" if peer["equal"] else "missed",
        ]
    )
    lines += _table(["measure", "value", "target", "status"], rows)
    lines += ["", "## Times", ""]
    rows = [
        ["full pipeline (3 cold layer processes)", full["seconds"], full["cpu_s"], full["peak_driver_mb"]],
        [
            "floor, Spark (1 cold process)",
            floor["spark"]["seconds"],
            floor["spark"]["cpu_s"],
            floor["spark"]["peak_tree_rss_mb"],
        ],
        ["floor, pyarrow (in process)", floor["pyarrow"]["seconds"], None, None],
    ]
    if incremental:
        rows.append(
            [
                "incremental day (3 cold layer processes)",
                incremental["seconds"],
                incremental["cpu_s"],
                incremental["peak_driver_mb"],
            ]
        )
    rows.append(["Spark: the two aggregate jobs (from run records)", peer["spark_jobs_s"], None, None])
    rows.append(
        [
            f"DuckDB: read {peer['read_s']:.2f} + compute {peer['compute_s']:.2f} "
            f"+ write {peer['write_s']:.2f}",
            peer["total_s"],
            None,
            peer["peak_tree_rss_mb"],
        ]
    )
    lines += _table(["what", "wall s", "CPU s", "peak memory MB"], rows)
    lines += ["", "## Per layer", ""]
    rows = []
    for phase_name, phase in (("full", full), ("incremental", incremental)):
        for layer in (phase or {}).get("layers", []):
            events = layer["spark_event_log"] or {}
            delta = layer["delta_written"]["total"]
            ops = layer["delta_written"].get("ops", {})
            rows.append(
                [
                    phase_name,
                    layer["layer"],
                    layer["seconds"],
                    layer["cpu_s"],
                    layer["jobs_s"],
                    layer["outside_jobs_s"],
                    layer["rows_read"],
                    layer["rows_written"],
                    layer["rows_per_s"],
                    layer.get("peak_driver_mb"),
                    layer["peak_jvm_hwm_mb"],
                    f"{delta['commits']} ({ops.get('commits', 0)} ops)",
                    f"{delta['data_files_added']} ({ops.get('data_files_added', 0)} ops)",
                    round(delta["bytes_added"] / 2**20, 1),
                    events.get("spark_jobs"),
                    events.get("busy_s"),
                    events.get("task_s"),
                ]
            )
    lines += _table(
        [
            "run",
            "layer",
            "wall s",
            "CPU s",
            "in jobs s",
            "outside jobs s",
            "rows read",
            "rows written",
            "rows/s",
            "peak driver MB",
            "JVM HWM MB",
            "Delta commits",
            "files written",
            "MB written",
            "Spark jobs",
            "Spark busy s",
            "task s",
        ],
        rows,
    )
    lines += [
        "",
        "*wall s*: the layer's process, start to exit. *in jobs s*: the sum of its jobs' run records; "
        "*outside jobs s*: the rest (Python and JVM start, session, shutdown). *rows/s*: rows read / wall s. "
        "*peak driver*: high-water marks of the Python driver and its JVM (from `/proc`). *Delta commits*, "
        "*files written*: commits and `add` actions in every table the layer touched; in brackets those "
        "of the bookkeeping tables under `ops/` (run records, file log, watermarks, quality metrics). "
        "*Spark busy s*: time with at least one Spark job running (event log); *task s*: executor time "
        "summed over tasks.",
        "",
        "## Per job (full run)",
        "",
    ]
    rows = []
    for layer in full["layers"]:
        for job in layer["jobs"]:
            rows.append(
                [
                    job["job"],
                    job["seconds"],
                    job["rows_read"],
                    job["rows_written"],
                    job["rows_quarantined"],
                    job["spark_jobs"],
                    job["busy_s"],
                    round(job["seconds"] - job["busy_s"], 2),
                ]
            )
    lines += _table(
        [
            "job",
            "s",
            "rows read",
            "rows written",
            "quarantined",
            "Spark jobs",
            "Spark busy s",
            "driver-only s",
        ],
        rows,
    )
    lines += ["", "## Where the time goes", "", *where_time_goes(results)]
    lines += ["", f"Peer comparison as of {peer['as_of_date']}:"]
    lines += [f"- {table}: {comparison['summary']}" for table, comparison in peer["comparison"].items()]
    lines += ["", "## Spark jobs by kind (full run, all layers)", ""]
    lines += _table(
        ["Spark job (call site)", "count", "seconds"],
        [[k["what"], k["count"], k["seconds"]] for k in kinds(full)],
    )
    if not incremental:
        lines += ["", "The incremental run was not made (or did not finish)."]
    bench_s = results.get("bench_seconds")
    lines += ["", f"Benchmark wall time {_fmt(bench_s, 0)}s. Raw numbers: `bench.json`.", ""]
    return "\n".join(lines)


def kinds(phase: dict[str, Any], top: int = 12) -> list[dict[str, Any]]:
    """The Spark jobs of a run's layers grouped by call site, most seconds first."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in phase["layers"]:
        for kind in (layer.get("spark_event_log") or {}).get("jobs_by_kind", []):
            entry = merged.setdefault(kind["what"], {"what": kind["what"], "count": 0, "seconds": 0.0})
            entry["count"] += kind["count"]
            entry["seconds"] = round(entry["seconds"] + kind["seconds"], 2)
    return sorted(merged.values(), key=lambda kind: kind["seconds"], reverse=True)[:top]


def where_time_goes(results: dict[str, Any]) -> list[str]:
    """Bullet points that split the full run into fixed overhead and data work."""
    full = results["full"]
    layers = full["layers"]
    jobs = [job for layer in layers for job in layer["jobs"]]
    outside = sum(layer["outside_jobs_s"] for layer in layers)
    busy = sum(job["busy_s"] for job in jobs)
    in_jobs = sum(job["seconds"] for job in jobs)
    spark_jobs = sum(job["spark_jobs"] for job in jobs)
    tasks = sum((layer["spark_event_log"] or {}).get("tasks", 0) for layer in layers)
    task_s = sum((layer["spark_event_log"] or {}).get("task_s", 0.0) for layer in layers)
    task_cpu_s = sum((layer["spark_event_log"] or {}).get("task_cpu_s", 0.0) for layer in layers)
    commits = full["delta_commits"]
    ops_commits = sum(layer["delta_written"].get("ops", {}).get("commits", 0) for layer in layers)
    lines = [
        f"- {len(jobs)} pipeline jobs in {full['seconds']:.0f}s: {outside:.0f}s "
        f"({100 * outside / full['seconds']:.0f}%) outside any job (3 process and JVM starts, "
        f"session, shutdown), {in_jobs:.0f}s in jobs.",
        f"- Inside the jobs, Spark ran {spark_jobs:,} Spark jobs ({tasks:,} tasks) and was busy "
        f"{busy:.0f}s; the other {in_jobs - busy:.0f}s are driver-only (planning, Delta log "
        f"reads and commits, Python). Executors worked {task_s:.0f} task-seconds in all, "
        f"{task_cpu_s:.0f} of them on a CPU (the whole run used {full['cpu_s']:.0f} CPU seconds).",
        f"- {commits:,} Delta commits ({ops_commits} of them to the `ops` bookkeeping tables), "
        f"{full['delta_data_files_added']:,} data files written; "
        f"per job: {in_jobs / max(len(jobs), 1):.1f}s and "
        f"{spark_jobs / max(len(jobs), 1):.0f} Spark jobs on average.",
        f"- The Spark floor took {results['floor']['spark']['seconds']:.0f}s, of which "
        f"{results['floor']['spark']['session_s']:.0f}s to start the session and "
        f"{results['floor']['spark']['work_s']:.0f}s to read and write.",
    ]
    slowest = sorted(jobs, key=lambda job: job["seconds"], reverse=True)[:5]
    lines.append(
        "- Slowest jobs: "
        + ", ".join(f"{job['job']} {job['seconds']:.0f}s ({job['spark_jobs']} Spark jobs)" for job in slowest)
        + "."
    )
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Seconds per layer beside the floor and the peer, and seconds per job of the full run."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1, 1.3]})
    bars: list[tuple[str, dict[str, float]]] = []
    for phase in ("full", "incremental"):
        if results.get(phase):
            bars.append(
                (f"{phase} run", {layer["layer"]: layer["seconds"] for layer in results[phase]["layers"]})
            )
    bars.append(("floor (Spark)", {"floor": results["floor"]["spark"]["seconds"]}))
    bars.append(("floor (pyarrow)", {"floor": results["floor"]["pyarrow"]["seconds"]}))
    bars.append(("aggregates, Spark", {"aggregates": results["peer"]["spark_jobs_s"]}))
    bars.append(("aggregates, DuckDB", {"aggregates": results["peer"]["total_s"]}))
    colors = {**LAYER_COLORS, "floor": "#4c72b0", "aggregates": "#55a868"}
    labels = [label for label, _ in bars]
    for index, (_label, parts) in enumerate(bars):
        bottom = 0.0
        for part, seconds in parts.items():
            left.bar(
                index,
                seconds,
                bottom=bottom,
                color=colors[part],
                label=part if part in LAYER_COLORS else None,
            )
            bottom += seconds
        left.text(index, bottom, f"{bottom:.1f}s", ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("wall seconds")
    handles, names = left.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=False))
    left.legend(unique.values(), unique.keys(), fontsize=8)
    left.set_title(f"scale {results['scale']:g}: layers (cold processes), floor, peer", fontsize=10)

    jobs = [
        (job["job"], job["seconds"], job["busy_s"])
        for layer in results["full"]["layers"]
        for job in layer["jobs"]
    ]
    names = [name for name, _, _ in jobs][::-1]
    right.barh(names, [s for _, s, _ in jobs][::-1], color="#dddddd", label="job wall s (run record)")
    right.barh(names, [b for _, _, b in jobs][::-1], color="#c44e52", label="Spark busy s (event log)")
    right.tick_params(axis="y", labelsize=7)
    right.set_xlabel("seconds")
    right.legend(fontsize=8)
    right.set_title("full run, per job", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_scale_report(results: dict[str, Any], out: Path) -> None:
    """``bench.json``, ``bench.md`` and ``bench.png`` of one scale."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if "error" in results["floor"] or "error" in results["peer"]:
        # The numbers are kept; the tables need every step (fix it, re-run, or rebuild with main()).
        print(f"bench: no bench.md/bench.png in {out}: a step failed (see bench.json)", file=sys.stderr)
        return
    (out / "bench.md").write_text(markdown(results), encoding="utf-8")
    chart(results, out / "bench.png")


def load_all(root: Path) -> list[dict[str, Any]]:
    """Every ``<root>/<scale>/bench.json``, smallest scale first."""
    found = [json.loads(p.read_text(encoding="utf-8")) for p in root.glob("*/bench.json")]
    complete = [r for r in found if "error" not in r["floor"] and "error" not in r["peer"]]
    return sorted(complete, key=lambda results: results["scale"])


def index_markdown(all_results: list[dict[str, Any]], *, analysis: str | None = None) -> str:
    """The index: the machine, and one row per scale; a link to ``analysis`` (a file name) if given."""
    machine = all_results[-1]["machine"]
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
        f"- {machine['cores']} cores, {machine['cpu']}, {machine['memory_gb']} GB RAM, {machine['os']}",
        f"- Python {machine['python']}, {machine['java']}",
        f"- pyspark {versions.get('pyspark')}, delta-spark {versions.get('delta-spark')}, "
        f"duckdb {versions.get('duckdb')}, deltalake {versions.get('deltalake')}, "
        f"pyarrow {versions.get('pyarrow')}",
        "",
        "## Scaling",
        "",
    ]
    rows = []
    for results in all_results:
        values = results["ratios"]["values"]
        rows.append(
            [
                f"[{results['scale']:g}]({results['scale']:g}/bench.md)",
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
        rows,
    )
    targets = all_results[-1]["ratios"]["targets"]
    lines += [
        "",
        f"Targets (2 cores, scale {all_results[-1]['ratios']['target_scale']:g}): pipeline / floor <= "
        f"{targets['pipeline_over_floor']:g}, incremental / full <= {targets['incremental_over_full']:g}, "
        f"Spark / DuckDB <= {targets['spark_over_duckdb']:g}.",
        "",
        "![time against scale](scaling.png)",
        "",
    ]
    if analysis:
        lines += [f"Where each target stands and the profile behind each gap: [{analysis}]({analysis}).", ""]
    return "\n".join(lines)


def scaling_chart(all_results: list[dict[str, Any]], path: Path) -> None:
    """Seconds against click events (log-log): full run, incremental day, floors and peer."""
    figure, axis = plt.subplots(figsize=(8, 5.5))
    events = [click_events(results) for results in all_results]
    series = {
        "full pipeline": [r["full"]["seconds"] for r in all_results],
        "incremental day": [(r.get("incremental") or {}).get("seconds") for r in all_results],
        "floor (Spark)": [r["floor"]["spark"]["seconds"] for r in all_results],
        "floor (pyarrow)": [r["floor"]["pyarrow"]["seconds"] for r in all_results],
        "aggregates, Spark": [r["peer"]["spark_jobs_s"] for r in all_results],
        "aggregates, DuckDB": [r["peer"]["total_s"] for r in all_results],
    }
    for label, seconds in series.items():
        points = [(x, y) for x, y in zip(events, seconds, strict=True) if y]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=label)
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
    """Rebuild every scale's Markdown and chart, and the index, from the JSON files."""
    root = Path((argv or sys.argv[1:] or ["bench/results"])[0])
    for results in load_all(root):
        write_scale_report(results, root / f"{results['scale']:g}")
    write_index(root)
    print(f"rebuilt {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
