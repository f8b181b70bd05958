"""compare_with_partition and replace_as_of_partition over a real Delta table: the as-of jobs'
decision to write a partition or leave it, for every state the table can be in."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import types as T

from pipeline_lib.gold.as_of import compare_with_partition, replace_as_of_partition
from pipeline_lib.io.delta import read_table, table_version

SCHEMA = T.StructType(
    [
        T.StructField("as_of_date", T.DateType(), False),
        T.StructField("product_id", T.StringType(), False),
        T.StructField("units", T.LongType(), True),
    ]
)
MARCH_1 = dt.date(2026, 3, 1)
MARCH_2 = dt.date(2026, 3, 2)


def _rows(spark, as_of, *products):
    return spark.createDataFrame([(as_of, product, units) for product, units in products], SCHEMA)


def test_a_missing_table_counts_as_changed_even_with_no_rows(spark, tmp_path):
    path = str(tmp_path / "popularity")
    assert compare_with_partition(_rows(spark, MARCH_1, ("p1", 2)), path, MARCH_1) == (1, False)
    assert compare_with_partition(_rows(spark, MARCH_1), path, MARCH_1) == (0, False)


def test_the_stored_partition_is_compared_as_a_multiset(spark, tmp_path):
    path = str(tmp_path / "popularity")
    stored = _rows(spark, MARCH_1, ("p1", 2), ("p1", 2), ("p2", None))
    replace_as_of_partition(stored, path, MARCH_1, user_metadata="{}")

    same = _rows(spark, MARCH_1, ("p2", None), ("p1", 2), ("p1", 2))
    assert compare_with_partition(same, path, MARCH_1) == (3, True)
    one_copy_fewer = _rows(spark, MARCH_1, ("p1", 2), ("p2", None))
    assert compare_with_partition(one_copy_fewer, path, MARCH_1) == (2, False)
    a_value_changed = _rows(spark, MARCH_1, ("p1", 2), ("p1", 2), ("p2", 0))
    assert compare_with_partition(a_value_changed, path, MARCH_1) == (3, False)
    assert compare_with_partition(_rows(spark, MARCH_1), path, MARCH_1) == (0, False)


def test_a_date_without_files_is_new_unless_there_are_no_rows(spark, tmp_path):
    """An existing table with no file for the as-of date (a daily run): rows make it changed;
    no rows leave it unchanged, and nothing is written."""
    path = str(tmp_path / "popularity")
    replace_as_of_partition(_rows(spark, MARCH_1, ("p1", 2)), path, MARCH_1, user_metadata="{}")
    version = table_version(spark, path)

    assert compare_with_partition(_rows(spark, MARCH_2, ("p1", 3)), path, MARCH_2) == (1, False)
    assert compare_with_partition(_rows(spark, MARCH_2), path, MARCH_2) == (0, True)
    assert table_version(spark, path) == version
    assert read_table(spark, path).count() == 1


def test_a_table_without_a_column_of_the_rows_counts_as_changed(spark, tmp_path):
    path = str(tmp_path / "popularity")
    replace_as_of_partition(_rows(spark, MARCH_1, ("p1", 2)), path, MARCH_1, user_metadata="{}")
    wider = _rows(spark, MARCH_1, ("p1", 2)).withColumnRenamed("units", "units_sold")
    assert compare_with_partition(wider, path, MARCH_1) == (1, False)
