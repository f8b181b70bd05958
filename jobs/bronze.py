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

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.framework import JobContext, JobResult
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES, RUN_ID, SOURCE_FILE, LandingSource
from pipeline_lib.bronze.transforms import conform_to_bronze, file_stats, with_lineage, with_run_lineage
from pipeline_lib.faults import crash_point
from pipeline_lib.io.delta import OPS_TABLE_PROPERTIES, read_table, table_exists, table_version, write_table
from pipeline_lib.io.frames import local_frame
from pipeline_lib.io.landing import (
    DeliveryFile,
    corrupt_record_spans_lines,
    field_spans_lines,
    list_delivery_files,
    parses_as_rfc4180,
    read_deliveries,
    read_delivery_file,
)
from pipeline_lib.ops.watermarks import CDF_PROPERTIES

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


def ingest(ctx: JobContext, *, source: str) -> JobResult:
    """The job ``bronze.<source>``: ingest the new delivery files of ``source``."""
    return ingest_source(ctx, LANDING_SOURCES[source])


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
    """Read the new files in one Spark read per layout and append them in one commit.

    A file too large is not read; a file whose header cannot be read, or that breaks the
    batch (a truncated gzip), is found by reading file by file, logged ``failed``, and the
    others are appended without it.
    """
    if not files:
        return []
    outcomes: dict[str, FileOutcome] = {}
    ingested_at = dt.datetime.now(dt.UTC)
    readable = []
    for delivery in files:
        if delivery.size > ctx.config.pipeline.max_file_bytes:
            problem = f"file of {delivery.size} bytes exceeds pipeline.max_file_bytes; not read"
            outcomes[delivery.path] = FileOutcome(delivery, "failed", problems=[problem])
        else:
            readable.append(delivery)
    batch = read_deliveries(ctx.spark, readable, source)
    for delivery in readable:
        if delivery.path in batch.unreadable:
            problem = f"unreadable: {_first_line_of(batch.unreadable[delivery.path])}"
            outcomes[delivery.path] = FileOutcome(delivery, "failed", problems=[problem])
        else:
            problems = list(batch.problems.get(delivery.path, ()))
            outcomes[delivery.path] = FileOutcome(delivery, "ingested", problems=problems)
    files_ok = [d for d in readable if d.path not in batch.unreadable]
    line_by_line: set[str] = set()
    if source.file_format == "csv":
        line_by_line = _files_to_read_line_by_line(ctx, source, batch.records, files_ok, outcomes)
        if line_by_line:
            batch = read_deliveries(ctx.spark, files_ok, source, line_by_line=line_by_line)
    records = batch.records.transform(with_run_lineage, ingested_at=ingested_at, run_id=ctx.run_id).transform(
        conform_to_bronze, source=source
    )
    one_by_one = _FileByFile(ctx, source, files_ok, ingested_at, line_by_line)
    written = _write_batch(ctx, source, records, one_by_one, bronze_path, outcomes)
    if written:
        stats = _stats_of_run(
            ctx.spark, bronze_path, source, ctx.run_id, [outcomes[p].delivery for p in written]
        )
        for path in written:
            _apply_stats(outcomes[path], stats.get(path))
    return list(outcomes.values())


def _files_to_read_line_by_line(
    ctx: JobContext,
    source: LandingSource,
    records: DataFrame,
    files: Sequence[DeliveryFile],
    outcomes: dict[str, FileOutcome],
) -> set[str]:
    """CSV files whose RFC 4180 read went wrong, to read one record per line (each noted).

    A quote that never closes swallows the rest of the file into one corrupt record; a stray
    quote can join two rows into one record with a line break inside a field. A line break
    inside a field is also what a valid quoted multi-line value looks like: such a file is
    read again strictly (:func:`~pipeline_lib.io.landing.parses_as_rfc4180`) to tell which.
    """
    conditions = {"swallowed": corrupt_record_spans_lines(), "multi_line": field_spans_lines(source)}
    spanning = _files_where(ctx, source, records, files, conditions)
    swallowed = spanning["swallowed"]
    multi_line = spanning["multi_line"] - swallowed
    by_path = {d.path: d for d in files}
    joined = {path for path in multi_line if not parses_as_rfc4180(ctx.spark, by_path[path], source)}
    for path in sorted(swallowed):
        outcomes[path].problems.append("a quoted field never closed: read one record per line")
    for path in sorted(joined):
        outcomes[path].problems.append(
            "a quote inside a quoted field is not doubled: read one record per line"
        )
    return swallowed | joined


class _FileByFile:
    """The same files read one by one, each its own DataFrame: to isolate a file that breaks
    the batch (built only then)."""

    def __init__(
        self,
        ctx: JobContext,
        source: LandingSource,
        files: Sequence[DeliveryFile],
        ingested_at: dt.datetime,
        line_by_line: set[str],
    ) -> None:
        self._args = (ctx, source, files, ingested_at, line_by_line)

    def frames(self) -> dict[str, DataFrame]:
        ctx, source, files, ingested_at, line_by_line = self._args
        frames = {}
        for delivery in files:
            read = read_delivery_file(
                ctx.spark, delivery, source, multiline=delivery.path not in line_by_line
            )
            frames[delivery.path] = read.records.transform(
                with_lineage,
                source_file=delivery.path,
                ingest_date=delivery.ingest_date,
                ingested_at=ingested_at,
                run_id=ctx.run_id,
            ).transform(conform_to_bronze, source=source)
        return frames


def _files_where(
    ctx: JobContext,
    source: LandingSource,
    records: DataFrame,
    files: Sequence[DeliveryFile],
    conditions: dict[str, Column],
) -> dict[str, set[str]]:
    """For each named condition, the files with a row meeting it (one query; file by file if
    a broken file fails it: that file is then left to the write, which isolates and reports it)."""
    found: dict[str, set[str]] = {name: set() for name in conditions}
    if not files:
        return found

    def collect(rows: DataFrame) -> None:
        flags = [F.max(condition.cast("int")).alias(name) for name, condition in conditions.items()]
        # Spark refuses a query of raw CSV that reads only the corrupt-record column: count a
        # contract column too.
        for row in rows.groupBy(SOURCE_FILE).agg(*flags, F.count(source.fields[0])).collect():
            for name in conditions:
                if row[name]:
                    found[name].add(row[SOURCE_FILE])

    try:
        collect(records)
    except Exception:
        for frame in _FileByFile(ctx, source, files, dt.datetime.now(dt.UTC), set()).frames().values():
            try:
                collect(frame)
            except Exception:
                continue
    return found


def _write_batch(
    ctx: JobContext,
    source: LandingSource,
    records: DataFrame,
    one_by_one: _FileByFile,
    bronze_path: str,
    outcomes: dict[str, FileOutcome],
) -> list[str]:
    """Append the batch in one commit; if that fails, find the broken files, append the others."""
    paths = [p for p, o in outcomes.items() if o.status == "ingested"]
    if not paths:
        return []
    try:
        _append(records, bronze_path)
        return paths
    except Exception as first_error:
        ctx.progress(
            f"bronze.{source.name}: batch write failed ({_first_line(first_error)}); "
            "checking files one by one"
        )
    readable = {}
    for path, frame in one_by_one.frames().items():
        try:
            frame.count()
            readable[path] = frame
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
    return _first_line_of(str(error)) if str(error).strip() else type(error).__name__


def _first_line_of(message: str) -> str:
    lines = [line.strip().removeprefix(": ").strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not _PY4J_CALL.fullmatch(line)]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    text = causes[-1] if causes else (lines[0] if lines else "no message")
    return text[:300]
