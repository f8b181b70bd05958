"""Hostile deliveries: seeded mutations of generated files, through every layer.

The landing zone of :mod:`tests.hostile`: a small generated landing zone (2 days, scale
0.001) with, beside its valid files, one mutated copy per kind of damage a real feed
delivers: truncation (mid-row, and a cut gzip), flipped bytes, latin-1 and UTF-16
re-encoding, NUL bytes, a line of several MB, wrong types, a JSON document nested 10 000
deep, lines that are not JSON objects, unbalanced quotes and duplicate CSV header names.
Every mutated file's name has spaces and accents. The fuzzer is seeded (``ECOM_FUZZ_SEED``
picks another seed, to explore; the default keeps CI reproducible). One command-line run
(``ecom-pipeline run --layer all``, then ``status``) goes over it, once per session
(``hostile_build``; ``test_privacy_and_paths.py`` scans the same run for personal data).
Then:

- the run never crashes: every job of every layer succeeds;
- every row is accounted for: per file, rows in the file (counted here from its bytes, as
  Hadoop splits lines) = rows in bronze = rows in ``ops/ingested_files``, or the file is
  logged ``failed`` with a reason and has no row in bronze; per silver table, bronze rows =
  silver rows + quarantined rows + duplicates, superseded and unchanged rows (counted from
  the tables, the run record's details only for what a table cannot show);
- the report says what was wrong and where: the file log's problems per file, the
  quarantine's ``_failed_rules`` and ``_source_file`` per row, the run records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobFailedError, run_job
from jobs.graph import JobSpec, select_jobs
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import read_table, table_exists, table_path
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from pipeline_lib.ops.schemas import INGEST_LOG_TABLE, RUNS_TABLE
from tests.hostile import FUZZ_SEED, HUGE_FIELD_CHARS, HostileBuild, Mutant, expected_rows

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class HostileRun:
    """The session's command-line run over the hostile landing zone, seen as a config."""

    config: PipelineConfig
    build: HostileBuild

    @property
    def mutants(self) -> list[Mutant]:
        return self.build.mutants


@pytest.fixture(scope="module")
def hostile(base_config: PipelineConfig, hostile_build: HostileBuild) -> HostileRun:
    """``ecom-pipeline run --layer all`` over the hostile landing zone (built once per session)."""
    config = base_config.with_paths(landing=str(hostile_build.landing), lake=str(hostile_build.lake))
    return HostileRun(config, hostile_build)


def landing_files(config: PipelineConfig) -> dict[str, tuple[str, Path]]:
    """Every delivered file, as ``file:<path>`` (how bronze records it) -> (source, path)."""
    return {
        f"file:{path}": (source, path)
        for source in LANDING_SOURCES
        for path in sorted(Path(config.paths.landing, source).glob("ingest_date=*/*"))
    }


def test_no_job_crashes_on_hostile_deliveries(hostile: HostileRun):
    """Every job of every layer, gold included, succeeds; ``status`` too."""
    build = hostile.build
    for name, returncode in build.returncodes.items():
        assert returncode == 0, f"fuzz seed {FUZZ_SEED}: {name}: {build.outputs[name][-3000:]}"
    assert "Traceback" not in build.output, build.output[-3000:]
    assert not re.search(r": FAILED after", build.output)  # the runner's line for a failed job
    done = re.findall(r"^\[[\d:]+\] (\w+\.\w+): done in", build.outputs["run"], flags=re.MULTILINE)
    assert sorted(done) == sorted(spec.qualified_name for spec in select_jobs("all"))
    gold = build.lake / "gold"
    tables = sorted(p.name for p in gold.iterdir() if (p / "_delta_log").is_dir())
    assert tables == sorted(spec.name for spec in select_jobs("gold"))


def test_every_delivered_row_is_in_bronze_or_its_file_is_logged_failed(spark, hostile: HostileRun):
    config = hostile.config
    files = landing_files(config)
    log = {
        r["file"]: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    in_bronze: dict[str, int] = {}
    for source in LANDING_SOURCES:
        path = table_path(config.paths.lake, "bronze", source)
        if table_exists(spark, path):
            for row in read_table(spark, path).groupBy("_source_file").count().collect():
                in_bronze[row["_source_file"]] = row["count"]

    assert set(log) == set(files), "every delivered file has exactly one row in the file log"
    assert len(log) == read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).count()
    for name, (source, path) in files.items():
        entry = log[name]
        if entry["status"] == "failed":
            assert in_bronze.get(name, 0) == 0, name
            assert entry["problems"] and entry["problems"][0].startswith("unreadable"), name
            continue
        expected = expected_rows(path, LANDING_SOURCES[source].file_format)
        assert (in_bronze.get(name, 0), entry["rows"]) == (expected, expected), f"{path.name}: {entry}"


def test_file_log_says_what_was_wrong_with_each_mutated_file(spark, hostile: HostileRun):
    config = hostile.config
    log = {
        r["file"]: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    failed = {name for name, r in log.items() if r["status"] == "failed"}
    assert failed == {f"file:{m.path}" for m in hostile.mutants if m.expect_failed}
    for mutant in hostile.mutants:
        entry = log[f"file:{mutant.path}"]
        problems = " | ".join(entry["problems"])
        for expected in mutant.expect_problems:
            assert expected in problems, f"{mutant.kind} ({mutant.source}): {problems!r}"
        if "did not parse" in mutant.expect_problems:
            assert entry["corrupt_rows"] >= 1, mutant
    for name in failed:  # the reason names what is wrong, not Py4J's "error while calling o123.count"
        reason = log[name]["problems"][0]
        assert not re.search(r"An error occurred while calling o\d+", reason), reason
        assert "EOFException" in reason, reason
    # The bronze run records list the failed files, with the files' own paths.
    runs = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).where(
        F.col("layer") == "bronze"
    )
    listed = {f for r in runs.collect() for f in json.loads(r["details"]).get("files_failed", [])}
    assert listed == failed


def test_long_values_arrive_whole(spark, hostile: HostileRun):
    config = hostile.config
    for mutant in (m for m in hostile.mutants if m.expect_long_value):
        rows = read_table(spark, table_path(config.paths.lake, "bronze", mutant.source)).where(
            F.col("_source_file") == f"file:{mutant.path}"
        )
        text_columns = [
            F.length(F.coalesce(F.col(c), F.lit(""))) for c in LANDING_SOURCES[mutant.source].fields
        ]
        longest = rows.select(F.greatest(*text_columns).alias("n")).agg(F.max("n")).first()[0]
        assert longest == HUGE_FIELD_CHARS, mutant.kind


def test_silver_accounts_for_every_bronze_row(spark, hostile: HostileRun):
    config = hostile.config
    lake = config.paths.lake

    def count(layer: str, table: str) -> int:
        path = table_path(lake, layer, table)
        return read_table(spark, path).count() if table_exists(spark, path) else 0

    details = _run_details(spark, lake)
    # One silver run over fresh tables: every bronze row was read once.
    for table, source in (
        ("fx_rates", "fx_rates"),
        ("orders", "orders"),
        ("order_items", "order_items"),
        ("customers", "customers"),
        ("products", "catalogue"),
    ):
        d = details[f"silver.{table}"]
        assert d["bronze_rows_read"] == count("bronze", source), table
        assert d["quarantined"] == count("quarantine", table), table
        silver_rows = count("silver", table)
        if table in ("customers", "products"):
            # SCD2: rows are versions; the delisted versions are generated, not read.
            assert silver_rows == d["new_versions"] + d["delisted_versions"], table
            others = d["duplicates_removed"] + d["conflicts"] + d["unchanged"] + d.get("superseded", 0)
        else:
            assert silver_rows == d["written"], table
            others = d["duplicates_removed"] + d.get("conflicts", 0) + d.get("superseded", 0)
        assert d["bronze_rows_read"] == d["written"] + d["quarantined"] + others, (table, d)

    clicks = details["silver.clicks"]
    assert clicks["bronze_rows"] == count("bronze", "clicks")
    assert clicks["quarantined"] == count("quarantine", "clicks")
    assert count("silver", "clicks") == clicks["inserted"]
    accounted = (
        clicks["inserted"] + clicks["quarantined"] + clicks["duplicates_removed"] + clicks["conflicts"]
    )
    assert clicks["bronze_rows"] == accounted


def _run_details(spark: SparkSession, lake: str) -> dict[str, dict[str, Any]]:
    """Each job's run-record details (one run over fresh tables: one record per job)."""
    runs = read_table(spark, table_path(lake, "ops", RUNS_TABLE)).select("job", "details").collect()
    assert len(runs) == len({r["job"] for r in runs}), "one run record per job"
    return {r["job"]: json.loads(r["details"]) for r in runs}


def test_quarantine_says_which_rules_failed_and_which_file_it_came_from(spark, hostile: HostileRun):
    config = hostile.config
    files = set(landing_files(config))
    by_file: dict[str, int] = {}
    for table in ("orders", "order_items", "customers", "products", "clicks", "fx_rates"):
        path = table_path(config.paths.lake, "quarantine", table)
        if not table_exists(spark, path):
            continue
        rows = read_table(spark, path)
        assert rows.where(F.size("_failed_rules") < 1).count() == 0, table
        for row in rows.groupBy("_source_file").count().collect():
            assert row["_source_file"] in files, row
            by_file[row["_source_file"]] = by_file.get(row["_source_file"], 0) + row["count"]
    for mutant in (m for m in hostile.mutants if m.expect_quarantined):
        assert by_file.get(f"file:{mutant.path}", 0) >= 1, f"{mutant.kind} ({mutant.source})"


def test_file_names_hadoop_cannot_parse_do_not_stop_the_other_deliveries(spark, config):
    folder = Path(config.paths.landing) / "orders" / "ingest_date=2026-03-01"
    folder.mkdir(parents=True)
    header = ",".join(LANDING_SOURCES["orders"].fields)
    names = ("orders.csv", "orders 10:00.csv", "orders 100%.csv", "orders #2.csv", "orders?.csv")
    for number, name in enumerate(names):
        (folder / name).write_text(f"{header}\no{number},c1,paid\n", encoding="utf-8")
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())

    result = run_job(select_jobs("bronze", "orders")[0], ctx)

    log = {
        Path(r["file"].removeprefix("file:")).name: r
        for r in read_table(spark, table_path(config.paths.lake, "ops", INGEST_LOG_TABLE)).collect()
    }
    assert log["orders.csv"]["status"] == "ingested"
    reported = set(log) | {Path(entry.split(": ")[0]).name for entry in result.details["not_deliveries"]}
    assert set(names) <= reported, "every delivered file is ingested, or reported with a reason"
    ingested = [r for r in log.values() if r["status"] == "ingested"]
    assert read_table(spark, table_path(config.paths.lake, "bronze", "orders")).count() == len(ingested)


def test_a_job_failing_in_the_jvm_records_the_java_cause(spark, config, hostile: HostileRun):
    broken = next(m.path for m in hostile.mutants if m.expect_failed)

    def read_broken(ctx: JobContext) -> JobResult:
        return JobResult(rows_read=ctx.spark.read.text(str(broken)).count())

    ctx = JobContext(spark=spark, config=config, run_id=new_run_id())
    with pytest.raises(JobFailedError, match=r"^bronze\.broken: Py4JJavaError: java\.io\.EOFException"):
        run_job(JobSpec("bronze", "broken", read_broken, (), (), ""), ctx)

    error = read_table(spark, table_path(config.paths.lake, "ops", RUNS_TABLE)).first()["error"]
    assert error.startswith("Py4JJavaError: java.io.EOFException"), error
