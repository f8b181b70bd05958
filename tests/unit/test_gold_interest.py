"""Unit tests of pipeline_lib.gold.interest: product interest per sliding window (batch DataFrames).

The streaming behaviour (watermark, late events, MERGE per micro-batch) is proven on a real
topic in tests/integration/test_kafka_stream.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipeline_lib.gold.interest import product_interest
from pipeline_lib.gold.schemas import PRODUCT_INTEREST_HOURLY_SCHEMA

CLICKS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("event_ts", T.TimestampType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("product_id", T.StringType()),
    ]
)
OUTPUT_SCHEMA = T.StructType([f for f in PRODUCT_INTEREST_HOURLY_SCHEMA.fields if f.name != "updated_at"])


def ts(hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2026, 3, 2, hour, minute)


def test_counts_per_product_and_sliding_window_once_per_event_id(spark: SparkSession) -> None:
    source = spark.createDataFrame(
        [
            ("E1", ts(10, 5), "product_view", "P1"),
            ("E1", ts(10, 5), "product_view", "P1"),  # the tracker's retry: counted once
            ("E2", ts(10, 25), "add_to_cart", "P1"),
            ("E3", ts(10, 40), "purchase", "P1"),
            ("E4", ts(10, 10), "page_view", "P1"),  # not an interest event
            ("E5", ts(10, 10), "product_view", None),  # no product
            ("E6", None, "product_view", "P1"),  # no time
            (None, ts(10, 10), "product_view", "P1"),  # no id
        ],
        CLICKS_SCHEMA,
    )

    actual = product_interest(source, window_minutes=30, slide_minutes=15, lateness_minutes=10)

    expected = spark.createDataFrame(
        [
            ("P1", ts(9, 45), ts(10, 15), 1, 0, 0),
            ("P1", ts(10, 0), ts(10, 30), 1, 1, 0),
            ("P1", ts(10, 15), ts(10, 45), 0, 1, 1),
            ("P1", ts(10, 30), ts(11, 0), 0, 0, 1),
        ],
        OUTPUT_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_an_empty_input_gives_no_window(spark: SparkSession) -> None:
    source = spark.createDataFrame([], CLICKS_SCHEMA)
    actual = product_interest(source, window_minutes=60, slide_minutes=5, lateness_minutes=0)
    assert actual.columns == OUTPUT_SCHEMA.fieldNames()
    assert actual.count() == 0


@pytest.mark.parametrize(
    ("window", "slide", "lateness", "message"),
    [(60, 90, 10, r"slide_minutes must be in 1\.\.window_minutes"), (60, 5, -1, r"cannot be negative")],
)
def test_bad_windows_are_refused(spark: SparkSession, window: int, slide: int, lateness: int, message: str):
    source = spark.createDataFrame([], CLICKS_SCHEMA)
    with pytest.raises(ValueError, match=message):
        product_interest(source, window_minutes=window, slide_minutes=slide, lateness_minutes=lateness)
