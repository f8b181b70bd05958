"""Kafka I/O: the click topic read by Spark's Kafka source, drained into Delta; and a producer.

- :func:`kafka_source_options` turns ``sources.clicks`` into the options of Spark's Kafka source
  (the SASL password read from the environment only, here, at the last moment);
- :func:`drain_topic_to_delta` runs one Structured Streaming query with
  ``trigger(availableNow=True)``: it reads every offset the topic holds beyond the checkpoint,
  appends it to a Delta table through Delta's streaming sink (each micro-batch one commit, made
  idempotent by Delta's transaction of the query id and batch id), and stops;
- :func:`start_topic_to_delta` is the same query with a processing-time trigger, running until
  stopped (``ecom-pipeline stream``), on the same checkpoint;
- :func:`produce_lines` sends JSON lines to a topic with an idempotent confluent-kafka producer.

Exactly once: the checkpoint records the offsets of a micro-batch before it runs and marks it
done after Delta committed it; a run that died between the two replays the batch with the same
offsets, and Delta's sink skips a batch id its table already committed for that query.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from pipeline_lib.config import ClicksSource

__all__ = [
    "CHECKPOINTS",
    "KafkaDataLossError",
    "KafkaSourceError",
    "StreamRun",
    "as_dict",
    "checkpoint_path",
    "described_options",
    "drain_topic_to_delta",
    "kafka_source_options",
    "lag_behind_latest",
    "produce_lines",
    "query_failure",
    "read_topic",
    "start_topic_to_delta",
    "topic_end_offsets",
]

# Streaming checkpoints live under the lake, one folder per query, beside (not in) the layers.
CHECKPOINTS = "_checkpoints"
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_JAAS = "kafka.sasl.jaas.config"
_REDACTED = "*********(redacted)"
_DATA_LOSS = re.compile(r"KAFKA_DATA_LOSS|data (?:may have been|was) lost|failOnDataLoss", re.IGNORECASE)
_NO_CONNECTOR = re.compile(r"DATA_SOURCE_NOT_FOUND|Failed to find (?:the )?data source: kafka", re.IGNORECASE)


class KafkaSourceError(RuntimeError):
    """The Kafka source cannot be read as configured (connector, credentials, broker)."""


class KafkaDataLossError(KafkaSourceError):
    """Offsets bronze has not read yet are gone from the topic (retention): a clear stop, not silent loss."""


def checkpoint_path(lake: str, layer: str, table: str) -> str:
    """``<lake>/_checkpoints/<layer>/<table>``: the one checkpoint of the query writing that table."""
    return f"{lake.rstrip('/')}/{CHECKPOINTS}/{layer}/{table}"


def kafka_source_options(settings: ClicksSource, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The options of Spark's Kafka source for ``settings`` (``kind: kafka``).

    ``failOnDataLoss`` is always true: offsets deleted before bronze read them stop the run.
    With ``sasl_username``, the JAAS configuration is built with the password from the
    environment variable ``settings.password_env``; the returned mapping then holds a secret:
    pass it to Spark only, and log :func:`described_options`.

    Raises:
        KafkaSourceError: No brokers, or a SASL user without a password in the environment.
    """
    environ = os.environ if environ is None else environ
    if not settings.bootstrap_servers:
        raise KafkaSourceError("sources.clicks.bootstrap_servers is not set (ECOM_CLICKS_KAFKA=host:port)")
    options = {
        **settings.options,
        "kafka.bootstrap.servers": settings.bootstrap_servers,
        "subscribe": settings.topic,
        "startingOffsets": settings.starting_offsets,
        "failOnDataLoss": "true",
        "includeHeaders": "false",
    }
    if settings.max_offsets_per_trigger is not None:
        options["maxOffsetsPerTrigger"] = str(settings.max_offsets_per_trigger)
    if settings.sasl_username:
        password = environ.get(settings.password_env)
        if not password:
            raise KafkaSourceError(
                f"sources.clicks.sasl_username is set but {settings.password_env} is not: the Kafka "
                "password comes from the environment only"
            )
        mechanism = str(settings.options.get("kafka.sasl.mechanism", "PLAIN")).upper()
        module = _LOGIN_MODULES.get(mechanism)
        if module is None:
            raise KafkaSourceError(
                f"kafka.sasl.mechanism {mechanism} takes no username and password; "
                f"use one of {', '.join(_LOGIN_MODULES)}, or configure it without sasl_username"
            )
        options[_JAAS] = (
            f'{module} required username="{_jaas_quoted(settings.sasl_username)}" '
            f'password="{_jaas_quoted(password)}";'
        )
    return options


def _jaas_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def described_options(options: Mapping[str, str]) -> dict[str, str]:
    """``options`` fit for logs and run records: the JAAS configuration (the password) redacted."""
    return {key: (_REDACTED if key == _JAAS else value) for key, value in sorted(options.items())}


def read_topic(spark: SparkSession, options: Mapping[str, str]) -> DataFrame:
    """The topic as a streaming DataFrame of Spark's Kafka source rows.

    Raises:
        KafkaSourceError: Spark's Kafka connector is not on the class path.
    """
    try:
        return spark.readStream.format("kafka").options(**options).load()
    except AnalysisException as err:
        if _NO_CONNECTOR.search(str(err)):
            raise KafkaSourceError(
                "Spark's Kafka connector is not on the class path: run `make setup` (local runs add it "
                "when sources.clicks.kind is kafka); under spark-submit add --packages "
                "org.apache.spark:spark-sql-kafka-0-10_2.13:<Spark's version>"
            ) from None
        raise


@dataclass(frozen=True)
class StreamRun:
    """What one drained query did: its id and each micro-batch's progress report (as dicts)."""

    query_id: str
    run_id: str
    progress: tuple[dict[str, Any], ...]


def drain_topic_to_delta(
    rows: DataFrame,
    path: str,
    *,
    checkpoint: str,
    partition_by: Sequence[str],
    query_name: str,
    metrics_name: str,
    metrics: Sequence[Any],
    describe: str,
) -> StreamRun:
    """Append everything ``rows`` (a stream) holds now to the Delta table at ``path``, then stop.

    ``trigger(availableNow=True)``: the query reads up to the end offsets it finds at its start
    (in several micro-batches when ``maxOffsetsPerTrigger`` is set), then ends; with nothing new
    it runs no batch and commits nothing. ``metrics`` are observed per batch under
    ``metrics_name`` (``observedMetrics`` of each progress report).

    Args:
        rows: The streaming rows to write, the table's schema (create the table first: Delta's
            sink would create it without the table properties).
        checkpoint: The query's checkpoint folder (:func:`checkpoint_path`), never shared.
        describe: What is read, for error messages (``topic clicks at host:port``).

    Raises:
        KafkaDataLossError: Offsets not yet read were deleted from the topic.
        KafkaSourceError: The query failed otherwise (the first line of Spark's reason).
    """
    query = (
        _append_writer(
            rows,
            checkpoint=checkpoint,
            partition_by=partition_by,
            query_name=query_name,
            metrics_name=metrics_name,
            metrics=metrics,
        )
        .trigger(availableNow=True)
        .start(path)
    )
    try:
        query.awaitTermination()
    except StreamingQueryException as err:
        raise query_failure(str(err), describe=describe) from None
    return StreamRun(
        query_id=str(query.id),
        run_id=str(query.runId),
        progress=tuple(_as_dict(p) for p in query.recentProgress),
    )


def start_topic_to_delta(
    rows: DataFrame,
    path: str,
    *,
    checkpoint: str,
    partition_by: Sequence[str],
    query_name: str,
    metrics_name: str,
    metrics: Sequence[Any],
    trigger_seconds: int,
) -> StreamingQuery:
    """Start appending ``rows`` (a stream) to the Delta table at ``path``, a micro-batch every
    ``trigger_seconds``, until stopped: the continuous twin of :func:`drain_topic_to_delta`.

    The same sink, options and checkpoint as a drained run, so the two modes take turns on one
    checkpoint: each resumes at the offsets the other committed. Stop it with
    :func:`pipeline_lib.io.streaming.stop_at_batch_boundary`.
    """
    return (
        _append_writer(
            rows,
            checkpoint=checkpoint,
            partition_by=partition_by,
            query_name=query_name,
            metrics_name=metrics_name,
            metrics=metrics,
        )
        .trigger(processingTime=f"{trigger_seconds} seconds")
        .start(path)
    )


def _append_writer(
    rows: DataFrame,
    *,
    checkpoint: str,
    partition_by: Sequence[str],
    query_name: str,
    metrics_name: str,
    metrics: Sequence[Any],
) -> DataStreamWriter:
    return (
        rows.observe(metrics_name, *metrics)
        .writeStream.format("delta")
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
        .option("mergeSchema", "true")  # a table that landing files created lacks the Kafka columns
        .partitionBy(*partition_by)
        .queryName(query_name)
    )


def query_failure(message: str, *, describe: str) -> KafkaSourceError:
    """The error to raise for a streaming query over the topic that failed with ``message``.

    Returns:
        :class:`KafkaDataLossError` when offsets not read yet were deleted (retention), else
        :class:`KafkaSourceError` with the first line of Spark's reason.
    """
    if _DATA_LOSS.search(message):
        return KafkaDataLossError(
            f"{describe}: offsets that bronze had not read yet are no longer in the topic (its retention "
            "deleted them, or the topic was re-created); the run stops instead of skipping them. See "
            f"docs/kafka.md, 'Offsets lost to retention'. Spark: {_first_line(message)}"
        )
    return KafkaSourceError(f"{describe}: the streaming query failed: {_first_line(message)}")


def lag_behind_latest(progress: Mapping[str, Any]) -> int | None:
    """Offsets published but not read yet after a micro-batch: the sum over partitions of the
    topic's latest offset (as Spark's Kafka source last saw it) less the batch's end offset.

    None when the progress report does not hold both (no Kafka source, or no latest offset).
    """
    sources = progress.get("sources") or []
    if not sources:
        return None
    latest = _offsets(sources[0].get("latestOffset"))
    end = _offsets(sources[0].get("endOffset"))
    if latest is None or end is None:
        return None
    return sum(
        max(0, int(offset) - end.get(topic, {}).get(partition, 0))
        for topic, partitions in latest.items()
        for partition, offset in partitions.items()
    )


def _offsets(value: Any) -> dict[str, dict[str, int]] | None:
    """A Kafka source offset (JSON text or a mapping ``{topic: {partition: offset}}``), parsed."""
    if value is None:
        return None
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, Mapping):
        return None
    return {str(t): {str(p): int(o) for p, o in parts.items()} for t, parts in parsed.items()}


def as_dict(progress: Any) -> dict[str, Any]:
    """A progress report as plain JSON values (Spark 4's ``StreamingQueryProgress`` is a dict of objects)."""
    return _as_dict(progress)


def _as_dict(progress: Any) -> dict[str, Any]:
    """A progress report as plain JSON values (Spark 4's ``StreamingQueryProgress`` is a dict of objects)."""
    text = getattr(progress, "json", None)
    return dict(json.loads(text)) if isinstance(text, str) else dict(progress)


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:400]


def topic_end_offsets(settings: ClicksSource, *, timeout_s: float = 5.0) -> dict[str, int] | None:
    """The topic's end offset per partition, asked of the brokers without Spark (confluent-kafka).

    For the runner's idle check: equal to what the last successful run saw, nothing was published
    since. None when it cannot be told cheaply: a secured cluster (its client settings are Spark's,
    not librdkafka's), an unreachable broker, or a topic that does not exist yet; the job then runs.
    """
    if settings.sasl_username or settings.options or not settings.bootstrap_servers:
        return None
    import logging

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    quiet = logging.getLogger(f"{__name__}.idle_check")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "ecom-pipeline-idle-check",
            "enable.auto.commit": False,
            "logger": quiet,
        }
    )
    try:
        topic = consumer.list_topics(settings.topic, timeout=timeout_s).topics.get(settings.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return None
        return {
            str(partition): int(
                consumer.get_watermark_offsets(TopicPartition(settings.topic, partition), timeout=timeout_s)[
                    1
                ]
            )
            for partition in sorted(topic.partitions)
        }
    except (KafkaException, TypeError):  # TypeError: no answer in time (None instead of a pair)
        return None
    finally:
        consumer.close()


def produce_lines(
    bootstrap_servers: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    config: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Send ``(key, value)`` messages to ``topic`` in order, with an idempotent producer.

    ``enable.idempotence``: a retried send is written once, and the messages of one key stay in
    the order given. Returns once every message is acknowledged by the broker.

    Returns:
        The number of messages sent.

    Raises:
        KafkaSourceError: A message was not delivered (the first error).
    """
    from confluent_kafka import KafkaException, Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            **(config or {}),
        }
    )
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None and len(failures) < 5:
            failures.append(str(error))

    sent = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let the broker catch up
                producer.poll(0.5)
            except KafkaException as err:
                raise KafkaSourceError(f"producing to {topic} at {bootstrap_servers}: {err}") from None
        sent += 1
        producer.poll(0)
        if progress is not None and sent % 200_000 == 0:
            progress(f"kafka: {sent} messages sent to {topic}")
    remaining = producer.flush(120)
    if remaining:
        raise KafkaSourceError(
            f"{remaining} messages to {topic} at {bootstrap_servers} not delivered in 120 s"
        )
    if failures:
        raise KafkaSourceError(f"messages to {topic} at {bootstrap_servers} not delivered: {failures[0]}")
    return sent
