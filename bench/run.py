"""The benchmark: generate data at a scale, run every layer cold, compare with a floor and a peer.

    python -m bench.run --scale 0.1                  # bench/results/0.1/{bench.json,bench.md,bench.png}
    python -m bench.run --scale 5 --days 14 --work /data/ecom-bench
    make bench SCALE=1

Steps (progress on stderr; see ``bench/README.md`` for the definitions):

1. **Generate** ``days + 1`` daily deliveries at ``scale x (days + 1) / days`` (so the
   first ``days`` days hold about ``scale`` million click events) and hold the last
   day back: it is the incremental delivery.
2. **Floor**: read every landing file once and write it as plain Parquet, with Spark (a
   fresh process, the pipeline's settings) and with pyarrow (``bench/floor.py``).
3. **Full run**: ``ecom-pipeline run --layer bronze``, then ``silver``, then ``gold``, each
   a fresh process with its own JVM (cold), measured: wall and CPU time, peak memory of
   the process tree, Delta commits and files written, the run records of every job, and
   a summary of the Spark event log.
4. **Peer**: ``customer_segments`` and ``product_popularity`` in DuckDB over the same
   silver tables (read with ``deltalake``), compared with Spark's gold rows.
5. **Incremental**: deliver the held-back day and run the three layers again, cold.
6. **Report**: ``<out>/<scale>/bench.json``, ``bench.md``, ``bench.png`` and the index
   ``<out>/README.md`` with the machine and every scale measured so far.

The landing zone and the lake live under ``--work`` (default ``$ECOM_BENCH_WORK`` or
``/tmp/ecom-bench``), outside the repository; they are replaced on each run of a scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import eventlog, lakestats
from bench.measure import Measured, run_measured, tail

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("bronze", "silver", "gold")
DEFAULT_DAYS = 14
DEFAULT_START = dt.date(2026, 3, 1)
DEFAULT_SEED = 7
DEFAULT_WORK = os.environ.get("ECOM_BENCH_WORK", "/tmp/ecom-bench")
AGGREGATE_JOBS = ("gold.customer_segments", "gold.product_popularity")
# The targets, for a 2-core machine at scale 5.
TARGETS = {"pipeline_over_floor": 4.0, "incremental_over_full": 0.15, "spark_over_duckdb": 5.0}
TARGET_SCALE = 5.0
_RUN_LINE = re.compile(r"\] run (\S+): ")
_PROGRESS = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and where its log is."""


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench {dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def scale_label(scale: float) -> str:
    """``0.1``, ``1``, ``5``: the folder name of a scale's results."""
    return f"{scale:g}"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def held(self) -> Path:
        return self.root / "held-back"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def events(self) -> Path:
        return self.root / "events"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def reset(self) -> None:
        """Remove everything a previous run of this scale left."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)


# --- Steps ---------------------------------------------------------------------------------------


def generate(paths: Paths, *, scale: float, days: int, start: dt.date, seed: int) -> dict[str, Any]:
    """Generate ``days + 1`` days and move the last day's deliveries to the held-back folder."""
    from pipeline_lib.generator import generate_landing

    generated_scale = scale * (days + 1) / days
    say(f"generate: {days} + 1 days at scale {generated_scale:.4g} into {paths.landing}")
    clock = time.monotonic()
    report = generate_landing(paths.landing, start=start, days=days + 1, scale=generated_scale, seed=seed)
    seconds = time.monotonic() - clock
    last_day = (start + dt.timedelta(days=days)).isoformat()
    for source_dir in sorted(p for p in paths.landing.iterdir() if p.is_dir()):
        delivery = source_dir / f"ingest_date={last_day}"
        if delivery.is_dir():
            (paths.held / source_dir.name).mkdir(parents=True, exist_ok=True)
            delivery.rename(paths.held / source_dir.name / delivery.name)
    landing_bytes = sum(p.stat().st_size for p in paths.landing.rglob("*") if p.is_file())
    say(f"generate: {sum(report.rows_by_source.values()):,} rows in {seconds:.1f}s; day {last_day} held back")
    return {
        "days": days,
        "start": start.isoformat(),
        "seed": seed,
        "generated_days": days + 1,
        "generated_scale": round(generated_scale, 6),
        "held_back_day": last_day,
        "rows_all_days": dict(report.rows_by_source),
        "seconds": round(seconds, 2),
        "landing_bytes_full_run": landing_bytes,
        "landing_files_full_run": sum(1 for p in paths.landing.rglob("*") if p.is_file()),
    }


def deliver_held_back_day(paths: Paths) -> None:
    """Move the held-back deliveries into the landing zone (the incremental day arrives)."""
    for source_dir in sorted(p for p in paths.held.iterdir() if p.is_dir()):
        for delivery in source_dir.iterdir():
            delivery.rename(paths.landing / source_dir.name / delivery.name)


def spark_settings(event_dir: Path | None) -> list[str]:
    """``--set`` arguments that turn on an uncompressed event log in ``event_dir``."""
    if event_dir is None:
        return []
    event_dir.mkdir(parents=True, exist_ok=True)
    conf = {**eventlog.EVENT_LOG_CONF, "spark.eventLog.dir": str(event_dir)}
    return [arg for key, value in conf.items() for arg in ("--set", f"spark.conf.{key}={value}")]


def _check(measured: Measured, what: str) -> None:
    if measured.returncode != 0:
        raise BenchError(
            f"{what} exited {measured.returncode}; log {measured.log}:\n{tail(measured.log, 15)}"
        )


def run_floors(paths: Paths, sets: list[str]) -> dict[str, Any]:
    """The Spark floor (fresh process) and the pyarrow floor (in this process)."""
    from bench.floor import pyarrow_floor

    say("floor (pyarrow): read every landing file once, write Parquet")
    loads = load_average()
    arrow = pyarrow_floor(paths.landing, paths.root / "floor-pyarrow")
    say(f"floor (pyarrow): {arrow.seconds:.1f}s, {arrow.rows:,} rows")
    say("floor (Spark): read every landing file once, write Parquet (fresh JVM)")
    command = [sys.executable, "-m", "bench.floor", "spark", "--landing", str(paths.landing)]
    command += ["--out", str(paths.root / "floor-spark"), *sets, *spark_settings(paths.events / "floor")]
    measured = run_measured(command, log=paths.logs / "floor-spark.log", cwd=REPO)
    _check(measured, "the Spark floor")
    inside = json.loads(Path(measured.log).read_text().strip().splitlines()[-1])
    summary = eventlog.summarize_folder(paths.events / "floor")
    say(f"floor (Spark): {measured.seconds:.1f}s wall ({inside['work_s']:.1f}s reading and writing)")
    return {
        "spark": {
            "seconds": round(measured.seconds, 2),
            "cpu_s": measured.cpu_seconds,
            "session_s": inside["session_s"],
            "work_s": inside["work_s"],
            "output_bytes": inside["output_bytes"],
            "peak_tree_rss_mb": round(measured.peak_tree_rss_bytes / 2**20),
            "event_log": summary.as_dict(top=3) if summary else None,
        },
        "pyarrow": {**arrow.as_dict(), "seconds": round(arrow.seconds, 2)},
        "load_average_before": loads,
    }


def run_layer(paths: Paths, phase: str, layer: str, sets: list[str]) -> dict[str, Any]:
    """One layer in a fresh ``ecom-pipeline run`` process, measured."""
    before = lakestats.scan_delta_logs(paths.lake)
    event_dir = paths.events / f"{phase}-{layer}"
    command = [sys.executable, "-m", "jobs", "run", "--layer", layer]
    command += ["--landing", str(paths.landing), "--lake", str(paths.lake), *sets, *spark_settings(event_dir)]
    say(f"{phase}: {layer} (fresh process)")
    loads = load_average()
    measured = run_measured(
        command,
        log=paths.logs / f"{phase}-{layer}.log",
        cwd=REPO,
        echo=lambda line: bool(_PROGRESS.match(line)) and ("done in" in line or "FAILED" in line),
    )
    _check(measured, f"{phase} run of the {layer} layer")
    written = lakestats.files_written(before, lakestats.scan_delta_logs(paths.lake))
    result = {
        "layer": layer,
        "seconds": round(measured.seconds, 2),
        "cpu_s": measured.cpu_seconds,
        "peak_tree_rss_mb": round(measured.peak_tree_rss_bytes / 2**20),
        "peak_jvm_hwm_mb": round(measured.peak_jvm_hwm_bytes / 2**20),
        "peak_hwm_mb_by_process": {k: round(v / 2**20) for k, v in measured.peak_process_hwm_bytes.items()},
        "delta_written": {area: stats.as_dict() for area, stats in written.items()},
        "load_average_before": loads,
        "log": measured.log,
    }
    analyse_layer(paths, phase, result)
    say(
        f"{phase}: {layer} {measured.seconds:.1f}s wall, {measured.cpu_seconds:.0f}s CPU, "
        f"{result['rows_read']:,} rows in"
    )
    return result


def analyse_layer(paths: Paths, phase: str, result: dict[str, Any]) -> None:
    """Add the run records of the layer's jobs and its event-log summary to ``result``.

    Reads only files the run left (the process log, ``ops/pipeline_runs``, the event log),
    so it can be repeated after the fact (``--reanalyse``).
    """
    log_text = Path(result["log"]).read_text(encoding="utf-8", errors="replace")
    records = lakestats.read_run_records(paths.lake, set(_RUN_LINE.findall(log_text)))
    summary = eventlog.summarize_folder(paths.events / f"{phase}-{result['layer']}")
    spark_by_job = eventlog.attribute_jobs(summary, records) if summary else {}
    jobs = [
        {
            "job": record["job"],
            "seconds": round(record["seconds"], 2),
            "status": record["status"],
            "rows_read": record["rows_read"],
            "rows_written": record["rows_written"],
            "rows_quarantined": record["rows_quarantined"],
            **spark_by_job.get(record["job"], {"spark_jobs": 0, "busy_s": 0.0}),
            **({"as_of_date": record["details"]["as_of_date"]} if "as_of_date" in record["details"] else {}),
            "started_at": record["started_at"].isoformat(),
            "ended_at": record["ended_at"].isoformat(),
        }
        for record in records
    ]
    rows_read = sum(job["rows_read"] for job in jobs)
    job_seconds = sum(job["seconds"] for job in jobs)
    hwm = result["peak_hwm_mb_by_process"]
    result.update(
        {
            # The driver: the Python process that runs the jobs plus its JVM (high-water marks).
            "peak_driver_mb": hwm.get("java", 0) + hwm.get("python", hwm.get("python3", 0)),
            "jobs_s": round(job_seconds, 2),
            "outside_jobs_s": round(result["seconds"] - job_seconds, 2),
            "rows_read": rows_read,
            "rows_written": sum(job["rows_written"] for job in jobs),
            "rows_quarantined": sum(job["rows_quarantined"] for job in jobs),
            "rows_per_s": round(rows_read / result["seconds"], 1) if result["seconds"] else None,
            "spark_event_log": summary.as_dict() if summary else None,
            "spark_jobs_outside_pipeline_jobs": spark_by_job.get("(between jobs)"),
            "jobs": jobs,
        }
    )


def run_pipeline(paths: Paths, phase: str, sets: list[str]) -> dict[str, Any]:
    """The three layers, each cold; totals over the layers."""
    layers = [run_layer(paths, phase, layer, sets) for layer in LAYERS]
    total = sum(layer["seconds"] for layer in layers)
    say(f"{phase}: {total:.1f}s for the three layers")
    return {
        "seconds": round(total, 2),
        "cpu_s": round(sum(layer["cpu_s"] for layer in layers), 2),
        "peak_tree_rss_mb": max(layer["peak_tree_rss_mb"] for layer in layers),
        "peak_driver_mb": max(layer["peak_driver_mb"] for layer in layers),
        "layers": layers,
        "delta_data_files_added": sum(
            layer["delta_written"]["total"]["data_files_added"] for layer in layers
        ),
        "delta_commits": sum(layer["delta_written"]["total"]["commits"] for layer in layers),
    }


def run_peer(paths: Paths, full: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """DuckDB over the silver tables of the full run, compared with Spark's gold partitions."""
    gold = next(layer for layer in full["layers"] if layer["layer"] == "gold")
    spark_jobs = [job for job in gold["jobs"] if job["job"] in AGGREGATE_JOBS]
    as_of = next(job["as_of_date"] for job in spark_jobs)
    say(f"peer: DuckDB aggregates as of {as_of} (fresh process)")
    command = [sys.executable, "-m", "bench.peer_duckdb", "--lake", str(paths.lake), "--as-of", as_of]
    command += ["--out", str(paths.root / "peer-gold"), *sets]
    measured = run_measured(command, log=paths.logs / "peer-duckdb.log", cwd=REPO)
    _check(measured, "the DuckDB peer")
    peer = json.loads(Path(measured.log).read_text().strip().splitlines()[-1])
    spark_s = sum(job["seconds"] for job in spark_jobs)
    verdict = "equal" if peer["equal"] else "DIFFERENT"
    say(f"peer: DuckDB {peer['total_s']:.2f}s vs Spark {spark_s:.1f}s; outputs {verdict}")
    return {
        **peer,
        "process_seconds": round(measured.seconds, 2),
        "process_cpu_s": measured.cpu_seconds,
        "peak_tree_rss_mb": round(measured.peak_tree_rss_bytes / 2**20),
        "spark_jobs_s": round(spark_s, 2),
        "spark_jobs": {job["job"]: job["seconds"] for job in spark_jobs},
    }


# --- Assembly ------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The three headline ratios, with the targets and whether each is met."""
    full = results["full"]["seconds"]
    floor = results["floor"] if "error" not in results["floor"] else {"spark": {}, "pyarrow": {}}
    peer = results.get("peer") or {}
    values = {
        "pipeline_over_floor": _ratio(full, floor["spark"].get("seconds", 0)),
        "pipeline_over_pyarrow_floor": _ratio(full, floor["pyarrow"].get("seconds", 0)),
        # The same ratio in CPU seconds: steadier than wall time on a busy machine.
        "pipeline_over_floor_cpu": _ratio(results["full"]["cpu_s"], floor["spark"].get("cpu_s", 0)),
        "incremental_over_full": _ratio(results["incremental"]["seconds"], full)
        if results.get("incremental")
        else None,
        "spark_over_duckdb": _ratio(peer["spark_jobs_s"], peer["total_s"]) if "total_s" in peer else None,
    }
    verdicts = {
        name: None if values[name] is None else values[name] <= target for name, target in TARGETS.items()
    }
    return {"values": values, "targets": TARGETS, "target_scale": TARGET_SCALE, "met": verdicts}


def code_version() -> str:
    """The commit measured (short hash, ``-dirty`` with local changes outside ``bench/results``), or "?".

    Results written by an earlier scale of the same session do not make the code dirty.
    """
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short=7", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{commit}-dirty" if changed.strip() else commit


def machine() -> dict[str, Any]:
    """The machine and the versions, for the report."""
    import platform
    import subprocess
    from importlib import metadata

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    versions = {}
    for package in ("pyspark", "delta-spark", "duckdb", "deltalake", "pyarrow", "pandas", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 2**20, 1),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": (java.splitlines() or ["?"])[0],
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for one scale and write its results."""
    from pipeline_lib.config import ConfigError, parse_assignment

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, required=True, help="1 = about one million click events")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"days of the full run (default {DEFAULT_DAYS})"
    )
    parser.add_argument(
        "--start", type=dt.date.fromisoformat, default=DEFAULT_START, help="first delivery date"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="results root")
    parser.add_argument("--work", type=Path, default=Path(DEFAULT_WORK), help="landing and lake root")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="pipeline config override for every Spark process, e.g. --set spark.conf.spark.driver.memory=4g",
    )
    parser.add_argument(
        "--skip-incremental", action="store_true", help="stop after the full run and the peer"
    )
    parser.add_argument("--clean", action="store_true", help="delete the landing zone and lake afterwards")
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="run nothing: re-read the logs, run records and event logs a previous run left under --work "
        "(also one stopped early) and rewrite the report",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.days < 1:
        parser.error("--scale must be > 0 and --days >= 1")
    try:
        for item in args.set:
            parse_assignment(item)
    except ConfigError as err:
        parser.error(str(err))
    sets = [arg for item in args.set for arg in ("--set", item)]
    label = scale_label(args.scale)
    paths = Paths(args.work.resolve() / label)
    if REPO in paths.root.parents:
        say(f"warning: the work folder {paths.root} is inside the repository")
    try:
        if args.reanalyse:
            return _reanalyse(args, label, paths)
        return _run(args, sets, label, paths)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1


def _attempt(results: dict[str, Any], name: str, step: Any, *args: Any) -> None:
    """Run a step that the rest of the benchmark does not need; record its error instead of stopping."""
    try:
        results[name] = step(*args)
    except Exception as err:  # reported in the results, the benchmark goes on
        say(f"{name}: FAILED: {err}")
        results[name] = {"error": " ".join(str(err).split())[:2000]}


def _save(results: dict[str, Any], paths: Paths) -> None:
    (paths.root / "results.partial.json").write_text(
        json.dumps(results, indent=2, default=str), encoding="utf-8"
    )


def _reanalyse(args: argparse.Namespace, label: str, paths: Paths) -> int:
    from bench import report

    saved = args.out / label / "bench.json"
    source = saved if saved.is_file() else paths.root / "results.partial.json"
    if not source.is_file():
        raise BenchError(f"nothing to reanalyse: neither {saved} nor {source} exists")
    results = json.loads(source.read_text(encoding="utf-8"))
    for phase in ("full", "incremental"):
        for layer in (results.get(phase) or {}).get("layers", []):
            analyse_layer(paths, phase, layer)
        if results.get(phase):
            results[phase]["peak_driver_mb"] = max(
                layer["peak_driver_mb"] for layer in results[phase]["layers"]
            )
    floor_log = eventlog.summarize_folder(paths.events / "floor")
    if floor_log and "spark" in results["floor"]:
        results["floor"]["spark"]["event_log"] = floor_log.as_dict(top=3)
    results.setdefault("load_average_end", load_average())
    results.setdefault("bench_seconds", None)
    results["ratios"] = ratios(results)
    report.write_scale_report(results, args.out / label)
    report.write_index(args.out)
    say(f"reanalysed {source} into {args.out / label}")
    print(report.headline(results))
    return 0


def _run(args: argparse.Namespace, sets: list[str], label: str, paths: Paths) -> int:
    from bench import report

    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    paths.reset()
    results: dict[str, Any] = {
        "scale": args.scale,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "settings": {"set": args.set, "work": str(paths.root), "days": args.days, "seed": args.seed},
        "load_average_start": load_average(),
    }
    results["generate"] = generate(paths, scale=args.scale, days=args.days, start=args.start, seed=args.seed)
    _attempt(results, "floor", run_floors, paths, sets)
    _save(results, paths)
    results["full"] = run_pipeline(paths, "full", sets)
    results["lake_after_full"] = lakestats.lake_footprint(paths.lake)
    _save(results, paths)
    _attempt(results, "peer", run_peer, paths, results["full"], sets)
    _save(results, paths)
    if not args.skip_incremental:
        deliver_held_back_day(paths)
        results["incremental"] = run_pipeline(paths, "incremental", sets)
        results["lake_after_incremental"] = lakestats.lake_footprint(paths.lake)
        _save(results, paths)
    results["load_average_end"] = load_average()
    results["bench_seconds"] = round(time.monotonic() - clock, 1)
    results["ratios"] = ratios(results)
    out = args.out / label
    report.write_scale_report(results, out)
    report.write_index(args.out)
    say(f"results: {out}/bench.json, bench.md, bench.png; index {args.out}/README.md")
    print(report.headline(results))
    if args.clean:
        shutil.rmtree(paths.root, ignore_errors=True)
    failed = [name for name in ("floor", "peer") if "error" in results[name]]
    if failed:
        print(f"bench: error: {', '.join(failed)} failed (see the results)", file=sys.stderr)
        return 1
    if not results["peer"]["equal"]:
        print("bench: error: the DuckDB peer's outputs differ from Spark's gold tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
