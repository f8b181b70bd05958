"""Delta I/O helpers on real tables: write, MERGE, time travel, and the checks before a write."""

from __future__ import annotations

import os
import re
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import types as T

from pipeline_lib.io.delta import (
    DuplicateKeyError,
    MergeCounts,
    MissingColumnsError,
    append_new,
    insert_or_update,
    latest_commit,
    read_table,
    register_lake_tables,
    replace_groups,
    sync_table,
    table_path,
    table_version,
    upsert,
    write_table,
)
from pipeline_lib.io.frames import local_frame

SCHEMA = T.StructType(
    [
        T.StructField("order_id", T.StringType(), False),
        T.StructField("status", T.StringType(), True),
        T.StructField("amount", T.DecimalType(18, 2), True),
    ]
)


def orders(spark, rows):
    from decimal import Decimal

    return spark.createDataFrame([(k, s, None if a is None else Decimal(a)) for k, s, a in rows], SCHEMA)


def test_round_trip_merge_and_read_older_version(spark, tmp_path):
    path = str(tmp_path / "orders")
    upsert(orders(spark, [("o1", "paid", "10.00"), ("o2", "paid", None)]), path, keys=["order_id"])
    upsert(orders(spark, [("o2", "shipped", "5.50"), ("o3", "paid", "1.00")]), path, keys=["order_id"])

    expected_now = orders(spark, [("o1", "paid", "10.00"), ("o2", "shipped", "5.50"), ("o3", "paid", "1.00")])
    expected_v0 = orders(spark, [("o1", "paid", "10.00"), ("o2", "paid", None)])
    assert_df_equality(read_table(spark, path), expected_now, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(
        read_table(spark, path, version=0), expected_v0, ignore_row_order=True, ignore_nullable=True
    )
    assert table_version(spark, path) == 1


def test_upsert_with_condition_keeps_newer_target_rows(spark, tmp_path):
    path = str(tmp_path / "orders")
    upsert(orders(spark, [("o1", "shipped", "10.00")]), path, keys=["order_id"])
    upsert(
        orders(spark, [("o1", "paid", "10.00")]),
        path,
        keys=["order_id"],
        update_condition="s.status > t.status",
    )

    assert read_table(spark, path).first()["status"] == "shipped"


@pytest.mark.parametrize("held_by", ["driver", "executors"])
def test_upsert_refuses_duplicate_source_keys_before_merging(spark, tmp_path, held_by):
    """Rows the driver holds are checked there, others by a Spark job: both refuse the same way."""
    path = str(tmp_path / "orders")
    upsert(orders(spark, [("o1", "paid", "1.00")]), path, keys=["order_id"])
    rows = [("o2", "paid", Decimal("1.00")), ("o3", "paid", Decimal("1.00")), ("o2", "shipped", None)]
    source = local_frame(spark, rows, SCHEMA)  # an Arrow table: a local relation
    if held_by == "executors":
        source = source.repartition(2)
    assert source.isLocal() == (held_by == "driver")
    refused = r"key \['order_id'\] repeats in the source, e\.g\. \{'order_id': 'o2'\}$"
    with pytest.raises(DuplicateKeyError, match=refused):
        upsert(source, path, keys=["order_id"])
    upsert(source.where("status = 'paid'"), path, keys=["order_id"])  # unique: merged
    assert table_version(spark, path) == 1


def test_upsert_names_missing_key_columns(spark, tmp_path):
    with pytest.raises(MissingColumnsError, match=r"missing columns \['id'\]; found .*required \['id'\]"):
        upsert(orders(spark, [("o1", "paid", "1.00")]), str(tmp_path / "t"), keys=["id"])


def test_append_new_inserts_each_key_once(spark, tmp_path):
    path = str(tmp_path / "events")
    append_new(orders(spark, [("e1", "a", None)]), path, keys=["order_id"])
    append_new(orders(spark, [("e1", "changed", None), ("e2", "b", None)]), path, keys=["order_id"])

    expected = orders(spark, [("e1", "a", None), ("e2", "b", None)])
    assert_df_equality(read_table(spark, path), expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("layer", "table", "message"),
    [
        ("gold", "../../etc", "not a plain lower-case name"),
        ("tmp", "x", "unknown layer"),
        ("gold", "Orders", "not a plain"),
    ],
)
def test_table_path_never_leaves_the_lake(layer, table, message):
    with pytest.raises(ValueError, match=message):
        table_path("/lake", layer, table)


def test_lake_tables_are_reachable_by_name(spark, tmp_path):
    lake = str(tmp_path / "lake")
    write_table(orders(spark, [("o1", "paid", "1.00")]), table_path(lake, "gold", "fact_orders"))

    assert register_lake_tables(spark, lake) == ["gold.fact_orders"]
    assert spark.sql("SELECT order_id FROM gold.fact_orders").first()[0] == "o1"


LINES = T.StructType(
    [
        T.StructField("order_id", T.StringType(), False),
        T.StructField("line_no", T.IntegerType(), False),
        T.StructField("sku", T.StringType(), True),
    ]
)


def test_replace_groups_makes_each_affected_group_exactly_the_source(spark, tmp_path):
    path = str(tmp_path / "lines")
    lines = lambda rows: spark.createDataFrame(rows, LINES)  # noqa: E731
    replace_groups(
        lines([("o1", 1, "a"), ("o1", 2, "b"), ("o2", 1, "c"), ("o3", 1, "d")]),
        path,
        row_keys=["order_id", "line_no"],
    )
    scope = spark.createDataFrame([("o1",), ("o3",)], "order_id string")

    changed = replace_groups(lines([("o1", 1, "a2")]), path, row_keys=["order_id", "line_no"], scope=scope)

    expected = lines([("o1", 1, "a2"), ("o2", 1, "c")])  # o1 line 2 removed, o3 emptied, o2 untouched
    assert changed == MergeCounts(inserted=0, updated=1, deleted=2, source_rows=1)
    assert_df_equality(read_table(spark, path), expected, ignore_row_order=True, ignore_nullable=True)


def test_replace_groups_with_nothing_in_scope_commits_nothing(spark, tmp_path):
    path = str(tmp_path / "lines")
    source = spark.createDataFrame([("o1", 1, "a")], LINES)
    replace_groups(source, path, row_keys=["order_id", "line_no"])
    empty = source.limit(0)

    assert not replace_groups(empty, path, row_keys=["order_id", "line_no"], scope=empty.select("order_id"))
    assert table_version(spark, path) == 0


NULLABLE_LINES = T.StructType([*(T.StructField(f.name, f.dataType, True) for f in LINES.fields)])


@pytest.mark.parametrize(
    ("repeated", "example"),
    [(("o2", 1), "{'order_id': 'o2', 'line_no': 1}"), ((None, None), "{'order_id': None, 'line_no': None}")],
)
def test_replace_groups_refuses_a_repeated_row_key_before_merging(spark, tmp_path, repeated, example):
    """Into an existing table the keys are checked with the sizes, in one query; a null key is a key."""
    path = str(tmp_path / "lines")
    lines = lambda rows: spark.createDataFrame(rows, NULLABLE_LINES)  # noqa: E731
    replace_groups(lines([("o1", 1, "a")]), path, row_keys=["order_id", "line_no"])
    source = lines([("o1", 1, "a2"), (*repeated, "b"), ("o3", 1, "c"), (*repeated, "d")]).repartition(2)

    with pytest.raises(DuplicateKeyError, match=rf"repeats in the source, e\.g\. {re.escape(example)}$"):
        replace_groups(source, path, row_keys=["order_id", "line_no"])
    assert table_version(spark, path) == 0  # nothing merged
    changed = replace_groups(source.where("sku != 'd'"), path, row_keys=["order_id", "line_no"])
    assert changed == MergeCounts(inserted=2, updated=1, deleted=0, source_rows=3)


def test_sync_table_commits_only_a_difference_and_counts_its_source(spark, tmp_path):
    path = str(tmp_path / "orders")
    write_table(orders(spark, [("o1", "paid", "1.00"), ("o2", "paid", "2.00")]), path, mode="overwrite")
    same = orders(spark, [("o2", "paid", "2.00"), ("o1", "paid", "1.00")])
    other = orders(spark, [("o1", "paid", "1.00"), ("o3", "new", None)])

    assert sync_table(same, path, keys=["order_id"], user_metadata=None) is None
    assert table_version(spark, path) == 0
    changed = sync_table(other, path, keys=["order_id"], user_metadata=None)
    assert changed == MergeCounts(inserted=1, updated=0, deleted=1, source_rows=2)
    assert_df_equality(read_table(spark, path), other, ignore_row_order=True, ignore_nullable=True)


def test_table_version_is_the_latest_commit_past_checkpoints_and_odd_folder_names(spark, tmp_path):
    path = str(tmp_path / "a folder, with [odd] name" / "t")
    assert table_version(spark, path) is None
    (tmp_path / "not_delta").mkdir()
    assert table_version(spark, str(tmp_path / "not_delta")) is None
    row = spark.createDataFrame([(1,)], "n int")
    row.write.format("delta").option("delta.checkpointInterval", "2").save(path)
    for _ in range(4):
        row.write.format("delta").mode("append").save(path)

    assert any(name.endswith(".checkpoint.parquet") for name in os.listdir(f"{path}/_delta_log"))
    assert table_version(spark, path) == 4
    assert table_version(spark, path) == DeltaTable.forPath(spark, path).history(1).first()["version"]


def test_latest_commit_is_what_history_reports_for_a_write_and_a_merge(spark, tmp_path):
    path = str(tmp_path / "t")
    assert latest_commit(spark, path) is None
    write_table(orders(spark, [("o1", "new", "1.00"), ("o2", "new", "2.00")]), path, user_metadata="first")
    first = latest_commit(spark, path)
    assert first is not None and first.version == 0 and first.info["userMetadata"] == "first"
    upsert(orders(spark, [("o2", "paid", "2.00"), ("o3", "new", "3.00")]), path, keys=["order_id"])

    last = latest_commit(spark, path)
    history = DeltaTable.forPath(spark, path).history(1).first()
    assert last is not None and last.version == history["version"] == 1
    assert last.info["operation"] == history["operation"] == "MERGE"
    assert last.info["operationMetrics"] == history["operationMetrics"]
    assert last.info["operationMetrics"]["numTargetRowsInserted"] == "1"
    assert "userMetadata" not in last.info


EVENTS = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("day", T.DateType(), True),
        T.StructField("session", T.StringType(), True),
        T.StructField("_is_new", T.BooleanType(), False),
    ]
)


def test_insert_or_update_with_a_target_condition_never_opens_the_partitions_outside_it(spark, tmp_path):
    import datetime as dt
    import glob

    path = str(tmp_path / "events")
    day = lambda n: dt.date(2026, 3, n)  # noqa: E731
    rows = [("e1", day(1), "s1"), ("e2", day(2), "s2"), ("e3", day(3), "s3"), ("e4", day(4), "s4")]
    target = spark.createDataFrame([(*row, False) for row in rows], EVENTS).drop("_is_new")
    write_table(target, path, partition_by=["day"])
    # The partitions of days 1 and 4 lose their data files: a MERGE that read them would fail.
    for n in (1, 4):
        for data_file in glob.glob(f"{path}/day=2026-03-0{n}/*.parquet"):
            os.remove(data_file)
    plan = spark.createDataFrame([("e2", day(2), "s2b", False), ("e5", day(3), "s5", True)], EVENTS)

    counts = insert_or_update(
        plan,
        path,
        keys=["event_id"],
        is_new="_is_new",
        insert_columns=["event_id", "day", "session"],
        update_columns=["session"],
        target_condition="t.day BETWEEN DATE'2026-03-02' AND DATE'2026-03-03'",
    )

    assert counts is not None and (counts.inserted, counts.updated) == (1, 1)
    in_range = read_table(spark, path).where("day BETWEEN '2026-03-02' AND '2026-03-03'")
    expected = spark.createDataFrame(
        [("e2", day(2), "s2b"), ("e3", day(3), "s3"), ("e5", day(3), "s5")], EVENTS.fieldNames()[:3]
    )
    assert_df_equality(in_range, expected, ignore_row_order=True, ignore_nullable=True)
