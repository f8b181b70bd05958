"""``ecom-pipeline stream``: the click path continuously from Kafka, until SIGTERM or SIGINT.

Three things run in one Spark application (design: docs/kafka.md, "Continuous mode"):

1. **bronze.clicks**: the query of the scheduled run (:mod:`jobs.bronze_kafka`: same source
   options, transform, Delta sink and checkpoint ``<lake>/_checkpoints/bronze/clicks``) with a
   processing-time trigger of ``sources.clicks.stream_trigger_seconds`` instead of
   ``availableNow``. Scheduled runs and this stream take turns on the one checkpoint;
2. **silver.clicks**: the existing incremental job (it reads the bronze commits it has not read
   yet), run by the runner on the driver after each bronze micro-batch that read events, one run
   at a time: a run that takes longer than the trigger covers the batches committed meanwhile;
3. **gold.product_interest_hourly**: a streaming aggregation over the topic (its own checkpoint
   ``<lake>/_checkpoints/gold/product_interest_hourly``): sliding windows with a watermark,
   each micro-batch's changed windows MERGEd into Delta idempotently
   (:func:`pipeline_lib.gold.interest.product_interest`,
   :func:`pipeline_lib.io.streaming.start_upsert_stream`).

Each micro-batch prints one line on stderr (events, offsets still behind the topic's end,
seconds). On SIGTERM or SIGINT both queries stop at a batch boundary (the running batch ends
first), silver catches up with the last bronze commits, and the command exits 0. Killed
(SIGKILL), the checkpoints and Delta's transactions make the next start (or a scheduled run)
resume without a lost or doubled event.

    ecom-pipeline stream --lake /data/lake --set sources.clicks.stream_trigger_seconds=10
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobs.graph import select_jobs
from jobs.runner import SUCCEEDED, run_jobs
from pipeline_lib.bronze.kafka import kafka_bronze_schema, kafka_messages_to_bronze, message_metrics
from pipeline_lib.bronze.schemas import INGEST_DATE, LANDING_SOURCES
from pipeline_lib.config import ConfigError, PipelineConfig
from pipeline_lib.gold.interest import INTEREST_KEYS, product_interest
from pipeline_lib.gold.schemas import PRODUCT_INTEREST_HOURLY_SCHEMA
from pipeline_lib.io.delta import create_empty_table, table_path, table_version
from pipeline_lib.io.kafka import (
    as_dict,
    checkpoint_path,
    kafka_source_options,
    lag_behind_latest,
    query_failure,
    read_topic,
    start_topic_to_delta,
)
from pipeline_lib.io.streaming import start_upsert_stream, stop_at_batch_boundary
from pipeline_lib.ops.context import new_run_id, progress
from pipeline_lib.ops.locks import job_lock
from pipeline_lib.ops.watermarks import CDF_PROPERTIES
from pipeline_lib.silver.clicks import clean_clicks

__all__ = ["BRONZE_JOB", "GOLD_JOB", "GOLD_TABLE", "StreamSummary", "stream_clicks"]

SOURCE = "clicks"
BRONZE_JOB = "bronze.clicks"
GOLD_TABLE = "product_interest_hourly"
GOLD_JOB = f"gold.{GOLD_TABLE}"
METRICS = "bronze_clicks_messages"
POLL_SECONDS = 0.5


@dataclass
class StreamSummary:
    """What one ``stream`` did, for its last line."""

    bronze_batches: int = 0
    bronze_events: int = 0
    gold_batches: int = 0
    silver_runs: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"stream stopped after {self.seconds:.0f} s: bronze.clicks {self.bronze_events} events in "
            f"{self.bronze_batches} micro-batches, silver.clicks {self.silver_runs} runs, "
            f"{GOLD_JOB} {self.gold_batches} micro-batches"
        )


@dataclass
class _BatchReporter:
    """Prints each new micro-batch of a query once, from its progress reports."""

    name: str
    describe: Callable[[dict[str, Any]], str]
    last_batch: int = -1
    batches: int = 0
    events: int = 0

    def report(self, query: StreamingQuery) -> int:
        """Print the batches that ended since the last call; the events they read."""
        read = 0
        for report in (as_dict(p) for p in query.recentProgress):
            batch = int(report.get("batchId", -1))
            ran = "addBatch" in (report.get("durationMs") or {})
            if batch <= self.last_batch or not ran:
                continue  # already printed, or an idle report (no batch ran)
            self.last_batch = batch
            rows = int(report.get("numInputRows") or 0)
            self.batches += 1
            self.events += rows
            read += rows
            progress(f"{self.name}: batch {batch}: {self.describe(report)}")
        return read


def _seconds(report: dict[str, Any]) -> float:
    return float((report.get("durationMs") or {}).get("triggerExecution", 0)) / 1000


def _bronze_line(report: dict[str, Any]) -> str:
    rows = int(report.get("numInputRows") or 0)
    observed = (report.get("observedMetrics") or {}).get(METRICS) or {}
    lag = lag_behind_latest(report)
    seconds = _seconds(report)
    rate = f", {rows / seconds:,.0f} events/s" if seconds > 0 and rows else ""
    return (
        f"{rows} events ({int(observed.get('corrupt_rows') or 0)} corrupt), "
        f"lag {'unknown' if lag is None else lag} offsets, {seconds:.1f} s{rate}"
    )


def _gold_line(report: dict[str, Any]) -> str:
    rows = int(report.get("numInputRows") or 0)
    operators = report.get("stateOperators") or []
    changed = int(operators[-1].get("numRowsUpdated") or 0) if operators else 0
    late = sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in operators)
    watermark = (report.get("eventTime") or {}).get("watermark", "none")
    lag = lag_behind_latest(report)
    return (
        f"{rows} events, {changed} windows changed, {late} late events dropped, watermark {watermark}, "
        f"lag {'unknown' if lag is None else lag} offsets, {_seconds(report):.1f} s"
    )


class _SilverCatchUp:
    """Runs silver.clicks (the runner: lock, run record, idle check) when bronze moved."""

    def __init__(self, spark: SparkSession, config: PipelineConfig) -> None:
        self._spark = spark
        self._config = config
        self._specs = select_jobs("silver", SOURCE)
        self._bronze = table_path(config.paths.lake, "bronze", SOURCE)
        self._done: int | None = None
        self.runs = 0

    def run_if_behind(self) -> None:
        version = table_version(self._spark, self._bronze)
        if version is None or version == self._done:
            return
        outcomes = run_jobs(self._spark, self._config, self._specs, [None])  # raises when it failed
        self.runs += sum(o.status == SUCCEEDED for o in outcomes)
        self._done = version


def stream_clicks(
    spark: SparkSession, config: PipelineConfig, *, stop: threading.Event, poll_seconds: float = POLL_SECONDS
) -> StreamSummary:
    """Run bronze, silver and gold clicks in micro-batches until ``stop`` is set, then stop cleanly.

    Raises:
        ConfigError: Clicks are not read from Kafka.
        KafkaSourceError: A query failed (``KafkaDataLossError``: offsets deleted before they were read).
        JobFailedError: A run of silver.clicks failed.
        JobLockedError: Another process runs bronze.clicks or the stream.
    """
    if not config.sources.is_kafka(SOURCE):
        raise ConfigError(
            "ecom-pipeline stream reads clicks from Kafka: set ECOM_CLICKS_KAFKA=host:port "
            "(or sources.clicks.kind: kafka and sources.clicks.bootstrap_servers)"
        )
    started = time.monotonic()
    settings, lake = config.sources.clicks, config.paths.lake
    contract = LANDING_SOURCES[SOURCE]
    run_id = new_run_id()
    options = kafka_source_options(settings)
    where = f"topic {settings.topic} at {settings.bootstrap_servers}"
    bronze_path, gold_path = table_path(lake, "bronze", SOURCE), table_path(lake, "gold", GOLD_TABLE)
    summary = StreamSummary()
    with job_lock(spark, lake, BRONZE_JOB, run_id), job_lock(spark, lake, GOLD_JOB, run_id):
        bronze_schema = kafka_bronze_schema(contract)
        create_empty_table(
            spark, bronze_path, bronze_schema, partition_by=[INGEST_DATE], properties=CDF_PROPERTIES
        )
        create_empty_table(spark, gold_path, PRODUCT_INTEREST_HOURLY_SCHEMA, properties=CDF_PROPERTIES)
        silver = _SilverCatchUp(spark, config)
        silver.run_if_behind()  # a scheduled run may have left bronze ahead of silver
        ingested_at = dt.datetime.now(dt.UTC)

        def messages() -> Any:
            return read_topic(spark, options).transform(
                kafka_messages_to_bronze, source=contract, ingested_at=ingested_at, run_id=run_id
            )

        bronze_query = start_topic_to_delta(
            messages(),
            bronze_path,
            checkpoint=checkpoint_path(lake, "bronze", SOURCE),
            partition_by=[INGEST_DATE],
            query_name=f"stream_bronze_{SOURCE}_{run_id.replace('-', '_')}",
            metrics_name=METRICS,
            metrics=message_metrics(),
            trigger_seconds=settings.stream_trigger_seconds,
        )
        interest = (
            messages()
            .transform(clean_clicks, source_timezone=config.pipeline.source_timezone)
            .transform(
                product_interest,
                window_minutes=settings.interest_window_minutes,
                slide_minutes=settings.interest_slide_minutes,
                lateness_minutes=settings.interest_lateness_minutes,
            )
        )
        gold_query = start_upsert_stream(
            interest,
            gold_path,
            keys=INTEREST_KEYS,
            checkpoint=checkpoint_path(lake, "gold", GOLD_TABLE),
            query_name=f"stream_{GOLD_TABLE}_{run_id.replace('-', '_')}",
            trigger_seconds=settings.stream_trigger_seconds,
        )
        queries = (bronze_query, gold_query)
        bronze = _BatchReporter(BRONZE_JOB, _bronze_line)
        gold = _BatchReporter(GOLD_JOB, _gold_line)
        progress(
            f"stream {run_id}: {where}, a micro-batch every {settings.stream_trigger_seconds} s; "
            f"{BRONZE_JOB}, silver.clicks after each bronze batch, {GOLD_JOB}; stop with SIGTERM or Ctrl-C"
        )
        try:
            while not stop.is_set():
                stop.wait(poll_seconds)
                _raise_if_failed(queries, where)
                gold.report(gold_query)
                if bronze.report(bronze_query):
                    silver.run_if_behind()
            progress("stream: stopping at the end of the running micro-batch")
        finally:
            for query in queries:
                if query.isActive:
                    stop_at_batch_boundary(query)
        _raise_if_failed(queries, where)
        bronze.report(bronze_query)
        gold.report(gold_query)
        silver.run_if_behind()
    summary.bronze_batches, summary.bronze_events = bronze.batches, bronze.events
    summary.gold_batches, summary.silver_runs = gold.batches, silver.runs
    summary.seconds = time.monotonic() - started
    return summary


def _raise_if_failed(queries: tuple[StreamingQuery, ...], where: str) -> None:
    """Raise the failure of a query that ended with an error (the others are stopped first)."""
    for query in queries:
        error = query.exception() if not query.isActive else None
        if error is not None:
            for other in queries:
                if other.isActive:
                    stop_at_batch_boundary(other)
            raise query_failure(str(error), describe=where)
