"""The gold aggregate jobs against real Delta tables: literal silver tables in, gold partitions out."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.framework import JobFailedError, run_job
from jobs.graph import select_jobs
from pipeline_lib.config import PipelineConfig
from pipeline_lib.gold.popularity import PRODUCT_POPULARITY_TABLE_SCHEMA
from pipeline_lib.gold.segments import CUSTOMER_SEGMENTS_TABLE_SCHEMA
from pipeline_lib.io.delta import read_table, table_path, table_version, write_table
from pipeline_lib.ops.context import JobContext, JobResult, new_run_id
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from pipeline_lib.silver.schemas import DQ_FLAGS, SILVER_SCHEMAS

pytestmark = pytest.mark.slow

D = dt.date
EARLY = D(2024, 1, 20)
LATEST = D(2024, 1, 31)  # the latest order date: the default as-of date


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


def money(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.000001"))


ORDERS = [
    {"order_id": "o1", "customer_id": "c1", "order_status": "delivered", "order_date": D(2024, 1, 5)},
    {"order_id": "o2", "customer_id": "c1", "order_status": "paid", "order_date": D(2024, 1, 25)},
    {"order_id": "o3", "customer_id": "c2", "order_status": "shipped", "order_date": D(2024, 1, 18)},
    {"order_id": "o4", "customer_id": "c2", "order_status": "cancelled", "order_date": D(2024, 1, 30)},
    {"order_id": "o5", "customer_id": None, "order_status": "paid", "order_date": D(2024, 1, 31)},
    {"order_id": "o6", "customer_id": "c3", "order_status": "paid", "order_date": D(2024, 1, 31)},
]
ORDER_ITEMS = [
    {"order_id": "o1", "line_no": 1, "product_id": "p1", "quantity": 1, "net_amount_base": money("10")},
    {"order_id": "o2", "line_no": 1, "product_id": "p2", "quantity": 2, "net_amount_base": money("30")},
    {"order_id": "o3", "line_no": 1, "product_id": "p1", "quantity": 1, "net_amount_base": money("10")},
    {"order_id": "o4", "line_no": 1, "product_id": "p2", "quantity": 1, "net_amount_base": money("15")},
    {"order_id": "o5", "line_no": 1, "product_id": "p2", "quantity": 1, "net_amount_base": money("15")},
    {"order_id": "o6", "line_no": 1, "product_id": "p3", "quantity": 3, "net_amount_base": money("6")},
]
CLICKS = [
    {"event_id": "e1", "event_date": D(2024, 1, 31), "event_type": "product_view", "product_id": "p1"},
    {"event_id": "e2", "event_date": D(2024, 1, 31), "event_type": "product_view", "product_id": "p2"},
    {"event_id": "e3", "event_date": D(2024, 1, 30), "event_type": "add_to_cart", "product_id": "p2"},
    {"event_id": "e4", "event_date": D(2024, 1, 10), "event_type": "product_view", "product_id": "p3"},
    {"event_id": "e5", "event_date": D(2024, 1, 31), "event_type": "page_view", "product_id": None},
]
PRODUCTS = [
    {"product_id": "p1", "category_l1": "Books", "valid_from": utc(2024, 1, 1), "is_current": True},
    {"product_id": "p2", "category_l1": "Books", "valid_from": utc(2024, 1, 1), "is_current": True},
    {"product_id": "p3", "category_l1": "Toys", "valid_from": utc(2024, 1, 1), "valid_to": utc(2024, 2, 5),
     "is_current": False},
    {"product_id": "p3", "category_l1": "Garden", "valid_from": utc(2024, 2, 5), "is_current": True},
]  # fmt: skip


def write_silver(spark: SparkSession, config: PipelineConfig, table: str, rows: list[dict[str, Any]]) -> None:
    """A silver Delta table of the contract's schema; columns a row leaves out are null."""
    schema = SILVER_SCHEMAS[table]
    records = [tuple([] if f.name == DQ_FLAGS else row.get(f.name) for f in schema.fields) for row in rows]
    write_table(
        spark.createDataFrame(records, schema),
        table_path(config.paths.lake, "silver", table),
        mode="overwrite",
        properties=CDF_PROPERTIES,
    )


def write_every_silver_table(spark: SparkSession, config: PipelineConfig) -> None:
    """The four silver tables the aggregates read, from the literal rows above."""
    silver = {"orders": ORDERS, "order_items": ORDER_ITEMS, "clicks": CLICKS, "products": PRODUCTS}
    for table, rows in silver.items():
        write_silver(spark, config, table, rows)


def run(spark: SparkSession, config: PipelineConfig, name: str, **options: Any) -> JobResult:
    """Run one gold job through the framework's registry and runner."""
    [spec] = select_jobs("gold", name)
    return run_job(spec, JobContext(spark=spark, config=config, run_id=new_run_id(), **options))


def gold(spark: SparkSession, config: PipelineConfig, table: str) -> DataFrame:
    return read_table(spark, table_path(config.paths.lake, "gold", table))


def test_customer_segments_keeps_as_of_dates_side_by_side_and_reruns_commit_nothing(
    spark: SparkSession, config: PipelineConfig
) -> None:
    write_silver(spark, config, "orders", ORDERS)
    write_silver(spark, config, "order_items", ORDER_ITEMS)
    path = table_path(config.paths.lake, "gold", "customer_segments")

    run(spark, config, "customer_segments", as_of=EARLY)
    latest = run(spark, config, "customer_segments")  # default as-of: the latest order date
    version = table_version(spark, path)
    again = run(spark, config, "customer_segments", as_of=LATEST)
    assert table_version(spark, path) == version  # the re-run committed nothing
    refreshed = run(spark, config, "customer_segments", as_of=LATEST, full_refresh=True)

    # As of the 20th: c1 (o1) and c2 (o3), tied on frequency and money; c3 had not ordered yet.
    # As of the 31st: c2's o4 was cancelled; recency 13/6/0 -> r 1/2/4, frequency 1/2/1 -> f 1/4/1,
    # money 10/40/6 -> m 2/4/1 (1 + floor(5 * worse / 3)). The full refresh rewrote the same rows.
    expected = spark.createDataFrame(
        [
            ("c1", EARLY, 15, 1, money("10"), 1, 1, 1, "Lost", D(2024, 1, 5), D(2024, 1, 5)),
            ("c2", EARLY, 2, 1, money("10"), 3, 1, 1, "Lost", D(2024, 1, 18), D(2024, 1, 18)),
            ("c1", LATEST, 6, 2, money("40"), 2, 4, 4, "Can't lose", D(2024, 1, 5), D(2024, 1, 25)),
            ("c2", LATEST, 13, 1, money("10"), 1, 1, 2, "Lost", D(2024, 1, 18), D(2024, 1, 18)),
            ("c3", LATEST, 0, 1, money("6"), 4, 1, 1, "New", LATEST, LATEST),
        ],
        CUSTOMER_SEGMENTS_TABLE_SCHEMA,
    )
    actual = gold(spark, config, "customer_segments")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert latest.details == {"as_of_date": "2024-01-31", "partition": "replaced", "partition_rows": 3}
    assert (again.rows_written, again.details["partition"]) == (0, "unchanged")
    assert (refreshed.rows_written, table_version(spark, path)) == (3, version + 1)  # type: ignore[operator]


def test_product_popularity_defaults_to_the_latest_order_date_and_reruns_commit_nothing(
    spark: SparkSession, config: PipelineConfig
) -> None:
    write_every_silver_table(spark, config)
    path = table_path(config.paths.lake, "gold", "product_popularity")

    first = run(spark, config, "product_popularity")
    version = table_version(spark, path)
    again = run(spark, config, "product_popularity")

    # 7 days = 25th..31st: o2, o5 (p2) and o6 (p3); 30 days adds o1 and o3 (p1); o4 was cancelled.
    # p3's category is the version valid on the 31st (Toys), not the later Garden.
    expected = spark.createDataFrame(
        [
            ("p1", LATEST, 7, 1, 0, 0, 0, money("0"), 0.0, None, 2, 3, "Books"),
            ("p2", LATEST, 7, 1, 1, 2, 3, money("45"), 1.0, 2.0, 1, 1, "Books"),
            ("p3", LATEST, 7, 0, 0, 1, 3, money("6"), None, None, 1, 2, "Toys"),
            ("p1", LATEST, 30, 1, 0, 2, 2, money("20"), 0.0, None, 2, 2, "Books"),
            ("p2", LATEST, 30, 1, 1, 2, 3, money("45"), 1.0, 2.0, 1, 1, "Books"),
            ("p3", LATEST, 30, 1, 0, 1, 3, money("6"), 0.0, None, 1, 3, "Toys"),
        ],
        PRODUCT_POPULARITY_TABLE_SCHEMA,
    )
    actual = gold(spark, config, "product_popularity")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert (first.rows_written, again.rows_written) == (6, 0)
    assert again.details["inputs"] == "unchanged since the partition was written"  # not even computed
    assert table_version(spark, path) == version
    partitions = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").select(F.col("partitionColumns")).first()
    assert partitions is not None and partitions[0] == ["as_of_date"]


def test_missing_silver_table_fails_with_a_one_line_reason(
    spark: SparkSession, config: PipelineConfig
) -> None:
    with pytest.raises(
        JobFailedError, match=r"no Delta table silver\.orders at .*: run the silver layer first"
    ):
        run(spark, config, "customer_segments", as_of=LATEST)


def test_an_aggregate_is_recomputed_when_silver_settings_or_the_asked_date_change(
    spark: SparkSession, config: PipelineConfig
) -> None:
    write_every_silver_table(spark, config)
    path = table_path(config.paths.lake, "gold", "product_popularity")
    run(spark, config, "product_popularity")
    assert "inputs" in run(spark, config, "product_popularity").details  # skipped: same inputs
    before = table_version(spark, path)
    forced = run(spark, config, "product_popularity", force=True)  # run --force: computed again
    assert "inputs" not in forced.details and forced.details["partition"] == "unchanged"
    assert table_version(spark, path) == before  # compared equal: nothing written

    write_silver(spark, config, "clicks", CLICKS)  # a new silver version, the same rows
    version = table_version(spark, path)
    recomputed = run(spark, config, "product_popularity")
    assert "inputs" not in recomputed.details and recomputed.details["partition"] == "unchanged"
    assert table_version(spark, path) == version  # recomputed, compared equal: nothing written
    assert "inputs" not in run(spark, config, "product_popularity", as_of=LATEST).details

    week_only = dataclasses.replace(
        config, pipeline=dataclasses.replace(config.pipeline, popularity_windows_days=(7,))
    )
    narrowed = run(spark, week_only, "product_popularity")
    assert (narrowed.rows_written, narrowed.details["partition"]) == (3, "replaced")
    assert "inputs" in run(spark, week_only, "product_popularity").details
    refreshed = run(spark, week_only, "product_popularity", full_refresh=True)
    assert (refreshed.rows_written, table_version(spark, path)) == (3, version + 2)  # type: ignore[operator]
    assert gold(spark, config, "product_popularity").select("window_days").distinct().collect() == [(7,)]
