"""Run records: one row per job run in ``<lake>/ops/pipeline_runs``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipeline_lib.faults import crash_point
from pipeline_lib.io.delta import OPS_TABLE_PROPERTIES, table_path, write_table
from pipeline_lib.io.frames import local_frame

RUNS_TABLE = "pipeline_runs"

RUN_RECORD_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("layer", T.StringType(), False),
        T.StructField("as_of_date", T.DateType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("rows_read", T.LongType(), False),
        T.StructField("rows_written", T.LongType(), False),
        T.StructField("rows_quarantined", T.LongType(), False),
        T.StructField("delta_versions", T.MapType(T.StringType(), T.LongType()), True),
        T.StructField("config_hash", T.StringType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("details", T.StringType(), True),
    ]
)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job: str
    layer: str
    as_of_date: dt.date | None
    started_at: dt.datetime
    ended_at: dt.datetime
    status: str  # "succeeded" or "failed"
    rows_read: int
    rows_written: int
    rows_quarantined: int
    delta_versions: Mapping[str, int]
    config_hash: str
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def record_runs(spark: SparkSession, lake: str, records: Sequence[RunRecord]) -> None:
    """Append run records to ``<lake>/ops/pipeline_runs`` in one commit (nothing when empty).

    The runner records a whole run at its end: one bookkeeping commit per run instead of
    one per job. A run killed before it leaves no records; the data its jobs committed
    carries what they consumed, so nothing is read twice (docs/engine.md).
    """
    if not records:
        return
    rows = [_row(record) for record in records]
    for record in records:
        crash_point(f"run_record.before.{record.job}")
    write_table(
        local_frame(spark, rows, RUN_RECORD_SCHEMA),
        table_path(lake, "ops", RUNS_TABLE),
        properties=OPS_TABLE_PROPERTIES,
    )
    for record in records:
        crash_point(f"run_record.after.{record.job}")


def _row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.run_id,
        record.job,
        record.layer,
        record.as_of_date,
        _aware_utc(record.started_at),
        _aware_utc(record.ended_at),
        record.status,
        int(record.rows_read),
        int(record.rows_written),
        int(record.rows_quarantined),
        dict(record.delta_versions),
        record.config_hash,
        record.error,
        json.dumps(dict(record.details), sort_keys=True, default=str),
    )


def _aware_utc(moment: dt.datetime) -> dt.datetime:
    # PySpark turns a naive datetime into a timestamp with the *machine's* time zone;
    # an aware one is exact, whatever the machine.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
