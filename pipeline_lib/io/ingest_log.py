"""The file log of bronze: which delivery file was ingested, when, and what was found in it.

``<lake>/ops/ingested_files`` holds one row per delivery file a bronze job handled: its
status (``ingested``, ``empty``, ``failed``), rows, corrupt and rescued rows, and the
problems seen. A job appends its files' rows after their data's commit; a run stopped in
between is repaired from bronze itself (:func:`files_in_bronze`, :func:`file_stats_in_bronze`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE, RUN_ID, SOURCE_FILE, LandingSource
from pipeline_lib.bronze.transforms import file_stats
from pipeline_lib.io.delta import OPS_TABLE_PROPERTIES, append_shared, read_table, table_exists
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.landing import DeliveryFile
from pipeline_lib.ops.schemas import INGEST_LOG_SCHEMA


@dataclass
class FileOutcome:
    """What happened to one delivered file in this run."""

    delivery: DeliveryFile
    status: str
    rows: int = 0
    corrupt_rows: int = 0
    rescued_rows: int = 0
    problems: list[str] = field(default_factory=list)


def logged_files(spark: SparkSession, log_path: str, source: str) -> set[str]:
    """Paths already recorded in the ingest log for ``source`` (bounded: one row per file)."""
    if not table_exists(spark, log_path):
        return set()
    rows = read_table(spark, log_path).where(F.col("source") == source).select("file").distinct().collect()
    return {r["file"] for r in rows}


def files_in_bronze(spark: SparkSession, bronze_path: str, candidates: Sequence[DeliveryFile]) -> set[str]:
    """Which candidate files already have rows in bronze (a run that crashed before logging them)."""
    if not candidates or not table_exists(spark, bronze_path):
        return set()
    dates = sorted({f.ingest_date for f in candidates})
    rows = (
        read_table(spark, bronze_path)
        .where(F.col(INGEST_DATE).isin(dates) & F.col(SOURCE_FILE).isin([f.path for f in candidates]))
        .select(SOURCE_FILE)
        .distinct()
        .collect()
    )
    return {r[SOURCE_FILE] for r in rows}


def file_stats_in_bronze(
    spark: SparkSession,
    bronze_path: str,
    source: LandingSource,
    files: Sequence[DeliveryFile],
    *,
    run_id: str | None = None,
) -> dict[str, dict[str, int]]:
    """Rows, corrupt, rescued, invalid-UTF-8 and NUL rows per file, as bronze holds them.

    Of the rows ``run_id`` wrote when given (this run's append), else of every row of the files.
    """
    dates = sorted({f.ingest_date for f in files})
    rows = read_table(spark, bronze_path).where(F.col(INGEST_DATE).isin(dates))
    if run_id is not None:
        rows = rows.where(F.col(RUN_ID) == run_id)
    else:
        rows = rows.where(F.col(SOURCE_FILE).isin([f.path for f in files]))
    return {r[SOURCE_FILE]: r.asDict() for r in rows.transform(file_stats, source=source).collect()}


def apply_stats(outcome: FileOutcome, stats: dict[str, int] | None) -> None:
    stats = stats or {}
    outcome.rows = int(stats.get("rows") or 0)
    outcome.corrupt_rows = int(stats.get("corrupt_rows") or 0)
    outcome.rescued_rows = int(stats.get("rescued_rows") or 0)
    if outcome.rows == 0:
        outcome.status = "empty"
        outcome.problems.append("no records (empty or header-only file)")
    if outcome.corrupt_rows:
        outcome.problems.append(f"{outcome.corrupt_rows} rows did not parse (kept in _corrupt_record)")
    if outcome.rescued_rows:
        outcome.problems.append(
            f"{outcome.rescued_rows} rows carry fields outside the contract (in _rescued_data)"
        )
    if stats.get("invalid_utf8_rows"):
        outcome.problems.append(f"{stats['invalid_utf8_rows']} rows had invalid UTF-8 (replaced by U+FFFD)")
    if stats.get("nul_rows"):
        outcome.problems.append(f"{stats['nul_rows']} rows contain NUL bytes")


def append_log(
    spark: SparkSession, log_path: str, source: str, outcomes: Sequence[FileOutcome], run_id: str
) -> None:
    """Append the outcomes of ``source``'s files to the file log (one commit)."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        (
            o.delivery.source,
            o.delivery.path,
            o.delivery.ingest_date,
            o.delivery.size,
            o.delivery.modified_at,
            o.status,
            o.rows,
            o.corrupt_rows,
            o.rescued_rows,
            o.problems,
            run_id,
            now,
        )
        for o in outcomes
    ]
    append_shared(local_frame(spark, rows, INGEST_LOG_SCHEMA), log_path, properties=OPS_TABLE_PROPERTIES)
