"""Bronze jobs: each landing source into its bronze Delta table, incrementally, losslessly.

One job per source (``bronze.orders``, ``bronze.clicks``...). A run reads only the
delivery files it has not ingested yet, appends their records in ONE Delta commit, then
records each file in ``<lake>/ops/ingested_files``. See docs/bronze.md for why this
design (Delta's atomic append plus a file log, repaired from the table after a crash)
rather than a streaming checkpoint.

    ecom-pipeline run --layer bronze [--job clicks]
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_lib.bronze.schemas import LANDING_SOURCES, LandingSource
from pipeline_lib.io.delta import table_version
from pipeline_lib.io.ingest import first_line, ingest_files
from pipeline_lib.io.ingest_log import (
    FileOutcome,
    append_log,
    apply_stats,
    file_stats_in_bronze,
    files_in_bronze,
    logged_files,
)
from pipeline_lib.io.landing import DeliveryFile, list_delivery_files, read_delivery_file
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.schemas import INGEST_LOG_TABLE

__all__ = ["ingest", "ingest_source"]


def ingest(ctx: JobContext, *, source: str) -> JobResult:
    """The job ``bronze.<source>``: ingest the new delivery files of ``source``, or, when
    ``sources.<source>.kind`` is ``jdbc``, extract its table from the shop's database
    (:mod:`jobs.bronze_db`, docs/postgres.md), or, when ``sources.clicks.kind`` is ``kafka``,
    drain the click topic (:mod:`jobs.bronze_kafka`, docs/kafka.md)."""
    if ctx.config.sources.is_database(source):
        from jobs.bronze_db import extract

        return extract(ctx, source=source)
    if ctx.config.sources.is_kafka(source):
        from jobs.bronze_kafka import drain

        return drain(ctx, source=source)
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
        *ingest_files(ctx, source, new_files, bronze_path),
        *_repair_log(ctx, source, repaired, bronze_path),
    ]
    append_log(spark, log_path, source.name, outcomes, ctx.run_id)
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


def _repair_log(
    ctx: JobContext, source: LandingSource, files: Sequence[DeliveryFile], bronze_path: str
) -> list[FileOutcome]:
    """Log files whose rows reached bronze in a run that stopped before logging them."""
    if not files:
        return []
    stats = file_stats_in_bronze(ctx.spark, bronze_path, source, files)
    outcomes = []
    for delivery in files:
        problems = [
            "logged after an interrupted run (rows were in bronze)",
            *_header_problems(ctx, delivery, source),
        ]
        outcome = FileOutcome(delivery, "ingested", problems=problems)
        apply_stats(outcome, stats.get(delivery.path))
        outcomes.append(outcome)
    return outcomes


def _header_problems(ctx: JobContext, delivery: DeliveryFile, source: LandingSource) -> list[str]:
    """The header problems the interrupted run saw (a CSV's missing or extra columns), read again.

    Bronze keeps the rows, not the header: without this a repaired log entry would lose them.
    """
    try:
        return list(read_delivery_file(ctx.spark, delivery, source).problems)  # reads the header only
    except Exception as exc:  # its rows are in bronze: a failure here is not the file's fault
        return [f"header not re-read: {first_line(exc)}"]
