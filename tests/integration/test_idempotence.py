"""Idempotence: every job run again on the same input leaves every table identical.

A copy of the session's reference lake (built once by every job) is run again, in-process,
by every job that ``ecom-pipeline jobs`` lists: no table may get a new Delta version, and
every table must equal the reference by content. A ``--full-refresh`` of the whole pipeline
on another copy rebuilds silver and gold from bronze: it may commit, but the content must
equal the incremental build's. The first tests check that the comparison itself can fail.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from jobs.framework import run_job
from jobs.graph import JOB_GRAPH
from pipeline_lib.config import PipelineConfig
from pipeline_lib.io.delta import table_path, table_version, write_table
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from tests.lake_compare import DATA_LAYERS, comparable, compare_frames, compare_lakes, lake_tables
from tests.support import run_cli

# --- the comparison can fail ------------------------------------------------------------------

SCHEMA = T.StructType(
    [
        T.StructField("id", T.StringType()),
        T.StructField("amount", T.DecimalType(18, 2)),
        T.StructField("tags", T.MapType(T.StringType(), T.LongType())),
        T.StructField("path", T.ArrayType(T.StringType())),
        T.StructField("_run_id", T.StringType()),
    ]
)
ROWS = [
    ("a", 1, {"x": 1, "y": 2}, ["p", "q"], "run-1"),
    ("b", None, None, None, "run-1"),
    ("b", None, None, None, "run-1"),  # the same row twice: multiplicity counts
]


def _frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    typed = [(i, None if a is None else Decimal(a), m, p, r) for i, a, m, p, r in rows]
    return comparable(spark.createDataFrame(typed, SCHEMA), exclude=["_run_id"])


def test_the_comparison_ignores_order_map_key_order_and_excluded_columns(spark):
    reordered = [("b", None, None, None, "run-2"), ("a", 1, {"y": 2, "x": 1}, ["p", "q"], "run-2")]
    reordered.append(("b", None, None, None, "run-3"))
    actual = compare_frames(_frame(spark, ROWS), _frame(spark, reordered), name="t")
    assert actual.equal, actual.describe()


@pytest.mark.parametrize(
    ("change", "only_left", "only_right"),
    [
        ("lose a row", 1, 0),
        ("double a row", 0, 1),
        ("change a map value", 1, 1),
        ("change an array's order", 1, 1),
    ],
)
def test_the_comparison_sees_a_lost_a_doubled_or_a_changed_row(spark, change, only_left, only_right):
    rows = list(ROWS)
    if change == "lose a row":
        rows.pop()
    elif change == "double a row":
        rows.append(rows[0])
    elif change == "change a map value":
        rows[0] = ("a", 1, {"x": 1, "y": 3}, ["p", "q"], "run-1")
    else:
        rows[0] = ("a", 1, {"x": 1, "y": 2}, ["q", "p"], "run-1")

    actual = compare_frames(_frame(spark, ROWS), _frame(spark, rows), name="t")

    assert (actual.only_left, actual.only_right) == (only_left, only_right), actual.describe()
    assert actual.examples


def test_the_comparison_sees_a_missing_table_and_other_columns(spark, tmp_path):
    left, right = str(tmp_path / "left"), str(tmp_path / "right")
    write_table(spark.createDataFrame([("a", 1)], "id string, n int"), table_path(left, "gold", "t"))
    write_table(spark.createDataFrame([("a", 1)], "id string, n long"), table_path(right, "gold", "t"))
    write_table(spark.createDataFrame([("a",)], "id string"), table_path(left, "gold", "u"))

    problems = {c.name: c.problem for c in compare_lakes(spark, left, right, layers=("gold",), ops_tables=())}

    assert "columns differ" in (problems["gold.t"] or "")
    assert "no Delta table on the right side" in (problems["gold.u"] or "")


# --- the pipeline ---------------------------------------------------------------------------


def _copy_of(reference: PipelineConfig, target: Path) -> PipelineConfig:
    shutil.copytree(reference.paths.lake, target)
    return reference.with_paths(landing=reference.paths.landing, lake=str(target))


def _versions(spark: SparkSession, lake: str) -> dict[str, int | None]:
    """The Delta version of every table but the run log (which every run appends to, by design)."""
    tables = [(layer, t) for layer in (*DATA_LAYERS, "ops") for t in lake_tables(lake, layer)]
    return {
        f"{layer}.{t}": table_version(spark, table_path(lake, layer, t))
        for layer, t in tables
        if (layer, t) != ("ops", "pipeline_runs")
    }


def _run_every_job(spark: SparkSession, config: PipelineConfig, **options: object) -> dict[str, JobResult]:
    ctx = JobContext(spark=spark, config=config, run_id=new_run_id(), **options)  # type: ignore[arg-type]
    return {spec.qualified_name: run_job(spec, ctx) for spec in JOB_GRAPH}


def _listed_jobs() -> list[str]:
    """The job names ``ecom-pipeline jobs`` prints (the CLI's registry, not this process's)."""
    return [line.split()[0] for line in run_cli("jobs").stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_every_job_run_again_changes_no_table(spark, reference_lake, tmp_path):
    config = _copy_of(reference_lake, tmp_path / "lake")
    before = _versions(spark, config.paths.lake)

    results = _run_every_job(spark, config)

    assert sorted(results) == sorted(_listed_jobs())
    assert len(results) >= 20
    assert _versions(spark, config.paths.lake) == before, "a re-run committed to a table"
    wrote = {name: r.rows_written for name, r in results.items() if r.rows_written}
    assert not wrote, f"jobs report rows written on a re-run: {wrote}"
    comparisons = compare_lakes(
        spark,
        config.paths.lake,
        reference_lake.paths.lake,
        ops_tables=("ingested_files", "watermarks", "quality_metrics"),
    )
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)
    assert len(comparisons) >= 6 + 6 + 8 + 3


@pytest.mark.slow
def test_a_full_refresh_gives_the_content_of_the_incremental_build(spark, reference_lake, tmp_path):
    config = _copy_of(reference_lake, tmp_path / "lake")
    silver_before = table_version(spark, table_path(config.paths.lake, "silver", "orders"))

    _run_every_job(spark, config, full_refresh=True)

    # It did rebuild (a new silver version), and the content is the incremental build's.
    assert table_version(spark, table_path(config.paths.lake, "silver", "orders")) != silver_before
    comparisons = compare_lakes(
        spark,
        config.paths.lake,
        reference_lake.paths.lake,
        ops_tables=("ingested_files", "watermarks"),
    )
    # A full refresh re-checks every delivery: its measures replace the earlier ones, once each.
    comparisons += compare_lakes(
        spark, config.paths.lake, reference_lake.paths.lake, layers=(), ops_tables=("quality_metrics",)
    )
    unequal = [c.describe() for c in comparisons if not c.equal]
    assert not unequal, "\n".join(unequal)
