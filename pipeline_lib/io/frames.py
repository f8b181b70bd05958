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


def same_rows(left: DataFrame, right: DataFrame) -> bool:
    """True when two frames with the same columns hold the same rows as multisets (duplicates count).

    ``exceptAll`` both ways in one query; the columns of ``right`` are taken in ``left``'s order.
    """
    right = right.select(*left.columns)
    return left.exceptAll(right).unionByName(right.exceptAll(left)).isEmpty()
