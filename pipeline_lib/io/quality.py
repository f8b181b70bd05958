"""Writes of the quality engine's outputs: the quarantine tables and the metrics table.

Kept apart from :mod:`pipeline_lib.quality.rules`, which is pure. Both writes are for jobs.

- ``<lake>/quarantine/<silver table>``: the bronze row as delivered (every string column
  and the lineage columns), ``_failed_rules``, ``_quarantined_at``, ``_quarantine_run_id``,
  ``_row_key``, and ``_resolved_at``/``_resolved_by`` (null while the row is open).
  ``_row_key`` identifies the bronze row: the SHA-256 of its delivered content and source
  file, plus its occurrence number among identical rows of that file. The write is an
  insert-only MERGE on ``(_source_file, _row_key)``, so a re-processed bronze row (a re-run
  after a crash, or a full refresh) is never quarantined twice. A row that later passes (a
  line retried once its order arrived, a row a full refresh admits under changed rules) is
  marked resolved by the run that admitted it (:func:`resolve_quarantined`,
  :func:`resolve_all_but`): the quarantine's open rows and silver never hold the same row.
- ``<lake>/ops/quality_metrics``: a log of measurements (one blind append per job, which
  never conflicts with another job's); the current measures are the latest row per table,
  delivery and rule (:func:`current_quality_metrics`, :func:`read_quality_metrics`), so a
  delivery checked again (a job retried after a Delta conflict, a re-run after a crash, a
  full refresh) is counted once. ``run_id`` and ``measured_at`` say which run measured it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import INGEST_DATE, INGESTED_AT, RUN_ID, SOURCE_FILE
from pipeline_lib.io.delta import (
    OPS_TABLE_PROPERTIES,
    add_missing_columns,
    append_new,
    append_shared,
    key_condition,
    merge,
    read_table,
    require_columns,
    table_exists,
    table_path,
)
from pipeline_lib.io.frames import local_frame
from pipeline_lib.ops.schemas import METRICS_SCHEMA, METRICS_TABLE
from pipeline_lib.silver.schemas import DQ_FLAGS, FAILED_RULES, QUARANTINED_AT

__all__ = [
    "BRONZE_RECORD",
    "METRICS_TABLE",
    "METRIC_KEYS",
    "QUARANTINE_KEYS",
    "RESOLVED_AT",
    "RESOLVED_BY",
    "ROW_KEY",
    "bronze_record",
    "bronze_record_of_failures_only",
    "current_quality_metrics",
    "measured_once",
    "open_quarantine",
    "quarantine_rows",
    "read_quality_metrics",
    "resolve_all_but",
    "resolve_quarantined",
    "with_row_key",
    "write_quality_metrics",
    "write_quarantine",
]

METRIC_KEYS = ("table", "delivery", "rule")
# A struct column holding the bronze row as delivered, kept beside the typed columns so
# rules can compare a failed cast with its raw value and quarantine can store the original.
BRONZE_RECORD = "_bronze"
ROW_KEY = "_row_key"
QUARANTINE_RUN_ID = "_quarantine_run_id"
RESOLVED_AT = "_resolved_at"  # when a later run admitted the row (null: still quarantined)
RESOLVED_BY = "_resolved_by"  # that run's id
QUARANTINE_KEYS = (SOURCE_FILE, ROW_KEY)
RESOLUTION_FIELDS = (
    T.StructField(RESOLVED_AT, T.TimestampType(), True),
    T.StructField(RESOLVED_BY, T.StringType(), True),
)
# Lineage that changes when the same delivered row is ingested again; not part of its key.
_NOT_CONTENT = (INGESTED_AT, RUN_ID, INGEST_DATE)


def quarantine_rows(quarantined: DataFrame, *, run_id: str) -> DataFrame:
    """Shape quarantined rows for the quarantine table (pure).

    Args:
        quarantined: The second frame of :func:`~pipeline_lib.quality.rules.split_by_quality`. If
            it has a ``_bronze`` struct, the bronze row is taken from it; otherwise every
            column but ``_dq_flags`` and ``_failed_rules`` is taken as the delivered row.
        run_id: This run's id.

    Returns:
        One row per quarantined bronze row: the bronze columns, ``_failed_rules``,
        ``_quarantined_at``, ``_quarantine_run_id``, ``_row_key``, ``_resolved_at`` and
        ``_resolved_by`` (both null).
    """
    require_columns(quarantined, [FAILED_RULES, SOURCE_FILE], what="quarantine")
    rows = with_row_key(quarantined)
    bronze_columns = [c for c in rows.columns if c not in (FAILED_RULES, ROW_KEY)]
    return rows.select(
        *bronze_columns,
        F.col(FAILED_RULES).cast(T.ArrayType(T.StringType(), False)).alias(FAILED_RULES),
        F.current_timestamp().alias(QUARANTINED_AT),
        F.lit(run_id).alias(QUARANTINE_RUN_ID),
        ROW_KEY,
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in RESOLUTION_FIELDS],
    )


def with_row_key(checked: DataFrame) -> DataFrame:
    """The delivered row of each checked row (from ``_bronze`` when present) with its ``_row_key``.

    The key a quarantined row has, computed the same way for any checked row, so a row that
    passes later can find its quarantine row. Keeps ``_failed_rules`` when present.
    """
    failed = [FAILED_RULES] if FAILED_RULES in checked.columns else []
    if BRONZE_RECORD in checked.columns:
        rows = checked.select(f"{BRONZE_RECORD}.*", *failed)
    else:
        rows = checked.drop(DQ_FLAGS)
    content = [c for c in rows.columns if c not in (*_NOT_CONTENT, FAILED_RULES)]
    fingerprint = F.sha2(F.to_json(F.struct(*[F.col(c) for c in content])), 256)
    occurrence = F.row_number().over(
        Window.partitionBy(SOURCE_FILE, "__fingerprint").orderBy("__fingerprint")
    )
    return (
        rows.withColumn("__fingerprint", fingerprint)
        .withColumn(ROW_KEY, F.concat_ws("#", F.col("__fingerprint"), occurrence.cast("string")))
        .drop("__fingerprint")
    )


def write_quarantine(quarantined: DataFrame, lake: str, table: str, *, run_id: str) -> str:
    """Insert quarantined rows into ``<lake>/quarantine/<table>`` unless already there.

    Args:
        quarantined: As for :func:`quarantine_rows`.
        lake: The lake root.
        table: The silver table name.
        run_id: This run's id.

    Returns:
        The quarantine table's path. Nothing is written when ``quarantined`` is empty.
    """
    path = table_path(lake, "quarantine", table)
    if quarantined.isEmpty():
        return path
    rows = quarantine_rows(quarantined, run_id=run_id)
    add_missing_columns(rows.sparkSession, path, RESOLUTION_FIELDS)  # a quarantine from before them
    append_new(rows, path, keys=list(QUARANTINE_KEYS))
    return path


def open_quarantine(spark: SparkSession, lake: str, table: str) -> DataFrame | None:
    """The rows of ``<lake>/quarantine/<table>`` still quarantined (not resolved); None: no table."""
    path = table_path(lake, "quarantine", table)
    if not table_exists(spark, path):
        return None
    rows = read_table(spark, path)
    return rows.where(F.col(RESOLVED_AT).isNull()) if RESOLVED_AT in rows.columns else rows


def resolve_quarantined(admitted: DataFrame, lake: str, table: str, *, run_id: str) -> int:
    """Mark the open quarantine rows of ``admitted`` (checked rows that passed) as resolved.

    Returns:
        The quarantine rows marked (Delta's count of that MERGE).
    """
    keys = with_row_key(admitted).select(*QUARANTINE_KEYS).distinct()
    return _resolve(keys, lake, table, run_id=run_id, matched=True)


def resolve_all_but(still_failing: DataFrame, lake: str, table: str, *, run_id: str) -> int:
    """After a full refresh: mark every open quarantine row resolved but ``still_failing``'s.

    A full refresh checks every bronze row again: a quarantined row that no longer fails (the
    rules changed, its order arrived) is in silver now, or superseded there.

    Returns:
        The quarantine rows marked.
    """
    keys = with_row_key(still_failing).select(*QUARANTINE_KEYS).distinct()
    return _resolve(keys, lake, table, run_id=run_id, matched=False)


def _resolve(keys: DataFrame, lake: str, table: str, *, run_id: str, matched: bool) -> int:
    spark = keys.sparkSession
    path = table_path(lake, "quarantine", table)
    if not table_exists(spark, path):
        return 0
    add_missing_columns(spark, path, RESOLUTION_FIELDS)
    mark: dict[str, str | Column] = {RESOLVED_AT: "current_timestamp()", RESOLVED_BY: f"'{run_id}'"}
    still_open = f"t.{RESOLVED_AT} IS NULL"
    counts = merge(
        keys,
        path,
        on=key_condition(QUARANTINE_KEYS, null_safe=False),
        clauses=lambda m: (
            m.whenMatchedUpdate(condition=still_open, set=mark)
            if matched
            else m.whenNotMatchedBySourceUpdate(condition=still_open, set=mark)
        ),
    )
    return counts.updated


def measured_once(metrics: DataFrame) -> DataFrame:
    """The metrics of :func:`pipeline_lib.quality.rules.quality_metrics`, computed once, as a local relation.

    Metrics are bounded (one row per delivery and rule) and read twice: written, and held
    against the thresholds. Lazy, each read
    would aggregate the checked rows again (a Spark job each); collected once, the reads
    after it run on the driver's rows.
    """
    rows = metrics.select(*METRICS_SCHEMA.fieldNames()).collect()
    return local_frame(metrics.sparkSession, rows, METRICS_SCHEMA)


def write_quality_metrics(metrics: DataFrame, lake: str) -> str | None:
    """Append rule metrics to the log ``<lake>/ops/quality_metrics`` (skipped when empty).

    A blind append: a delivery measured again adds rows, and :func:`current_quality_metrics`
    keeps its latest.

    Returns:
        The metrics table's path, or None when nothing was written.
    """
    if metrics.isEmpty():
        return None
    path = table_path(lake, "ops", METRICS_TABLE)
    append_shared(metrics, path, properties=OPS_TABLE_PROPERTIES)
    return path


def current_quality_metrics(log: DataFrame) -> DataFrame:
    """The current measures: each ``(table, delivery, rule)``'s latest row in the log (pure).

    Latest is the newest ``measured_at``, ties broken by the greater ``run_id``.
    """
    latest = F.max_by(F.struct(*[F.col(c) for c in log.columns]), F.struct("measured_at", "run_id"))
    return log.groupBy(*METRIC_KEYS).agg(latest.alias("m")).select("m.*")


def read_quality_metrics(spark: SparkSession, lake: str) -> DataFrame | None:
    """The current measures of ``<lake>/ops/quality_metrics``; None when nothing was measured."""
    path = table_path(lake, "ops", METRICS_TABLE)
    if not table_exists(spark, path):
        return None
    return read_table(spark, path).transform(current_quality_metrics)


def bronze_record_of_failures_only(checked: DataFrame) -> DataFrame:
    """``checked`` with ``_bronze`` kept only on rows that failed a rule, null on the others (pure).

    After the rules, the delivered row is needed only to quarantine the failures. A job that
    caches its checked rows (silver.clicks) would otherwise hold every row twice, typed and as
    delivered: at 5 M click events that cache outgrew a 4 GB driver heap.
    """
    require_columns(checked, [FAILED_RULES, BRONZE_RECORD], what="bronze_record_of_failures_only")
    failed = F.size(FAILED_RULES) > 0
    return checked.withColumn(BRONZE_RECORD, F.when(failed, F.col(BRONZE_RECORD)))


def bronze_record(columns: Sequence[str]) -> Column:
    """The struct of ``columns`` to keep as the ``_bronze`` record (column helper)."""
    return F.struct(*[F.col(c) for c in columns]).alias(BRONZE_RECORD)
