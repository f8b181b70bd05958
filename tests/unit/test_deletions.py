"""Deletions at the source: key snapshot against bronze, tombstones, and how silver applies them."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.database import (
    ExtractWindow,
    TooManyDeletionsError,
    deleted_at,
    deleted_keys,
    deletion_guard,
    is_deletion,
    live_keys,
    to_tombstones,
)
from pipeline_lib.bronze.schemas import LANDING_SOURCES
from pipeline_lib.silver.deletions import (
    IS_DELETION,
    clean_deletions,
    deleted_rows,
    deletion_versions,
    without_deleted,
)
from pipeline_lib.silver.history import build_scd2_history

PREFIX = "postgresql://h:5432/shop/public.orders?window="
W1 = f"{PREFIX}..2026-03-01T00:00:00.000000Z"
W2 = f"{PREFIX}2026-02-28T23:00:00.000000Z..2026-03-02T00:00:00.000000Z"
TOMB = '{"_op": "delete", "deleted_at": "2026-03-02T00:00:00.000000Z"}'
KNOWN = "order_id string, _source_file string, _rescued_data string"


def utc(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, tzinfo=dt.UTC)


def test_is_deletion_and_deleted_at_read_the_mark_and_are_false_or_null_otherwise(spark):
    source = spark.createDataFrame(
        [(TOMB,), ('{"order_updated_at": "2026-03-01T00:00:00Z"}',), (None,), ("not json",)], "r string"
    )
    actual = source.select(is_deletion("r").alias("is"), deleted_at("r").alias("at")).collect()
    assert [(r["is"], r["at"]) for r in actual] == [
        (True, "2026-03-02T00:00:00.000000Z"),
        (False, None),
        (False, None),
        (False, None),
    ]


def test_live_keys_are_those_whose_latest_row_is_no_tombstone(spark):
    known = spark.createDataFrame(
        [
            ("a", W1, None),  # live
            ("b", W1, None),
            ("b", W2, TOMB),  # deleted in the second window
            ("c", W1, TOMB),
            ("c", W2, None),  # inserted again: live
            ("d", W2, None),
            ("d", W2, TOMB),  # read and deleted in the same window: the tombstone comes last
            (None, W1, None),  # no key: ignored
        ],
        KNOWN,
    )
    actual = known.transform(live_keys, keys=["order_id"])
    assert_df_equality(
        actual, spark.createDataFrame([("a",), ("c",)], "order_id string"), ignore_row_order=True
    )


def test_deleted_keys_are_the_live_keys_missing_from_the_snapshot_as_text(spark):
    live = spark.createDataFrame([("o1", "1"), ("o1", "2"), ("o2", "1")], "order_id string, line_no string")
    snapshot = spark.createDataFrame([("o1", 1), ("o3", 1)], "order_id string, line_no int")
    actual = live.transform(deleted_keys, snapshot=snapshot, keys=["order_id", "line_no"])
    expected = spark.createDataFrame([("o1", "2"), ("o2", "1")], "order_id string, line_no string")
    assert_df_equality(actual, expected, ignore_row_order=True)


def test_a_tombstone_has_its_key_the_upper_bound_and_the_mark_in_the_bronze_contract(spark):
    contract = LANDING_SOURCES["orders"]
    window = ExtractWindow(utc(1), utc(2))
    ingested = dt.datetime(2026, 3, 2, 0, 1, tzinfo=dt.UTC)
    deleted = spark.createDataFrame([("o9",)], "order_id string")
    actual = deleted.transform(
        to_tombstones,
        source=contract,
        keys=["order_id"],
        uri=W2,
        window=window,
        ingested_at=ingested,
        run_id="r1",
    )
    assert [(f.name, f.dataType) for f in actual.schema] == [
        (f.name, f.dataType) for f in contract.bronze_schema
    ]
    row = actual.first()
    assert row is not None
    assert (row.order_id, row.updated_at, row.order_status, row._source_file, row._run_id) == (
        "o9",
        "2026-03-02T00:00:00.000000Z",
        None,
        W2,
        "r1",
    )
    assert row._ingest_date == dt.date(2026, 3, 1)
    assert actual.select(is_deletion().alias("d"), deleted_at().alias("t")).first() == (
        True,
        "2026-03-02T00:00:00.000000Z",
    )


def test_the_guard_refuses_deleting_more_than_the_share_and_names_the_table():
    deletion_guard(deleted=0, live=0, max_fraction=0.5, table="public.orders")
    deletion_guard(deleted=5, live=10, max_fraction=0.5, table="public.orders")
    deletion_guard(deleted=10, live=10, max_fraction=1.0, table="public.orders")
    with pytest.raises(
        TooManyDeletionsError, match=r"public\.orders: .* lacks 10 of the 10 keys .*max_delete_fraction"
    ):
        deletion_guard(deleted=10, live=10, max_fraction=0.5, table="public.orders")


DELETIONS = "order_id string, _rescued_data string, _ingest_date date"


def _deletions(spark, rows):
    return spark.createDataFrame(rows, DELETIONS).transform(clean_deletions, keys=["order_id"])


def test_clean_deletions_types_the_key_and_time_and_drops_incomplete_rows(spark):
    source = spark.createDataFrame(
        [(" 7 ", "3", TOMB, dt.date(2026, 3, 1)), (None, "1", TOMB, dt.date(2026, 3, 1))],
        "order_id string, line_no string, _rescued_data string, _ingest_date date",
    )
    actual = source.transform(clean_deletions, keys=["order_id", "line_no"])
    expected = spark.createDataFrame(
        [("7", 3, dt.datetime(2026, 3, 2), dt.date(2026, 3, 1))],
        "order_id string, line_no int, deleted_at timestamp, _ingest_date date",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_the_greatest_time_wins_between_a_version_and_a_deletion(spark):
    deletions = _deletions(spark, [("a", TOMB, dt.date(2026, 3, 1)), ("b", TOMB, dt.date(2026, 3, 1))])
    rows = spark.createDataFrame(
        [
            ("a", dt.datetime(2026, 3, 1)),  # older than its deletion: removed
            ("b", dt.datetime(2026, 3, 3)),  # inserted again after it: stays
            ("c", dt.datetime(2026, 3, 1)),  # never deleted
            ("d", None),  # no time: stays unless deleted
        ],
        "order_id string, updated_at timestamp",
    )
    kept = rows.transform(without_deleted, deletions=deletions, keys=["order_id"], version="updated_at")
    gone = rows.transform(deleted_rows, deletions=deletions, keys=["order_id"], version="updated_at")
    assert sorted(r.order_id for r in kept.collect()) == ["b", "c", "d"]
    assert [r.order_id for r in gone.collect()] == ["a"]
    assert kept.columns == rows.columns and gone.columns == rows.columns


HISTORY = T.StructType(
    [
        T.StructField("id", T.StringType(), True),
        T.StructField("city", T.StringType(), True),
        T.StructField("updated_at", T.TimestampType(), True),
        T.StructField("valid_from", T.TimestampType(), True),
        T.StructField("valid_to", T.TimestampType(), True),
        T.StructField("is_current", T.BooleanType(), True),
    ]
)
INCOMING = T.StructType(HISTORY.fields[:4])


def ts(day: int) -> dt.datetime:
    return dt.datetime(2024, 1, day)


def _history(spark, existing_rows, incoming_rows, deletion_days):
    existing = spark.createDataFrame(existing_rows, HISTORY).withColumn(IS_DELETION, F.lit(False))
    incoming = spark.createDataFrame([(i, c, ts(d), ts(d)) for i, c, d in incoming_rows], INCOMING)
    deletions = spark.createDataFrame(
        [(i, ts(d)) for i, d in deletion_days], "id string, deleted_at timestamp"
    )
    incoming = incoming.withColumn(IS_DELETION, F.lit(False)).unionByName(
        deletion_versions(deletions, like=incoming, keys=["id"])
    )
    built = build_scd2_history(existing, incoming, keys=["id"], tracked=["city", IS_DELETION])
    return built.where(~F.col(IS_DELETION)).drop(IS_DELETION, "_from_incoming")


def test_a_deletion_closes_the_current_version_and_leaves_none_current(spark):
    actual = _history(spark, [("a", "Berlin", ts(1), ts(1), None, True)], [], [("a", 5)])
    expected = spark.createDataFrame([("a", "Berlin", ts(1), ts(1), ts(5), False)], HISTORY)
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_a_customer_inserted_again_unchanged_after_a_deletion_is_a_new_current_version(spark):
    actual = _history(spark, [("a", "Berlin", ts(1), ts(1), None, True)], [("a", "Berlin", 9)], [("a", 5)])
    expected = spark.createDataFrame(
        [("a", "Berlin", ts(1), ts(1), ts(5), False), ("a", "Berlin", ts(9), ts(9), None, True)], HISTORY
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_re_applying_a_deletion_already_applied_changes_nothing(spark):
    closed = [("a", "Berlin", ts(1), ts(1), ts(5), False)]
    actual = _history(spark, closed, [], [("a", 5)])
    assert_df_equality(actual, spark.createDataFrame(closed, HISTORY), ignore_nullable=True)
