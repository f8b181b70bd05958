"""Bronze from a Kafka topic: the job ``bronze.clicks`` when ``sources.clicks.kind`` is ``kafka``.

Scheduled mode (``ecom-pipeline run``): one Structured Streaming query drains the topic and
stops (``trigger(availableNow=True)``), so cron and the Airflow DAG keep working. A run:

1. creates ``<lake>/bronze/clicks`` (with the change data feed silver reads) if it is missing;
2. reads the topic with Spark's Kafka source from the query's checkpoint
   ``<lake>/_checkpoints/bronze/clicks`` (the first run: ``sources.clicks.starting_offsets``),
   ``failOnDataLoss`` on;
3. parses each message as a JSON Lines delivery's line (same columns, ``_corrupt_record`` and
   ``_rescued_data``) with its Kafka lineage (:mod:`pipeline_lib.bronze.kafka`);
4. appends each micro-batch in one Delta commit through Delta's streaming sink: exactly once
   from offsets to rows (checkpoint plus Delta's idempotent transaction per batch);
5. reports the offsets read (start and end per partition) and the rows, corrupt and rescued
   rows, in the run record.

Nothing new: no batch, no commit. See docs/kafka.md.
"""

from __future__ import annotations

import datetime as dt

from pipeline_lib.bronze.kafka import (
    kafka_bronze_schema,
    kafka_messages_to_bronze,
    message_metrics,
    offsets_read,
)
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES
from pipeline_lib.io.delta import create_empty_table, table_version
from pipeline_lib.io.kafka import (
    checkpoint_path,
    described_options,
    drain_topic_to_delta,
    kafka_source_options,
    read_topic,
)
from pipeline_lib.ops.context import JobContext, JobResult
from pipeline_lib.ops.watermarks import CDF_PROPERTIES

METRICS = "bronze_clicks_messages"


def drain(ctx: JobContext, *, source: str) -> JobResult:
    """The job ``bronze.<source>`` reading its Kafka topic: everything new into bronze, then stop."""
    settings = ctx.config.sources.clicks
    contract = LANDING_SOURCES[source]
    path = ctx.path("bronze", source)
    checkpoint = checkpoint_path(ctx.lake, "bronze", source)
    options = kafka_source_options(settings)
    where = f"topic {settings.topic} at {settings.bootstrap_servers}"
    create_empty_table(
        ctx.spark, path, kafka_bronze_schema(contract), partition_by=[INGEST_DATE], properties=CDF_PROPERTIES
    )
    before = table_version(ctx.spark, path)
    if ctx.as_of is not None:
        ctx.progress(f"bronze.{source}: --as-of does not bound a Kafka topic; reading everything it holds")
    rows = read_topic(ctx.spark, options).transform(
        kafka_messages_to_bronze, source=contract, ingested_at=dt.datetime.now(dt.UTC), run_id=ctx.run_id
    )
    run = drain_topic_to_delta(
        rows,
        path,
        checkpoint=checkpoint,
        partition_by=[INGEST_DATE],
        query_name=f"bronze_{source}_{ctx.run_id.replace('-', '_')}",
        metrics_name=METRICS,
        metrics=message_metrics(),
        describe=where,
    )
    read = offsets_read(run.progress, metrics_name=METRICS)
    after = table_version(ctx.spark, path)
    ctx.progress(
        f"bronze.{source}: {where}: {read['rows']} messages in {len(read['batches'])} micro-batches "
        f"({read['corrupt_rows']} corrupt), offsets {read['start_offsets'] or settings.starting_offsets} "
        f"-> {read['end_offsets']}" + ("" if read["rows"] else "; nothing new")
    )
    details = {
        "source": "kafka",
        "topic": settings.topic,
        "bootstrap_servers": settings.bootstrap_servers,
        "checkpoint": checkpoint,
        "query_id": run.query_id,
        "options": described_options({k: v for k, v in options.items() if k.startswith("kafka.")}),
        **read,
    }
    written = after is not None and after != before
    return JobResult(
        rows_read=read["rows"],
        rows_written=read["rows"],
        delta_versions={path: after} if written and after is not None else {},
        details=details,
    )
