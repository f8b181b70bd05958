"""Bronze jobs: each landing source into its bronze Delta table, incrementally, losslessly.

One job per source (``bronze.orders``, ``bronze.clicks``...). A run reads only the
delivery files it has not ingested yet, appends their records in ONE Delta commit, then
records each file in ``<lake>/ops/ingested_files``. See docs/bronze.md for why this
design (Delta's atomic append plus a file log, repaired from the table after a crash)
rather than a streaming checkpoint.

    ecom-pipeline run --layer bronze [--job clicks]
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.framework import JobContext, JobResult, job
from pipeline_lib.bronze import conform_to_bronze, file_stats, with_lineage
from pipeline_lib.delta_io import OPS_TABLE_PROPERTIES, read_table, table_exists, table_version, write_table
from pipeline_lib.faults import crash_point
from pipeline_lib.frames import local_frame
from pipeline_lib.landing import DeliveryFile, list_delivery_files, read_delivery_file
from pipeline_lib.schemas import INGEST_DATE, LANDING_SOURCES, RUN_ID, SOURCE_FILE, LandingSource
from pipeline_lib.watermarks import CDF_PROPERTIES

INGEST_LOG_TABLE = "ingested_files"
# The first line of a Py4J error, which names the JVM call, not what went wrong.
_PY4J_CALL = re.compile(r"An error occurred while calling [\w.$]+")
INGEST_LOG_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("file", T.StringType(), False),
        T.StructField("ingest_date", T.DateType(), False),
        T.StructField("size_bytes", T.LongType(), False),
        T.StructField("modified_at", T.TimestampType(), True),
        T.StructField("status", T.StringType(), False),  # ingested, empty, failed
        T.StructField("rows", T.LongType(), False),
        T.StructField("corrupt_rows", T.LongType(), False),
        T.StructField("rescued_rows", T.LongType(), False),
        T.StructField("problems", T.ArrayType(T.StringType(), False), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("logged_at", T.TimestampType(), False),
    ]
)


@dataclass
class FileOutcome:
    """What happened to one delivered file in this run."""

    delivery: DeliveryFile
    status: str
    rows: int = 0
    corrupt_rows: int = 0
    rescued_rows: int = 0
    problems: list[str] = field(default_factory=list)


def ingest_source(ctx: JobContext, source: LandingSource) -> JobResult:
    """Ingest the new delivery files of one source into ``<lake>/bronze/<source>``."""
    spark = ctx.spark
    bronze_path = ctx.path("bronze", source.name)
    log_path = ctx.path("ops", INGEST_LOG_TABLE)
    listing = list_delivery_files(spark, ctx.config.paths.landing, source.name)
    # A run as of a date ingests the deliveries up to that date; later ones wait for their day.
    due = [f for f in listing.files if ctx.as_of is None or f.ingest_date <= ctx.as_of]
    logged = logged_files(spark, log_path, source.name)
    in_bronze = files_in_bronze(spark, bronze_path, [f for f in due if f.path not in logged])
    new_files = [f for f in due if f.path not in logged and f.path not in in_bronze]
    repaired = [f for f in due if f.path in in_bronze and f.path not in logged]
    details: dict[str, object] = {
        "files_listed": len(listing.files),
        "files_after_as_of": len(listing.files) - len(due),
        "not_deliveries": list(listing.ignored),
    }
    if not new_files and not repaired:
        ctx.progress(f"bronze.{source.name}: no new delivery files ({len(listing.files)} already ingested)")
        return JobResult(details=details)

    ctx.progress(f"bronze.{source.name}: {len(new_files)} new files")
    outcomes = [
        *_ingest_files(ctx, source, new_files, bronze_path),
        *_repair_log(ctx, source, repaired, bronze_path),
    ]
    crash_point(f"bronze.before_log.{source.name}")
    _append_log(spark, log_path, outcomes, ctx.run_id)
    crash_point(f"bronze.after_log.{source.name}")
    for outcome in outcomes:
        if outcome.problems:
            ctx.progress(f"bronze.{source.name}: {outcome.delivery.path}: {'; '.join(outcome.problems)}")
    rows = sum(o.rows for o in outcomes if o.delivery in new_files)
    details.update(
        files_ingested=sum(o.status in ("ingested", "empty") for o in outcomes),
        files_failed=[o.delivery.path for o in outcomes if o.status == "failed"],
        files_repaired=[f.path for f in repaired],
        corrupt_rows=sum(o.corrupt_rows for o in outcomes),
        rescued_rows=sum(o.rescued_rows for o in outcomes),
        rows_per_file={o.delivery.path: o.rows for o in outcomes},
    )
    version = table_version(spark, bronze_path)
    versions = {} if version is None else {bronze_path: version}
    return JobResult(rows_read=rows, rows_written=rows, delta_versions=versions, details=details)


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


def _ingest_files(
    ctx: JobContext, source: LandingSource, files: Sequence[DeliveryFile], bronze_path: str
) -> list[FileOutcome]:
    if not files:
        return []
    outcomes: dict[str, FileOutcome] = {}
    batches: dict[str, DataFrame] = {}
    ingested_at = dt.datetime.now(dt.UTC)
    for delivery in files:
        if delivery.size > ctx.config.pipeline.max_file_bytes:
            outcomes[delivery.path] = FileOutcome(
                delivery,
                "failed",
                problems=[f"file of {delivery.size} bytes exceeds pipeline.max_file_bytes; not read"],
            )
            continue
        try:
            read = read_delivery_file(ctx.spark, delivery, source)
        except Exception as exc:
            outcomes[delivery.path] = FileOutcome(
                delivery, "failed", problems=[f"unreadable: {_first_line(exc)}"]
            )
            continue
        outcomes[delivery.path] = FileOutcome(delivery, "ingested", problems=list(read.problems))
        batches[delivery.path] = read.records.transform(
            with_lineage,
            source_file=delivery.path,
            ingest_date=delivery.ingest_date,
            ingested_at=ingested_at,
            run_id=ctx.run_id,
        ).transform(conform_to_bronze, source=source)

    written = _write_batches(ctx, source, batches, bronze_path, outcomes)
    if written:
        stats = _stats_of_run(
            ctx.spark, bronze_path, source, ctx.run_id, [outcomes[p].delivery for p in written]
        )
        for path in written:
            _apply_stats(outcomes[path], stats.get(path))
    return list(outcomes.values())


def _write_batches(
    ctx: JobContext,
    source: LandingSource,
    batches: dict[str, DataFrame],
    bronze_path: str,
    outcomes: dict[str, FileOutcome],
) -> list[str]:
    """Append the readable files in one commit; if that fails, find the broken files, retry without them."""
    if not batches:
        return []
    try:
        _append(_union(batches.values()), bronze_path)
        return list(batches)
    except Exception as first_error:
        ctx.progress(
            f"bronze.{source.name}: batch write failed ({_first_line(first_error)}); "
            "checking files one by one"
        )
    readable = {}
    for path, records in batches.items():
        try:
            records.count()
            readable[path] = records
        except Exception as exc:
            outcomes[path].status = "failed"
            outcomes[path].problems.append(f"unreadable: {_first_line(exc)}")
    if readable:
        _append(_union(readable.values()), bronze_path)
    return list(readable)


def _append(records: DataFrame, bronze_path: str) -> None:
    write_table(records, bronze_path, mode="append", partition_by=[INGEST_DATE], properties=CDF_PROPERTIES)


def _union(frames: object) -> DataFrame:
    frames = list(frames)  # type: ignore[call-overload]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def _stats_of_run(
    spark: SparkSession, bronze_path: str, source: LandingSource, run_id: str, files: Sequence[DeliveryFile]
) -> dict[str, dict[str, int]]:
    dates = sorted({f.ingest_date for f in files})
    rows = (
        read_table(spark, bronze_path)
        .where(F.col(INGEST_DATE).isin(dates) & (F.col(RUN_ID) == run_id))
        .transform(file_stats, source=source)
        .collect()
    )
    return {r[SOURCE_FILE]: r.asDict() for r in rows}


def _repair_log(
    ctx: JobContext, source: LandingSource, files: Sequence[DeliveryFile], bronze_path: str
) -> list[FileOutcome]:
    """Log files whose rows reached bronze in a run that stopped before logging them."""
    if not files:
        return []
    dates = sorted({f.ingest_date for f in files})
    rows = (
        read_table(ctx.spark, bronze_path)
        .where(F.col(INGEST_DATE).isin(dates) & F.col(SOURCE_FILE).isin([f.path for f in files]))
        .transform(file_stats, source=source)
        .collect()
    )
    stats = {r[SOURCE_FILE]: r.asDict() for r in rows}
    outcomes = []
    for delivery in files:
        problems = [
            "logged after an interrupted run (rows were in bronze)",
            *_header_problems(ctx, delivery, source),
        ]
        outcome = FileOutcome(delivery, "ingested", problems=problems)
        _apply_stats(outcome, stats.get(delivery.path))
        outcomes.append(outcome)
    return outcomes


def _header_problems(ctx: JobContext, delivery: DeliveryFile, source: LandingSource) -> list[str]:
    """The header problems the interrupted run saw (a CSV's missing or extra columns), read again.

    Bronze keeps the rows, not the header: without this a repaired log entry would lose them.
    """
    try:
        return list(read_delivery_file(ctx.spark, delivery, source).problems)  # reads the header only
    except Exception as exc:  # its rows are in bronze: a failure here is not the file's fault
        return [f"header not re-read: {_first_line(exc)}"]


def _apply_stats(outcome: FileOutcome, stats: dict[str, int] | None) -> None:
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


def _append_log(spark: SparkSession, log_path: str, outcomes: Sequence[FileOutcome], run_id: str) -> None:
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
    write_table(
        local_frame(spark, rows, INGEST_LOG_SCHEMA),
        log_path,
        mode="append",
        properties=OPS_TABLE_PROPERTIES,
    )


def _first_line(error: BaseException) -> str:
    """What went wrong, in one line: the root cause, not Py4J's "error while calling o123.count"."""
    lines = [line.strip().removeprefix(": ").strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and not _PY4J_CALL.fullmatch(line)]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    text = causes[-1] if causes else (lines[0] if lines else type(error).__name__)
    return text[:300]


def _register(source: LandingSource) -> None:
    def run(ctx: JobContext) -> JobResult:
        return ingest_source(ctx, source)

    run.__doc__ = f"Ingest new {source.name} deliveries ({source.file_format}) into bronze.{source.name}."
    job("bronze", source.name)(run)


for _source in LANDING_SOURCES.values():
    _register(_source)
