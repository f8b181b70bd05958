"""local_frame: the rows and schema createDataFrame would give, as a local relation; frame equality."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from pipeline_lib.io.frames import count_and_compare, local_frame, same_rows
from pipeline_lib.ops.schemas import RUN_RECORD_SCHEMA

SCHEMA = T.StructType(
    [
        T.StructField("id", T.StringType(), False),
        T.StructField("day", T.DateType(), True),
        T.StructField("at", T.TimestampType(), False),
        T.StructField("amount", T.DecimalType(12, 2), True),
        T.StructField("count", T.LongType(), False),
        T.StructField("versions", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("problems", T.ArrayType(T.StringType(), False), False),
        T.StructField("ok", T.BooleanType(), True),
    ]
)
ROWS = [
    (
        "a",
        dt.date(2026, 3, 1),
        dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC),
        Decimal("12.50"),
        3,
        {"silver.orders": 7},
        ["NUL byte", "ünïcødé"],
        True,
    ),
    # A naive datetime is local time for createDataFrame; local_frame must read it the same way.
    ("b", None, dt.datetime(2026, 3, 2, 23, 59, 59, 123456), None, 0, None, [], None),
]


def test_local_frame_gives_the_rows_and_exact_schema_of_create_data_frame(spark):
    frame = local_frame(spark, ROWS, SCHEMA)

    assert frame.schema == SCHEMA  # nullability included: a table created from it keeps it
    expected = spark.createDataFrame(ROWS, SCHEMA)
    assert sorted(frame.collect()) == sorted(expected.collect())  # maps: no ordering in Spark


def test_local_frame_is_a_local_relation_without_a_spark_job(spark):
    frame = local_frame(spark, ROWS, SCHEMA)

    plan = frame._jdf.queryExecution().optimizedPlan().toString()
    assert plan.lstrip().startswith("LocalRelation"), plan
    jobs_before = spark.sparkContext.statusTracker().getJobIdsForGroup()
    local_frame(spark, ROWS, SCHEMA)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup() == jobs_before


def test_local_frame_of_no_rows_and_of_a_ddl_schema(spark):
    empty = local_frame(spark, [], SCHEMA)
    assert empty.schema == SCHEMA and empty.isEmpty()

    ddl = local_frame(spark, [("o1", 2)], "order_id string, version long")
    assert ddl.schema.simpleString() == "struct<order_id:string,version:bigint>"
    assert [tuple(r) for r in ddl.collect()] == [("o1", 2)]


def test_a_run_record_row_round_trips(spark):
    now = dt.datetime.now(dt.UTC)
    row = ("r1", "silver.orders", "silver", None, now, now, "succeeded", 1, 2, 0, {}, "h", None, "{}")

    [record] = local_frame(spark, [row], RUN_RECORD_SCHEMA).collect()

    assert record["job"] == "silver.orders" and record["delta_versions"] == {}
    assert record["started_at"].astimezone(dt.UTC) == now.replace(microsecond=now.microsecond)


def test_bad_rows_are_refused(spark):
    with pytest.raises(ValueError, match="a row of 2 values for the 8 fields"):
        local_frame(spark, [("a", None)], SCHEMA)
    with pytest.raises(ValueError, match="field 'id' with null values to non-nullable"):
        local_frame(spark, [(None, *ROWS[0][1:])], SCHEMA)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        local_frame(spark, [("a", "yesterday", *ROWS[0][2:])], SCHEMA)  # a string for a date


COMPARED = "k string, amount double, tags array<string>"


def test_same_rows_compares_multisets_in_any_order_and_column_order(spark):
    rows = [("a", 1.0, ["x"]), ("a", 1.0, ["x"]), ("b", None, None), (None, float("nan"), [])]
    left = spark.createDataFrame(rows, COMPARED)
    reordered = spark.createDataFrame(list(reversed(rows)), COMPARED).select("tags", "amount", "k")
    assert same_rows(left, reordered)
    assert count_and_compare(left, reordered) == (4, True)
    # -0.0 groups with 0.0, as exceptAll compares them
    assert same_rows(
        spark.createDataFrame([("z", 0.0, None)], COMPARED),
        spark.createDataFrame([("z", -0.0, None)], COMPARED),
    )


@pytest.mark.parametrize(
    "right",
    [
        [("a", 1.0, ["x"]), ("b", None, None)],  # a duplicate fewer
        [("a", 1.0, ["x"]), ("a", 1.0, ["x"]), ("a", 1.0, ["x"]), ("b", None, None)],  # one more
        [("a", 1.0, ["x"]), ("a", 1.0, ["y"]), ("b", None, None)],  # a value changed
        [("a", 1.0, ["x"]), ("a", 1.0, ["x"]), ("b", 2.0, None)],  # a null filled
        [("a", 1.0, ["x"]), ("b", None, None), ("b", None, None)],  # as many rows, other copies
        [],
    ],
)
def test_same_rows_tells_any_difference_of_rows_or_copies(spark, right):
    left = spark.createDataFrame([("a", 1.0, ["x"]), ("a", 1.0, ["x"]), ("b", None, None)], COMPARED)
    other = spark.createDataFrame(right, COMPARED)
    assert not same_rows(left, other)
    assert not same_rows(other, left)
    assert count_and_compare(left, other) == (3, False)
    assert count_and_compare(other, left) == (len(right), False)


def test_count_and_compare_of_two_empty_frames(spark):
    empty = spark.createDataFrame([], COMPARED)
    assert count_and_compare(empty, empty) == (0, True)
