"""Writes of the quality engine's outputs: the quarantine tables and the metrics table.

Kept apart from :mod:`pipeline_lib.quality`, which is pure. Both writes are for jobs.

- ``<lake>/quarantine/<silver table>``: the bronze row as delivered (every string column
  and the lineage columns), ``_failed_rules``, ``_quarantined_at``, ``_quarantine_run_id``
  and ``_row_key``. ``_row_key`` identifies the bronze row: the SHA-256 of its delivered
  content and source file, plus its occurrence number among identical rows of that file.
  The write is an insert-only MERGE on ``(_source_file, _row_key)``, so a re-processed
  bronze row (a re-run after a crash, or a full refresh) is never quarantined twice.
- ``<lake>/ops/quality_metrics``: one row per table, delivery and rule, the latest
  measurement (a MERGE on those keys), so a delivery checked again — a job retried after a
  Delta conflict, a re-run after a crash, a full refresh — replaces its measures instead of
  counting them twice. ``run_id`` and ``measured_at`` say which run measured them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.delta_io import OPS_TABLE_PROPERTIES, append_new, require_columns, table_path, upsert
from pipeline_lib.frames import local_frame
from pipeline_lib.quality import METRICS_SCHEMA
from pipeline_lib.schemas import (
    DQ_FLAGS,
    FAILED_RULES,
    INGEST_DATE,
    INGESTED_AT,
    QUARANTINED_AT,
    RUN_ID,
    SOURCE_FILE,
)
from pipeline_lib.watermarks import CDF_PROPERTIES

__all__ = [
    "BRONZE_RECORD",
    "METRICS_TABLE",
    "METRIC_KEYS",
    "ROW_KEY",
    "bronze_record",
    "bronze_record_of_failures_only",
    "measured_once",
    "quarantine_rows",
    "write_quality_metrics",
    "write_quarantine",
]

METRICS_TABLE = "quality_metrics"
METRIC_KEYS = ("table", "delivery", "rule")
# A struct column holding the bronze row as delivered, kept beside the typed columns so
# rules can compare a failed cast with its raw value and quarantine can store the original.
BRONZE_RECORD = "_bronze"
ROW_KEY = "_row_key"
QUARANTINE_RUN_ID = "_quarantine_run_id"
# Lineage that changes when the same delivered row is ingested again; not part of its key.
_NOT_CONTENT = (INGESTED_AT, RUN_ID, INGEST_DATE)


def quarantine_rows(quarantined: DataFrame, *, run_id: str) -> DataFrame:
    """Shape quarantined rows for the quarantine table (pure).

    Args:
        quarantined: The second frame of :func:`~pipeline_lib.quality.split_by_quality`. If
            it has a ``_bronze`` struct, the bronze row is taken from it; otherwise every
            column but ``_dq_flags`` and ``_failed_rules`` is taken as the delivered row.
        run_id: This run's id.

    Returns:
        One row per quarantined bronze row: the bronze columns, ``_failed_rules``,
        ``_quarantined_at``, ``_quarantine_run_id`` and ``_row_key``.
    """
    require_columns(quarantined, [FAILED_RULES, SOURCE_FILE], what="quarantine")
    if BRONZE_RECORD in quarantined.columns:
        rows = quarantined.select(f"{BRONZE_RECORD}.*", FAILED_RULES)
    else:
        rows = quarantined.drop(DQ_FLAGS)
    bronze_columns = [c for c in rows.columns if c != FAILED_RULES]
    content = [c for c in bronze_columns if c not in _NOT_CONTENT]
    fingerprint = F.sha2(F.to_json(F.struct(*[F.col(c) for c in content])), 256)
    occurrence = F.row_number().over(
        Window.partitionBy(SOURCE_FILE, "__fingerprint").orderBy("__fingerprint")
    )
    return (
        rows.withColumn("__fingerprint", fingerprint)
        .withColumn(ROW_KEY, F.concat_ws("#", F.col("__fingerprint"), occurrence.cast("string")))
        .select(
            *bronze_columns,
            F.col(FAILED_RULES).cast(T.ArrayType(T.StringType(), False)).alias(FAILED_RULES),
            F.current_timestamp().alias(QUARANTINED_AT),
            F.lit(run_id).alias(QUARANTINE_RUN_ID),
            ROW_KEY,
        )
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
    append_new(quarantine_rows(quarantined, run_id=run_id), path, keys=[SOURCE_FILE, ROW_KEY])
    return path


def measured_once(metrics: DataFrame) -> DataFrame:
    """The metrics of :func:`pipeline_lib.quality.quality_metrics`, computed once, as a local relation.

    Metrics are bounded (one row per delivery and rule) and read three times: written,
    their keys checked before the MERGE, and held against the thresholds. Lazy, each read
    would aggregate the checked rows again (a Spark job each); collected once, the reads
    after it run on the driver's rows.
    """
    rows = metrics.select(*METRICS_SCHEMA.fieldNames()).collect()
    return local_frame(metrics.sparkSession, rows, METRICS_SCHEMA)


def write_quality_metrics(metrics: DataFrame, lake: str) -> str | None:
    """Record rule metrics in ``<lake>/ops/quality_metrics`` (skipped when empty).

    One row per ``(table, delivery, rule)``: a delivery measured again replaces its row.

    Returns:
        The metrics table's path, or None when nothing was written.
    """
    if metrics.isEmpty():
        return None
    path = table_path(lake, "ops", METRICS_TABLE)
    upsert(metrics, path, keys=METRIC_KEYS, properties={**CDF_PROPERTIES, **OPS_TABLE_PROPERTIES})
    return path


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
