"""Schemas of the bookkeeping tables, ``<lake>/ops/<table>``: one place for all of them.

Run records, the consumers' watermark log, the bronze file log, the quality metrics, the
erasure log and the audience exports' log. The data layers' schemas are in :mod:`pipeline_lib.bronze.schemas`,
:mod:`pipeline_lib.silver.schemas` and :mod:`pipeline_lib.gold.schemas`.
"""

from __future__ import annotations

from pyspark.sql import types as T

RUNS_TABLE = "pipeline_runs"
WATERMARKS_TABLE = "watermarks"
INGEST_LOG_TABLE = "ingested_files"
METRICS_TABLE = "quality_metrics"
ERASURES_TABLE = "erasures"
EXPORTS_TABLE = "audience_exports"

# One row per job run (``ops.pipeline_runs``, :mod:`pipeline_lib.ops.runs`).
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

# One row per watermark moved without a data commit (:mod:`pipeline_lib.ops.watermarks`).
WATERMARKS_SCHEMA = T.StructType(
    [
        T.StructField("consumer", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("version", T.LongType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]
)

# One row per delivery file a bronze job handled (:mod:`pipeline_lib.io.ingest_log`).
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

# One row per delivery, table and rule checked (:mod:`pipeline_lib.quality.rules`).
METRICS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("table", T.StringType(), False),
        T.StructField("delivery", T.StringType(), True),
        T.StructField("rule", T.StringType(), False),
        T.StructField("kind", T.StringType(), False),
        T.StructField("action", T.StringType(), False),
        T.StructField("rows_checked", T.LongType(), False),
        T.StructField("rows_failed", T.LongType(), False),
        T.StructField("rows_passed", T.LongType(), False),
        T.StructField("measured_at", T.TimestampType(), False),
    ]
)

# One row per erasure (:mod:`pipeline_lib.privacy.forget`); the customer only as its HMAC key.
ERASURES_SCHEMA = T.StructType(
    [
        T.StructField("erasure_id", T.StringType(), False),
        T.StructField("customer_key", T.StringType(), False),  # HMAC-SHA-256 of the id, never the id
        T.StructField("requested_at", T.TimestampType(), False),
        T.StructField("finished_at", T.TimestampType(), False),
        T.StructField("keep_history", T.BooleanType(), False),
        T.StructField("status", T.StringType(), False),  # done, pending_vacuum, not_found
        T.StructField("tables", T.ArrayType(T.StringType(), False), False),  # to vacuum / vacuumed
        T.StructField("rows_deleted", T.LongType(), False),
        T.StructField("rows_updated", T.LongType(), False),
        T.StructField("vacuumed_at", T.TimestampType(), True),
    ]
)

# One row per ``export-audience`` (``ops.audience_exports``, :mod:`pipeline_lib.io.exports`):
# who exported which audience, with which columns, where (files outside the lake).
EXPORTS_SCHEMA = T.StructType(
    [
        T.StructField("export_id", T.StringType(), False),
        T.StructField("exported_at", T.TimestampType(), False),
        T.StructField("exported_by", T.StringType(), False),  # the operating-system user
        T.StructField("host", T.StringType(), False),
        T.StructField("campaign", T.StringType(), False),
        T.StructField("as_of_date", T.DateType(), False),
        T.StructField("group", T.StringType(), False),
        T.StructField("rows", T.LongType(), False),
        T.StructField("left_out_without_consent", T.LongType(), False),
        T.StructField("with_contact", T.BooleanType(), False),
        T.StructField("columns", T.ArrayType(T.StringType(), False), False),
        T.StructField("destination", T.StringType(), False),
    ]
)
