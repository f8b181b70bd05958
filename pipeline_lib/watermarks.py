"""Incremental reads: which Delta version of an upstream table a job has processed.

Each consumer (a silver or gold job) records, per upstream table, the last version it
merged, in ``<lake>/ops/watermarks``. The next run reads only the change data feed of the
versions after it. The record is written *after* the job's own writes: a crash between
the two makes the next run re-read those versions, which the jobs' key-based MERGEs
absorb (re-processing is idempotent), so nothing is skipped and nothing doubles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.delta_io import (
    OPS_TABLE_PROPERTIES,
    read_table,
    table_exists,
    table_path,
    table_version,
    upsert,
)
from pipeline_lib.faults import crash_point
from pipeline_lib.frames import local_frame

WATERMARKS_TABLE = "watermarks"
CDF_PROPERTIES = {"delta.enableChangeDataFeed": "true"}

_SCHEMA = T.StructType(
    [
        T.StructField("consumer", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("version", T.LongType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]
)


def last_processed_version(spark: SparkSession, lake: str, consumer: str, source: str) -> int | None:
    """The last version of ``source`` that ``consumer`` processed, or None if never."""
    path = table_path(lake, "ops", WATERMARKS_TABLE)
    if not table_exists(spark, path):
        return None
    row = (
        read_table(spark, path)
        .where((F.col("consumer") == consumer) & (F.col("source") == source))
        .select("version")
        .first()
    )
    return None if row is None else int(row[0])


def save_processed_version(
    spark: SparkSession, lake: str, consumer: str, source: str, version: int, run_id: str
) -> None:
    """Record that ``consumer`` has processed ``source`` up to ``version``."""
    crash_point(f"watermark.before_save.{consumer}")
    save_processed_versions(spark, lake, consumer, {source: version}, run_id)
    crash_point(f"watermark.after_save.{consumer}")


def save_processed_versions(
    spark: SparkSession, lake: str, consumer: str, versions: Mapping[str, int], run_id: str
) -> None:
    """Record, in one MERGE, the version up to which ``consumer`` has processed each source."""
    now = dt.datetime.now(dt.UTC)
    rows = [(consumer, source, int(version), run_id, now) for source, version in versions.items()]
    upsert(
        local_frame(spark, rows, _SCHEMA),
        table_path(lake, "ops", WATERMARKS_TABLE),
        keys=["consumer", "source"],
        update_condition="s.version <> t.version",
        properties=OPS_TABLE_PROPERTIES,
    )


def read_appended_rows(
    spark: SparkSession, path: str, after_version: int | None
) -> tuple[DataFrame, int | None]:
    """Rows inserted into an append-only table after ``after_version``, and the version read up to.

    Uses the change data feed (enabled on every table this project creates); with no
    watermark yet the whole current table is read.

    Returns:
        ``(rows, latest_version)``; ``rows`` is empty when nothing is new. ``latest_version``
        is None when the table does not exist (then ``rows`` is None-free but empty is not
        possible: callers check :func:`table_exists` first).
    """
    latest = table_version(spark, path)
    if latest is None:
        raise FileNotFoundError(f"no Delta table at {path}: run the upstream job first")
    if after_version is None:
        return read_table(spark, path, version=latest), latest
    if after_version >= latest:
        return read_table(spark, path, version=latest).limit(0), latest
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", after_version + 1)
        .option("endingVersion", latest)
        .load(path)
        .where(F.col("_change_type") == "insert")
        .drop("_change_type", "_commit_version", "_commit_timestamp")
    )
    return changes, latest
