"""The benchmark: what a scheduler runs, at one scale, against a floor and a peer.

    python -m bench.run --scale 1                    # bench/results/1/{bench.json,bench.md,bench.png}
    python -m bench.run --scale 5 --days 14 --work /data/ecom-bench
    make bench SCALE=1

Steps (progress on stderr; see ``bench/README.md`` for the definitions). Every pipeline run
is one fresh ``ecom-pipeline run`` process, as cron starts it, with ``TZ=UTC`` unless said:

1. **Generate** ``days + 1`` daily deliveries at ``scale x (days + 1) / days`` (so the
   first ``days`` days hold about ``scale`` million click events) and hold the last
   day back: it is the incremental delivery.
2. **Floor**: read every landing file once and write it as plain Parquet, with Spark (a
   fresh process, the pipeline's settings) and with pyarrow (``bench/floor.py``).
3. **Full run**: ``run --layer all`` over the first ``days`` days, measured: wall and CPU
   time, peak memory of the process tree, the run record of every job, the Spark jobs
   (event log) and the Delta commits (``_delta_log``) of each job.
4. **Peer**: ``customer_segments`` and ``product_popularity`` in DuckDB over the same
   silver tables (read with ``deltalake``), compared with Spark's gold rows.
5. **No-op**: the same command again, nothing new: every job should be skipped.
6. **Time zone** (``--no-tz`` to leave out): the full run again with ``TZ=Europe/Paris``,
   into a fresh lake from the same landing zone.
7. **Incremental**: deliver the held-back day, then ``run --layer all``.
8. **Backfill** (``--no-backfill`` to leave out): ``generate`` 120 days at
   ``--backfill-scale`` into a separate landing zone, lay the same rows out as 12 folders
   (10 days each, ``bench/backfill.py``), and time ``run --layer bronze`` on each layout,
   each into a fresh lake.
9. **Report**: ``<out>/<scale>/bench.json``, ``bench.md``, ``bench.png`` and the index
   ``<out>/README.md`` with the machine and every scale measured so far.

The landing zones and lakes live under ``--work`` (default ``$ECOM_BENCH_WORK`` or
``/tmp/ecom-bench``), outside the repository; they are replaced on each run of a scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import backfill, eventlog, lakestats, runlog
from bench.measure import Measured, run_measured, tail
from bench.spark_aggregates import AGGREGATE_JOBS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DAYS = 14
DEFAULT_START = dt.date(2026, 3, 1)
DEFAULT_SEED = 7
DEFAULT_WORK = os.environ.get("ECOM_BENCH_WORK", "/tmp/ecom-bench")
# The time zone of every measured process; the time-zone check runs the full run again in PARIS.
UTC, PARIS = "UTC", "Europe/Paris"
# The backfill measure: BACKFILL_DAYS daily deliveries, and the same rows in BACKFILL_FOLDERS folders.
BACKFILL_DAYS = 120
BACKFILL_FOLDERS = 12
BACKFILL_SCALE_SHARE = 0.1  # default --backfill-scale: the benchmark's scale x this
# The targets (2 cores): a ratio at or below "target" meets it, at or below "beyond" beats it.
TARGETS: dict[str, dict[str, float | None]] = {
    "noop_over_full": {"target": 0.05, "beyond": 0.02},
    "incremental_over_full": {"target": 0.2, "beyond": 0.1},
    "full_over_floor": {"target": 8.0, "beyond": 4.0},
    "backfill_daily_over_blocks": {"target": 2.0, "beyond": 1.3},
    "spark_over_duckdb": {"target": 5.0, "beyond": 3.0},
    "paris_over_utc": {"target": 1.2, "beyond": None},
}
TARGET_SCALE = 5.0
RESULTS_FORMAT = 2  # 1 (no "format" key): three layer processes per run, before the job graph's runner


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


def environment(tz: str = UTC) -> dict[str, str]:
    """This process's environment with ``TZ`` set: the zone of a measured subprocess (and its JVM)."""
    return {**os.environ, "TZ": tz}


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
    def lake_paris(self) -> Path:
        return self.root / "lake-paris"

    @property
    def backfill(self) -> Path:
        return self.root / "backfill"

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
    from ecom_generator import generate_landing

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
    measured = run_measured(command, log=paths.logs / "floor-spark.log", cwd=REPO, env=environment())
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


def _echo(line: str) -> bool:
    """Progress lines of a pipeline run worth showing live: outcomes and the run's summary."""
    return line.startswith("[") and any(
        mark in line for mark in (": done in", ": FAILED", ": skipped,", ": blocked:", " ran, ")
    )


def run_pipeline(
    paths: Paths,
    phase: str,
    sets: list[str],
    *,
    layer: str = "all",
    landing: Path | None = None,
    lake: Path | None = None,
    tz: str = UTC,
) -> dict[str, Any]:
    """One ``ecom-pipeline run --layer <layer>`` process, measured and analysed (see :func:`analyse_run`)."""
    landing = landing or paths.landing
    lake = lake or paths.lake
    event_dir = paths.events / phase
    command = [sys.executable, "-m", "jobs", "run", "--layer", layer]
    command += ["--landing", str(landing), "--lake", str(lake), *sets, *spark_settings(event_dir)]
    say(f"{phase}: run --layer {layer} (fresh process, TZ={tz})")
    loads = load_average()
    started_ms = time.time_ns() // 1_000_000
    measured = run_measured(
        command, log=paths.logs / f"{phase}.log", cwd=REPO, env=environment(tz), echo=_echo
    )
    ended_ms = time.time_ns() // 1_000_000
    _check(measured, f"the {phase} run")
    hwm = {k: round(v / 2**20) for k, v in measured.peak_process_hwm_bytes.items()}
    result = {
        "phase": phase,
        "command": f"run --layer {layer}",
        "tz": tz,
        "landing": str(landing),
        "lake": str(lake),
        "event_dir": str(event_dir),
        "log": measured.log,
        "started_at_ms": started_ms,
        "ended_at_ms": ended_ms,
        "seconds": round(measured.seconds, 2),
        "cpu_s": measured.cpu_seconds,
        "peak_tree_rss_mb": round(measured.peak_tree_rss_bytes / 2**20),
        "peak_jvm_hwm_mb": round(measured.peak_jvm_hwm_bytes / 2**20),
        "peak_hwm_mb_by_process": hwm,
        # The driver: the Python process that runs the jobs plus its JVM (high-water marks).
        "peak_driver_mb": hwm.get("java", 0) + hwm.get("python", hwm.get("python3", 0)),
        "load_average_before": loads,
    }
    analyse_run(result)
    runner = result["runner"]
    say(
        f"{phase}: {measured.seconds:.1f}s wall, {measured.cpu_seconds:.0f}s CPU, "
        f"{len(runner['ran'])} jobs ran, {len(runner['skipped'])} skipped, "
        f"{result['rows_read']:,} rows in, {result['delta']['total']['commits']} Delta commits"
    )
    return result


def _epoch_ms(moment: dt.datetime, *, up: bool = False) -> int:
    """Milliseconds since the epoch (a naive time is UTC), rounded down, or up with ``up``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    micros = round(moment.timestamp() * 1_000_000)
    return -(-micros // 1000) if up else micros // 1000


def _rate(rows: int, seconds: float | None) -> float | None:
    return round(rows / seconds, 1) if seconds else None


def analyse_run(result: dict[str, Any]) -> None:
    """Add to ``result`` what the run did, job by job.

    * the outcome of each job (ran, skipped, failed, blocked) from the runner's progress lines;
    * the run record of each job that ran (``<lake>/ops/pipeline_runs``: seconds, rows);
    * the Spark jobs started within each job's run (event log);
    * the Delta commits of every table of the lake made while the process ran, each given to
      the job whose run record's ``[started_at, ended_at]`` holds its ``commitInfo`` time.

    Reads only what the run left (its log, the lake, the event log), so it can be repeated
    after the fact (``--reanalyse``).
    """
    lake = Path(result["lake"])
    reported = runlog.parse_run_log(Path(result["log"]).read_text(encoding="utf-8", errors="replace"))
    records = lakestats.read_run_records(lake, set(reported.run_ids)) if reported.run_ids else []
    summary = eventlog.summarize_folder(Path(result["event_dir"]))
    spark_by_job = eventlog.attribute_jobs(summary, records) if summary else {}
    commits = lakestats.commits_between(
        lakestats.scan_delta_logs(lake), result["started_at_ms"], result["ended_at_ms"]
    )
    windows = [(r["job"], _epoch_ms(r["started_at"]), _epoch_ms(r["ended_at"], up=True)) for r in records]
    commits_by_job = lakestats.attribute_commits(commits, windows)
    record_of = {record["job"]: record for record in records}
    status_of = reported.status_of()
    names = list(status_of) + [job for job in record_of if job not in status_of]
    jobs = []
    for name in names:
        record = record_of.get(name)
        written = commits_by_job.get(name, lakestats.WriteStats())
        entry: dict[str, Any] = {"job": name, "status": status_of.get(name, runlog.RAN)}
        if record is not None:
            entry.update(
                {
                    "seconds": round(record["seconds"], 2),
                    "record_status": record["status"],
                    "rows_read": record["rows_read"],
                    "rows_written": record["rows_written"],
                    "rows_quarantined": record["rows_quarantined"],
                    "rows_per_s": _rate(record["rows_read"], record["seconds"]),
                    **spark_by_job.get(name, {"spark_jobs": 0, "busy_s": 0.0}),
                    "delta_commits": written.commits,
                    "data_files_added": written.data_files_added,
                    "bytes_added": written.bytes_added,
                    **(
                        {"as_of_date": record["details"]["as_of_date"]}
                        if "as_of_date" in record["details"]
                        else {}
                    ),
                    "started_at": record["started_at"].isoformat(),
                    "ended_at": record["ended_at"].isoformat(),
                }
            )
        jobs.append(entry)
    job_seconds = sum(job.get("seconds", 0.0) for job in jobs)
    rows_read = sum(job.get("rows_read", 0) for job in jobs)
    outside = commits_by_job.get(lakestats.OUTSIDE_JOBS, lakestats.WriteStats())
    delta = {area: stats.as_dict() for area, stats in lakestats.by_area(commits).items()}
    result.update(
        {
            "runner": reported.as_dict(),
            "jobs_s": round(job_seconds, 2),
            "outside_jobs_s": round(result["seconds"] - job_seconds, 2),
            "rows_read": rows_read,
            "rows_written": sum(job.get("rows_written", 0) for job in jobs),
            "rows_quarantined": sum(job.get("rows_quarantined", 0) for job in jobs),
            "rows_per_s": _rate(rows_read, result["seconds"]),
            "delta": delta,
            "delta_commits": delta["total"]["commits"],
            "delta_commits_outside_jobs": outside.commits,
            "delta_commits_outside_jobs_by_table": _count_tables(
                c for c in commits if not any(s <= c.stats.timestamp_ms <= e for _, s, e in windows)
            ),
            "delta_data_files_added": delta["total"]["data_files_added"],
            "spark_event_log": summary.as_dict() if summary else None,
            "spark_jobs_outside_pipeline_jobs": spark_by_job.get("(between jobs)"),
            "jobs": jobs,
        }
    )


def _count_tables(commits: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for commit in commits:
        counts[commit.table] = counts.get(commit.table, 0) + 1
    return dict(sorted(counts.items()))


def run_peer(paths: Paths, full: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """DuckDB over the silver tables of the full run, compared with Spark's gold partitions."""
    spark_jobs = [job for job in full["jobs"] if job["job"] in AGGREGATE_JOBS and "seconds" in job]
    if len(spark_jobs) != len(AGGREGATE_JOBS):
        raise BenchError(f"the full run has no run record of {AGGREGATE_JOBS}: nothing to compare with")
    as_of = next(job["as_of_date"] for job in spark_jobs)
    say(f"peer: DuckDB aggregates as of {as_of} (fresh process)")
    command = [sys.executable, "-m", "bench.peer_duckdb", "--lake", str(paths.lake), "--as-of", as_of]
    command += ["--out", str(paths.root / "peer-gold"), *sets]
    measured = run_measured(command, log=paths.logs / "peer-duckdb.log", cwd=REPO, env=environment())
    _check(measured, "the DuckDB peer")
    peer = json.loads(Path(measured.log).read_text().strip().splitlines()[-1])
    warm = time_aggregates_warm(paths, as_of, sets)
    spark_s = sum(warm.values())
    verdict = "equal" if peer["equal"] else "DIFFERENT"
    say(f"peer: DuckDB {peer['total_s']:.2f}s vs Spark {spark_s:.1f}s; outputs {verdict}")
    return {
        **peer,
        "process_seconds": round(measured.seconds, 2),
        "process_cpu_s": measured.cpu_seconds,
        "peak_tree_rss_mb": round(measured.peak_tree_rss_bytes / 2**20),
        "spark_jobs_s": round(spark_s, 2),
        "spark_jobs": warm,
        "spark_jobs_in_full_run": {job["job"]: job["seconds"] for job in spark_jobs},
    }


def time_aggregates_warm(paths: Paths, as_of: str, sets: list[str]) -> dict[str, float]:
    """The seconds of each of :data:`AGGREGATE_JOBS` computed warm on the full run's lake
    (:mod:`bench.spark_aggregates`: one process, each job run twice, forced; the second run)."""
    command = [sys.executable, "-m", "bench.spark_aggregates", "--lake", str(paths.lake)]
    command += ["--landing", str(paths.landing), "--as-of", as_of, *sets]
    measured = run_measured(command, log=paths.logs / "spark-aggregates.log", cwd=REPO, env=environment())
    _check(measured, "the Spark aggregates run warm")
    seconds = json.loads(Path(measured.log).read_text(encoding="utf-8").strip().splitlines()[-1])
    return {job: float(seconds[job]) for job in AGGREGATE_JOBS}


def run_incremental(paths: Paths, sets: list[str]) -> dict[str, Any]:
    """The held-back day arrives; one ``run --layer all``."""
    deliver_held_back_day(paths)
    return run_pipeline(paths, "incremental", sets)


def run_backfill(paths: Paths, sets: list[str], *, scale: float, start: dt.date, seed: int) -> dict[str, Any]:
    """Bronze over 120 daily delivery folders, and over the same rows in 12 folders (fresh lakes)."""
    from ecom_generator import generate_landing

    daily = paths.backfill / "landing-daily"
    blocks = paths.backfill / "landing-blocks"
    say(f"backfill: generate {BACKFILL_DAYS} days at scale {scale:.4g} into {daily}")
    clock = time.monotonic()
    report = generate_landing(daily, start=start, days=BACKFILL_DAYS, scale=scale, seed=seed)
    generate_s = time.monotonic() - clock
    per_block = BACKFILL_DAYS // BACKFILL_FOLDERS
    say(f"backfill: the same rows as {BACKFILL_FOLDERS} folders of {per_block} days into {blocks}")
    clock = time.monotonic()
    blocks_layout = backfill.regroup_deliveries(daily, blocks, days_per_block=per_block)
    regroup_s = time.monotonic() - clock
    daily_run = run_pipeline(
        paths, "backfill-daily", sets, layer="bronze", landing=daily, lake=paths.backfill / "lake-daily"
    )
    blocks_run = run_pipeline(
        paths, "backfill-blocks", sets, layer="bronze", landing=blocks, lake=paths.backfill / "lake-blocks"
    )
    ratio = _ratio(daily_run["seconds"], blocks_run["seconds"])
    say(
        f"backfill: {BACKFILL_DAYS} folders {daily_run['seconds']:.1f}s, {BACKFILL_FOLDERS} folders "
        f"{blocks_run['seconds']:.1f}s (ratio {ratio}); rows {daily_run['rows_read']:,} and "
        f"{blocks_run['rows_read']:,}"
    )
    return {
        "scale": scale,
        "days": BACKFILL_DAYS,
        "folders": BACKFILL_FOLDERS,
        "start": start.isoformat(),
        "seed": seed,
        "rows_generated": dict(report.rows_by_source),
        "generate_s": round(generate_s, 2),
        "regroup_s": round(regroup_s, 2),
        "daily_layout": backfill.describe(daily).as_dict(),
        "blocks_layout": blocks_layout.as_dict(),
        "daily": daily_run,
        "blocks": blocks_run,
        "rows_equal": daily_run["rows_read"] == blocks_run["rows_read"],
        "daily_over_blocks": ratio,
    }


# --- Assembly ------------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def _ok(results: dict[str, Any], name: str) -> dict[str, Any]:
    """A step's results, or an empty dict when it was not made or failed."""
    step = results.get(name)
    return step if isinstance(step, dict) and "error" not in step else {}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios, with the targets and whether each is met (and beaten)."""
    full = results["full"]
    floor = _ok(results, "floor") or {"spark": {}, "pyarrow": {}}
    peer, backfilled = _ok(results, "peer"), _ok(results, "backfill")
    values = {
        "noop_over_full": _ratio(_ok(results, "noop").get("seconds"), full["seconds"]),
        "incremental_over_full": _ratio(_ok(results, "incremental").get("seconds"), full["seconds"]),
        "full_over_floor": _ratio(full["seconds"], floor["spark"].get("seconds")),
        # The same ratio in CPU seconds: steadier than wall time on a busy machine.
        "full_over_floor_cpu": _ratio(full["cpu_s"], floor["spark"].get("cpu_s")),
        "full_over_pyarrow_floor": _ratio(full["seconds"], floor["pyarrow"].get("seconds")),
        "backfill_daily_over_blocks": backfilled.get("daily_over_blocks"),
        "spark_over_duckdb": _ratio(peer.get("spark_jobs_s"), peer.get("total_s")),
        "paris_over_utc": _ratio(_ok(results, "paris").get("seconds"), full["seconds"]),
        "paris_over_utc_cpu": _ratio(_ok(results, "paris").get("cpu_s"), full["cpu_s"]),
    }
    met = {name: None if values[name] is None else values[name] <= t["target"] for name, t in TARGETS.items()}
    beyond = {
        name: None if values[name] is None or t["beyond"] is None else values[name] <= t["beyond"]
        for name, t in TARGETS.items()
    }
    return {"values": values, "targets": TARGETS, "target_scale": TARGET_SCALE, "met": met, "beyond": beyond}


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
    parser.add_argument("--skip-incremental", action="store_true", help="leave out the incremental run")
    parser.add_argument("--no-tz", action="store_true", help=f"leave out the second full run with TZ={PARIS}")
    parser.add_argument(
        "--no-backfill", action="store_true", help="leave out the backfill measure (120 vs 12 folders)"
    )
    parser.add_argument(
        "--backfill-scale",
        type=float,
        help=f"scale of the {BACKFILL_DAYS} days of the backfill measure "
        f"(default: --scale x {BACKFILL_SCALE_SHARE:g})",
    )
    parser.add_argument("--clean", action="store_true", help="delete the landing zones and lakes afterwards")
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="run nothing: re-read the logs, run records, Delta logs and event logs a previous run left "
        "under --work (also one stopped early) and rewrite the report",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.days < 1:
        parser.error("--scale must be > 0 and --days >= 1")
    if args.backfill_scale is None:
        args.backfill_scale = args.scale * BACKFILL_SCALE_SHARE
    if args.backfill_scale <= 0:
        parser.error("--backfill-scale must be > 0")
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


def _attempt(results: dict[str, Any], name: str, step: Any, *args: Any, **kwargs: Any) -> None:
    """Run a step that the rest of the benchmark does not need; record its error instead of stopping."""
    try:
        results[name] = step(*args, **kwargs)
    except Exception as err:  # reported in the results, the benchmark goes on
        say(f"{name}: FAILED: {err}")
        results[name] = {"error": " ".join(str(err).split())[:2000]}


def _save(results: dict[str, Any], paths: Paths) -> None:
    (paths.root / "results.partial.json").write_text(
        json.dumps(results, indent=2, default=str), encoding="utf-8"
    )


def _pipeline_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured pipeline run of a result (full, no-op, Paris, incremental, backfill's two)."""
    runs = [_ok(results, name) for name in ("full", "noop", "paris", "incremental")]
    backfilled = _ok(results, "backfill")
    runs += [backfilled.get("daily") or {}, backfilled.get("blocks") or {}]
    return [run for run in runs if run]


def _reanalyse(args: argparse.Namespace, label: str, paths: Paths) -> int:
    from bench import report

    saved = args.out / label / "bench.json"
    source = saved if saved.is_file() else paths.root / "results.partial.json"
    if not source.is_file():
        raise BenchError(f"nothing to reanalyse: neither {saved} nor {source} exists")
    results = json.loads(source.read_text(encoding="utf-8"))
    if results.get("format") != RESULTS_FORMAT:
        raise BenchError(f"{source} is of an earlier format (one process per layer): run the benchmark again")
    if "full" not in results:
        raise BenchError(
            f"{source} has no full run (it stopped before the full run ended): nothing to report"
        )
    for run in _pipeline_runs(results):
        analyse_run(run)
    backfilled = _ok(results, "backfill")
    if backfilled:
        backfilled["rows_equal"] = backfilled["daily"]["rows_read"] == backfilled["blocks"]["rows_read"]
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
        "format": RESULTS_FORMAT,
        "scale": args.scale,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "settings": {
            "set": args.set,
            "work": str(paths.root),
            "days": args.days,
            "seed": args.seed,
            "tz": UTC,
            "tz_check": None if args.no_tz else PARIS,
            "backfill_scale": None if args.no_backfill else args.backfill_scale,
            "incremental": not args.skip_incremental,
        },
        "load_average_start": load_average(),
    }
    results["generate"] = generate(paths, scale=args.scale, days=args.days, start=args.start, seed=args.seed)
    _attempt(results, "floor", run_floors, paths, sets)
    _save(results, paths)
    results["full"] = run_pipeline(paths, "full", sets)
    results["lake_after_full"] = lakestats.lake_footprint(paths.lake)
    _save(results, paths)
    _attempt(results, "peer", run_peer, paths, results["full"], sets)
    _attempt(results, "noop", run_pipeline, paths, "noop", sets)
    _save(results, paths)
    if not args.no_tz:  # before the held-back day arrives: the same landing zone as the full run
        _attempt(results, "paris", run_pipeline, paths, "paris", sets, lake=paths.lake_paris, tz=PARIS)
        _save(results, paths)
    if not args.skip_incremental:
        _attempt(results, "incremental", run_incremental, paths, sets)
        results["lake_after_incremental"] = lakestats.lake_footprint(paths.lake)
        _save(results, paths)
    if not args.no_backfill:
        _attempt(
            results,
            "backfill",
            run_backfill,
            paths,
            sets,
            scale=args.backfill_scale,
            start=args.start,
            seed=args.seed,
        )
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
    steps = ("floor", "peer", "noop", "paris", "incremental", "backfill")
    failed = [name for name in steps if "error" in (results.get(name) or {})]
    if failed:
        print(f"bench: error: {', '.join(failed)} failed (see the results)", file=sys.stderr)
        return 1
    if not results["peer"]["equal"]:
        print("bench: error: the DuckDB peer's outputs differ from Spark's gold tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Leave without the interpreter's shutdown: deltalake's threads (the run records are read
    # with it) can abort a normal exit ("terminate called without an active exception",
    # delta-io/delta-rs#2184), which would turn a finished benchmark's status into 134.
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
