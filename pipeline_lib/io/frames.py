"""Small frames: rows held by the driver (run records, watermarks, file-log entries), and frame equality.

``spark.createDataFrame(rows, schema)`` with a list of tuples ships the rows through a
Python RDD: a Spark job with a task in a Python worker, before the DataFrame is even used.
For the bookkeeping rows every job writes (a run record, a watermark, file-log entries),
that was half the cost of the write; an Arrow table is read as a local relation (no job,
no Python worker; ``bench/results/MEASUREMENTS.md``). :func:`local_frame` takes that path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema


def local_frame(spark: SparkSession, rows: Iterable[Sequence[Any]], schema: T.StructType | str) -> DataFrame:
    """A DataFrame of ``rows`` (tuples in the order of ``schema``'s fields), with exactly ``schema``.

    Args:
        spark: The session.
        rows: The rows; none gives an empty DataFrame of that schema.
        schema: A ``StructType`` or a DDL string (``"order_id string, version long"``).

    Values are read as ``createDataFrame`` reads them: a naive ``datetime`` is local time
    (the machine's zone), an aware one keeps its instant.

    Raises:
        ValueError: A row's length differs from the schema's, or a non-nullable field has a None.
        pyarrow.ArrowInvalid, pyarrow.ArrowTypeError: A value does not fit its field's type.
    """
    if isinstance(schema, str):
        parsed = T.StructType.fromDDL(schema)
        assert isinstance(parsed, T.StructType)
        schema = parsed
    names = schema.fieldNames()
    columns: list[list[Any]] = [[] for _ in names]
    for row in rows:
        if len(row) != len(names):
            raise ValueError(f"a row of {len(row)} values for the {len(names)} fields {names}")
        for values, value in zip(columns, row, strict=True):
            values.append(_instant(value))
    arrow_schema = to_arrow_schema(schema, timezone="UTC")
    table = pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, arrow_schema, strict=True)],
        schema=arrow_schema,
    )
    return spark.createDataFrame(table, schema)


def _instant(value: Any) -> Any:
    # Arrow reads a naive datetime as UTC; createDataFrame as local time: do as the latter.
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.astimezone(dt.UTC)
    return value


# The side a row of :func:`_row_tally` came from (+1 left, -1 right), and the tally's two
# output columns; prefixed so that no compared table's column can collide with them.
_SIDE = "__same_rows_side"
_DIFFERENCE = "__same_rows_difference"
_LEFT = "__same_rows_left"


def _row_tally(left: DataFrame, right: DataFrame) -> DataFrame:
    """Per distinct row of either frame: ``_DIFFERENCE`` (copies in ``left`` minus copies in
    ``right``) and ``_LEFT`` (copies in ``left``). Grouping compares values as ``exceptAll``
    does (nulls equal, NaN equal, -0.0 equal to 0.0)."""
    columns = left.columns
    both = left.withColumn(_SIDE, F.lit(1)).unionByName(right.select(*columns).withColumn(_SIDE, F.lit(-1)))
    return both.groupBy(*columns).agg(
        F.sum(_SIDE).alias(_DIFFERENCE), F.count_if(F.col(_SIDE) == 1).alias(_LEFT)
    )


def same_rows(left: DataFrame, right: DataFrame) -> bool:
    """True when two frames with the same columns hold the same rows as multisets (duplicates count).

    One aggregation over both frames, each row counted +1 on the left and -1 on the right:
    equal multisets leave every row at 0. Exact, as ``exceptAll`` both ways is, with one
    shuffle instead of two (0.39 -> 0.25 s warm on a 6,923-row partition,
    ``bench/results/MEASUREMENTS.md``). The columns of ``right`` are taken in ``left``'s order.
    """
    return _row_tally(left, right).where(F.col(_DIFFERENCE) != 0).isEmpty()


def count_and_compare(left: DataFrame, right: DataFrame) -> tuple[int, bool]:
    """``left``'s row count, and whether ``right`` holds the same rows (:func:`same_rows`), in one query.

    For a writer that counts what it would write and skips the write when the target
    already holds it: one Spark query instead of a count and a comparison.
    """
    row = (
        _row_tally(left, right)
        .agg(
            F.coalesce(F.sum(_LEFT), F.lit(0)).alias("rows"),
            F.count_if(F.col(_DIFFERENCE) != 0).alias("differing"),
        )
        .first()
    )
    assert row is not None  # a global aggregate has one row
    return int(row["rows"]), int(row["differing"]) == 0
