"""Bronze from a Kafka topic: click messages as bronze rows, and what a drained run read (pure).

``bronze.clicks`` reads the topic ``sources.clicks.topic`` when ``sources.clicks.kind`` is
``kafka`` (docs/kafka.md). Each message value is one click event, a JSON object in UTF-8,
parsed exactly as a line of a JSON Lines delivery (:func:`~pipeline_lib.bronze.transforms.parse_json_lines`):
the contract fields as strings, unknown fields in ``_rescued_data``, and a value that is no
JSON object (not JSON, another JSON type, invalid UTF-8, empty) whole in ``_corrupt_record``.

Lineage: ``_source_file`` is ``kafka://<topic>/<partition>`` (a partition is the stream's
"file"), ``_ingest_date`` the UTC date of the message's Kafka timestamp (when it was
delivered), plus the Kafka columns ``_kafka_topic``, ``_kafka_partition``, ``_kafka_offset``
and ``_kafka_timestamp``: a bronze row names the one message it came from.

Reading the topic and writing the table is :mod:`pipeline_lib.io.kafka`'s job.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline_lib.bronze.schemas import (
    CORRUPT_RECORD,
    INGEST_DATE,
    RESCUED_DATA,
    SOURCE_FILE,
    LandingSource,
)
from pipeline_lib.bronze.transforms import parse_json_lines, with_run_lineage

__all__ = [
    "KAFKA_LINEAGE_FIELDS",
    "KAFKA_OFFSET",
    "KAFKA_PARTITION",
    "KAFKA_TIMESTAMP",
    "KAFKA_TOPIC",
    "SOURCE_SCHEME",
    "kafka_bronze_schema",
    "kafka_messages_to_bronze",
    "kafka_source_uri",
    "message_metrics",
    "offsets_read",
]

KAFKA_TOPIC = "_kafka_topic"
KAFKA_PARTITION = "_kafka_partition"
KAFKA_OFFSET = "_kafka_offset"
KAFKA_TIMESTAMP = "_kafka_timestamp"
SOURCE_SCHEME = "kafka://"
KAFKA_LINEAGE_FIELDS = (
    T.StructField(KAFKA_TOPIC, T.StringType(), True),
    T.StructField(KAFKA_PARTITION, T.IntegerType(), True),
    T.StructField(KAFKA_OFFSET, T.LongType(), True),
    T.StructField(KAFKA_TIMESTAMP, T.TimestampType(), True),
)
_KAFKA_COLUMNS = [f.name for f in KAFKA_LINEAGE_FIELDS]
_KEPT = [SOURCE_FILE, INGEST_DATE, *_KAFKA_COLUMNS]
_MICROS_PER_DAY = 86_400_000_000


def kafka_bronze_schema(source: LandingSource) -> T.StructType:
    """The bronze table of a source read from Kafka: the file path's columns, then the Kafka ones.

    Nullable, so rows of landing files (which have no Kafka columns) and of the topic share one table.
    """
    return T.StructType([*source.bronze_schema.fields, *KAFKA_LINEAGE_FIELDS])


def kafka_source_uri(topic: Column, partition: Column) -> Column:
    """``kafka://<topic>/<partition>``: the ``_source_file`` of a message's row."""
    return F.concat(F.lit(SOURCE_SCHEME), topic, F.lit("/"), partition.cast(T.StringType()))


def _utc_date(ts: Column) -> Column:
    """The UTC calendar date of a timestamp, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / _MICROS_PER_DAY).cast(T.IntegerType()))


def kafka_messages_to_bronze(
    messages: DataFrame, *, source: LandingSource, ingested_at: dt.datetime, run_id: str
) -> DataFrame:
    """Kafka messages (Spark's Kafka source rows) as bronze rows of ``source``.

    Args:
        messages: Rows of Spark's Kafka source: ``value`` (binary), ``topic``, ``partition``,
            ``offset``, ``timestamp`` (the key and headers are not read: the key is the
            event's ``anonymous_id``, which the value holds). Batch or streaming.
        source: The landing source whose contract the values follow (``clicks``).
        ingested_at: When this run started reading.
        run_id: This run's id.

    Returns:
        One row per message, :func:`kafka_bronze_schema` exactly: a value decoded as UTF-8
        (invalid bytes become U+FFFD, as in a file); a null value (a tombstone) counts as
        empty and, like any value that is no JSON object, is kept in ``_corrupt_record``.
    """
    lines = messages.select(
        F.coalesce(F.col("value").cast(T.StringType()), F.lit("")).alias("value"),
        kafka_source_uri(F.col("topic"), F.col("partition")).alias(SOURCE_FILE),
        _utc_date(F.col("timestamp")).alias(INGEST_DATE),
        F.col("topic").alias(KAFKA_TOPIC),
        F.col("partition").alias(KAFKA_PARTITION),
        F.col("offset").alias(KAFKA_OFFSET),
        F.col("timestamp").alias(KAFKA_TIMESTAMP),
    )
    schema = kafka_bronze_schema(source)
    return (
        lines.transform(
            parse_json_lines, source=source, keep=[SOURCE_FILE, INGEST_DATE, *_KAFKA_COLUMNS], keep_blank=True
        )
        .transform(with_run_lineage, ingested_at=ingested_at, run_id=run_id)
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
    )


def message_metrics() -> list[Column]:
    """Aggregates of a batch of bronze rows for Spark's ``observe``: rows, corrupt and rescued rows."""
    return [
        F.count(F.lit(1)).alias("rows"),
        F.count(CORRUPT_RECORD).alias("corrupt_rows"),
        F.count(RESCUED_DATA).alias("rescued_rows"),
    ]


def offsets_read(progress: Sequence[Mapping[str, Any]], *, metrics_name: str) -> dict[str, Any]:
    """What the micro-batches of one drained run read, from their progress reports.

    Args:
        progress: Each batch's ``StreamingQueryProgress`` as a dict (its JSON), oldest first.
        metrics_name: The name of the ``observe`` of :func:`message_metrics`.

    Returns:
        ``batches``, ``rows``, ``corrupt_rows``, ``rescued_rows`` (summed over the batches that
        read messages), and ``start_offsets``/``end_offsets`` (``{topic: {partition: offset}}``:
        the first batch's start, None when it started from ``startingOffsets``, and the last
        batch's end; None when nothing was read).
    """
    batches = [p for p in progress if int(p.get("numInputRows") or 0) > 0]
    totals = {"rows": 0, "corrupt_rows": 0, "rescued_rows": 0}
    for batch in batches:
        observed = (batch.get("observedMetrics") or {}).get(metrics_name) or {}
        for key in totals:
            totals[key] += int(observed.get(key) or 0)
    start = _offsets(batches[0]["sources"][0].get("startOffset")) if batches else None
    end = _offsets(batches[-1]["sources"][0].get("endOffset")) if batches else None
    return {
        "batches": [int(b["batchId"]) for b in batches],
        **totals,
        "start_offsets": start,
        "end_offsets": end,
    }


def _offsets(value: Any) -> dict[str, dict[str, int]] | None:
    """A Kafka source offset (JSON text or a mapping ``{topic: {partition: offset}}``), parsed."""
    if value is None:
        return None
    parsed = json.loads(value) if isinstance(value, str) else value
    return {str(t): {str(p): int(o) for p, o in parts.items()} for t, parts in parsed.items()}
