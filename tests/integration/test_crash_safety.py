"""Crash safety: a real ``ecom-pipeline run`` killed with SIGKILL at many points, then run again.

A fresh lake is built from the reference landing zone by ``ecom-pipeline run`` subprocesses,
each killed (``ECOM_CRASH_AT``, :mod:`tests.faults`: SIGKILL to the driver's JVM and
to itself, nothing flushed) at the next point of :data:`CRASH_POINTS`, every run starting
from whatever the previous kill left: half-logged bronze files, quarantines written without
their silver table, silver and gold tables written (with what they consumed, in the same
commit) but no run record, lock files held by dead processes. As a scheduler runs the
pipeline (one task per layer, a failed task run again), a run killed in a layer is
followed by ``run --layer <that layer>``, and the first run killed in a new layer is
``run --layer all`` (it finishes the layers before).
A last ``run --layer all`` without a crash must then leave every table equal, by content,
to the session's never-crashed ``reference_lake``; the counts must reconcile; and one more
run must change nothing.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.framework import run_job
from jobs.graph import select_jobs
from pipeline_lib.bronze.schemas import INGESTED_AT, LANDING_SOURCES, RUN_ID, SOURCE_FILE
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_exists, table_path, table_version
from pipeline_lib.io.landing import list_delivery_files
from pipeline_lib.ops.context import JobContext, new_run_id
from pipeline_lib.ops.schemas import INGEST_LOG_TABLE
from tests.faults import CRASH_ENV
from tests.lake_compare import DATA_LAYERS, compare_lakes, lake_tables
from tests.support import (
    cli_environment,
    generate_reference_landing,
    run_cli,
)

pytestmark = pytest.mark.slow

# Where each run is killed: (layer, ECOM_CRASH_AT, what the killed run leaves behind). In the
# jobs' run order: each run completes the jobs before its point, so a later point on an
# earlier, finished job would never be reached (and the test says so).
CRASH_POINTS: tuple[tuple[str, str, str], ...] = (
    ("bronze", "bronze.before_log.orders", "orders committed to bronze, their files not logged"),
    ("bronze", "delta.before_commit.bronze.order_items", "order lines read, their append not committed"),
    ("bronze", "bronze.after_log.catalogue", "catalogue logged, its lock held, no run record"),
    (
        "silver",
        "delta.after_commit.silver.fx_rates",
        "silver.fx_rates written with what it consumed, no run record",
    ),
    ("silver", "delta.after_commit.quarantine.orders", "orders quarantined, silver.orders not written"),
    (
        "silver",
        "delta.after_commit.silver.orders",
        "silver.orders written with what it consumed, no run record",
    ),
    ("silver", "delta.before_commit.silver.clicks", "clicks checked and quarantined, not merged into silver"),
    ("gold", "delta.after_commit.gold.dim_customer", "gold.dim_customer written with what it consumed"),
    ("gold", "delta.after_commit.gold.fact_order_lines", "fact lines written with what they consumed"),
    ("gold", "run_record.before.gold.customer_segments", "segments written, no run record"),
)
KILLED = -signal.SIGKILL
# The file-log note of a file whose rows reached bronze in a run killed before logging it.
REPAIR_NOTE = "logged after an interrupted run (rows were in bronze)"


@dataclass(frozen=True)
class PipelineRun:
    """One ``ecom-pipeline run --layer <layer>`` subprocess."""

    layer: str
    crash_at: str | None
    returncode: int
    seconds: float
    stderr: str

    def killed_job(self) -> str | None:
        """The job that was running when the process died (its last ``started`` line)."""
        started = re.findall(r"\] (\S+): started \(run ", self.stderr)
        return started[-1] if started else None

    def run_id(self) -> str | None:
        found = re.search(r"\] run (\S+): \d+ jobs", self.stderr)
        return found.group(1) if found else None


@dataclass(frozen=True)
class CrashedBuild:
    lake: str
    killed: list[PipelineRun]
    final: PipelineRun


def run_pipeline(landing: str, lake: str, *, layer: str = "all", crash_at: str | None = None) -> PipelineRun:
    extra = {CRASH_ENV: crash_at} if crash_at else {}
    # One job at a time, so that each kill stops the one job named by its point.
    extra["ECOM__PIPELINE__MAX_PARALLEL_JOBS"] = "1"
    if os.environ.get("ECOM_HMAC_KEY"):  # the reference hashed e-mails with the caller's key
        extra["ECOM_HMAC_KEY"] = os.environ["ECOM_HMAC_KEY"]
    started = time.monotonic()
    completed: subprocess.CompletedProcess[str] = run_cli(
        "run",
        "--layer",
        layer,
        "--landing",
        landing,
        "--lake",
        lake,
        env=cli_environment(**extra),
        check=False,
        module="tests.faults",
    )
    return PipelineRun(layer, crash_at, completed.returncode, time.monotonic() - started, completed.stderr)


def run_layers() -> list[tuple[str, str]]:
    """``(--layer, crash point)`` of each killed run: the point's layer, or ``all`` on entering a layer."""
    runs, previous = [], None
    for layer, point, _ in CRASH_POINTS:
        runs.append((layer if layer == previous else "all", point))
        previous = layer
    return runs


@pytest.fixture(scope="module")
def crashed_build(
    reference_landing: PipelineConfig, tmp_path_factory: pytest.TempPathFactory
) -> CrashedBuild:
    """A lake built over the reference landing by runs killed at every crash point, then one clean run.

    It needs the reference deliveries, not the reference lake: the kills start at once, and
    the lake is built (by whichever test needs it first) for the comparisons.
    """
    lake = str(tmp_path_factory.mktemp("crashed") / "lake")
    landing = reference_landing.paths.landing
    killed = []
    for layer, point in run_layers():
        run = run_pipeline(landing, lake, layer=layer, crash_at=point)
        killed.append(run)
        if run.returncode != KILLED:
            break  # the points after it may never be reached: stop and report
    return CrashedBuild(lake, killed, run_pipeline(landing, lake))


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_every_run_was_killed_by_sigkill_at_its_crash_point(crashed_build):
    layers = [layer for layer, _, _ in CRASH_POINTS]
    assert len(CRASH_POINTS) >= 10 and all(layers.count(layer) >= 3 for layer in ("bronze", "silver", "gold"))
    assert len({point for _, point, _ in CRASH_POINTS}) == len(CRASH_POINTS)
    assert len(crashed_build.killed) == len(CRASH_POINTS)
    # Runs of one layer resumed the runs killed in it; each layer was entered by a run of all.
    assert [run.layer for run in crashed_build.killed] == [
        "all",
        "bronze",
        "bronze",
        "all",
        "silver",
        "silver",
        "silver",
        "all",
        "gold",
        "gold",
    ]
    for run in crashed_build.killed:
        assert run.returncode == KILLED, (
            f"{run.crash_at}: exited {run.returncode}, not killed:\n{_tail(run.stderr)}"
        )
        kill = re.search(rf"{CRASH_ENV}: killing process \d+ \(Spark JVM (\d+)\) at (\S+)", run.stderr)
        assert kill, f"{run.crash_at}: no kill message:\n{_tail(run.stderr)}"
        assert kill.group(2) == run.crash_at or kill.group(2).startswith(f"{run.crash_at}.")
        assert not _is_running(int(kill.group(1))), f"{run.crash_at}: the Spark JVM outlived its driver"


def _is_running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()  # a zombie has exited
    except FileNotFoundError:
        return False


def test_the_run_after_each_kill_takes_over_the_dead_runs_lock(crashed_build):
    runs = [*crashed_build.killed, crashed_build.final]
    assert crashed_build.final.returncode == 0, _tail(crashed_build.final.stderr, 30)
    taken_over = 0
    for run, next_run in itertools.pairwise(runs):
        job = run.killed_job()
        assert job, f"{run.crash_at}: no job had started"
        if run.crash_at.startswith("run_record."):
            continue  # the job's lock is released before its run record is written
        warning = f"taking over the stale lock of {job} from run {run.run_id()}"
        assert warning in next_run.stderr, f"after {run.crash_at}: no '{warning}':\n{_tail(next_run.stderr)}"
        taken_over += 1
    assert taken_over == sum(not point.startswith("run_record.") for _, point, _ in CRASH_POINTS)
    locks = Path(crashed_build.lake) / "ops" / "_locks"
    assert sorted(p.name for p in locks.glob("*.lock")) == []


def test_the_lake_after_the_crashes_equals_the_never_crashed_lake(spark, reference_lake, crashed_build):
    reference = reference_lake.paths.lake
    for layer in DATA_LAYERS:
        assert lake_tables(crashed_build.lake, layer) == lake_tables(reference, layer)
    comparisons = compare_lakes(
        spark,
        crashed_build.lake,
        reference,
        ops_tables=("ingested_files", "watermarks"),
        normalize={f"ops.{INGEST_LOG_TABLE}": _without_repair_note},
    )
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)
    assert len(comparisons) >= 6 + 6 + 8 + 2


def _without_repair_note(log: DataFrame) -> DataFrame:
    # A file logged by the repair after a kill carries this note; the rest of its entry must match.
    return log.withColumn("problems", F.array_remove("problems", REPAIR_NOTE))


def test_a_file_log_repaired_after_a_kill_keeps_what_was_wrong_with_each_file(spark, config):
    """In-process replay of a kill at ``bronze.before_log.orders``: orders in bronze, no file log.

    The reference deliveries include orders with a column outside the contract: the repaired
    entry must still say so (the crash test found it lost: bronze keeps rows, not headers).
    """
    generate_reference_landing(config.paths.landing)
    [spec] = select_jobs("bronze", "orders")
    log_path = table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)

    def log_entries() -> list[tuple[object, ...]]:
        log = _without_repair_note(read_table(spark, log_path))
        columns = ("file", "status", "rows", "corrupt_rows", "rescued_rows", "problems")
        return sorted(tuple(row) for row in log.select(*columns).collect())  # one row per file

    run_job(spec, JobContext(spark=spark, config=config, run_id=new_run_id()))
    uninterrupted = log_entries()
    shutil.rmtree(log_path)  # what the kill leaves: rows committed to bronze, no log entries
    run_job(spec, JobContext(spark=spark, config=config, run_id=new_run_id()))

    repaired = read_table(spark, log_path).where(F.array_contains("problems", REPAIR_NOTE)).count()
    assert repaired == sum(entry[2] > 0 for entry in uninterrupted)  # the files with rows
    assert log_entries() == uninterrupted
    assert any("coupon_code" in problem for entry in uninterrupted for problem in entry[5])


def test_quality_metrics_after_the_crashes_are_counted_once(spark, reference_lake, crashed_build):
    """A delivery re-checked after a crash replaces its measures: every row as in the reference."""
    [comparison] = compare_lakes(
        spark, crashed_build.lake, reference_lake.paths.lake, layers=(), ops_tables=("quality_metrics",)
    )
    assert comparison.equal, comparison.describe()


# (bronze source, silver table, key): every bronze row not quarantined must reach silver by its key.
KEYS = (("orders", "orders", "order_id"), ("customers", "customers", "customer_id"))
KEYS += (("catalogue", "products", "product_id"), ("clicks", "clicks", "event_id"))
SILVER_KEYS = {
    "orders": ["order_id"],
    "order_items": ["order_id", "line_no"],
    "customers": ["customer_id", "valid_from"],
    "products": ["product_id", "valid_from"],
    "clicks": ["event_id"],
    "fx_rates": ["rate_date", "currency"],
    "inventory": ["product_id", "location_id", "snapshot_ts"],
}


@pytest.mark.parametrize("which", ["reference", "crashed"])
def test_counts_reconcile(spark, reference_lake, crashed_build, which):
    """Bronze = the files' rows; no key twice in silver; every bronze row quarantined or in silver."""
    lake = reference_lake.paths.lake if which == "reference" else crashed_build.lake
    log = read_table(spark, table_path(lake, "ops", INGEST_LOG_TABLE))
    assert log.groupBy("file").count().where("count > 1").count() == 0, "a file was logged twice"
    for source in LANDING_SOURCES:
        listed = {f.path for f in list_delivery_files(spark, reference_lake.paths.landing, source).files}
        entries = log.where(F.col("source") == source)
        assert {r["file"] for r in entries.select("file").collect()} == listed, (
            f"{source}: files not all logged"
        )
        bronze = read_table(spark, table_path(lake, "bronze", source))
        logged_rows = entries.agg(F.sum("rows")).first()[0]
        assert bronze.count() == logged_rows, f"bronze.{source}: rows differ from the file log's"
        per_file = bronze.groupBy(SOURCE_FILE).agg(F.countDistinct(RUN_ID).alias("runs"))
        assert per_file.where("runs > 1").count() == 0, f"bronze.{source}: a file was ingested twice"
    for table, keys in SILVER_KEYS.items():
        silver = read_table(spark, table_path(lake, "silver", table))
        assert silver.groupBy(*keys).count().where("count > 1").count() == 0, f"silver.{table}: key repeats"
    for table in lake_tables(lake, "quarantine"):
        quarantine = read_table(spark, table_path(lake, "quarantine", table))
        repeats = quarantine.groupBy(SOURCE_FILE, "_row_key").count().where("count > 1")
        assert repeats.count() == 0, f"quarantine.{table}: a bronze row quarantined twice"
    for source, table, key in KEYS:
        unaccounted = _bronze_rows_neither_quarantined_nor_in_silver(spark, lake, source, table, key)
        assert unaccounted.count() == 0, f"{source}: bronze rows lost: {unaccounted.limit(3).collect()}"
    expected = {f"silver.{table}" for table in SILVER_KEYS}
    if which == "crashed":
        # Known gap (docs/engine.md): a run's records are appended in one commit at its end, so
        # a killed run leaves none, also for the jobs it finished; their data commits hold what
        # they consumed, so the next run has nothing new for them and records nothing either.
        # The silver jobs with a record are the ones that ran in a run that completed.
        expected = {
            job
            for run in (*crashed_build.killed, crashed_build.final)
            if run.returncode == 0
            for job in re.findall(r"\] (silver\.\w+): done in ", run.stderr)
        } & expected
    assert _assert_run_records_reconcile(spark, lake) == sorted(expected)


def _bronze_rows_neither_quarantined_nor_in_silver(
    spark: SparkSession, lake: str, source: str, table: str, key: str
) -> DataFrame:
    bronze = read_table(spark, table_path(lake, "bronze", source))
    quarantine_path = table_path(lake, "quarantine", table)
    if table in lake_tables(lake, "quarantine"):
        quarantine = read_table(spark, quarantine_path)
        shared = [c for c in bronze.columns if c in quarantine.columns and c not in (INGESTED_AT, RUN_ID)]
        same_row = [bronze[c].eqNullSafe(quarantine[c]) for c in shared]
        condition = same_row[0]
        for part in same_row[1:]:
            condition = condition & part
        bronze = bronze.join(quarantine, on=condition, how="left_anti")
    silver_keys = read_table(spark, table_path(lake, "silver", table)).select(F.col(key).cast("string"))
    return bronze.select(key).join(silver_keys, on=key, how="left_anti")


def _assert_run_records_reconcile(spark: SparkSession, lake: str) -> list[str]:
    """No run failed, and every silver run that read rows reconciled them (its own check).

    Returns:
        The silver jobs with at least one reconciled run record.
    """
    if not table_exists(spark, table_path(lake, "ops", "pipeline_runs")):
        return []  # no run completed (see the known gap above)
    runs = read_table(spark, table_path(lake, "ops", "pipeline_runs"))
    assert runs.where(F.col("status") != "succeeded").count() == 0
    silver_details = runs.where(F.col("layer") == "silver").select(
        "job", F.get_json_object("details", "$.reconciled").alias("reconciled")
    )
    assert silver_details.where(F.col("reconciled") == "false").count() == 0
    reconciled = silver_details.where(F.col("reconciled") == "true").select("job").distinct().collect()
    return sorted(r["job"] for r in reconciled)


def test_a_further_run_changes_nothing(spark, reference_lake, crashed_build):
    """Last in this module: it runs every job once more on the crashed lake, in-process."""
    config = reference_lake.with_paths(landing=reference_lake.paths.landing, lake=crashed_build.lake)
    before = _versions(spark, crashed_build.lake)
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    for spec in select_jobs("all"):
        run_job(spec, ctx)
    assert _versions(spark, crashed_build.lake) == before


def _versions(spark: SparkSession, lake: str) -> dict[str, int | None]:
    tables = [(layer, t) for layer in (*DATA_LAYERS, "ops") for t in lake_tables(lake, layer)]
    return {
        f"{layer}.{t}": table_version(spark, table_path(lake, layer, t))
        for layer, t in tables
        if (layer, t) != ("ops", "pipeline_runs")
    }
