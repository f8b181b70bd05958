"""The watermark log (ops/watermarks): saves append, the latest row per consumer and source is current."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality

from pipeline_lib.io.delta import latest_commit, read_table, table_path, table_version, write_table
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import WATERMARKS_TABLE
from pipeline_lib.ops.watermarks import (
    consumed_metadata,
    consumer_table,
    current_watermarks,
    last_processed_version,
    read_watermarks,
    record_consumption,
    save_processed_versions,
    save_watermarks,
)

LOG = "consumer string, source string, version long, run_id string, updated_at timestamp"


def at(minute: int) -> dt.datetime:
    return dt.datetime(2026, 3, 1, 10, minute, tzinfo=dt.UTC)


def test_current_watermarks_keep_the_latest_row_of_each_consumer_and_source(spark):
    rows = [
        ("gold.fact_orders", "silver.orders", 3, "r1", at(0)),
        ("gold.fact_orders", "silver.orders", 7, "r2", at(5)),
        ("gold.fact_orders", "silver.customers", 4, "r1", at(0)),
        # Moved back later (a source table re-created): the later row wins, not the higher version.
        ("silver.orders", "bronze.orders", 9, "r1", at(0)),
        ("silver.orders", "bronze.orders", 2, "r3", at(9)),
        # Saved in the same instant: the higher version wins, so the result does not depend on order.
        ("silver.clicks", "bronze.clicks", 5, "r4", at(1)),
        ("silver.clicks", "bronze.clicks", 6, "r5", at(1)),
    ]
    log = local_frame(spark, rows, LOG)
    expected = local_frame(spark, [rows[1], rows[2], rows[4], rows[6]], LOG)
    actual = log.transform(current_watermarks)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_save_appends_one_commit_and_the_latest_save_is_read(spark, tmp_path):
    lake = str(tmp_path / "lake")
    path = table_path(lake, "ops", WATERMARKS_TABLE)
    assert last_processed_version(spark, lake, "gold.fact_orders", "silver.orders") is None
    assert read_watermarks(spark, lake) is None

    first = {"silver.orders": 3, "silver.customers": 1}
    save_processed_versions(spark, lake, "gold.fact_orders", first, "r1")
    save_processed_versions(spark, lake, "gold.fact_orders", {"silver.orders": 5}, "r2")

    assert table_version(spark, path) == 1  # two saves, two commits
    assert latest_commit(spark, path).info["operation"] == "WRITE"  # a blind append, not a MERGE
    assert read_table(spark, path).count() == 3  # the log keeps every save
    assert last_processed_version(spark, lake, "gold.fact_orders", "silver.orders") == 5
    assert last_processed_version(spark, lake, "gold.fact_orders", "silver.customers") == 1
    assert last_processed_version(spark, lake, "gold.dim_product", "silver.orders") is None
    current = {(r.consumer, r.source): (r.version, r.run_id) for r in read_watermarks(spark, lake).collect()}
    assert current == {
        ("gold.fact_orders", "silver.orders"): (5, "r2"),
        ("gold.fact_orders", "silver.customers"): (1, "r1"),
    }


def test_saving_a_consumer_and_source_twice_in_one_commit_is_refused(spark, tmp_path):
    lake = str(tmp_path / "lake")
    twice = [("silver.orders", "bronze.orders", 1), ("silver.orders", "bronze.orders", 2)]
    with pytest.raises(ValueError, match=r"twice in one commit: \[\('silver.orders', 'bronze.orders'\)\]"):
        save_watermarks(spark, lake, twice, "r1")
    save_watermarks(spark, lake, [], "r1")  # nothing to save: no table, no commit
    assert table_version(spark, table_path(lake, "ops", WATERMARKS_TABLE)) is None


def test_a_data_commit_carries_what_its_job_consumed_and_the_newest_record_wins(spark, tmp_path):
    lake = str(tmp_path / "lake")
    table = consumer_table(lake, "silver.orders")
    rows = spark.createDataFrame([("o1",)], "order_id string")
    state = consumed_metadata("silver.orders", {"bronze.orders": 7}, "run-1")
    write_table(rows, table, mode="overwrite", user_metadata=state)

    # The commit says it: nothing is appended to the log, and it is read back.
    assert record_consumption(spark, lake, "silver.orders", {"bronze.orders": 7}, "run-1")
    assert table_version(spark, table_path(lake, "ops", WATERMARKS_TABLE)) is None
    assert last_processed_version(spark, lake, "silver.orders", "bronze.orders") == 7
    # A later record in the log (a run that consumed without writing) wins over the commit ...
    assert not record_consumption(spark, lake, "silver.orders", {"bronze.orders": 9}, "run-2")
    assert last_processed_version(spark, lake, "silver.orders", "bronze.orders") == 9
    # ... and a later data commit wins over the log; another consumer's commits say nothing.
    write_table(
        rows,
        table,
        mode="append",
        user_metadata=consumed_metadata("silver.orders", {"bronze.orders": 11}, "r3"),
    )
    write_table(
        rows,
        table,
        mode="append",
        user_metadata=consumed_metadata("silver.other", {"bronze.orders": 99}, "r4"),
    )
    assert last_processed_version(spark, lake, "silver.orders", "bronze.orders") == 11
    assert last_processed_version(spark, lake, "gold.fact_orders", "silver.orders") is None
