"""Reading new delivery files into bronze in one commit, isolating the files that break the batch.

:func:`ingest_files` reads a source's new files in one Spark read per layout, reads again
one record per line the CSV files whose RFC 4180 read went wrong (a quote never closed, a
stray quote), and appends everything in one Delta commit. A file whose read or write fails
is found by reading file by file, logged ``failed`` with its reason, and the others are
appended without it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline_lib.bronze.schemas import INGEST_DATE, SOURCE_FILE, LandingSource
from pipeline_lib.bronze.transforms import conform_to_bronze, with_lineage, with_run_lineage
from pipeline_lib.io.delta import write_table
from pipeline_lib.io.ingest_log import FileOutcome, apply_stats, file_stats_in_bronze
from pipeline_lib.io.landing import (
    DeliveryFile,
    corrupt_record_spans_lines,
    field_spans_lines,
    parses_as_rfc4180,
    read_deliveries,
    read_delivery_file,
)
from pipeline_lib.ops.context import JobContext
from pipeline_lib.ops.watermarks import CDF_PROPERTIES

# The first line of a Py4J error, which names the JVM call, not what went wrong.
_PY4J_CALL = re.compile(r"An error occurred while calling [\w.$]+")


def ingest_files(
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
            problem = f"unreadable: {first_line_of(batch.unreadable[delivery.path])}"
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
        stats = file_stats_in_bronze(
            ctx.spark, bronze_path, source, [outcomes[p].delivery for p in written], run_id=ctx.run_id
        )
        for path in written:
            apply_stats(outcomes[path], stats.get(path))
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
            f"bronze.{source.name}: batch write failed ({first_line(first_error)}); checking files one by one"
        )
    readable = {}
    for path, frame in one_by_one.frames().items():
        try:
            frame.count()
            readable[path] = frame
        except Exception as exc:
            outcomes[path].status = "failed"
            outcomes[path].problems.append(f"unreadable: {first_line(exc)}")
    if readable:
        _append(_union(readable.values()), bronze_path)
    return list(readable)


def _append(records: DataFrame, bronze_path: str) -> None:
    write_table(records, bronze_path, mode="append", partition_by=[INGEST_DATE], properties=CDF_PROPERTIES)


def _union(frames: Iterable[DataFrame]) -> DataFrame:
    frames = list(frames)
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def first_line(error: BaseException) -> str:
    """What went wrong, in one line: the root cause, not Py4J's "error while calling o123.count"."""
    return first_line_of(str(error)) if str(error).strip() else type(error).__name__


def first_line_of(message: str) -> str:
    lines = [line.strip().removeprefix(": ").strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not _PY4J_CALL.fullmatch(line)]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    text = causes[-1] if causes else (lines[0] if lines else "no message")
    return text[:300]
