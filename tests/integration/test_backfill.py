"""Backfill: ``run --from DATE --to DATE`` replays the daily schedule, idempotently.

A run as of a date ingests the deliveries up to that date only, and computes the gold
aggregates as of it; a backfill does that once per day of its range, oldest first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import pytest
from pyspark.sql import functions as F

from jobs.graph import select_jobs
from jobs.runner import run_jobs
from pipeline_lib.bronze.schemas import INGEST_DATE
from pipeline_lib.io.delta import latest_user_metadata, read_table, table_path, table_version
from tests.support import REFERENCE_DAYS, REFERENCE_START, run_cli

pytestmark = pytest.mark.slow

LAST_DAY = REFERENCE_START + dt.timedelta(days=REFERENCE_DAYS - 1)
NON_REVENUE = ("cancelled", "returned")


def test_a_run_as_of_a_date_ingests_the_deliveries_up_to_that_date_only(spark, reference_lake, tmp_path):
    config = reference_lake.with_paths(lake=str(tmp_path / "lake"))
    as_of = REFERENCE_START + dt.timedelta(days=1)

    run_jobs(spark, config, select_jobs("bronze"), [as_of])

    for source in ("orders", "clicks", "customers"):
        bronze = read_table(spark, table_path(config.paths.lake, "bronze", source))
        dates = {r[0] for r in bronze.select(INGEST_DATE).distinct().collect()}
        assert dates == {REFERENCE_START, as_of}, source
    runs = read_table(spark, table_path(config.paths.lake, "ops", "pipeline_runs"))
    assert {r[0] for r in runs.select("as_of_date").distinct().collect()} == {as_of}


def test_backfill_of_the_aggregates_writes_one_partition_per_day_and_reruns_change_nothing(
    spark, reference_lake, tmp_path, capfd
):
    lake = tmp_path / "lake"
    shutil.copytree(reference_lake.paths.lake, lake)
    first = LAST_DAY - dt.timedelta(days=2)
    args = ("run", "--layer", "gold", "--job", "customer_segments")
    where = ("--from", first.isoformat(), "--to", LAST_DAY.isoformat())
    where += ("--landing", reference_lake.paths.landing, "--lake", str(lake))

    run_cli(*args, *where)

    segments_path = table_path(str(lake), "gold", "customer_segments")
    segments = read_table(spark, segments_path)
    days = [first + dt.timedelta(days=n) for n in range(3)]
    assert {r[0] for r in segments.select("as_of_date").distinct().collect()} >= set(days)
    orders = read_table(spark, table_path(str(lake), "silver", "orders")).where(
        F.col("customer_id").isNotNull() & ~F.col("order_status").isin(*NON_REVENUE)
    )
    for day in days:
        expected = orders.where(F.to_date("order_ts") <= F.lit(day)).select("customer_id").distinct()
        actual = segments.where(F.col("as_of_date") == F.lit(day)).select("customer_id")
        assert actual.count() == expected.count() > 0, day
        assert actual.exceptAll(expected).count() == 0, day
    version = table_version(spark, segments_path)
    runs = read_table(spark, table_path(str(lake), "ops", "pipeline_runs")).where(
        F.col("job") == "gold.customer_segments"
    )
    assert {r[0] for r in runs.select("as_of_date").collect()} >= set(days)

    # The same backfill again, in process (the command line's own loop; a cold JVM costs ~30 s).
    config = reference_lake.with_paths(lake=str(lake))
    run_jobs(spark, config, select_jobs("gold", "customer_segments"), days)

    assert table_version(spark, segments_path) == version
    # Each day recomputed and found equal, but the one written last (the table's latest commit,
    # from the same silver versions): that one is not even recomputed.
    progress = capfd.readouterr().err
    assert progress.count("unchanged; nothing written") == len(days) - 1
    skipped = re.findall(r"as of (\S+): \d+ rows, inputs unchanged since they were written", progress)
    assert skipped == [json.loads(latest_user_metadata(spark, segments_path))["as_of_date"]]  # type: ignore[arg-type]
