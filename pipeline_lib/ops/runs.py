"""Run records: one row per job run in ``<lake>/ops/pipeline_runs``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipeline_lib.io.delta import OPS_TABLE_PROPERTIES, append_shared, table_path
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import RUN_RECORD_SCHEMA, RUNS_TABLE


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


def record_runs(
    spark: SparkSession,
    lake: str,
    records: Sequence[RunRecord],
    *,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Append run records to ``<lake>/ops/pipeline_runs`` in one commit (nothing when empty).

    The runner records a whole run at its end: one bookkeeping commit per run instead of
    one per job. A run killed before it leaves no records; the data its jobs committed
    carries what they consumed, so nothing is read twice (docs/engine.md). A blind append,
    refused only while another writer creates the table: retried
    (:func:`pipeline_lib.io.delta.append_shared`, one ``progress`` line per retry).
    """
    if not records:
        return
    rows = [_row(record) for record in records]
    append_shared(
        local_frame(spark, rows, RUN_RECORD_SCHEMA),
        table_path(lake, "ops", RUNS_TABLE),
        properties=OPS_TABLE_PROPERTIES,
        progress=progress,
    )


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
